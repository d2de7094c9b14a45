"""A measurement the drift analyst skips could not have changed the decision: over a grid of
cases in every task (binary, multiclass, regression; metrics of both directions, bounded and
relative) and every ``drift.retrain`` mode, the drift analyst's ``decide`` on the evidence
with the skips (``drift.measure: needed``) gives the very bounds, action and severity it gives
on the evidence with every measurement made. The grid crowds the thresholds (a drop near
``max_metric_drop`` and ``severe_metric_drop``, a baseline interval near the drop), where a
wrong rule would show."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import pytest

from agents import drift_analyst
from agents.base import Llm
from agents.drift_measures import _drop, _slack, interval_skip
from agents.drift_reading import DriftAnalystEvidence
from driftpilot.core.llm import Backend
from driftpilot.core.policy import Policy
from driftpilot.core.policy_rules import DriftRules
from driftpilot.core.tasks import METRICS, Metric
from tools.drift import ColumnDrift, DriftResult
from tools.shift import ColumnShift, ShiftResult

BUILTIN = Llm(Backend("builtin", "", None))
# (task, metric, a typical baseline): both directions, bounded and relative (RMSE: shares).
METRIC_CASES = [
    ("binary", "roc_auc", 0.75),
    ("binary", "log_loss", 0.45),
    ("multiclass", "roc_auc", 0.70),
    ("multiclass", "macro_f1", 0.55),
    ("regression", "rmse", 40.0),
    ("regression", "r2", 0.5),
]
MODES = ["auto", "always", "never"]
CASES_PER_METRIC = 120


@dataclass(frozen=True)
class Case:
    """One batch as every measurement would see it (drops and gains in the metric's units)."""

    info: Metric
    measured: bool  # labels the metric is defined on
    baseline: float | None
    baseline_low: float | None
    baseline_high: float | None
    score: float
    score_low: float
    score_high: float
    estimate: tuple[float, float, float] | None  # value, low, high
    fresh: tuple[float, float, float] | None  # gain, low, high
    share: float
    history: dict[str, Any]


def _near(rng: random.Random, centres: list[float], spread: float) -> float:
    return rng.choice(centres) + rng.uniform(-spread, spread)


def _case(rng: random.Random, name: str, typical: float) -> Case:
    info = METRICS[name]
    scale = typical if info.relative else 1.0  # a relative metric's drop is a share of it
    sign = 1.0 if info.higher_is_better else -1.0

    def worse(value: float, drop: float) -> float:
        return value - sign * drop * scale

    baseline = None if rng.random() < 0.1 else typical * rng.uniform(0.9, 1.1)
    anchor = typical if baseline is None else baseline
    drop = _near(rng, [-0.03, 0.0, 0.02, 0.03, 0.05, 0.08], 0.012)
    score = worse(anchor, drop)
    base_half = rng.choice([0.0, rng.uniform(0.0, 0.04), abs(drop) + rng.uniform(-0.003, 0.003)])
    half = [rng.uniform(0.0, 0.04) * scale for _ in range(2)]
    est_drop = _near(rng, [0.0, 0.02, 0.05], 0.015)
    est_half = rng.uniform(0.0, 0.03) * scale
    estimate = None if rng.random() < 0.15 else (worse(anchor, est_drop), est_half, est_half)
    gain = _near(rng, [-0.02, 0.0, 0.02, 0.05], 0.012)
    gain_half = rng.uniform(0.0, 0.03)
    retrains = rng.randint(0, 4)
    return Case(
        info=info,
        measured=rng.random() < 0.75,
        baseline=baseline,
        baseline_low=None if baseline is None else baseline - base_half * scale,
        baseline_high=None if baseline is None else baseline + base_half * scale,
        score=score,
        score_low=score - half[0],
        score_high=score + half[1],
        estimate=None
        if estimate is None
        else (estimate[0], estimate[0] - estimate[1], estimate[0] + estimate[2]),
        fresh=None if rng.random() < 0.2 else (gain, gain - gain_half, gain + gain_half),
        share=rng.choice([0.0, rng.uniform(0.0, 1.0), 0.3, 0.6]),
        history={
            "recent_signals": rng.randint(0, 2),
            "batches_since_retrain": rng.choice([None, 0, 1, 3]),
            "retrains": retrains,
            "promotions": rng.randint(0, retrains),
        },
    )


def _drop_of(case: Case, value: float, low: float, high: float) -> dict[str, float]:
    """The drop and its lower bound as ``agents.drift_measures`` computes them."""
    assert case.baseline is not None
    spread = math.hypot(
        _slack(case.info, value, low, high, better=True),
        _slack(case.info, case.baseline, case.baseline_low, case.baseline_high, better=False),
    )
    return _drop(case.info, case.baseline, value, spread)


def everything(case: Case, mode: str | None = "auto") -> dict[str, Any]:
    """The performance slice with every measurement made (``drift.measure: all``): the quick
    retrain under ``retrain: auto`` only, unless ``mode`` is None (then in every mode)."""
    perf: dict[str, Any] = {
        "champion_version": 1,
        "metric": case.info.name,
        "higher_is_better": case.info.higher_is_better,
        "baseline": case.baseline,
    }
    if case.estimate is not None:
        value, low, high = case.estimate
        perf.update(estimated_score=value, estimated_low=low, estimated_high=high)
        perf["estimate_method"] = "dle" if case.info.name in ("rmse", "r2") else "cbpe"
        if case.baseline is not None and not case.measured:
            perf.update(_drop_of(case, value, low, high))
    if not case.measured:
        return perf
    perf.update(score=case.score, score_low=case.score_low, score_high=case.score_high)
    if case.baseline is not None:
        perf.update(_drop_of(case, case.score, case.score_low, case.score_high))
    if case.fresh is not None and mode in ("auto", None):
        gain, low, high = case.fresh
        perf.update(fresh_gain=gain, fresh_gain_low=low, fresh_gain_high=high)
    return perf


def needed(case: Case, policy: Policy) -> dict[str, Any]:
    """The same slice with what ``drift.measure: needed`` skips left out, by the rules
    ``agents.drift_measures.performance`` applies before measuring."""
    perf = everything(case, policy.drift.retrain)
    if not case.measured:
        return perf
    base = (case.baseline, case.baseline_low, case.baseline_high)
    drop, reason = interval_skip(policy, case.info, case.score, *base)
    if reason:
        for key in ("score_low", "score_high", "metric_drop_low"):
            perf.pop(key, None)
        if drop is not None:
            perf["metric_drop"] = drop
    if policy.skip_estimate(True):
        for key in ("estimated_score", "estimated_low", "estimated_high", "estimate_method"):
            perf.pop(key, None)
    if policy.skip_quick_retrain():
        for key in ("fresh_gain", "fresh_gain_low", "fresh_gain_high"):
            perf.pop(key, None)
    return perf


def _evidence(case: Case, perf: dict[str, Any], material: bool) -> DriftAnalystEvidence:
    drift = DriftResult(
        n_reference=1000,
        n_current=800,
        n_columns=1,
        n_drifted=int(material),
        drift_share=float(material),
        dataset_drift=material,
        columns=[
            ColumnDrift(
                column="distance",
                method="wasserstein",
                score=0.3 if material else 0.01,
                threshold=0.1,
                drifted=material,
            )
        ],
        elapsed_s=0.1,
    )
    shift = ShiftResult(
        columns=[
            ColumnShift(
                column="distance",
                kind="numeric",
                measure="wasserstein",
                value=0.6 if material else 0.01,
                threshold=0.5,
                material=material,
                importance=1.0,
            )
        ],
        material_share=float(material),
        weighted_share=round(case.share, 4),
        elapsed_s=0.1,
    )
    return DriftAnalystEvidence(
        drift=drift, shift=shift, domain=None, performance=perf, history=case.history
    )


def _decided(case: Case, perf: dict[str, Any], policy: Policy) -> tuple[Any, ...]:
    ruling = drift_analyst.decide(_evidence(case, perf, case.share > 0.3), policy, BUILTIN)
    verdict = ruling.outcome.decision
    return ruling.bounds.model_dump(), verdict.action, verdict.severity


@pytest.mark.parametrize(("task", "name", "typical"), METRIC_CASES)
def test_what_is_skipped_never_changes_the_decision(task: str, name: str, typical: float) -> None:
    rng = random.Random(f"{task}-{name}")
    skips = {"interval": 0, "estimate": 0, "quick_retrain": 0}
    outcomes: set[str] = set()
    significant = 0
    for _ in range(CASES_PER_METRIC):
        case = _case(rng, name, typical)
        for mode in MODES:
            policy = Policy(drift=DriftRules(retrain=mode))
            full, lean = everything(case, mode), needed(case, policy)
            skips["interval"] += "score" in lean and "score_low" not in lean
            skips["estimate"] += "estimated_score" in full and "estimated_score" not in lean
            want = _decided(case, full, policy)
            assert _decided(case, lean, policy) == want, (mode, case, full, lean)
            # Outside auto a quick retrain, never measured there, could not change the action
            # (its staleness could only raise the severity and set the stale flag).
            fresh = everything(case, None)
            skips["quick_retrain"] += "fresh_gain" in fresh and "fresh_gain" not in lean
            bounds, action, _ = _decided(case, fresh, policy)
            assert (bounds["allowed"], bounds["default"], action) == (
                want[0]["allowed"],
                want[0]["default"],
                want[1],
            ), (mode, case, fresh, lean)
            outcomes.add(want[0]["default"])
            significant += want[0]["significant_drop"]
    # The grid reaches every kind of skip and every outcome, and drops that count: a rule
    # that skipped what matters would change some decision here.
    assert min(skips.values()) > 20, skips
    assert outcomes == {"none", "monitor", "retrain"}, outcomes
    assert significant > 20


def test_measure_all_skips_the_estimate_and_the_interval_never() -> None:
    policy = Policy(drift=DriftRules(measure="all", retrain="auto"))
    assert policy.skip_estimate(True) is None and policy.skip_quick_retrain() is None
    assert policy.skip_interval(None, None) is None
    assert policy.skip_interval(0.0, -0.01) is None


@pytest.mark.parametrize(
    ("drop", "most_low", "skipped"),
    [
        (None, None, "no baseline"),
        (0.0199, 0.0199, "never significant"),  # under max_metric_drop, whatever its interval
        (0.03, 0.0, "covers the point drop"),  # the baseline's half-width alone eats it
        (0.03, -0.00004, "covers the point drop"),  # rounds to -0.0: not > 0
        (0.03, 0.00005, None),  # rounds to 0.0001 > 0: the batch's interval decides
        (0.02, 0.01, None),
    ],
)
def test_the_interval_is_skipped_only_when_the_drop_cannot_be_significant(
    drop: float | None, most_low: float | None, skipped: str | None
) -> None:
    reason = Policy().skip_interval(drop, most_low)
    assert (reason is None) == (skipped is None)
    assert skipped is None or skipped in (reason or "")


def test_the_quick_retrain_is_weighed_only_under_auto() -> None:
    assert Policy(drift=DriftRules(retrain="auto")).skip_quick_retrain() is None
    for mode in ("always", "never"):
        reason = Policy(drift=DriftRules(retrain=mode)).skip_quick_retrain()
        assert reason is not None and mode in reason


def test_the_domain_classifier_runs_only_when_an_llm_chooses() -> None:
    # Its AUC never reaches drift_bounds: only an LLM choosing within them is swayed by it.
    assert Policy().skip_domain_classifier(llm_chooses=True) is None
    assert "builtin" in (Policy().skip_domain_classifier(llm_chooses=False) or "")
    measure_all = Policy(drift=DriftRules(measure="all"))
    assert measure_all.skip_domain_classifier(llm_chooses=False) is None
