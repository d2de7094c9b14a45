"""Explanations true by construction: every deterministic rationale agrees with the numbers it
quotes, and quotes the numbers it was given (issue 17, item 4).

A sentence is checked by reading it back: its words against the side of zero (or of a bound)
its numbers lie on, and each quoted number, parsed, against the value it stands for (within
half a unit of the last digit shown)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from agents import evaluator, ingestion, optimizer, retraining
from agents.cicd import policy_decision
from agents.drift_reading import drift_evidence
from agents.drift_verdict import template
from agents.explain import (
    count,
    describe_drop,
    describe_fresh_gain,
    describe_gain,
    describe_margin,
    interval_side,
    signed,
)
from driftpilot.core.metric_text import compare, versus
from driftpilot.core.policy import Policy, RiskInputs
from driftpilot.core.policy_drift import DriftEvidence
from driftpilot.core.tasks import METRICS
from tools.drift import DriftResult
from tools.evaluate import Comparison
from tools.quality import QualityIssue, QualityVerdict
from tools.shift import ColumnShift, ShiftResult

NUMBER = r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?"
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "=": operator.eq,
}
# Around zero and the policy's thresholds, where a rounded number can cross its bound.
EDGES = [0.0, -0.0, 1e-9, -1e-9, 0.00004, -0.00004, 0.0396, 0.04, 0.02, 0.0199999, 0.3, 0.12]
values = st.one_of(
    st.floats(-1, 1, allow_nan=False, allow_infinity=False),
    st.sampled_from(EDGES),
    st.sampled_from(EDGES).map(lambda x: -x),
)
small = st.one_of(st.floats(-0.2, 0.2, allow_nan=False), st.sampled_from(EDGES))


def interval() -> st.SearchStrategy[tuple[float, float]]:
    """(low, high) with low <= high, zero boundaries included."""
    return st.tuples(small, small).map(lambda p: (min(p), max(p)))


def _close(text: str, value: float) -> bool:
    """The quoted ``text`` is ``value`` rounded: within half a unit of its last digit."""
    decimals = len(text.split(".")[1].split("e")[0]) if "." in text else 0
    return abs(float(text) - value) <= 0.5 * 10**-decimals + 1e-12 * abs(value)


def _number(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in {text!r}"
    return found.group(1)


def _comparisons_hold(text: str) -> int:
    """Every ``A op [words] B`` in ``text`` holds for the numbers as shown; returns how many."""
    pairs = re.findall(rf"({NUMBER}) (>=|<=|>|<) (?:[a-z ]+ )?({NUMBER})\b", text)
    for left, op, right in pairs:
        assert OPS[op](float(left), float(right)), f"{left} {op} {right} is false in {text!r}"
    return len(pairs)


# -- the phrasing helpers --------------------------------------------------------------------


@given(values, values, st.booleans(), st.integers(0, 6))
def test_compare_states_the_relation_that_holds(
    value: float, bound: float, strict: bool, digits: int
) -> None:
    shown, op, against = compare(value, bound, strict=strict, digits=digits)
    assert OPS[op](float(shown), float(against))  # as shown
    assert OPS[op](value, bound)  # as it is
    assert op in ((">", "<=") if strict else (">=", "<"))
    assert _close(shown, value) and _close(against, bound)
    assert not shown.startswith("-") or value < 0  # never "-0.000"


@given(values, values)
def test_versus_names_the_bound_between_operator_and_number(value: float, bound: float) -> None:
    text = versus(value, bound, name="retrain cost")
    assert " retrain cost " in text and _comparisons_hold(text) == 1


@given(values, st.integers(0, 6))
def test_signed_never_hides_the_sign(value: float, digits: int) -> None:
    text = signed(value, digits)
    assert _close(text, value)
    if value > 0:
        assert text.startswith("+") and float(text) > 0
    elif value < 0:
        assert text.startswith("-") and float(text) < 0
    else:
        assert float(text) == 0 and not text.startswith("-")


@given(values, interval(), st.floats(0.5, 0.999), st.one_of(st.none(), st.integers(0, 10**6)))
def test_a_gain_reads_as_its_interval_lies(
    gain: float, bounds: tuple[float, float], confidence: float, rows: int | None
) -> None:
    low, high = bounds
    text = describe_gain(gain, low, high, confidence, rows)
    side = interval_side(low, high)
    if low > 0:
        assert side == "above" and "better" in text and "above zero" in text
        assert "worse" not in text and "not exclude" not in text
    elif high < 0:
        assert side == "below" and "worse" in text and "below zero" in text
        assert "better" not in text and "not exclude" not in text
    else:
        assert side == "straddles" and "does not exclude zero" in text
        assert "better" not in text and "worse" not in text
    quoted = re.match(rf"gain ({NUMBER}) \((\d+)% CI ({NUMBER}) to ({NUMBER})", text)
    assert quoted, text
    assert _close(quoted.group(1), gain) and _close(quoted.group(3), low)
    assert _close(quoted.group(4), high) and int(quoted.group(2)) == round(confidence * 100)
    # The interval's shown ends sit on the same side of zero as the words say.
    if side == "above":
        assert float(quoted.group(3)) > 0
    if side == "below":
        assert float(quoted.group(4)) < 0
    if rows is not None:
        assert f"{rows} holdout row" in text


def test_the_reported_false_explanation_now_reads_worse() -> None:
    text = describe_gain(-0.0536, -0.0741, -0.0321, 0.95, 4000)
    assert "worse" in text and "not exclude" not in text
    assert text.startswith("gain -0.0536 (95% CI -0.0741 to -0.0321, 4000 holdout rows)")


@given(small, small, st.sampled_from(sorted(METRICS)), st.booleans())
def test_a_drop_reads_as_worse_in_the_metrics_own_direction(
    drop: float, low: float, name: str, estimated: bool
) -> None:
    info = METRICS[name]
    subj = f"{'estimated ' if estimated else ''}{info.label}"
    text = describe_drop(drop, low, info, estimated=estimated)
    # Worse is a fall for a higher-is-better metric (ROC AUC), a rise for RMSE or log loss.
    worse, better = ("fell", "rose") if info.higher_is_better else ("rose", "fell")
    if drop > 0:
        assert f"{subj} {worse}" in text and better not in text and "(worse)" in text
    elif drop < 0:
        assert f"{subj} {better}" in text and worse not in text and "(better)" in text
    else:
        assert "equals its baseline" in text
    sure = "surely worse" in text and "not surely worse" not in text
    assert sure == (low > 0)
    assert _close(_number(rf"metric_drop=({NUMBER})", text), drop)
    if drop:
        size = _number(rf"(?:fell|rose) ({NUMBER})", text)
        # RMSE and MAE move by a share of their baseline: shown in percent.
        assert _close(size, abs(drop) * 100 if info.relative else abs(drop))
        assert (f"{size}% " in text) == info.relative
    assert _close(_number(rf"lower bound ({NUMBER})", text), low)
    assert _comparisons_hold(text) == 1


def test_a_quick_retrain_of_a_regression_wins_a_share_of_its_rmse() -> None:
    text = describe_fresh_gain(0.05, 0.01, METRICS["rmse"])
    assert text.startswith("a quick retrain would win fresh_gain=0.0500 (a share of the RMSE)")


def test_an_rmse_that_rose_six_percent_reads_worse() -> None:
    text = describe_drop(0.06, 0.02, METRICS["rmse"])
    assert text == (
        "metric_drop=0.0600: RMSE rose 6.00% above its baseline (worse) "
        "(lower bound 0.0200 > 0: surely worse)"
    )


@given(small, small)
def test_a_quick_retrain_wins_or_loses_by_its_sign(gain: float, low: float) -> None:
    text = describe_fresh_gain(gain, low)
    assert ("(ROC AUC points)" in text) == (gain != 0)
    assert ("would win fresh_gain=" in text) == (gain > 0)
    assert ("would lose" in text) == (gain < 0)
    assert ("would win nothing" in text) == (gain == 0)
    assert ("not a sure win" in text) == (low <= 0)
    assert _close(_number(rf"fresh_gain=({NUMBER})", text), gain)
    assert _close(_number(rf"lower bound ({NUMBER})", text), low)
    assert _comparisons_hold(text) == 1


@given(small, interval(), st.floats(0.5, 5))
@example(0.0, (0.0, 5e-324), 2.0)  # a subnormal half-width: found by a make test run
def test_a_margin_is_thin_or_sure_by_the_half_width_rule(
    gain: float, bounds: tuple[float, float], ratio: float
) -> None:
    low, high = bounds
    text = describe_margin(gain, low, high, ratio)
    # the half-width first, as the rule: (2 * 5e-324) / 2 is 5e-324, 2 * (5e-324 / 2) is 0
    need = ratio * ((high - low) / 2)
    assert text.startswith("sure margin" if gain >= need else "thin margin")
    assert ("is large" in text) == (gain >= need) and ("is small" in text) == (gain < need)
    said = rf"gain ({NUMBER}) is \w+ against its interval: (>=|<) .* = ({NUMBER})$"
    shown = re.search(said, text)
    assert shown, text
    assert _close(shown.group(1), gain) and _close(shown.group(3), need)
    assert OPS[shown.group(2)](float(shown.group(1)), float(shown.group(3)))


@given(st.integers(0, 5))
def test_counts_agree_in_number(n: int) -> None:
    assert count(n, "row") == (f"{n} row" if n == 1 else f"{n} rows")
    assert count(n, "batch", "batches").endswith("batch" if n == 1 else "batches")


# -- the policy's signals and reasons --------------------------------------------------------

evidence = st.builds(
    DriftEvidence,
    weighted_share=st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.3, 0.29999, 0.6])),
    labelled=st.booleans(),
    drop=small,
    drop_low=small,
    estimated=st.booleans(),
    fresh_gain=st.one_of(st.none(), small),
    fresh_gain_low=small,
    fresh_gain_high=small,
    recent_signals=st.integers(0, 2),
    batches_since_retrain=st.one_of(st.none(), st.integers(0, 3)),
    retrains=st.integers(0, 4),
    promotions=st.integers(0, 4),
)


@given(evidence)
def test_every_drift_signal_states_comparisons_that_hold(ev: DriftEvidence) -> None:
    bounds = Policy().drift_bounds(ev)
    for signal in bounds.signals:
        _comparisons_hold(signal)
    if bounds.significant_drop:
        said = next(s for s in bounds.signals if "drop" in s and "significant" in s)
        assert _close(_number(rf"drop ({NUMBER}) >=", said), ev.drop or 0.0)


risk = st.builds(
    RiskInputs,
    has_champion=st.booleans(),
    champion_family=st.sampled_from([None, "lightgbm", "catboost"]),
    challenger_family=st.sampled_from(["lightgbm", "catboost"]),
    gain=small,
    ci_low=small,
    ci_high=small,
    divergence=st.one_of(st.floats(0, 0.5), st.sampled_from([0.12, 0.12000001])),
    window_quality_warnings=st.integers(0, 3),
)


@given(risk)
def test_every_risk_reason_holds_and_the_tier_follows_them(inputs: RiskInputs) -> None:
    if inputs.ci_low > inputs.ci_high:
        inputs = inputs.model_copy(update={"ci_low": inputs.ci_high, "ci_high": inputs.ci_low})
    assessed = Policy().assess_risk(inputs)
    for reason in assessed.reasons:
        _comparisons_hold(reason)
    margin = next((r for r in assessed.reasons if "against its interval" in r), None)
    if margin is not None:
        assert "is small" in margin and _close(_number(rf"gain ({NUMBER})", margin), inputs.gain)
    warned = next((r for r in assessed.reasons if "quality warning" in r), "")
    assert warned.endswith("warning") == (inputs.window_quality_warnings == 1)
    # The CI/CD agent's policy rationale names the tier and exactly the rules that fired.
    said = policy_decision(assessed, "summary").rationale
    assert said.startswith(f"Policy risk tier {assessed.tier}: ")
    assert ("no high-risk rule fired" in said) == (assessed.tier == "low")
    assert all(r in said for r in assessed.reasons)


# -- each agent's deterministic rationale ----------------------------------------------------


@given(
    values,
    interval(),
    st.floats(0.5, 1),
    st.integers(1, 5000),
    st.sampled_from(["roc_auc", "log_loss", "rmse"]),
)
def test_the_evaluator_rationale_agrees_with_its_comparison(
    gain: float, bounds: tuple[float, float], champion: float, rows: int, metric: str
) -> None:
    low, high = bounds
    info = METRICS[metric]
    cmp = Comparison(
        metric=metric,
        n_rows=rows,
        champion=champion,
        challenger=champion + gain,
        gain=gain,
        ci_low=low,
        ci_high=high,
        confidence=0.95,
        n_boot=500,
        significant=low > 0,
        prediction_divergence=0.05,
    )
    action = Policy().evaluator_allowed(low)[0]
    text = evaluator.template(cmp, action)
    assert text.endswith(f"; {action}.")
    assert text.startswith(f"{metric} ({'higher' if info.higher_is_better else 'lower'} is better")
    assert ("share of the" in text) == info.relative  # RMSE gains are shares, not points
    assert (action == "promote") == ("challenger is better" in text) == (low > 0)
    assert ("challenger is worse" in text) == (high < 0)
    assert ("does not exclude zero" in text) == (low <= 0 <= high)
    assert _close(_number(rf"challenger ({NUMBER})", text), champion + gain)


def _drift(n_columns: int) -> DriftResult:
    return DriftResult(
        n_reference=2000,
        n_current=500,
        n_columns=n_columns,
        n_drifted=0,
        drift_share=0.0,
        dataset_drift=False,
        columns=[],
        skipped_columns={"a": "too few values"},
        elapsed_s=0.1,
    )


@given(
    st.floats(0, 1),
    small,
    small,
    small,
    small,
    st.booleans(),
    st.sampled_from(["roc_auc", "log_loss", "rmse", "r2"]),
)
def test_the_drift_rationale_agrees_with_its_evidence(
    share: float,
    drop: float,
    spread: float,
    fresh: float,
    fresh_low: float,
    labelled: bool,
    metric: str,
) -> None:
    info = METRICS[metric]
    column = ColumnShift(
        column="temp",
        kind="numeric",
        measure="wasserstein",
        value=0.8,
        threshold=0.5,
        material=True,
        importance=1.0,
    )
    shift = ShiftResult(columns=[column], material_share=1.0, weighted_share=share, elapsed_s=0.1)
    perf: dict[str, Any] = {
        "metric": metric,
        "higher_is_better": info.higher_is_better,
        "metric_drop": drop,
        "metric_drop_low": drop - abs(spread),
    }
    if labelled:
        perf.update(score=0.7, score_low=0.68, score_high=0.72, fresh_gain=fresh)
        perf.update(fresh_gain_low=min(fresh, fresh_low), fresh_gain_high=max(fresh, fresh_low))
    else:
        perf.update(estimated_score=0.7, estimate_method="dle" if info.relative else "cbpe")
    history = {"recent_signals": 1, "batches_since_retrain": None, "retrains": 0, "promotions": 0}
    bounds = Policy().drift_bounds(drift_evidence(share, perf, history))
    text = template(_drift(1), shift, None, perf, bounds, bounds.default)
    subject = info.label if labelled else f"estimated {info.label}"
    worse, better = ("fell", "rose") if info.higher_is_better else ("rose", "fell")
    assert (f"{subject} {worse}" in text) == (drop > 0)
    assert (f"{subject} {better}" in text) == (drop < 0)
    assert ("champion score=0.7000" in text) == labelled
    assert ("estimated_score=0.7000" in text) == (not labelled)
    assert ("would win fresh_gain=" in text) == (labelled and fresh > 0)
    assert ("would lose" in text) == (labelled and fresh < 0)
    assert "1 column not tested" in text
    assert text.endswith(f"Policy: {bounds.default} (severity {bounds.severity}).")
    assert _close(_number(rf"weighted_share=({NUMBER})", text), share)
    _comparisons_hold(text)


@given(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3))
def test_the_ingestion_rationale_counts_what_it_found(errors: int, warnings: int, n: int) -> None:
    issues = [
        QualityIssue(check="null_spike", severity="error", message=f"error {i}")
        for i in range(errors)
    ] + [
        QualityIssue(check="constant_column", severity="warning", message=f"warning {i}")
        for i in range(warnings)
    ]
    verdict = QualityVerdict(ok=errors == 0, n_rows=n, content_hash="h", issues=issues)
    text = ingestion.template(verdict)
    if errors:
        assert text.startswith(f"Batch failed {count(errors, 'quality check')} (")
        assert text.endswith(": quarantine.") and "error 0" in text
    else:
        assert text.startswith(f"Batch of {count(n, 'row')} passed every quality check")
        assert text.endswith(": accept.")
        assert (f"with {count(warnings, 'warning')}" in text) == (warnings > 0)


def test_the_optimizer_keeps_the_champions_family_only_when_it_does() -> None:
    limits = Policy().optimizer
    kept = optimizer.default_plan(limits, "catboost")
    assert kept.family == "catboost" and "Keep the champion's family catboost" in kept.rationale
    only_lightgbm = limits.model_copy(update={"families": ["lightgbm"]})
    barred = optimizer.default_plan(only_lightgbm, "catboost")
    assert barred.family == "lightgbm" and "Keep" not in barred.rationale
    assert "catboost is not allowed" in barred.rationale
    assert f"{limits.default_trials} trials" in kept.rationale


def test_the_optimizer_counts_one_rejection_as_one() -> None:
    limits = Policy().optimizer
    plan = optimizer.default_plan(limits, "lightgbm")
    at_limit = [{"optimizer": {"family": "lightgbm", "n_trials": limits.max_trials}}]
    other = optimizer.plan_after_rejections(plan, limits, at_limit)
    assert other.family == "catboost"
    assert other.rationale.startswith("The last challenger was rejected")
    assert "challengers in a row" not in other.rationale


@given(st.integers(1, 6), st.integers(1, 6), st.booleans(), st.integers(1, 3))
def test_the_window_rationale_says_the_move_it_made(
    last: int, high: int, shifted: bool, low: int
) -> None:
    low = min(low, high)
    state = {"drift": {"material": shifted, "severity": "medium"}}
    rejected = [{"retraining": {"window": last}}]
    plan = retraining.window_plan(2, low, high, state, rejected)
    text = plan.rationale
    assert text.endswith(f", last {plan.window}")
    assert f"on the last {count(last, 'batch', 'batches')} was rejected" in text
    if plan.window > last:
        assert "wider" in text or "more data" in text
        assert "narrower one" not in text and "latest data only" not in text
    elif plan.window < last:
        assert "narrower" in text or "latest data only" in text
        assert "more data" not in text
    else:
        assert "the same" in text
    assert ("inputs moved" in text) == (shifted and plan.window != last)


@given(st.integers(1, 6), st.integers(1, 6))
def test_the_default_window_says_when_it_is_capped(default: int, high: int) -> None:
    plan = retraining.window_plan(default, 1, high, {"drift": {}}, [])
    assert plan.window == min(default, high)
    assert ("capped" in plan.rationale) == (high < default)
    assert plan.rationale.endswith(f"last {plan.window}")
