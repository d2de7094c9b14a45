"""Drift analyst: has the batch moved in a way that matters, and why? none, monitor, retrain
or recalibrate, with a cause.

Three views of drift reach the analyst: per-column effect sizes weighted by the champion's
feature importance (``weighted_share``: the part of what the model uses that moved), a
domain classifier (can a small model tell the batch from the reference, and by which
features), and the per-column tests of Evidently's preset (its HTML report, for people, is
rendered after the decision by ``driftpilot.runs.reports``). One view of
performance, in the model's own metric and direction (ROC AUC, RMSE, ...): the champion's
score on the batch with its bootstrap interval against its out-of-time baseline, or, for a
batch whose labels are still to come, an estimate without labels (CBPE from a classifier's
calibrated probabilities, DLE from a model of a regression's loss). The policy turns them,
with the model's history (recent signals, retrains, promotions), into the allowed actions.

Causes (issue 21; ``driftpilot.core.causes``). The numbers read one for every backend
(``agents.drift_causes``): a label shift (class prevalence moved, each class the same: the
champion is recalibrated, not retrained), an expected change (the same drifted columns one
seasonal period back: watched), else a world change (material drift or a performance signal)
or unknown. The policy maps the cause to the actions it allows (``causes:``). The batch's drift
episode (``driftpilot.core.episodes``) holds a retrain after ``max_failed_retrains`` losing
challengers until the evidence changes or a person asks (the run's ``request``). An LLM reads
the notes people wrote about the batch's window (``agents.drift_notes``; data, never
instructions) and may name another cause, citing the notes it rests on: the cause's actions
within the numbers' bounds (monitor always possible), so a note narrows what the numbers
allow and never widens it. ``builtin`` reads no notes: its cause is the numbers'.

The rationale must cite metric names and values that exist in the tool output; every cited
metric is checked and a mismatch is flagged in the audit record.

The LLM sees schema column names, method names and numbers only: what the report is rendered
from (paths) goes to the audit record, not to the LLM. A batch too small for any drift
test is watched (``monitor``), never called drift-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from agents.base import AgentTool, Llm, Outcome, bounded_text, narrowed
from agents.context import RunContext
from agents.drift_causes import (
    LabelShift,
    label_shift_reading,
    measure_label_shift,
    seasonal_reading,
)
from agents.drift_measures import domain_check, performance
from agents.drift_notes import compact_past, gather_notes, note_ids_shown
from agents.explain import count, describe_drop, describe_fresh_gain
from driftpilot.core.causes import CAUSE_TEXT, CAUSES, Cause
from driftpilot.core.episodes import Episode, episode_for, retrain_hold
from driftpilot.core.errors import LLMError
from driftpilot.core.metric_text import direction
from driftpilot.core.policy import Policy
from driftpilot.core.policy_drift import DriftBounds, DriftEvidence, Severity
from driftpilot.core.policy_rules import DriftAction, DriftRules
from driftpilot.core.tasks import METRICS, Metric
from driftpilot.store.notes import NoteView, notes_block
from tools.drift import DriftResult, data_drift
from tools.shift import DomainCheck, ShiftConfig, ShiftResult, effect_sizes

NAME = "drift_analyst"
YIELD_WINDOW = 4  # retrain attempts whose outcomes set P(promotion)


class DriftVerdict(BaseModel):
    """The analyst's verdict on one batch."""

    action: DriftAction = Field(
        description="What to do about the model: an action the named cause allows "
        "(`by_cause` in the bounds)."
    )
    severity: Severity = Field(description="How serious the drift is: none, low, medium, high.")
    cause: Cause | None = Field(
        None,
        description="Why the batch drifted: the bounds' `cause` (what the numbers read) unless "
        "a note you cite shows another (a deploy or ETL change: pipeline_defect; a planned "
        "campaign or a season: expected_change). Only a cause in `by_cause`. Left out: the "
        "bounds' cause.",
    )
    cited_notes: list[int] = Field(
        default_factory=list,
        description="The ids of the notes your cause rests on (only ids shown in `notes`); "
        "required when the cause differs from the bounds' cause; [] otherwise.",
    )
    cited_metrics: dict[str, float] = Field(
        description="1 to 3 metrics from `citable` with their exact values, e.g. "
        '{"weighted_share": 0.42, "metric_drop": 0.04}.'
    )
    rationale: str = bounded_text("Why, naming every cited metric with its value.")


