"""The scenario suite's scoring (``evals.scenarios`` runs it): one stream's scores in one note
variant (``score``), each promotion checked on the truth (``promotion_checks``), the metric
estimation errors, the causes summary per group of variants with its cause macro-F1
(``cause_summary``), and the scenario and causes tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from rich.table import Table

from driftpilot.core.tasks import Task, metric
from evals.harness import BatchRow, StreamResult
from evals.scenario_specs import KIND_CAUSE, Case, Variant, expected, first_drift, true_cause
from tools.datasets import DatasetSpec
from tools.drift import model_performance
from tools.synth import GroundTruth


@dataclass
class ScenarioScore:
    """One scenario's scores in one note variant (see the module docstring)."""

    scenario: str
    kind: str
    onset: int | None
    correct_rate: float
    detection_delay: int | None
    false_alarm_monitor: float | None
    false_alarm_retrain: float | None
    false_alarm_quarantine: float | None
    unsafe_promotions: int
    worse_on_truth: int  # promotions whose challenger scored worse than the champion on the truth
    approved_high_risk: int  # high-risk promotions the eval's approver let through
    citation_flags: int
    retrains: int
    promotions: int
    retrain_yield: float | None
    wall_s: float
    llm_decisions: int
    tokens: int
    actions: list[str]
    expected: list[list[str]]
    # |estimate - realised| of the model's metric (CBPE; DLE for a regression): batches,
    # mean, max (scenarios where P(y|x) holds)
    estimation: dict[str, Any] | None = None
    # every promotion checked on the truth: batch, versions, both scores, gain (> 0 better)
    promotion_checks: list[dict[str, Any]] | None = None
    # Issue 21: the note variant, the true cause, and what the run read.
    variant: str = "none"
    cause: str | None = None  # the case's true cause from the onset
    note_decides: bool = False  # only the note tells the cause (the numbers read another)
    true_causes: list[str | None] | None = None  # per batch: None where nothing drifted
    read_causes: list[str] | None = None  # per batch: the cause the run named
    cited_notes: int = 0  # batches whose verdict cited a note
    unsafe_actions: int = 0  # unsafe promotions + challengers trained on defective data
    false_retrains: int = 0  # retrains where a retrain was not a right action
    recalibrations: int = 0
    fallbacks: int = 0
    escalated_episodes: int = 0  # batches whose drift episode was escalated


def read_cause(row: BatchRow) -> str:
    """The cause a run named: a quarantine judges the data broken (``pipeline_defect``),
    otherwise the drift verdict's cause (``unknown`` when the run named none)."""
    if row.action == "quarantine":
        return "pipeline_defect"
    return row.cause or "unknown"


def macro_f1(pairs: list[tuple[str, str]]) -> float | None:
    """Macro-averaged F1 of (true, predicted) labels over every label that occurs on either
    side (a label predicted but never true scores 0, as does one never found); None without
    pairs."""
    if not pairs:
        return None
    labels = sorted({t for t, _ in pairs} | {p for _, p in pairs})
    scores = []
    for label in labels:
        tp = sum(t == label and p == label for t, p in pairs)
        fp = sum(t != label and p == label for t, p in pairs)
        fn = sum(t == label and p != label for t, p in pairs)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return round(float(np.mean(scores)), 3)


