"""Request and response bodies. Where a resource overlaps LangGraph Platform's, it takes its
shapes and words: a run has ``run_id``, ``thread_id``, ``assistant_id`` (the managed model),
``status`` (pending | running | interrupted | success | error), ``metadata`` and
``multitask_strategy``; a decision is ``{"command": {"resume": {...}}}``."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from driftpilot.core.episodes import EpisodeView
from driftpilot.runs.plane import ApiKeyView, LabelsView, ModelView, RunView

RunStatus = Literal["pending", "running", "interrupted", "success", "error"]
MultitaskStrategy = Literal["reject", "enqueue"]
# The service's run states, in LangGraph Platform's words.
STATUS: dict[str, RunStatus] = {
    "pending": "pending",
    "running": "running",
    "waiting_approval": "interrupted",
    "completed": "success",
    "failed": "error",
}
INTERNAL_STATUS = {api: internal for internal, api in STATUS.items()}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetBatch(_Strict):
    dataset: str = Field(
        description="A built-in dataset batch, NAME:BATCH_ID.",
        examples=["flights:2013-07"],
        pattern=r"^[a-z0-9_]+:[A-Za-z0-9._:+-]+$",
        max_length=120,
    )
    max_rows: int | None = Field(
        None,
        ge=100,
        le=1_000_000,
        description="Take a seeded random sample of this many rows (kept in time order).",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the sample.")


class PathBatch(_Strict):
    path: str = Field(
        description="A CSV or Parquet file, relative to one of the allowed batch roots.",
        examples=["2013-07.parquet"],
        min_length=1,
        max_length=1000,
    )


class RunInput(_Strict):
    batch: DatasetBatch | PathBatch


class ControlInput(RunInput):
    """A LangGraph run's ``input``: the batch, and the model when the assistant is the
    ``control`` graph (a model assistant names it already)."""

    model: str | None = Field(None, description="The managed model.", max_length=200)


class ControlConfigurable(BaseModel):
    model: str | None = Field(None, description="The managed model.", max_length=200)


class ControlConfig(BaseModel):
    """A LangGraph run's ``config``: the model may be given as ``configurable.model``."""

    configurable: ControlConfigurable = Field(default_factory=ControlConfigurable)


class ControlContext(BaseModel):
    """A LangGraph run's ``context``: the model may be given here too."""

    model: str | None = Field(None, description="The managed model.", max_length=200)


class ControlStep(BaseModel):
    """One agent decision of a run."""

    agent: str
    action: str
    rationale: str
    fallback: bool
    at: str


class ControlValues(BaseModel):
    """A LangGraph thread's ``values``: the control run's summary so far. Each agent's
    slice (ingestion, drift, ..., promotion) is an object once the agent wrote it."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    model: str
    batch_id: str
    requested_by: str
    status: RunStatus
    outcome: str | None = None
    steps: list[ControlStep] = Field(default_factory=list)
    error: str | None = Field(None, description="Why a failed run failed.")


class RunCreate(_Strict):
    """Start a control run of a managed model on one batch."""

    assistant_id: str | None = Field(
        None, description="The managed model (LangGraph's word for it).", max_length=200
    )
    model: str | None = Field(None, description="The managed model.", max_length=200)
    input: RunInput
    metadata: dict[str, Any] = Field(default_factory=dict)
    multitask_strategy: MultitaskStrategy = Field(
        "reject",
        description="The model is busy: 'reject' answers 409, 'enqueue' waits for its turn.",
    )

    @model_validator(mode="after")
    def _one_model(self) -> RunCreate:
        if not (self.model or self.assistant_id):
            raise ValueError("give 'model' (or 'assistant_id'): the managed model to run")
        if self.model and self.assistant_id and self.model != self.assistant_id:
            raise ValueError("'model' and 'assistant_id' name different models")
        return self

    @property
    def model_name(self) -> str:
        return self.model or self.assistant_id or ""


class Run(BaseModel):
    """A control run, as LangGraph Platform shows a run."""

    run_id: str
    thread_id: str = Field(description="The run's thread: its run id.")
    assistant_id: str = Field(description="The managed model.")
    model: str
    batch_id: str
    status: RunStatus
    outcome: str | None = Field(
        None, description="What the run decided: promoted, monitor, quarantined, ..."
    )
    requested_by: str
    created_at: str
    trigger: str = Field("", description="What started the run: cli, api, chat, schedule, demo.")
    schedule_id: str | None = Field(
        None, description="The schedule (cron_id) that fired the run, for trigger 'schedule'."
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    multitask_strategy: MultitaskStrategy | None = Field(
        None,
        description="What the submitter asked for while the model was busy (null: a run "
        "submitted before strategies were recorded).",
    )
    summary: dict[str, Any] = Field(default_factory=dict)
    interrupt: dict[str, Any] | None = Field(
        None, description="The Agent Inbox HumanInterrupt the run waits on."
    )
    report_status: Literal["pending", "ready", "none"] = Field(
        "none",
        description="Evidently's HTML report, rendered after the decision: pending (not yet; "
        "GET /runs/{run_id}/report renders it now), ready, or none (no drift step, nothing "
        "testable, pruned).",
    )
    report_url: str | None = Field(
        None, description="Where the ready report is served: /runs/{run_id}/report."
    )
    episode: EpisodeView | None = Field(
        None,
        description="The drift episode the run's batch belongs to, as the run ended: its state "
        "(open, retrying, escalated, closed), the challengers lost and, escalated, the "
        "diagnosis (null: no drift signal, or a run older than episodes).",
    )

    @classmethod
    def of(
        cls,
        view: RunView,
        *,
        metadata: dict[str, Any] | None = None,
        multitask_strategy: MultitaskStrategy | None = None,
    ) -> Run:
        return cls(
            run_id=view.run_id,
            thread_id=view.run_id,
            assistant_id=view.model,
            model=view.model,
            batch_id=view.batch_id,
            status=STATUS.get(view.status, "error"),
            outcome=view.outcome,
            requested_by=view.requested_by,
            created_at=view.created_at,
            trigger=view.trigger,
            schedule_id=view.schedule_id,
            metadata=metadata if metadata is not None else view.metadata,
            multitask_strategy=multitask_strategy,
            summary=view.summary,
            interrupt=view.approval_request,
            report_status=view.report_status,
            report_url=f"/runs/{view.run_id}/report" if view.report_status == "ready" else None,
            episode=EpisodeView.of_summary(view.summary, view.run_id),
        )


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``cursor`` for the next (null: the end)."""

    items: list[T]
    next_cursor: str | None = None


