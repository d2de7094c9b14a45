"""Graph state of one control run. Each agent writes its own slice; ``events`` accumulates."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypedDict


class BatchRef(TypedDict):
    batch_id: str
    path: str
    n_rows: int
    content_hash: str


# The slices the agents write, in flow order (what a run's summary shows).
SLICES = (
    "ingestion",
    "drift",
    "optimizer",
    "retraining",
    "evaluation",
    "cicd",
    "approval",
    "promotion",
)


class ControlState(TypedDict, total=False):
    run_id: str
    model: str
    requested_by: str
    batch: BatchRef
    ingestion: dict[str, Any]
    drift: dict[str, Any]
    optimizer: dict[str, Any]
    retraining: dict[str, Any]
    evaluation: dict[str, Any]
    cicd: dict[str, Any]
    approval: dict[str, Any]
    promotion: dict[str, Any]
    outcome: str
    events: Annotated[list[str], operator.add]


# Routers read typed decisions, never free text.
def after_ingestion(state: ControlState) -> Literal["drift_analyst", "report"]:
    return "drift_analyst" if state["ingestion"]["action"] == "accept" else "report"


def after_drift(state: ControlState) -> Literal["optimizer", "report"]:
    return "optimizer" if state["drift"]["action"] == "retrain" else "report"


def after_evaluation(state: ControlState) -> Literal["cicd", "report"]:
    return "cicd" if state["evaluation"]["action"] == "promote" else "report"


def after_cicd(state: ControlState) -> Literal["promote", "approval"]:
    return "approval" if state["cicd"]["tier"] == "high" else "promote"


def after_approval(state: ControlState) -> Literal["promote", "report"]:
    return "promote" if state["approval"]["decision"] == "approve" else "report"