def score(
    name: str,
    truth: GroundTruth,
    result: StreamResult,
    *,
    labels_late: bool = False,
    task: Task = "binary",
    checks: list[dict[str, Any]] | None = None,
    case: Case | None = None,
    variant: Variant = "none",
    max_failed: int = 2,
) -> ScenarioScore:
    """Score a stream's rows (row ``i`` is scenario batch ``i``) against its ground truth in
    one note variant; ``checks`` are its promotions scored on the truth
    (``promotion_checks``). The right actions follow what could be known: the case's cause
    where the numbers show it or its note was there to read, the numbers' cause otherwise."""
    case = case or Case({"kind": truth.kind}, KIND_CAUSE.get(truth.kind))
    known = case.cause if (variant == "note" or not case.note_decides) else case.numbers
    rows = result.rows
    # A promotion fixes the drift only once the drift is at full size (a gradual drift goes
    # on growing after a challenger promoted mid-ramp).
    full_from = None if truth.onset is None else truth.onset + (truth.ramp or 1) - 1
    first = first_drift(truth)
    wanted, promoted, failed = [], False, 0
    for i, row in enumerate(rows):
        wanted.append(
            expected(
                truth,
                i,
                promoted,
                labels_late=labels_late,
                task=task,
                cause=known,
                failed_retrains=failed,
                max_failed=max_failed,
            )
        )
        promoted = promoted or (
            row.promoted is not None and full_from is not None and i >= full_from
        )
        failed += bool(first is not None and i >= first and row.retrained and row.promoted is None)
    right = [r.action in w for r, w in zip(rows, wanted, strict=True)]
    clean = [r for i, r in enumerate(rows) if first is None or i < first]
    worse = {c["batch"] for c in checks or [] if c["worse"]}
    causes = [true_cause(case, truth, i) for i in range(len(rows))]
    defect = [c == "pipeline_defect" for c in causes]
    unsafe = sum(
        r.promoted is not None and (r.unsafe or defect[i] or i in worse) for i, r in enumerate(rows)
    )
    trained_on_defect = sum(r.retrained and defect[i] for i, r in enumerate(rows))
    totals = result.totals()
    return ScenarioScore(
        scenario=name,
        kind=truth.kind,
        onset=truth.onset,
        correct_rate=round(sum(right) / len(rows), 3),
        detection_delay=_delay(truth, rows, right),
        false_alarm_monitor=_rate(clean, "monitor"),
        false_alarm_retrain=_rate(clean, "retrain"),
        false_alarm_quarantine=_rate(clean, "quarantine"),
        unsafe_promotions=unsafe,
        worse_on_truth=len(worse),
        approved_high_risk=sum(r.promoted is not None and r.risk_tier == "high" for r in rows),
        citation_flags=totals["citation_flags"],
        retrains=result.retrains,
        promotions=result.promotions,
        retrain_yield=round(result.promotions / result.retrains, 3) if result.retrains else None,
        wall_s=round(result.wall_s, 1),
        llm_decisions=totals["llm_decisions"],
        tokens=totals["tokens"],
        actions=[r.action for r in rows],
        expected=[sorted(w) for w in wanted],
        promotion_checks=checks,
        variant=variant,
        cause=case.cause,
        note_decides=case.note_decides,
        true_causes=causes,
        read_causes=[read_cause(r) for r in rows],
        cited_notes=sum(bool(r.cited_notes) for r in rows),
        unsafe_actions=unsafe + trained_on_defect,
        false_retrains=sum(
            r.retrained and r.retrain_kind != "recalibrate" and "retrain" not in w
            for r, w in zip(rows, wanted, strict=True)
        ),
        recalibrations=sum(r.retrain_kind == "recalibrate" for r in rows),
        fallbacks=totals["fallbacks"],
        escalated_episodes=sum(r.episode_state == "escalated" for r in rows),
    )


def _delay(truth: GroundTruth, rows: list[BatchRow], right: list[bool]) -> int | None:
    first = first_drift(truth)
    if first is None or truth.kind == "none":  # nothing to detect
        return None
    for i in range(first, len(rows)):
        if right[i] and rows[i].action != "none":
            return i - first
    return None


def _rate(rows: list[BatchRow], action: str) -> float | None:
    return round(sum(r.action == action for r in rows) / len(rows), 3) if rows else None


# -- the causes table -------------------------------------------------------------------------

# Groups of (scenario, variant) scores the causes table summarises, each with its filter.
GROUPS: dict[str, Any] = {
    "no note (every scenario)": lambda s: s["variant"] == "none",
    "distractor note": lambda s: s["variant"] == "distractor",
    "note of the cause": lambda s: s["variant"] == "note",
    "note decides: no note": lambda s: s.get("note_decides") and s["variant"] == "none",
    "note decides: its note": lambda s: s.get("note_decides") and s["variant"] == "note",
}


