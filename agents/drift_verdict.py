"""The drift analyst's verdict: what an LLM must write (``verdict_schema``) and the check it
must pass (``verdict_check``), the numbers it may cite and how its citations are checked, and
the policy's own verdict in words (``template``, the deterministic fallback's rationale).

A cause other than the numbers' must cite a note it was shown; an action must be one that
cause allows (``by_cause``); a cited metric must exist in the tool output with its value and be
named in the rationale. A mismatch is flagged in the audit record, never silently dropped.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from agents.base import bounded_text, narrowed
from agents.explain import count, describe_drop, describe_fresh_gain
from driftpilot.core.causes import CAUSES, Cause
from driftpilot.core.errors import LLMError
from driftpilot.core.metric_text import direction
from driftpilot.core.policy_drift import DriftBounds, Severity
from driftpilot.core.policy_rules import DriftAction
from driftpilot.core.tasks import METRICS, Metric
from tools.drift import DriftResult
from tools.shift import DomainCheck, ShiftResult

_NARROW_NOTHING = ("world_change", "unknown")  # causes that need no note to be named


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


def known_metrics(
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


def metric_of(perf: dict[str, Any]) -> Metric:
    """The metric a performance slice is in (ROC AUC for evidence that names none: a replay
    reads older runs through driftpilot.runs.evidence_keys, which names it)."""
    return METRICS.get(str(perf.get("metric")), METRICS["roc_auc"])


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
        if cause not in (bounds.cause, *_NARROW_NOTHING) and not d.cited_notes:
            raise LLMError(
                f"cause {cause!r} differs from what the numbers read ({bounds.cause!r}): "
                "cite the note it rests on"
            )

    return check


def citable(known: dict[str, float], shift: ShiftResult, perf: dict[str, Any]) -> dict[str, float]:
    """The numbers a verdict may cite, flat and rounded as the LLM sees them: the drift
    shares, the domain AUC, the most shifted column and the performance figures (few: a small
    model tends to cite every name it is offered). Every one is in ``known``, so a citation
    copied from here passes the citation check."""
    names = ["weighted_share", "drift_share", "domain_auc", "prediction_shift"]
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
    ids = list(note_ids or [])
    if isinstance(bounds, list):
        ordered, causes = list(bounds), list(CAUSES)
    else:
        causes = list(bounds.by_cause) or [bounds.cause]
        if not ids:
            # A cause that narrows the numbers' must cite a note (``check``): with none shown,
            # only causes that narrow nothing can be named. A 0.5B model named
            # pipeline_defect in 9 of 11 note-less batches, each a fallback.
            causes = [c for c in causes if c in _NARROW_NOTHING or c == bounds.cause]
            causes = causes or [bounds.cause]
        actions = {a for c in causes for a in bounds.by_cause.get(c, bounds.allowed)}
        ordered = [a for a in bounds.allowed if a in actions] or list(bounds.allowed)
        ordered += sorted(actions - set(ordered))
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


def default_citations(
    shift: ShiftResult, perf: dict[str, Any], moved: bool = False
) -> dict[str, float]:
    """The fallback verdict's citations: the weighted share, the most shifted column when it
    is material, the predictions' shift when it counts (``drift.prediction_threshold``: the
    policy's ``predictions_moved`` reads the same number), and the measured (else estimated)
    score and the drop, rounded as cited."""
    cited = {"weighted_share": shift.weighted_share}
    if moved:
        cited["prediction_shift"] = round(perf["prediction_shift"], 4)
    if shift.columns and shift.columns[0].material:
        cited[shift.columns[0].column] = round(shift.columns[0].value, 4)
    measured = "score" if perf.get("score") is not None else "estimated_score"
    for key in (measured, "metric_drop"):
        if perf.get(key) is not None:
            cited[key] = round(perf[key], 4)
    return cited


def template(
    drift: DriftResult,
    shift: ShiftResult,
    domain: DomainCheck | None,
    perf: dict[str, Any],
    bounds: DriftBounds,
    action: DriftAction,
) -> str:
    """The policy's own verdict in words (the fallback's rationale): the drift and performance
    numbers with their intervals, the signals, the cause and ``action``."""
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
    if perf.get("prediction_shift") is not None:
        parts.append(
            f"prediction_shift={perf['prediction_shift']:.4f} (the champion's predictions "
            f"against its holdout, K-S p {perf.get('prediction_p_value', 1.0):.2g})"
        )
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
