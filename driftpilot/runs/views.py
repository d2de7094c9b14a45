"""What the ControlPlane returns: runs, models, API keys, metrics, recoveries and events, as
people (the CLI, the API, the chat) see them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from driftpilot.store.audit import now
from driftpilot.store.models import ApiKey


class RunView(BaseModel):
    """A run as people see it."""

    run_id: str
    model: str
    batch_id: str
    status: str = Field(description="pending | running | waiting_approval | completed | failed")
    outcome: str | None
    requested_by: str
    created_at: str
    summary: dict[str, Any]
    approval_request: dict[str, Any] | None = None
    updated_at: str = ""
    trigger: str = Field(default="", description="cli | api | chat | schedule | demo")
    schedule_id: str | None = Field(
        default=None, description="The schedule that fired the run (trigger schedule)."
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="What the submitter attached to the run."
    )
    report_status: Literal["pending", "ready", "none"] = Field(
        default="none",
        description="Evidently's HTML report, rendered after the decision: pending (not yet), "
        "ready, or none (no drift step, nothing testable, or pruned).",
    )
    report_path: str | None = Field(default=None, description="The report file, when ready.")


class ModelView(BaseModel):
    """A managed model as people see it: its task, its primary metric and which way is
    better, and its champion's out-of-time baseline with its interval."""

    name: str
    target: str
    family: str
    task: str = Field(default="binary", description="binary | multiclass | regression")
    metric: str = Field(description="The primary metric, one of the task's.")
    higher_is_better: bool = Field(
        default=True, description="The metric's direction (False: lower is better, e.g. rmse)."
    )
    champion: int | None
    baseline: float | None = Field(
        description="The champion's metric on the out-of-time holdout of its training rows."
    )
    baseline_low: float | None = None
    baseline_high: float | None = None
    features: list[str]
    created_at: str = ""
    note: str = Field(
        default="",
        description="On adding: the task and metric chosen, and why (inferred or given).",
    )


class ApiKeyView(BaseModel):
    """An API key as shown to people (never its secret)."""

    key_id: str
    principal: str
    role: str
    created_at: str
    revoked: bool


class MetricsSnapshot(BaseModel):
    """What /metrics exports, read from the audit database."""

    runs: dict[str, int] = Field(description="Run counts by 'status' or 'status:outcome'.")
    run_seconds: list[float] = Field(description="Durations of finished runs (s).")
    drift_share: dict[str, float] = Field(
        description="Latest drift share per model (importance-weighted: the share the drift "
        "policy decides on)."
    )
    pending_approvals: int
    llm_fallbacks: dict[str, int] = Field(description="LLM fallbacks per agent.")


class Recovery(BaseModel):
    """What ``recover`` found for one run and what it did."""

    run_id: str
    model: str
    found: str = Field(description="The state the run was left in.")
    did: str = Field(description="What recovery did about it.")
    status: str = Field(description="The run's status afterwards.")
    outcome: str | None = None


EventKind = Literal[
    "approval_waiting",
    "promotion",
    "rollback",
    "quarantine_streak",
    "run_failed",
    "episode_escalated",
]


class PlaneEvent(BaseModel):
    """Something a person may want to be told about (alerts and webhooks subscribe to these)."""

    kind: EventKind
    model: str
    run_id: str | None = Field(description="The run (or rollback operation) it is about.")
    detail: dict[str, Any] = Field(default_factory=dict)
    at: str = Field(default_factory=lambda: now())


Listener = Callable[[PlaneEvent], None]
Emit = Callable[[EventKind, str, str | None, dict[str, Any]], None]


def key_view(row: ApiKey) -> ApiKeyView:
    return ApiKeyView(
        key_id=row.id,
        principal=row.principal,
        role=row.role,
        created_at=row.created_at,
        revoked=row.revoked_at is not None,
    )