def cause_summary(scores: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per group (``GROUPS``): cause macro-F1 over the drifted batches, the correct-action
    rate over all batches, unsafe actions, false retrains, retrains, promotions, yield,
    recalibrations, compute (wall seconds) and LLM tokens and fallbacks."""
    out = {}
    for group, keep in GROUPS.items():
        chosen = [s for s in scores if keep(s)]
        if not chosen:
            continue
        pairs = [
            (str(t), str(r))
            for s in chosen
            for t, r in zip(s.get("true_causes") or [], s.get("read_causes") or [], strict=True)
            if t is not None
        ]
        batches = sum(len(s["actions"]) for s in chosen)
        correct = sum(
            a in w for s in chosen for a, w in zip(s["actions"], s["expected"], strict=True)
        )
        retrains, promotions = (sum(s[k] for s in chosen) for k in ("retrains", "promotions"))
        out[group] = {
            "scenarios": len(chosen),
            "batches": batches,
            "cause_macro_f1": macro_f1(pairs),
            "drifted_batches": len(pairs),
            "correct_rate": round(correct / batches, 3) if batches else None,
            "unsafe_actions": sum(s.get("unsafe_actions", 0) for s in chosen),
            "false_retrains": sum(s.get("false_retrains", 0) for s in chosen),
            "retrains": retrains,
            "promotions": promotions,
            "retrain_yield": round(promotions / retrains, 3) if retrains else None,
            "recalibrations": sum(s.get("recalibrations", 0) for s in chosen),
            "compute_s": round(sum(s["wall_s"] for s in chosen), 1),
            "tokens": sum(s["tokens"] for s in chosen),
            "fallbacks": sum(s.get("fallbacks", 0) for s in chosen),
        }
    return out


def causes_table(results: dict[str, Any]) -> Table:
    """The causes table of one dataset and backend (``results["causes"]``)."""
    shared = "; variants share one stream: builtin reads no notes"
    table = Table(
        title=f"causes on {results['dataset']} ({results['tier']}, llm {results['llm']}"
        f"{shared if results.get('variants_shared') else ''})"
    )
    columns: tuple[str, ...] = ("group", "scen.", "cause F1", "correct", "unsafe")
    columns += ("false retr.", "retrains", "yield", "recal.", "compute s", "tokens", "fallbacks")
    for col in columns:
        table.add_column(col, justify="left" if col == "group" else "right")
    for group, g in (results.get("causes") or {}).items():
        table.add_row(
            group,
            str(g["scenarios"]),
            "-" if g["cause_macro_f1"] is None else f"{g['cause_macro_f1']:.2f}",
            _pct(g["correct_rate"]),
            str(g["unsafe_actions"]),
            str(g["false_retrains"]),
            str(g["retrains"]),
            "-" if g["retrain_yield"] is None else f"{g['retrain_yield']:.2f}",
            str(g["recalibrations"]),
            f"{g['compute_s']:.0f}",
            str(g["tokens"]),
            str(g["fallbacks"]),
        )
    return table


def promotion_checks(
    plane: Any, result: StreamResult, labelled: list[pl.DataFrame], spec: DatasetSpec
) -> list[dict[str, Any]]:
    """Each promotion scored on the truth: the promoted challenger against the champion it
    replaced, on the labelled rows of every later batch (the last is the extra batch the
    stream never ran), as ``promotion_check`` judges it."""
    from tools import registry

    max_drop = float(plane.policy.drift.max_metric_drop)
    checks, champion = [], None
    for row in result.rows:
        before = row.champion_version or champion
        if row.promoted is None or before is None:
            champion = row.champion_version or champion
            continue
        truth = pl.concat(labelled[row.index + 1 :], how="diagonal_relaxed")
        old, new = (
            registry.load_version(result.model, v, plane.settings) for v in (before, row.promoted)
        )
        check = promotion_check(
            row, old, new, truth, spec, own_metric=result.metric, max_drop=max_drop
        )
        checks.append({"champion_version": before, "challenger_version": row.promoted, **check})
        champion = row.promoted
    return checks


def promotion_check(
    row: BatchRow,
    champion: Any,
    challenger: Any,
    truth: pl.DataFrame,
    spec: DatasetSpec,
    *,
    own_metric: str,
    max_drop: float,
) -> dict[str, Any]:
    """One promotion on the truth rows, in the metric its verdict was made on
    (``judged_metric``) and that metric's direction. ``worse``: the challenger's gain in it is
    below 0 (``Metric.gain``: > 0 better whichever the direction); a challenger judged on
    another metric than the model's (a recalibration, on log loss: its map cannot move a
    ranking metric much) is also worse when the model's own metric drops by at least
    ``max_drop`` (the policy's ``drift.max_metric_drop``)."""
    judged = judged_metric(row, own_metric)
    scored = [
        model_performance(m, truth, spec.target, task=spec.task, classes=m.classes or None)
        for m in (champion, challenger)
    ]
    old, new = (p.get(judged) for p in scored)
    gain = _gain(judged, spec.task, old, new)
    own = _gain(own_metric, spec.task, *(p.get(own_metric) for p in scored))
    worse = (gain is not None and gain < 0) or (own is not None and own <= -max_drop)
    return {
        "batch": row.index,
        "judged_on": judged,
        "truth_rows": truth.height,
        "champion_score": old,
        "challenger_score": new,
        "gain": None if gain is None else round(gain, 5),
        "own_gain": None if own is None else round(own, 5),
        "worse": worse,
    }


def judged_metric(row: BatchRow, own_metric: str) -> str:
    """The metric a promotion's verdict was made on: the evaluation's ``judged_on``; for a
    row recorded without it, log loss for a recalibration, else the model's own metric."""
    if row.judged_on:
        return row.judged_on
    return "log_loss" if row.retrain_kind == "recalibrate" else own_metric


def _gain(name: str, task: Task, old: float | None, new: float | None) -> float | None:
    return None if old is None or new is None else metric(name, task).gain(old, new)


def estimation_errors(
    plane: Any, result: StreamResult, labelled: list[pl.DataFrame], spec: DatasetSpec
) -> dict[str, Any]:
    """|estimate - realised| of the champion's metric (the model's own: ``result.metric``) on
    every batch it was estimated on. Labelled batches carry both; for a batch that came
    without labels the realised score is computed here from the labels the scenario hid (by
    the champion version that scored it)."""
    from tools import registry

    errors = []
    for row in result.rows:
        if row.estimated_metric is None or row.champion_version is None:
            continue
        realised = row.champion_metric
        if realised is None:
            champion = registry.load_version(result.model, row.champion_version, plane.settings)
            scored = model_performance(
                champion,
                labelled[row.index],
                spec.target,
                task=spec.task,
                classes=champion.classes or None,
            )
            realised = scored.get(result.metric)
        if realised is not None:
            errors.append(abs(row.estimated_metric - realised))
    if not errors:
        return {"batches": 0, "mean": None, "max": None}
    return {
        "batches": len(errors),
        "mean": round(float(np.mean(errors)), 4),
        "max": round(float(np.max(errors)), 4),
    }


CAUSE_SHORT = {
    "pipeline_defect": "defect",
    "expected_change": "expected",
    "world_change": "world",
    "label_shift": "label",
    "unknown": "unknown",
}
ACTION_LETTER = {"none": "n", "monitor": "m", "retrain": "r", "recalibrate": "c", "quarantine": "q"}


def score_table(results: dict[str, Any]) -> Table:
    """The scenario table of one dataset."""
    table = Table(
        title=f"scenarios on {results['dataset']} ({results.get('task', 'binary')}, "
        f"{results.get('metric', 'roc_auc')}; {results['tier']}, llm {results['llm']}): "
        f"{results['stream']['batches']} batches of {results['stream']['batch_rows']:,} rows, "
        f"onset {results['stream']['onset']}"
    )
    # The console's columns (the README and the results file hold every score).
    columns: tuple[str, ...] = ("scenario", "variant", "cause", "read", "correct", "actions")
    columns += ("delay", "unsafe")
    columns += ("false retr", "retrains", "promoted", "recal", "wall s", "LLM dec.")
    for col in columns:
        left = col in ("scenario", "actions")
        table.add_column(col, justify="left" if left else "right", no_wrap=left)
    for s in results["scores"]:
        table.add_row(
            s["scenario"],
            s.get("variant", "none"),
            CAUSE_SHORT.get(s.get("cause") or "", "-"),
            _cause_read(s),
            f"{s['correct_rate']:.0%}",
            "".join(ACTION_LETTER.get(a, "?") for a in s["actions"]),
            _delay_text(s),
            str(s.get("unsafe_actions", s["unsafe_promotions"])),
            str(s.get("false_retrains", "-")),
            str(s["retrains"]),
            str(s["promotions"]),
            str(s.get("recalibrations", "-")),
            f"{s['wall_s']:.0f}",
            str(s["llm_decisions"]),
        )
    table.caption = (
        "actions per batch: n none, m monitor, r retrain, c recalibrate, q quarantine; cause "
        "read: drifted batches whose cause the run named right; unsafe: unsafe promotions and "
        "challengers trained on defective data"
    )
    return table


def _cause_read(s: dict[str, Any]) -> str:
    """The share of a scenario's drifted batches whose cause the run named right."""
    pairs = [
        (t, r)
        for t, r in zip(s.get("true_causes") or [], s.get("read_causes") or [], strict=True)
        if t is not None
    ]
    return f"{sum(t == r for t, r in pairs)}/{len(pairs)}" if pairs else "-"


def _delay_text(s: dict[str, Any]) -> str:
    if s["onset"] is None or s["kind"] == "none":
        return "-"
    return "missed" if s["detection_delay"] is None else str(s["detection_delay"])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"
