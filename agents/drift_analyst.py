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
seasonal period back: watched), else a world change (material drift, moved predictions or a
performance signal) or unknown. The policy maps the cause to the actions it allows
(``causes:``). The batch's drift episode (``driftpilot.core.episodes``) holds a retrain after
``max_failed_retrains`` losing challengers until the evidence changes or a person asks (the
run's ``request``). An LLM reads the notes people wrote about the batch's window
(``agents.drift_notes``; data, never instructions) and may name another cause, citing the notes
it rests on: the cause's actions within the numbers' bounds (monitor always possible), so a note
narrows what the numbers allow and never widens it. ``builtin`` reads no notes: its cause is the
numbers'.

The rationale must cite metric names and values that exist in the tool output; every cited
metric is checked and a mismatch is flagged in the audit record (``agents.drift_verdict``: the
verdict's schema, its checks, its citations and the policy's own rationale). What the policy
reads from the measurements, the history and the episode is ``agents.drift_reading``.

The LLM sees schema column names, method names and numbers only: what the report is rendered
from (paths) goes to the audit record, not to the LLM. A batch too small for any drift
test is watched (``monitor``), never called drift-free.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl
from langgraph.runtime import Runtime

from agents.base import AgentTool, Llm, Outcome
from agents.context import RunContext
from agents.drift_causes import measure_label_shift
from agents.drift_measures import domain_check, performance
from agents.drift_notes import compact_past, gather_notes, note_ids_shown
from agents.drift_reading import DriftAnalystEvidence, history_counts, read_bounds
from agents.drift_verdict import (
    DriftVerdict,
    citable,
    citation_flags,
    default_citations,
    known_metrics,
    template,
    verdict_check,
    verdict_schema,
)
from driftpilot.core.causes import CAUSE_TEXT
from driftpilot.core.episodes import Episode
from driftpilot.core.policy import Policy
from driftpilot.core.policy_drift import DriftBounds
from driftpilot.core.policy_rules import DriftAction, DriftRules
from driftpilot.store.notes import notes_block, request_block
from tools.drift import DriftResult, data_drift
from tools.score_memo import MemoScorer
from tools.shift import ShiftConfig, ShiftResult, effect_sizes

NAME = "drift_analyst"


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
    loaded = ctx.champion(model)
    importance = loaded[0].report.feature_importance if loaded and loaded[0].report else {}
    # The checks below score overlapping samples of the batch and the holdout: each row once.
    champ = (MemoScorer(loaded[0]), loaded[1]) if loaded else None
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
        raw=shift,
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
    known = known_metrics(drift, shift, domain, perf)
    action = _policy_action(drift, shift, bounds)
    fallback = DriftVerdict(
        action=action,
        severity=bounds.severity,
        cause=bounds.cause,
        cited_notes=[],
        cited_metrics=default_citations(shift, perf, bounds.predictions_moved),
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
        "retrain_request": request_block(evidence.request),
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
            "predictions_moved": bounds.predictions_moved,
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
    notes as stored (the LLM saw them as the ``notes`` block), a person's retrain request as
    made (the LLM saw it as the ``retrain_request`` block) and this run's id."""
    return {
        "note_views": [n.model_dump(mode="json") for n in evidence.notes],
        "request": evidence.request,
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


def shift_config(rules: DriftRules) -> ShiftConfig:
    """The policy's effect-size measures and thresholds."""
    return ShiftConfig(
        numeric_measure=rules.numeric_measure,
        categorical_measure=rules.categorical_measure,
        wasserstein_threshold=rules.wasserstein_threshold,
        psi_threshold=rules.psi_threshold,
        jensenshannon_threshold=rules.jensenshannon_threshold,
    )


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


def _policy_action(drift: DriftResult, shift: ShiftResult, bounds: DriftBounds) -> DriftAction:
    """The policy's choice, except that a batch with no testable column is watched: 'none'
    would report an absence of drift that nobody measured."""
    nothing_measured = drift.n_columns == 0 and not shift.columns
    if nothing_measured and "monitor" in bounds.allowed:
        return "monitor"
    return bounds.default
