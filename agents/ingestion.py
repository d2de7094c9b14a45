"""Ingestion agent: accept the batch, or quarantine it with a reason (never drop it).

Batch data never reaches the LLM: it sees the quality verdict only, whose findings name schema
columns and give counts and shares (tools.quality). A batch failing with a pipeline defect's
signature (tools.defects: a unit change, a burst of nulls or of a default value, duplicated
rows, a column gone constant) is quarantined with the signature named: in the filed reason
and as ``ingestion.signature``, which the audit records too. Duplicated keys are not read: a
model's spec (``DatasetSpec``, ``ManagedModel``) names no key column, so whole rows repeated
stand for them. The reference is profiled along the model's time column, so a column constant
over a batch's short span (an hour-of-day in an hourly batch) is judged against the
reference's own stretches of that span. The names of columns outside the schema
and the batch id go to the audit record, not to the LLM, so instructions hidden in data, in a
header or in a file name stay data.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import polars as pl
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field

from agents.base import AgentTool, Llm, Outcome, bounded_text, narrowed
from agents.context import RunContext
from agents.explain import count
from driftpilot.core.errors import ApprovalError, LLMError
from driftpilot.core.faults import fault_point
from driftpilot.core.policy import Policy
from driftpilot.store.audit import now
from driftpilot.store.models import BatchRecord
from tools.data import Frame, conform, write_parquet_atomic
from tools.quality import QualityVerdict, check_batch

NAME = "ingestion"


class IngestionDecision(BaseModel):
    """Whether the batch may be used."""

    action: Literal["accept", "quarantine"] = Field(description="accept, or quarantine the batch.")
    reason: str = bounded_text("For quarantine: the reason stored with the batch.", 120)
    rationale: str = bounded_text("Why, citing the quality findings.")


def decision_schema_for(allowed: Sequence[str]) -> type[IngestionDecision]:
    """The decision as the LLM must write it: an action the policy allows."""
    return narrowed(IngestionDecision, action={"enum": list(allowed)})


def _tools(verdict: QualityVerdict) -> list[AgentTool]:
    def list_quality_issues() -> list[dict[str, Any]]:
        """Every quality finding of the batch: check, severity, column, value, message."""
        return [i.model_dump() for i in verdict.issues]

    return [AgentTool("list_quality_issues", list_quality_issues)]


class IngestionEvidence(BaseModel):
    """What the ingestion agent decides on: the batch's quality verdict (and, for ``apply``
    only, the batch itself and where an earlier attempt filed it)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    verdict: QualityVerdict = Field(description="The quality checks' findings on the batch.")
    conversions: list[str] = Field(
        default_factory=list, description="Types conformed to the reference window's schema."
    )
    frame: pl.LazyFrame | pl.DataFrame | None = Field(
        None,
        exclude=True,
        description="The conformed batch, a scan of its file (apply only; absent in a replay).",
    )
    filed: Any = Field(
        None, exclude=True, description="This run's batch record, if a crash left one (apply only)."
    )
    target: str = Field("", description="The label column (apply only).")
    label_dtype: Any = Field(None, exclude=True, description="The label's type (apply only).")
    time_col: str = Field("", description="The time column (apply only).")

    def shown(self) -> dict[str, Any]:
        """What the agent is shown (and the audit records): no batch data, no names of columns
        outside the schema; the pipeline defect signatures the errors carry ('' for none)."""
        return {
            "verdict": self.verdict.model_dump(exclude={"extra_columns"}),
            "errors": [i.message for i in self.verdict.errors],
            "signature": self.verdict.signature(),
        }


@dataclass(frozen=True)
class IngestionRuling:
    """The ingestion decision, how it was reached and the reason a quarantine is filed with."""

    outcome: Outcome[IngestionDecision]
    reason: str
    signature: str = ""  # the pipeline defect signatures of a quarantine ('' for none)