class Resume(_Strict):
    decision: Literal["approve", "reject"]
    comment: str = Field("", max_length=4000)
    step: Literal["escalation", "promotion"] | None = Field(
        None,
        description="The question answered, as the interrupt's request names it; a run that "
        "now asks another question refuses the answer (409).",
    )


class Command(_Strict):
    resume: Resume


class DecisionIn(_Strict):
    """``{"command": {"resume": {"decision", "comment"}}}`` or ``{"decision", "comment"}``.
    The approver is the API key's principal, never a field of the body."""

    command: Command | None = None
    decision: Literal["approve", "reject"] | None = None
    comment: str = Field("", max_length=4000)
    step: Literal["escalation", "promotion"] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> DecisionIn:
        if (self.command is None) == (self.decision is None):
            raise ValueError("give either command.resume or decision, not both or neither")
        return self

    @property
    def resume(self) -> Resume:
        if self.command is not None:
            return self.command.resume
        assert self.decision is not None
        return Resume(decision=self.decision, comment=self.comment, step=self.step)


class Approval(BaseModel):
    """A run waiting for a person, with its Agent Inbox ``HumanInterrupt``."""

    run_id: str
    model: str
    requested_by: str
    created_at: str
    interrupt: dict[str, Any] | None


class CancelIn(_Strict):
    reason: str = Field("", max_length=4000)


MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
COLUMN = Field(min_length=1, max_length=200)


class ModelCreate(_Strict):
    """Add a managed model and train its first champion in the background (202, a job).

    On a built-in dataset batch, the dataset's spec gives the target, time column and
    features; on a file under a batch root, give them."""

    name: str = Field(
        description="The managed model (MLflow registered model).", pattern=MODEL_NAME
    )
    input: RunInput
    family: Literal["lightgbm", "catboost"] = "lightgbm"
    target: str | None = Field(
        None, max_length=200, description="Target column: 0/1, class labels or a number."
    )
    time_col: str | None = Field(None, max_length=200, description="Time column.")
    numeric: list[Annotated[str, COLUMN]] = Field(default_factory=list, max_length=1000)
    categorical: list[Annotated[str, COLUMN]] = Field(default_factory=list, max_length=1000)
    task: Literal["binary", "multiclass", "regression"] | None = Field(
        None,
        description="The model's task; default: inferred from the target's values (a built-in "
        "dataset's is its spec's). The job's result says which and why in its 'note'.",
    )
    metric: str | None = Field(
        None,
        max_length=50,
        description="The primary metric, one of the task's (binary: roc_auc, pr_auc, log_loss, "
        "f1; multiclass: roc_auc, log_loss, macro_f1; regression: rmse, mae, r2); default: "
        "the task's primary (roc_auc; rmse for a regression).",
    )

    @model_validator(mode="after")
    def _columns(self) -> ModelCreate:
        if isinstance(self.input.batch, PathBatch) and not (
            self.target and self.time_col and self.numeric
        ):
            raise ValueError("a file batch needs 'target', 'time_col' and 'numeric'")
        return self


class RollbackIn(_Strict):
    reason: str = Field(
        min_length=1,
        max_length=4000,
        description="Why the champion goes back (kept in the audit); required.",
    )


class Rollback(BaseModel):
    model: str
    from_version: int | None = Field(None, alias="from")
    to_version: int | None = Field(None, alias="to")
    by: str


class BrokenLink(BaseModel):
    table: str
    row_id: int
    reason: str


class Verify(BaseModel):
    """The audit walk: hash chains, the newest signed checkpoint, cross-table invariants."""

    ok: bool
    checked: dict[str, int]
    first_broken: BrokenLink | None = None
    problems: list[str] = Field(default_factory=list)
    checkpoint: str | None = None


class ChampionAt(BaseModel):
    model: str
    time: str
    version: int | None = Field(description="The champion then (null: none yet).")


class Health(BaseModel):
    status: Literal["ok"] = "ok"


__all__ = ["ApiKeyView", "LabelsView", "ModelView"]
