"""Graph state of one control run. Each agent writes its own slice; ``events`` accumulates."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypedDict, TypeVar

from driftpilot.core.errors import PolicyViolation

R = TypeVar("R", bound=str)


class BatchRef(TypedDict):
    batch_id: str
    path: str
    n_rows: int
    content_hash: str


# The slices the agents write, in flow order (what a run's summary shows).
SLICES = (
    "ingestion",
    "escalation",
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
    escalation: dict[str, Any]
    drift: dict[str, Any]
    optimizer: dict[str, Any]
    retraining: dict[str, Any]
    evaluation: dict[str, Any]
    cicd: dict[str, Any]
    approval: dict[str, Any]
    promotion: dict[str, Any]
    outcome: str
    events: Annotated[list[str], operator.add]


def _route(value: Any, routes: dict[Any, R], what: str) -> R:
    """Fail closed: a value no route names raises instead of falling through to a default."""
    if value not in routes:
        raise PolicyViolation(f"unknown {what} {value!r}: the control graph refuses to route it")
    return routes[value]


# Routers read typed decisions, never free text; unknown values raise.
def after_ingestion(state: ControlState) -> Literal["drift_analyst", "escalation", "report"]:
    routes: dict[str, Literal["drift_analyst", "escalation", "report"]] = {
        "accept": "drift_analyst",
        "quarantine": "report",
        "escalate": "escalation",  # one quarantine too many in a row: a person decides
    }
    return _route(state["ingestion"]["action"], routes, "ingestion action")


def after_escalation(state: ControlState) -> Literal["drift_analyst", "report"]:
    """Only an accepted escalation (approved, bound to this batch) goes on."""
    routes: dict[bool, Literal["drift_analyst", "report"]] = {
        True: "drift_analyst",
        False: "report",
    }
    return _route(state["escalation"]["accepted"], routes, "escalation answer")


def after_drift(state: ControlState) -> Literal["optimizer", "report"]:
    routes: dict[str, Literal["optimizer", "report"]] = {
        "retrain": "optimizer",
        "monitor": "report",
        "none": "report",
    }
    return _route(state["drift"]["action"], routes, "drift action")


def after_evaluation(state: ControlState) -> Literal["cicd", "report"]:
    routes: dict[str, Literal["cicd", "report"]] = {"promote": "cicd", "reject": "report"}
    return _route(state["evaluation"]["action"], routes, "evaluation action")


def after_cicd(state: ControlState) -> Literal["promote", "approval"]:
    """Only ``low`` goes straight to promote; ``high`` waits for a person."""
    routes: dict[str, Literal["promote", "approval"]] = {"low": "promote", "high": "approval"}
    return _route(state["cicd"]["tier"], routes, "risk tier")


def after_approval(state: ControlState) -> Literal["promote", "report"]:
    routes: dict[str, Literal["promote", "report"]] = {"approve": "promote", "reject": "report"}
    return _route(state["approval"]["decision"], routes, "approval decision")