def _metrics(
    drift: DriftResult, shift: ShiftResult, domain: DomainCheck | None, perf: dict[str, Any]
) -> dict[str, float]:
    """Every citable number: shares, each column's effect size, domain AUC, performance."""
    values = {
        "weighted_share": shift.weighted_share,
        "material_share": shift.material_share,
        "drift_share": drift.drift_share,
        "n_drifted": float(drift.n_drifted),
    }
    values.update({c.column: c.value for c in shift.columns})
    if domain is not None:
        values["domain_auc"] = domain.auc
    values.update(
        {k: v for k, v in perf.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    )
    return values


def citation_flags(decision: DriftVerdict, known: dict[str, float]) -> list[str]:
    """Cited metrics that do not exist, carry another value, or are missing from the text."""
    flags = []
    if not decision.cited_metrics:
        flags.append("citation: no metric cited")
    for name, value in decision.cited_metrics.items():
        if name not in known:
            flags.append(f"citation mismatch: {name} is not in the tool output")
        elif not _close(value, known[name]):
            flags.append(f"citation mismatch: {name}={value:g} but the tool says {known[name]:.4g}")
        elif not re.search(rf"\b{re.escape(name)}\b", decision.rationale):
            flags.append(f"citation: {name} cited but not named in the rationale")
    return flags


def _close(cited: float, actual: float) -> bool:
    return abs(cited - actual) <= max(0.01 * abs(actual), 0.006)  # cited values are rounded


class DriftAnalystEvidence(BaseModel):
    """What the analyst decides on: the three views of drift, the champion's performance on
    the batch and the model's history."""

    drift: DriftResult = Field(description="The per-column tests of Evidently's preset.")
    shift: ShiftResult = Field(description="Per-column effect sizes, weighted by importance.")
    domain: DomainCheck | None = Field(
        description="The domain classifier (None: a side too small for an honest AUC)."
    )
    performance: dict[str, Any] = Field(
        description="The champion's metric (`metric`, `higher_is_better`) on the batch: "
        "`score` with its interval and `metric_drop` against the `baseline` (> 0 worse), or "
        "the estimate without labels (`estimated_score`); `fresh_gain`: what a quick retrain "
        "wins (> 0 better)."
    )
    history: dict[str, Any] = Field(
        description="Recent signals, batches since the last retrain, retrains, promotions."
    )
    report_source: dict[str, Any] = Field(
        default_factory=dict,
        description="What Evidently's report is rendered from after the decision (the batch, "
        "its content hash, the reference window and its identity); never shown to the LLM.",
    )
    label_shift: LabelShift | None = Field(
        None, description="The class prevalence and what drift is left at the batch's shares."
    )
    past: list[dict[str, Any]] = Field(
        default_factory=list,
        description="The model's earlier run summaries, oldest first, cut to what the episode "
        "and the seasonality read (agents.drift_notes.compact_past).",
    )
    run_id: str = Field("", description="This run (an episode starting here is named by it).")
    request: dict[str, Any] | None = Field(
        None,
        description="A person's retrain request ({retrain_by, reason}): lifts an episode's hold.",
    )
    notes: list[NoteView] = Field(
        default_factory=list, description="The notes of the batch's window, oldest first."
    )


def metric_of(perf: dict[str, Any]) -> Metric:
    """The metric a performance slice is in (ROC AUC for evidence that names none: a replay
    reads older runs through driftpilot.runs.evidence_keys, which names it)."""
    return METRICS.get(str(perf.get("metric")), METRICS["roc_auc"])


@dataclass(frozen=True)
class DriftAnalystRuling:
    """The verdict, how it was reached, the policy bounds it kept and its citation flags."""

    outcome: Outcome[DriftVerdict]
    bounds: DriftBounds
    shown: dict[str, Any]  # what the agent was shown
    flags: list[str]
    episode: Episode | None = None  # the drift episode this batch belongs to


def gather(state: dict[str, Any], ctx: RunContext) -> DriftAnalystEvidence:
    """Measure the batch against the reference window (Evidently's tests, effect sizes, the
    domain classifier) and the champion on it, and count the model's history. Evidently's
    HTML report is not rendered here: ``driftpilot.runs.reports`` renders it after the
    decision, from what ``report_source`` records."""
    run_id, model = state["run_id"], state["model"]
    spec = ctx.spec(model)
    frame = pl.read_parquet(state["ingestion"]["path"])
    reference = ctx.reference(model)
    sizes = {"reference_rows": reference.height, "batch_rows": frame.height}
    drift = ctx.call(
        run_id,
        NAME,
        "drift.data_drift",
        lambda: data_drift(reference, frame, numeric=spec.numeric, categorical=spec.categorical),
        sizes,
    )
    champ = ctx.champion(model)
    importance = champ[0].report.feature_importance if champ and champ[0].report else {}
    shift = ctx.call(
        run_id,
        NAME,
        "shift.effect_sizes",
        lambda: effect_sizes(
            reference,
            frame,
            numeric=spec.numeric,
            categorical=spec.categorical,
            importance=importance,
            config=shift_config(ctx.policy.drift),
            seed=ctx.settings.seed,
        ),
        sizes,
    )
    domain = domain_check(ctx, run_id, reference, frame, spec.numeric, spec.categorical)
    perf = performance(ctx, run_id, model, frame, champ, state["ingestion"]["path"])
    past = ctx.history(model, run_id)
    history = history_counts(past, ctx.policy.retraining.persistence_n)
    labels = measure_label_shift(
        ctx,
        run_id,
        model,
        reference,
        frame,
        importance,
        shift_config(ctx.policy.drift),
        champ[0] if champ else None,
    )
    return DriftAnalystEvidence(
        drift=drift,
        shift=shift,
        domain=domain,
        performance=perf,
        history=history,
        report_source=report_source(state, ctx, champ[1] if champ else None),
        label_shift=labels,
        past=compact_past(past),
        run_id=run_id,
        request=state.get("request") or None,
        notes=gather_notes(state, ctx),
    )


def report_source(state: dict[str, Any], ctx: RunContext, version: int | None) -> dict[str, Any]:
    """What the run's report is rendered from, later: the filed batch and its content hash,
    and the reference window the decision compared it with (its path, the champion version
    it belongs to, and its size and mtime, which name that file's content without reading
    it). Reports of identical batches against the same reference are one file."""
    reference = ctx.model(state["model"]).reference_path or ""
    stat = Path(reference).stat() if reference else None
    return {
        "batch": state["ingestion"]["path"],
        "batch_sha256": state["batch"]["content_hash"],
        "reference": reference,
        "reference_version": version,
        "reference_stamp": f"{stat.st_size}:{stat.st_mtime_ns}" if stat else "",
    }


def decide(evidence: DriftAnalystEvidence, policy: Policy, llm: Llm) -> DriftAnalystRuling:
    """none, monitor, retrain or recalibrate, and the cause (pure but for ``llm``): the policy
    bounds the actions from the measurements, the history, the drift episode and the cause the
    numbers read (``read_bounds``); the LLM chooses within them, reading the notes of the
    batch's window as data. Its cause must be one ``by_cause`` names (a cause other than the
    numbers' cites the note it was read from), its action one that cause allows, its cited
    notes ones it was shown: a note can narrow the actions (to monitor), never widen them.
    Its metric citations are checked."""
    drift, shift, domain = evidence.drift, evidence.shift, evidence.domain
    perf, history = evidence.performance, evidence.history
    bounds, episode = read_bounds(evidence, policy)
    known = _metrics(drift, shift, domain, perf)
    action = _policy_action(drift, shift, bounds)
    fallback = DriftVerdict(
        action=action,
        severity=bounds.severity,
        cause=bounds.cause,
        cited_notes=[],
        cited_metrics=_cite(shift, perf),
        rationale=template(drift, shift, domain, perf, bounds, action),
    )
    note_ids = note_ids_shown(evidence.notes)
    check = verdict_check(bounds, note_ids)
    cite = citable(known, shift, perf)
    shown = {
        "weighted_share": shift.weighted_share,
        "material_share": shift.material_share,
        "shifted_columns": [c.model_dump() for c in shift.columns[:8]],
        "domain_classifier": domain.model_dump() if domain else None,
        "evidently": {
            "drift_share": drift.drift_share,
            "n_tested": drift.n_columns,
            "skipped_columns": drift.skipped_columns,
        },
        "performance": perf,
        "history": history,
        "label_shift": evidence.label_shift.model_dump() if evidence.label_shift else None,
        "episode": episode.model_dump(mode="json") if episode else None,
        "request": evidence.request,
        "signals": bounds.signals,
        "cause": bounds.cause,
        "causes": {c: CAUSE_TEXT[c] for c in bounds.by_cause},
        "notes": notes_block(evidence.notes),
        "citable": cite,
    }
    outcome = llm.decide(
        NAME,
        verdict_schema(bounds, cite, note_ids),
        shown,
        bounds.model_dump(),
        fallback,
        check=check,
        tools=_tools(drift, shift),
    )
    if outcome.decision.cause is None:  # an answer that names none keeps the numbers'
        named = outcome.decision.model_copy(update={"cause": bounds.cause})
        outcome = replace(outcome, decision=named)
    flags = citation_flags(outcome.decision, known)
    return DriftAnalystRuling(outcome, bounds, shown, flags, episode)


def read_bounds(
    evidence: DriftAnalystEvidence, policy: Policy
) -> tuple[DriftBounds, Episode | None]:
    """The policy's bounds with the cause the numbers read and the drift episode's hold, and
    the episode (None: no signal). The drift rules run first (``Policy.rule_bounds``): their
    flags say whether this batch has a signal, which the episode and the seasonality read;
    then the label shift and seasonal readings, the episode and its hold (a person's request
    lifts it), and the bounds again with both (``Policy.drift_bounds``)."""
    perf, shift = evidence.performance, evidence.shift
    plain = drift_evidence(shift.weighted_share, perf, evidence.history)
    rules = policy.rule_bounds(plain)
    drifted = [c.column for c in shift.columns if c.material]
    reading = label_shift_reading(evidence.label_shift, policy, rules, perf.get("metric"))
    if reading is None or reading.cause != "label_shift":
        seasonal = seasonal_reading(evidence.past, drifted, policy, rules, reading is not None)
        reading = seasonal or reading
    current: dict[str, Any] = {
        "run_id": evidence.run_id,
        "drifted_columns": drifted,
        "material": rules.material,
        "significant_drop": rules.significant_drop,
        "stale": rules.stale,
        # a label shift is a signature of its own (no column need move): its losing
        # recalibrations count towards the episode's hold
        "cause": reading.cause if reading is not None else None,
        **{k: perf[k] for k in ("metric_drop", "metric_drop_low", "metric_drop_high") if k in perf},
    }
    limit = policy.retraining.max_failed_retrains
    asked = (evidence.request or {}).get("retrain_by") or None
    episode = episode_for(
        evidence.past,
        current,
        max_failed_retrains=limit,
        requested_by=asked,
        run_id=evidence.run_id,
    )
    hold = retrain_hold(episode, current, limit, asked)
    bounds = policy.drift_bounds(
        plain.model_copy(update={"reading": reading, "episode_hold": hold})
    )
    if asked:
        bounds = bounds.model_copy(
            update={"signals": [*bounds.signals, _request_signal(evidence.request or {}, episode)]}
        )
    return bounds, episode


def _request_signal(request: dict[str, Any], episode: Episode | None) -> str:
    """What a person's retrain request did: it lifts an episode's hold, nothing else."""
    who, why = request.get("retrain_by"), request.get("reason")
    asked = f"{who} asked for a retrain" + (f" ({why})" if why else "")
    if episode is not None and episode.failed_retrains >= episode.max_failed_retrains:
        return f"{asked}: the episode's hold is lifted; the drift rules still decide"
    return f"{asked}: no episode holds a retrain; the drift rules decide"


def verdict_check(bounds: DriftBounds, note_ids: list[int]) -> Any:
    """The check an LLM verdict must pass (else it is asked again, then the policy's choice
    stands): a cause ``by_cause`` names, an action that cause allows, cited notes among those
    shown, and a cited note for a cause other than the numbers'."""

    def check(d: DriftVerdict) -> None:
        cause = d.cause or bounds.cause  # none named: the numbers'
        allowed = bounds.by_cause.get(cause)
        if allowed is None:
            raise LLMError(f"cause {cause!r} is not one the bounds allow: {list(bounds.by_cause)}")
        if d.action not in allowed:
            raise LLMError(
                f"action {d.action!r} outside the policy bounds {allowed} of cause {cause!r}"
            )
        unknown = sorted(set(d.cited_notes) - set(note_ids))
        if unknown:
            raise LLMError(f"cited notes {unknown} were not shown (shown: {note_ids})")
        # Naming world_change or unknown narrows nothing: only a narrowing cause needs a note.
        if cause not in (bounds.cause, "world_change", "unknown") and not d.cited_notes:
            raise LLMError(
                f"cause {cause!r} differs from what the numbers read ({bounds.cause!r}): "
                "cite the note it rests on"
            )

    return check


def apply(
    ruling: DriftAnalystRuling,
    evidence: DriftAnalystEvidence,
    state: dict[str, Any],
    ctx: RunContext,
) -> dict[str, Any]:
    """Audit the verdict and write the drift slice. The report is pending (rendered after the
    decision, audited with its sha256 in its own record), or none when no column could be
    tested; ``report`` stays null here (older runs recorded its path)."""
    drift, shift, domain = evidence.drift, evidence.shift, evidence.domain
    verdict, bounds = ruling.outcome.decision, ruling.bounds
    reasons = cause_reasons(verdict, bounds)
    ctx.record(
        state["run_id"],
        NAME,
        ruling.outcome,
        verdict.action,
        verdict.rationale,
        {
            **ruling.shown,
            "report": None,
            "report_status": "pending" if drift.n_columns else "none",
            "report_source": evidence.report_source,
            "cited_metrics": verdict.cited_metrics,
            "decided_cause": verdict.cause,
            "cause_reasons": reasons,
            "cited_notes": verdict.cited_notes,
            **replay_record(evidence),
        },
        ruling.flags,
    )
    events = ["labels requested: estimated drop with material drift"]
    return {
        "drift": {
            **drift_slice(ruling),
            "action": verdict.action,
            "severity": verdict.severity,
            "drift_share": drift.drift_share,
            "weighted_share": shift.weighted_share,
            "material": bounds.material,
            "significant_drop": bounds.significant_drop,
            "stale": bounds.stale,
            "labels_requested": bounds.labels_requested,
            "expected_gain": bounds.expected_gain,
            "signals": bounds.signals,
            "drifted_columns": [c.column for c in shift.columns if c.material],
            "skipped_columns": drift.skipped_columns,
            "domain_auc": domain.auc if domain else None,
            "report": None,
            **evidence.performance,
        },
        "events": events if bounds.labels_requested else [],
    }


def replay_record(evidence: DriftAnalystEvidence) -> dict[str, Any]:
    """What the decision's audit record keeps beyond what the LLM was shown, so that the
    what-if replay re-decides from the same history and notes: the past runs as read, the
    notes as stored (the LLM saw them as the ``notes`` block) and this run's id."""
    return {
        "note_views": [n.model_dump(mode="json") for n in evidence.notes],
        "past": evidence.past,
        "run_id": evidence.run_id,
    }


def drift_slice(ruling: DriftAnalystRuling) -> dict[str, Any]:
    """The cause and episode keys of the drift slice (the replay writes them too)."""
    verdict, bounds = ruling.outcome.decision, ruling.bounds
    episode = ruling.episode
    if episode is not None and bounds.episode_held and episode.state != "escalated":
        episode = episode.model_copy(update={"state": "escalated"})
    return {
        "cause": verdict.cause,
        "cause_reasons": cause_reasons(verdict, bounds),
        "cited_notes": list(verdict.cited_notes),
        "episode": episode.model_dump(mode="json") if episode else None,
    }


def cause_reasons(verdict: DriftVerdict, bounds: DriftBounds) -> list[str]:
    """Why the verdict's cause: the numbers' reasons, or, for a cause read from notes, the
    notes cited and what the numbers read."""
    if verdict.cause == bounds.cause:
        return list(bounds.cause_reasons)
    notes = ", ".join(f"#{i}" for i in verdict.cited_notes)
    numbers = f"the numbers read {bounds.cause}: {'; '.join(bounds.cause_reasons)}"
    return [f"read from note {notes}", numbers]


def node(state: dict[str, Any], runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    evidence = gather(state, ctx)
    return apply(decide(evidence, ctx.policy, ctx.llm), evidence, state, ctx)


def citable(known: dict[str, float], shift: ShiftResult, perf: dict[str, Any]) -> dict[str, float]:
    """The numbers a verdict may cite, flat and rounded as the LLM sees them: the drift
    shares, the domain AUC, the most shifted column and the performance figures (few: a small
    model tends to cite every name it is offered). Every one is in ``known``, so a citation
    copied from here passes the citation check."""
    names = ["weighted_share", "drift_share", "domain_auc"]
    names += [c.column for c in shift.columns[:1]]
    names += [
        k
        for k in ("score", "estimated_score", "metric_drop", "fresh_gain")
        if perf.get(k) is not None
    ]
    return {n: round(known[n], 4) for n in names if n in known}


def verdict_schema(
    bounds: DriftBounds | list[DriftAction],
    cite: dict[str, float],
    note_ids: list[int] | None = None,
) -> type[DriftVerdict]:
    """The verdict as the LLM must write it: an action some nameable cause allows, a cause
    from ``by_cause``, cited notes from those shown, and citations named from ``cite`` with
    their values (``weighted_share`` always: the drift that matters to the model). A plain
    list of actions (``bounds``) narrows the action only: any cause, no notes."""
    if isinstance(bounds, list):
        ordered, causes = list(bounds), list(CAUSES)
    else:
        actions = {a for allowed in bounds.by_cause.values() for a in allowed}
        ordered = [a for a in bounds.allowed if a in actions] or list(bounds.allowed)
        ordered += sorted(actions - set(ordered))
        causes = list(bounds.by_cause) or [bounds.cause]
    ids = list(note_ids or [])
    notes: dict[str, Any] = {"items": {"type": "integer", "enum": ids}} if ids else {"maxItems": 0}
    return narrowed(
        DriftVerdict,
        action={"enum": ordered},
        cause={"enum": causes},
        cited_notes=notes,
        cited_metrics={
            # Each value is fixed to the tool's own (an enum of one): the model chooses what to
            # cite, never what the number was. (The citation check stays for other backends.)
            "properties": {
                name: {"type": "number", "enum": [value]} for name, value in cite.items()
            },
            "required": ["weighted_share"],
            "additionalProperties": False,
        },
    )


def drift_evidence(
    weighted_share: float, perf: dict[str, Any], history: dict[str, Any]
) -> DriftEvidence:
    """What the drift policy weighs, from the analyst's measurements (the what-if replay
    builds it from the recorded ones)."""
    return DriftEvidence(
        weighted_share=weighted_share,
        labelled=perf.get("score") is not None,
        drop=perf.get("metric_drop"),
        drop_low=perf.get("metric_drop_low"),
        estimated=perf.get("score") is None and perf.get("estimated_score") is not None,
        fresh_gain=perf.get("fresh_gain"),
        fresh_gain_low=perf.get("fresh_gain_low"),
        fresh_gain_high=perf.get("fresh_gain_high"),
        **history,
    )


def shift_config(rules: DriftRules) -> ShiftConfig:
    """The policy's effect-size measures and thresholds."""
    return ShiftConfig(
        numeric_measure=rules.numeric_measure,
        categorical_measure=rules.categorical_measure,
        wasserstein_threshold=rules.wasserstein_threshold,
        psi_threshold=rules.psi_threshold,
        jensenshannon_threshold=rules.jensenshannon_threshold,
    )


def history_counts(past: list[dict[str, Any]], persistence_n: int) -> dict[str, Any]:
    """What the policy counts from the model's earlier runs (summaries, oldest first): drift
    or drop signals in the last ``persistence_n - 1`` batches (a quarantined batch counts as a
    batch without a signal), batches since the last retrain attempt, retrains, promotions."""
    drifts = [summary.get("drift") or {} for summary in past]
    recent = drifts[-(persistence_n - 1) :] if persistence_n > 1 else []
    attempts = [i for i, d in enumerate(drifts) if d.get("action") == "retrain"]
    # Yield over the latest attempts only: an old streak of rejections must not starve the
    # model of retrains for ever.
    latest = attempts[-YIELD_WINDOW:]
    return {
        "recent_signals": sum(
            bool(d.get("material") or d.get("significant_drop") or d.get("stale")) for d in recent
        ),
        "batches_since_retrain": len(drifts) - 1 - attempts[-1] if attempts else None,
        "retrains": len(latest),
        "promotions": sum(
            (past[i].get("promotion") or {}).get("status") == "promoted" for i in latest
        ),
    }


def _tools(drift: DriftResult, shift: ShiftResult) -> list[AgentTool]:
    def get_column_drift(column: str) -> dict[str, Any]:
        """One column's effect size (measure, value, threshold, material, importance) and
        Evidently's test on it (method, score, threshold, drifted)."""
        effect = next((c for c in shift.columns if c.column == column), None)
        test = next((c for c in drift.columns if c.column == column), None)
        if effect is None and test is None:
            return {"error": f"no column {column!r}"}
        return {
            "effect": effect.model_dump() if effect else None,
            "evidently": test.model_dump() if test else None,
        }

    def list_drifted_columns() -> list[str]:
        """Columns that shifted materially (effect size at or above its threshold), most
        shifted first."""
        return [c.column for c in shift.columns if c.material]

    return [
        AgentTool("get_column_drift", get_column_drift),
        AgentTool("list_drifted_columns", list_drifted_columns),
    ]


def _cite(shift: ShiftResult, perf: dict[str, Any]) -> dict[str, float]:
    cited = {"weighted_share": shift.weighted_share}
    if shift.columns and shift.columns[0].material:
        cited[shift.columns[0].column] = round(shift.columns[0].value, 4)
    measured = "score" if perf.get("score") is not None else "estimated_score"
    for key in (measured, "metric_drop"):
        if perf.get(key) is not None:
            cited[key] = round(perf[key], 4)
    return cited


def _policy_action(drift: DriftResult, shift: ShiftResult, bounds: DriftBounds) -> DriftAction:
    """The policy's choice, except that a batch with no testable column is watched: 'none'
    would report an absence of drift that nobody measured."""
    nothing_measured = drift.n_columns == 0 and not shift.columns
    if nothing_measured and "monitor" in bounds.allowed:
        return "monitor"
    return bounds.default


def template(
    drift: DriftResult,
    shift: ShiftResult,
    domain: DomainCheck | None,
    perf: dict[str, Any],
    bounds: DriftBounds,
    action: DriftAction,
) -> str:
    material = [c for c in shift.columns if c.material]
    parts = [
        f"weighted_share={shift.weighted_share:.4f} ({len(material)}/{len(shift.columns)} "
        f"columns shifted materially; Evidently drift_share={drift.drift_share:.4f})"
    ]
    if drift.skipped_columns:
        parts.append(f"{count(len(drift.skipped_columns), 'column')} not tested (too few values)")
    if drift.n_columns == 0 and not shift.columns:
        parts.append(f"no drift test possible on {drift.n_current} rows: watch the next batch")
    if material:
        top = material[0]
        parts.append(f"most shifted {top.column}={top.value:.4f} ({top.measure})")
    if domain is not None:
        parts.append(f"domain classifier AUC {domain.auc:.3f}")
    info = metric_of(perf)
    measured = perf.get("score") is not None
    if measured:
        parts.append(
            f"champion score={perf['score']:.4f}{_interval(perf, 'score')} "
            f"({info.label}, {direction(info.name)})"
        )
    if not measured and perf.get("estimated_score") is not None:
        method = str(perf.get("estimate_method") or "estimate").upper()
        parts.append(
            f"no labels: estimated_score={perf['estimated_score']:.4f} "
            f"({info.label} by {method}, {direction(info.name)})"
        )
    if perf.get("metric_drop") is not None and perf.get("metric_drop_low") is not None:
        # Measured on labels, or estimated without them: the words say which.
        parts.append(
            describe_drop(
                perf["metric_drop"], perf["metric_drop_low"], info, estimated=not measured
            )
        )
    elif perf.get("metric_drop") is not None:  # no interval (its bootstrap was skipped)
        parts.append(f"metric_drop={perf['metric_drop']:.4f} (no interval)")
    if perf.get("fresh_gain") is not None and perf.get("fresh_gain_low") is not None:
        parts.append(describe_fresh_gain(perf["fresh_gain"], perf["fresh_gain_low"], info))
    elif perf.get("fresh_gain") is not None:
        parts.append(f"fresh_gain={perf['fresh_gain']:.4f} (no interval)")
    signals = "; ".join(bounds.signals) or "no signal"
    policy = f"Policy: {action} (severity {bounds.severity})"
    return f"{'; '.join(parts)}. Signals: {signals}. Cause: {bounds.cause}. {policy}."


def _interval(perf: dict[str, Any], key: str) -> str:
    """`` [low, high]`` of a measured number, '' when its interval was not computed (the
    bootstrap is skipped when its answer cannot change the action)."""
    low, high = perf.get(f"{key}_low"), perf.get(f"{key}_high")
    return "" if low is None or high is None else f" [{low:.4f}, {high:.4f}]"
