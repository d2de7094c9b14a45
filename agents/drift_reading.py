"""What the drift policy reads from the analyst's measurements: the evidence the analyst
decides on, the model's history counted from its earlier runs (``history_counts``), and the
bounds with the cause the numbers read and the drift episode's hold (``read_bounds``).

Pure but for the policy: the what-if replay rebuilds the same evidence from a run's record and
reads the same bounds (``driftpilot.replay``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from agents.drift_causes import LabelShift, label_shift_reading, seasonal_reading
from driftpilot.core.episodes import Episode, episode_for, retrain_hold
from driftpilot.core.policy import Policy
from driftpilot.core.policy_drift import DriftBounds, DriftEvidence
from driftpilot.store.notes import NoteView
from tools.drift import DriftResult
from tools.shift import DomainCheck, ShiftResult

YIELD_WINDOW = 4  # retrain attempts whose outcomes set P(promotion)


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
        "wins (> 0 better); `prediction_shift`: how far its predictions moved from those on "
        "its holdout (normed Wasserstein; `prediction_p_value`: its K-S p-value)."
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
    """What a person's retrain request did: it lifts an episode's hold, nothing else. Its
    reason is untrusted text: it stays out of the signals (the LLM reads it only inside the
    delimited ``request_block``); the name is the authenticated principal's."""
    asked = f"a person ({request.get('retrain_by')}) asked for a retrain"
    if episode is not None and episode.failed_retrains >= episode.max_failed_retrains:
        return f"{asked}: the episode's hold is lifted; the drift rules still decide"
    return f"{asked}: no episode holds a retrain; the drift rules decide"


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
        prediction_shift=perf.get("prediction_shift"),
        prediction_p_value=perf.get("prediction_p_value"),
        holdout_too_small=perf.get("holdout_too_small"),
        **history,
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