def gather(state: dict[str, Any], ctx: RunContext) -> IngestionEvidence:
    """Scan the batch (or the copy an interrupted attempt filed), conform its types to the
    reference window and run the quality checks (audited). The batch is never read whole:
    the checks stream over the scan, and the evidence carries the (conformed) scan."""
    run_id, model = state["run_id"], state["model"]
    batch = state["batch"]
    # A crash after the batch was filed and before the effect: the replay reads the filed
    # copy (the incoming file is gone) and does not count the batch as its own duplicate.
    filed = ctx.store.list_rows(BatchRecord, BatchRecord.run_id == run_id, limit=1)
    spec = ctx.spec(model)
    reference = ctx.reference(model)
    # A batch that only spells a type differently (a CSV's UTC times, integers for floats)
    # is conformed to the window's schema, so an accepted batch can always join it.
    frame, conversions = conform(
        pl.scan_parquet(filed[0].path if filed else batch["path"]), reference.schema
    )
    seen = ctx.store.seen_hashes(model) - {r.content_hash for r in filed}
    # The intake hashed the incoming file: the very rows checked here, unless conformed.
    digest = None if filed or conversions else batch.get("content_hash")
    profile = ctx.reference_profile(model, reference)
    verdict = ctx.call(
        run_id,
        NAME,
        "quality.check_batch",
        lambda: check_batch(
            frame,
            profile,
            seen_hashes=seen,
            time_columns=[spec.time_col],
            label_columns=[spec.target],
            hard_limits=ctx.policy.hard_limits(model),
            digest=digest,
        ),
        {"batch_id": batch["batch_id"], "rows": batch["n_rows"]},
    )
    return IngestionEvidence(
        verdict=verdict,
        conversions=conversions,
        frame=frame,
        filed=filed[0] if filed else None,
        target=spec.target,
        label_dtype=reference.schema[spec.target],
        time_col=spec.time_col,
    )


def decide(evidence: IngestionEvidence, policy: Policy, llm: Llm) -> IngestionRuling:
    """Accept or quarantine (pure but for ``llm``): the policy allows accepting only a batch
    that passed every check; the LLM chooses within that."""
    verdict = evidence.verdict
    allowed = policy.ingestion_allowed(verdict.ok)
    fallback = IngestionDecision(
        action="accept" if verdict.ok else "quarantine",
        reason="" if verdict.ok else verdict.reason(),
        rationale=template(verdict),
    )

    def check(d: IngestionDecision) -> None:
        if d.action not in allowed:
            raise LLMError(f"action {d.action!r} not allowed; allowed: {allowed}")

    outcome = llm.decide(
        NAME,
        decision_schema_for(allowed),
        evidence.shown(),
        {"allowed": allowed},
        fallback,
        check=check,
        tools=_tools(verdict),
    )
    signature = verdict.signature() if outcome.decision.action == "quarantine" else ""
    return IngestionRuling(outcome, _named(outcome.decision.reason, verdict), signature)


def _named(reason: str, verdict: QualityVerdict) -> str:
    """The reason a quarantine is filed with: the agent's words (or the failed checks'), led by
    the defect signatures unless the words already name each one."""
    reason = reason or verdict.reason()
    missing = [s for s in verdict.signature().split("; ") if s and s not in reason]
    return f"{'; '.join(missing)}: {reason}" if missing else reason


def apply(
    ruling: IngestionRuling, evidence: IngestionEvidence, state: dict[str, Any], ctx: RunContext
) -> dict[str, Any]:
    """File the batch as decided (or keep an earlier filing), put a quarantine too many in a
    row to a person, audit, and record the effect (once per run)."""
    run_id, model = state["run_id"], state["model"]
    verdict, decision, frame = evidence.verdict, ruling.outcome.decision, evidence.frame
    assert frame is not None
    # Counted before this batch is filed: the quarantines in a row that it would extend.
    streak = _quarantine_streak(ctx, model, run_id)
    # Read before filing: an accepted batch's incoming file is gone after it.
    span = time_range(frame, evidence.time_col)  # where charts place the batch
    if evidence.filed is not None:  # the batch was filed before the crash: that filing stands
        result = _filed(evidence.filed, verdict)
    else:
        labelled = with_label_column(frame, evidence.target, evidence.label_dtype)
        # Nothing conformed, labels present: the incoming file already holds the rows to file.
        same = labelled is frame and not evidence.conversions
        filed = None if same else labelled
        result = _file_batch(ctx, state, filed, verdict, decision.action, ruling.reason)
    result["conversions"] = evidence.conversions
    result["time_range"] = span
    if result["action"] == "quarantine" and ruling.signature:
        result["signature"] = ruling.signature
    if result["action"] == "quarantine" and _escalates(ctx, verdict, streak):
        result = _escalate(ctx, state, verdict, result, streak, ruling.reason)
    fault_point("after_filing")  # tests crash here: filed, not yet decided on record
    audited = {
        **evidence.shown(),
        "extra_columns": verdict.extra_columns,
        "conversions": evidence.conversions,
    }
    ctx.record(run_id, NAME, ruling.outcome, decision.action, decision.rationale, audited)
    ctx.store.record_effect(run_id, NAME, result)
    return {"ingestion": result}


