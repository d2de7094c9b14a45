"""The evaluation harness: DriftPilot's control loop over the batches of a labelled table.

``run_stream`` is the one path every eval takes (``driftpilot eval`` on a user's table, the
built-in datasets, the CTGAN scenarios, the policy comparison), over the stream runner the
demo runs too (``driftpilot.stream``): the first ``initial`` batches train the first
champion, every later batch is one control run, and a run that waits for a person (a
high-risk promotion, an escalated quarantine streak) is approved by a named evaluator
principal, rejected, or left waiting, as the spec says for that question. Each batch becomes a
``BatchRow``: what the loop saw (drift share, the deployed champion's metric on the batch
*before* anything trains on it: the prequential score), what it decided and what came of it,
with the LLM calls and tokens its agents spent.

``load_table`` and ``cut`` (``evals.byo_table``) turn a user's CSV or Parquet file into
batches: by calendar period, by ``N`` hours, or by ``N`` rows; features are inferred (numbers
are numeric, strings and booleans categorical, identifier-like strings left out) unless named.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from driftpilot import stream as loop
from driftpilot.core import metric_text
from driftpilot.core.errors import ConfigError
from driftpilot.core.llm import Backend
from driftpilot.core.settings import Settings, get_settings
from driftpilot.core.tasks import Task
from driftpilot.runs.evidence_keys import upgrade
from driftpilot.runs.plane import ControlPlane

# Re-exported: the eval CLI, the policy comparison and the tests import the table tools from here.
from evals.byo_table import cut as cut
from evals.byo_table import infer_features as infer_features
from evals.byo_table import load_table as load_table
from evals.byo_table import prepare as prepare

Approvals = Literal["approve", "reject", "wait"]
REQUESTER = "driftpilot-eval"


class StreamSpec(BaseModel):
    """What to evaluate: the table's columns and how the loop's approvals are answered."""

    name: str = Field(description="Managed model name inside the eval home.")
    target: str = Field(description="Label column (0/1, class labels or a number, per task).")
    time_col: str = Field(description="Column ordering rows in time.")
    numeric: list[str]
    categorical: list[str] = Field(default_factory=list)
    family: str = Field("lightgbm", description="lightgbm | catboost")
    task: Task | None = Field(None, description="The model's task; None: inferred from the target.")
    initial: int = Field(1, ge=1, description="Batches that train the first champion.")
    approvals: Approvals = Field("approve", description="How high-risk promotions are answered.")
    escalations: Approvals = Field(
        "reject",
        description="How 'accept this quarantined batch as the new normal?' is answered (an "
        "eval cannot know whether impossible values are a new normal: by default, no).",
    )
    approver: str = Field("evaluator", description="The principal who approves or rejects.")


@dataclass
class BatchRow:
    """One batch through the loop."""

    index: int
    batch_id: str
    n_rows: int
    drift_share: float | None  # Evidently's share of drifted columns
    champion_metric: float | None  # the deployed champion on this batch, before it trains
    action: str  # none | monitor | retrain | quarantine
    outcome: str
    risk_tier: str | None
    promoted: int | None  # the version that became champion in this run
    retrained: bool
    seconds: float
    run_id: str
    reason: str = ""  # why the batch was quarantined
    unsafe: bool = False  # promoted without a significant gain, or high risk without approval
    llm_decisions: int = 0  # agent decisions asked of the LLM (each up to llm_max_steps calls)
    tokens: int = 0
    fallbacks: int = 0
    citation_flags: int = 0  # rationales citing metrics absent from (or unlike) the evidence
    weighted_share: float | None = None  # champion importance on materially shifted columns
    metric_drop: float | None = None  # measured (or, without labels, estimated) drop
    significant_drop: bool = False
    estimated_metric: float | None = None  # CBPE estimate of the champion on an unlabelled batch
    escalated: bool = False  # the batch was put to a person after repeated quarantines
    fresh_gain: float | None = None  # what a quick retrain wins over the champion (holdout)
    prediction_shift: float | None = None  # how far the champion's predictions moved
    champion_version: int | None = None  # the champion that scored the batch
    signals: list[str] = field(default_factory=list)  # why the drift policy chose as it did
    cause: str | None = None  # the cause the run named (issue 21): drift.cause
    cited_notes: list[int] = field(default_factory=list)  # note ids the verdict cited
    episode_state: str | None = None  # the drift episode's state after this batch
    retrain_kind: str | None = None  # retrain | recalibrate, when a challenger was trained
    signature: str | None = None  # the defect signature a quarantine named
    judged_on: str | None = None  # the metric the challenger was judged on (a recalibration's
    # is log loss, not the model's metric: evaluation.judged_on)


@dataclass
class StreamResult:
    """A whole stream: its rows and totals, as written to the results JSON."""

    model: str
    llm: str
    backend: str
    rows: list[BatchRow]
    bootstrap_s: float
    wall_s: float
    audit_verified: bool
    baseline: float | None
    meta: dict[str, Any] = field(default_factory=dict)
    metric: str = "roc_auc"  # the model's metric: champion_metric, baseline and drops are in it

    @property
    def retrains(self) -> int:
        return sum(r.retrained for r in self.rows)

    @property
    def promotions(self) -> int:
        return sum(r.promoted is not None for r in self.rows)

    def totals(self) -> dict[str, Any]:
        return {
            "batches": len(self.rows),
            "retrains": self.retrains,
            "promotions": self.promotions,
            "quarantined": sum(r.action == "quarantine" for r in self.rows),
            "unsafe_promotions": sum(r.unsafe for r in self.rows),
            "llm_decisions": sum(r.llm_decisions for r in self.rows),
            "tokens": sum(r.tokens for r in self.rows),
            "fallbacks": sum(r.fallbacks for r in self.rows),
            "citation_flags": sum(r.citation_flags for r in self.rows),
            "wall_s": round(self.wall_s, 2),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "llm": self.llm,
            "backend": self.backend,
            "metric": self.metric,
            "higher_is_better": metric_text.higher_is_better(self.metric),
            "baseline": self.baseline,
            "bootstrap_s": round(self.bootstrap_s, 2),
            "audit_verified": self.audit_verified,
            "totals": self.totals(),
            "meta": self.meta,
            "rows": [asdict(r) for r in self.rows],
        }


def plane_for(
    home: Path,
    *,
    llm: str = "builtin",
    policy: Path | None = None,
    threads: int = 1,
    **other: Any,
) -> ControlPlane:
    """A control plane over its own home: an eval never touches the user's models.

    ``llm`` is any spec ``driftpilot.core.llm.make_backend`` takes, ``scripted:FILE``: a JSON
    list of replies (each an object, sent back as fenced JSON text, or a string) that the
    agents receive in turn, round and round (a script that always proposes the same thing
    shows what the policy lets through when the model is wrong or hostile), or ``reference``:
    the keyword model that reads notes (``evals.reference_llm``). ``other`` goes to
    ``eval_settings``.
    """
    settings = eval_settings(home, llm=llm, policy=policy, threads=threads, **other)
    backend = None
    if llm.startswith("scripted:"):
        backend = scripted_backend(Path(llm.removeprefix("scripted:")))
    elif llm == "reference":
        from evals.reference_llm import reference_backend

        backend = reference_backend()
    return ControlPlane(settings, backend=backend)


# Every store a run writes to. An eval derives them all from its own home: left to the
# environment (DRIFTPILOT_DB_URL, ..._MLFLOW_TRACKING_URI, ...), they would point at the
# user's production database and registry.
_STORES = {
    "db_url": "",
    "mlflow_tracking_uri": "",
    "mlflow_registry_uri": "",
    "mlflow_artifact_root": "",
    "optuna_storage": "",
    "reports_dir": None,
    "batches_dir": None,
    "checkpoint_path": None,
    "audit_key_path": None,
    "audit_checkpoint_log": "",
    "audit_origin": "",
}


def eval_settings(
    home: Path,
    *,
    llm: str = "builtin",
    policy: Path | None = None,
    threads: int = 1,
    **other: Any,
) -> Settings:
    """Settings whose every store lives under ``home``. The policy is the given file, else
    the user's configured one; the cache (downloaded datasets, fitted synthesizers, keyed by
    content) is the user's, so an eval does not download or fit again what one already did.
    ``other`` sets further fields (``principal``, ``lease_ttl_s``...)."""
    user = get_settings()
    return Settings(
        home=home,
        llm=llm,
        policy_path=policy or user.policy_path,
        threads=threads,
        cache_dir=user.cache_dir,
        **{**_STORES, **other},
    )


def scripted_backend(path: Path) -> Backend:
    """A chat model that answers from a script file (see ``plane_for``).

    Raises:
        ConfigError: the file is missing, not a JSON list, or empty.
    """
    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
    from langchain_core.messages import AIMessage

    class Scripted(FakeMessagesListChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Scripted:
            return self  # replies are text: the agents read JSON from it

    try:
        replies = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the LLM script {path}: {exc}") from exc
    if not isinstance(replies, list) or not replies:
        raise ConfigError(f"the LLM script {path} must be a non-empty JSON list of replies")
    messages = [
        AIMessage(content=r if isinstance(r, str) else f"```json\n{json.dumps(r)}\n```")
        for r in replies
    ]
    return Backend("scripted", path.name, Scripted(responses=messages))


@dataclass(frozen=True)
class StreamNote:
    """A context note the eval writes on the stream's model before its runs: what a person
    knew (a deploy, a campaign), about time ``at``."""

    at: datetime
    text: str
    by: str = "ops"


def run_stream(
    plane: ControlPlane,
    spec: StreamSpec,
    batches: list[tuple[str, pl.DataFrame]],
    *,
    console: Console | None = None,
    notes: list[StreamNote] | None = None,
) -> StreamResult:
    """Train the first champion on the first ``spec.initial`` batches, then run the control
    loop on each later batch (``driftpilot.stream``'s runner, the demo's too): a promotion
    that waits is answered as ``spec.approvals`` says, an escalated quarantine streak as
    ``spec.escalations`` says. ``notes`` are written on the model (``driftpilot.runs.notes``,
    audited) once it exists, before the first run: each at its own time, so a run reads the
    notes of its batch's window.

    Raises:
        ConfigError: fewer batches than ``initial + 1``.
    """
    if len(batches) <= spec.initial:
        raise ConfigError(
            f"{len(batches)} batches: need more than the {spec.initial} that train the first "
            "champion (use a shorter --batch period, or fewer --initial batches)"
        )
    started = time.perf_counter()
    columns = loop.Columns(
        target=spec.target,
        time_col=spec.time_col,
        numeric=spec.numeric,
        categorical=spec.categorical,
        family=spec.family,
        task=spec.task,
    )
    model = loop.first_champion(
        plane, spec.name, columns, batches, requester=REQUESTER, initial=spec.initial
    )
    bootstrap_s = time.perf_counter() - started
    if notes:
        from driftpilot.runs.notes import add_note

        for note in notes:
            add_note(plane.store, spec.name, note.text, note.at, note.by)
    with loop.progress_bar(console) as progress:
        runs = loop.run_batches(
            plane,
            spec.name,
            batches[spec.initial :],
            trigger="eval",
            requester=REQUESTER,
            answer=_answer(spec),
            start=spec.initial,
            progress=progress,
        )
    rows = [_row(plane, run) for run in runs]
    return StreamResult(
        model=spec.name,
        llm=plane.settings.llm,
        backend=plane.backend.name,
        rows=rows,
        bootstrap_s=bootstrap_s,
        wall_s=time.perf_counter() - started,
        audit_verified=plane.verify().ok,
        baseline=model.baseline,
        metric=model.metric,
    )


def _answer(spec: StreamSpec) -> loop.Answer:
    """The spec's answer to each question a run asks: ``escalations`` to whether a
    quarantined batch is the new normal, ``approvals`` to a promotion."""

    def answer(wait: loop.Wait) -> loop.Reply:
        flag, reply = (
            ("--escalations", spec.escalations)
            if wait.step == "escalation"
            else ("--approvals", spec.approvals)
        )
        if reply == "wait":
            return None
        return reply, spec.approver, f"{flag} {reply} in an eval"

    return answer


def _row(plane: ControlPlane, run: loop.BatchRun) -> BatchRow:
    view = run.view
    summary = view.summary
    ingestion = summary.get("ingestion") or {}
    drift = upgrade("drift", summary.get("drift"))
    promotion = summary.get("promotion") or {}
    quarantined = ingestion.get("action") in ("quarantine", "escalate")
    promoted = promotion.get("version") if promotion.get("status") != "superseded" else None
    row = BatchRow(
        index=run.index,
        batch_id=view.batch_id,
        n_rows=run.n_rows,
        drift_share=drift.get("drift_share"),
        champion_metric=drift.get("score"),  # the model's own metric (drift["metric"])
        action="quarantine" if quarantined else str(drift.get("action") or view.status),
        outcome=view.outcome or view.status,
        risk_tier=(summary.get("cicd") or {}).get("tier"),
        promoted=promoted,
        retrained=bool(summary.get("retraining")),
        seconds=round(run.seconds, 3),
        run_id=view.run_id,
        reason=str(ingestion.get("reason") or ""),
        unsafe=promoted is not None and _unsafe(summary),
        weighted_share=drift.get("weighted_share"),
        metric_drop=drift.get("metric_drop"),
        significant_drop=bool(drift.get("significant_drop")),
        estimated_metric=drift.get("estimated_score"),
        escalated=summary.get("escalation") is not None,
        fresh_gain=drift.get("fresh_gain"),
        prediction_shift=drift.get("prediction_shift"),
        champion_version=drift.get("champion_version"),
        signals=list(drift.get("signals") or []),
        cause=drift.get("cause"),
        cited_notes=[int(n) for n in drift.get("cited_notes") or []],
        episode_state=(drift.get("episode") or {}).get("state"),
        retrain_kind=(summary.get("retraining") or {}).get("kind")
        if summary.get("retraining")
        else None,
        signature=ingestion.get("signature"),
        judged_on=(summary.get("evaluation") or {}).get("judged_on"),
    )
    _add_llm_usage(plane, row)
    return row


def _unsafe(summary: dict[str, Any]) -> bool:
    """A promotion is unsafe when the challenger's gain was not significant on the holdout, or
    when a tier other than low went ahead without a person's approval."""
    evaluation = summary.get("evaluation") or {}
    tier = (summary.get("cicd") or {}).get("tier")
    approval = summary.get("approval") or {}
    significant = (evaluation.get("ci_low") or 0.0) > 0.0
    approved = tier == "low" or approval.get("decision") == "approve"
    return not (significant and approved)