def node(state: dict[str, Any], runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    done = ctx.store.effect(state["run_id"], NAME)
    if done is not None:  # replay after a resume: the batch was already filed
        return {"ingestion": done}
    evidence = gather(state, ctx)
    return apply(decide(evidence, ctx.policy, ctx.llm), evidence, state, ctx)


# Quarantine reasons a person may overrule ("this is the new normal"). A schema break, an empty
# or a duplicate batch could not join a training window whatever anyone says. The defect
# signatures are values too: a pipeline that now sends Fahrenheit for good is a person's call.
ESCALATABLE = frozenset(
    {
        "null_spike",
        "hard_limit",
        "non_finite",
        "constant_column",
        "unit_change",
        "default_burst",
        "duplicate_rows",
        "duplicate_keys",
    }
)


def _quarantine_streak(ctx: RunContext, model: str, run_id: str) -> int:
    """Quarantines in a row of ``model``'s batches, latest first (this run's own excluded)."""
    records = ctx.store.list_rows(BatchRecord, BatchRecord.model == model, order=BatchRecord.id)
    streak = 0
    for record in reversed([r for r in records if r.run_id != run_id]):
        if record.status != "quarantined":
            break
        streak += 1
    return streak


def _escalates(ctx: RunContext, verdict: QualityVerdict, streak: int) -> bool:
    """After ``max_consecutive_quarantines`` in a row, a batch quarantined only for its values,
    or only on the agent's judgement (it passed every check), is put to a person: a model
    must not stay blind for batch after batch on data that may well be the new normal."""
    # True too for a batch without errors: only the agent's judgement quarantined it.
    overrulable = all(i.check in ESCALATABLE for i in verdict.errors)
    return overrulable and streak >= ctx.policy.ingestion.max_consecutive_quarantines


def accept_batch_action(model: str, batch_id: str, content_hash: str) -> dict[str, Any]:
    """What an escalation's approval authorises: this batch (by content) of this model."""
    return {
        "action": "accept_batch",
        "model": model,
        "batch_id": batch_id,
        "content_hash": content_hash,
    }


def _escalate(
    ctx: RunContext,
    state: dict[str, Any],
    verdict: QualityVerdict,
    result: dict[str, Any],
    streak: int,
    reason: str,
) -> dict[str, Any]:
    run_id, model, batch = state["run_id"], state["model"], state["batch"]
    action = accept_batch_action(model, batch["batch_id"], verdict.content_hash)
    why = (
        f"fails too: {verdict.reason()}"
        if verdict.errors
        else f"passed every check, but the ingestion agent quarantined it: {reason}"
    )
    description = (
        f"Model {model} has had {streak} batches quarantined in a row, and this one {why}. "
        "Accept it as the new normal (the loop goes on with it: drift analysis, and a "
        "retrain if the policy calls for one), or keep it quarantined?"
    )
    request = {
        "action_request": {"action": "accept_batch", "args": {**action, "run_id": run_id}},
        "config": {
            "allow_accept": True,
            "allow_ignore": True,
            "allow_respond": True,
            "allow_edit": False,
        },
        "description": description,
    }
    ctx.store.request_approval(run_id, state["requested_by"], request, action, step="escalation")
    return {**result, "action": "escalate", "quarantine_streak": streak}


def escalation(state: dict[str, Any], runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Wait for a person's answer to an escalation; on approval file the quarantined batch as
    accepted and hand it to the drift analyst. Runs again from its top on resume: the answer
    is read from the audit store, and the filing is done once per run."""
    ctx = runtime.context
    run_id, model, batch = state["run_id"], state["model"], state["batch"]
    rows = ctx.store.approval_rows(run_id)
    if len(rows) < 2:
        fault_point("before_interrupt")
        interrupt(json.loads(rows[0].payload))
        rows = ctx.store.approval_rows(run_id)
    if len(rows) < 2:
        raise ApprovalError(f"run {run_id} was resumed without a recorded escalation answer")
    answer = rows[1]
    content_hash = json.loads(rows[0].payload)["action"]["content_hash"]
    action = accept_batch_action(model, batch["batch_id"], content_hash)
    problem = ctx.store.approval_problem(run_id, action)
    accepted = answer.decision == "approve" and problem is None
    asked = {"decision": answer.decision, "approver": answer.principal, "comment": answer.comment}
    if not accepted:
        why = problem if answer.decision == "approve" else f"rejected by {answer.principal}"
        ctx.record(
            run_id,
            "escalation",
            Outcome(None, "none", ""),
            "keep_quarantined",
            f"The batch stays quarantined: {why}.",
            {**asked, "problem": problem},
        )
        return {"escalation": {**asked, "accepted": False}}
    done = ctx.store.effect(run_id, "escalation")
    admitted = done if done is not None else _admit(ctx, state, answer.principal)
    return {
        "ingestion": {**state["ingestion"], **admitted},
        "escalation": {**asked, "accepted": True},
        "events": [f"batch accepted as the new normal by {answer.principal}"],
    }


def _admit(ctx: RunContext, state: dict[str, Any], approver: str) -> dict[str, Any]:
    """File the quarantined copy, conformed, as an accepted batch (a second batch record: the
    quarantine record stays, as every record does)."""
    run_id, model = state["run_id"], state["model"]
    spec = ctx.spec(model)
    reference = ctx.reference(model)
    quarantined = state["ingestion"]["path"]
    frame, _ = conform(pl.scan_parquet(quarantined), reference.schema)
    frame = with_label_column(frame, spec.target, reference.schema[spec.target])
    assert ctx.settings.batches_dir is not None
    folder = ctx.settings.batches_dir / model / "accepted"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(quarantined).name
    write_parquet_atomic(frame, target)
    records = ctx.store.list_rows(BatchRecord, BatchRecord.run_id == run_id, order=BatchRecord.id)
    record = records[0]
    # A crash after the accepted record and before the effect: the record stands, once.
    fault_point("before_admission_record")
    if not any(r.status == "accepted" for r in records):
        _add_accepted(ctx, record, target, state["ingestion"].get("risky_warnings", []))
    admitted = {"action": "accept", "reason": "", "path": str(target), "accepted_by": approver}
    fault_point("after_admission_record")
    ctx.record(
        run_id,
        "escalation",
        Outcome(None, "none", ""),
        "accept_as_new_normal",
        f"{approver} accepted the batch as the new normal (it had failed: "
        f"{record.reason}); it joins the accepted batches.",
        {"approver": approver, "path": str(target), "quarantine_reason": record.reason},
    )
    ctx.store.record_effect(run_id, "escalation", admitted)
    return admitted


def _add_accepted(ctx: RunContext, record: BatchRecord, target: Path, risky: list[str]) -> None:
    ctx.store.add(
        BatchRecord(
            model=record.model,
            batch_id=record.batch_id,
            content_hash=record.content_hash,
            n_rows=record.n_rows,
            path=str(target),
            status="accepted",
            # As for any accepted batch, its risky warnings travel into the windows it joins.
            reason=json.dumps(risky),
            run_id=record.run_id,
            created_at=now(),
        )
    )


def _file_batch(
    ctx: RunContext,
    state: dict[str, Any],
    frame: Frame | None,
    verdict: QualityVerdict,
    action: str,
    reason: str,
) -> dict[str, Any]:
    batch, model = state["batch"], state["model"]
    assert ctx.settings.batches_dir is not None
    folder = ctx.settings.batches_dir / model / ("accepted" if action == "accept" else "quarantine")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{batch['batch_id']}-{state['run_id'][:8]}.parquet"
    if action == "accept" and frame is not None:  # the window reads the conformed types
        write_parquet_atomic(frame, target)
    elif action == "accept":  # the incoming file as it is: linked, not written again
        _link(Path(batch["path"]), target)
    else:  # a quarantined batch is kept exactly as it came
        shutil.copyfile(batch["path"], target)
    risky = [i.check for i in verdict.warnings if i.check in ctx.policy.risk.risky_warning_checks]
    ctx.store.add(
        BatchRecord(
            model=model,
            batch_id=batch["batch_id"],
            content_hash=verdict.content_hash,
            n_rows=verdict.n_rows,
            path=str(target),
            status="accepted" if action == "accept" else "quarantined",
            reason=reason if action != "accept" else json.dumps(risky),
            run_id=state["run_id"],
            created_at=now(),
        )
    )
    if action == "accept":
        Path(batch["path"]).unlink(missing_ok=True)
    return {
        "action": action,
        "reason": "" if action == "accept" else reason,
        "path": str(target),
        "warnings": [i.message for i in verdict.warnings],
        "risky_warnings": risky,
    }


def _link(source: Path, target: Path) -> None:
    """``target`` names the same file as ``source`` (the caller unlinks ``source`` once the
    filing is on record, so a crash before that finds the batch where it was); a copy on
    another file system."""
    partial = target.with_suffix(".parquet.tmp")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:  # another device, or links not supported
        shutil.copyfile(source, partial)
    partial.replace(target)


def time_range(frame: Frame, time_col: str) -> dict[str, Any] | None:
    """The batch's first and last time (ISO 8601, or seconds for a numeric time column), or
    None when the column is missing, empty or not a time (a batch quarantined for it)."""
    lazy = frame.lazy()
    if time_col not in lazy.collect_schema():
        return None
    column = pl.col(time_col)
    row = lazy.select(
        column.min().alias("first"),
        column.max().alias("last"),
        column.null_count().alias("nulls"),
        pl.len().alias("rows"),
    ).collect(engine="streaming")
    first, last, nulls, rows = row.row(0)
    if nulls == rows:
        return None
    if isinstance(first, date) and isinstance(last, date):  # a datetime is a date too
        return {"start": first.isoformat(), "end": last.isoformat()}
    numbers = (int, float)
    if isinstance(first, numbers) and isinstance(last, numbers) and not isinstance(first, bool):
        return {"start": float(first), "end": float(last)}
    return None


def with_label_column(frame: Frame, target: str, dtype: pl.DataType) -> Frame:
    """A batch whose labels come later is filed with an all-null target column, so that it
    can join a window (which keeps only labelled rows) and take its labels later. A scan
    stays a scan."""
    lazy = frame.lazy()
    if target in lazy.collect_schema():
        labelled = lazy.select(pl.col(target).is_not_null().any()).collect(engine="streaming")
        if labelled.item():
            return frame
    # missing, or empty (an empty CSV column reads as text): an empty column of the label type
    out = lazy.with_columns(pl.lit(None, dtype=dtype).alias(target))
    return out if isinstance(frame, pl.LazyFrame) else out.collect()


def _filed(record: BatchRecord, verdict: QualityVerdict) -> dict[str, Any]:
    accepted = record.status == "accepted"
    return {
        "action": "accept" if accepted else "quarantine",
        "reason": "" if accepted else record.reason,
        "path": record.path,
        "warnings": [i.message for i in verdict.warnings],
        "risky_warnings": json.loads(record.reason) if accepted else [],
    }


def template(verdict: QualityVerdict) -> str:
    """The policy's rationale: accept a batch that passed every check, else quarantine it."""
    if verdict.ok:
        extra = f" with {count(len(verdict.warnings), 'warning')}" if verdict.warnings else ""
        rows = count(verdict.n_rows, "row")
        return f"Batch of {rows} passed every quality check{extra}: accept."
    failed = count(len(verdict.errors), "quality check")
    return f"Batch failed {failed} ({verdict.reason()}): quarantine."