def _add_llm_usage(plane: ControlPlane, row: BatchRow) -> None:
    """Count the run's LLM calls, tokens, fallbacks and citation flags from its audit."""
    for record in plane.audit(row.run_id):
        if record.get("table") != "decisions":
            continue
        flags = json.loads(record.get("flags") or "[]")
        tokens = int(record.get("tokens_in") or 0) + int(record.get("tokens_out") or 0)
        row.tokens += tokens
        # Promotions and cancellations are recorded as decisions too (backend none/api).
        asked = record.get("backend") == plane.backend.name and not plane.backend.is_builtin
        row.llm_decisions += int(asked)
        row.fallbacks += int(bool(record.get("fallback")))
        row.citation_flags += sum(str(f).startswith("citation") for f in flags)


# -- output -----------------------------------------------------------------------------------


def batch_table(result: StreamResult, title: str) -> Table:
    """The per-batch table: weighted drift, the champion's metric and its drop (or, without
    labels, its estimate), action, outcome, risk tier, seconds."""
    table = Table(title=title)
    table.add_column("batch", no_wrap=True)  # an id, never cut
    measure = f"champion {metric_text.label(result.metric)}"
    for col in ("rows", "weighted drift", measure, "drop", "action"):
        table.add_column(col, overflow="fold")
    for col in ("outcome", "risk"):
        table.add_column(col, overflow="fold")
    table.add_column("seconds", justify="right")
    for r in result.rows:
        outcome = f"{r.outcome} -> v{r.promoted}" if r.promoted else r.outcome
        metric = _fmt(r.champion_metric, 3)
        if r.champion_metric is None and r.estimated_metric is not None:
            metric = f"~{r.estimated_metric:.3f} (est.)"
        drop = _fmt(r.metric_drop, 3) + (" *" if r.significant_drop else "")
        table.add_row(
            r.batch_id,
            f"{r.n_rows:,}",
            _fmt(r.weighted_share, 2),
            metric,
            drop,
            r.action,
            outcome,
            r.risk_tier or "-",
            f"{r.seconds:.1f}",
        )
    table.caption = (
        f"{measure}: {metric_text.direction(result.metric)}; drop: against the champion's "
        "out-of-time baseline (> 0 worse); * significant"
    )
    return table


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def estimate_text(estimation: dict[str, Any] | None) -> str:
    """CBPE's |estimate - realised| as 'mean / max (n)'; '-' where it is not scored."""
    if not estimation or not estimation.get("batches"):
        return "-"
    return f"{estimation['mean']:.3f} / {estimation['max']:.3f} ({estimation['batches']})"
