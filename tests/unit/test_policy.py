from pathlib import Path

import pytest

from driftpilot.core.errors import ConfigError, PolicyViolation
from driftpilot.core.policy import Policy, RiskInputs
from driftpilot.core.policy_drift import DriftEvidence


@pytest.fixture
def policy() -> Policy:
    return Policy.load()


def inputs(**kw: object) -> RiskInputs:
    base: dict[str, object] = dict(
        has_champion=True,
        champion_family="lightgbm",
        challenger_family="lightgbm",
        gain=0.1,
        ci_low=0.09,
        ci_high=0.11,
        divergence=0.02,
        window_quality_warnings=0,
    )
    return RiskInputs.model_validate(base | kw)


def evidence(**kw: object) -> DriftEvidence:
    base: dict[str, object] = dict(
        weighted_share=0.0,
        labelled=True,
        drop=0.0,
        drop_low=-0.01,
        recent_signals=0,
        batches_since_retrain=None,
        retrains=0,
        promotions=0,
    )
    return DriftEvidence.model_validate(base | kw)


def test_material_drift_alone_only_monitors(policy: Policy) -> None:
    shifted = policy.drift_bounds(evidence(weighted_share=0.7))
    assert shifted.default == "monitor" and "retrain" not in shifted.allowed
    assert shifted.material and shifted.severity == "high"
    quiet = policy.drift_bounds(evidence(weighted_share=0.1))
    assert quiet.default == "none" and quiet.severity == "none" and not quiet.material


def test_moved_predictions_are_watched_when_no_column_moved_enough(policy: Policy) -> None:
    # Two columns holding 15 % of the importance moved: under monitor_share, yet the
    # champion's predictions moved by 0.45 of their spread, significantly.
    moved = policy.drift_bounds(
        evidence(weighted_share=0.15, prediction_shift=0.45, prediction_p_value=1e-9)
    )
    assert moved.default == "monitor" and moved.predictions_moved and not moved.material
    assert moved.severity == "medium"
    alone = policy.drift_bounds(evidence(prediction_shift=0.45, prediction_p_value=1e-9))
    assert alone.default == "monitor" and alone.severity == "medium"  # no column moved
    assert "retrain" not in moved.allowed  # what the model answers moved; its score did not
    assert "the champion's predictions moved: 0.45 >= 0.3 (K-S p 1e-09 < 0.01)" in (moved.signals)
    assert moved.cause == "world_change" and "moved predictions" in moved.cause_reasons[0]
    # As large, but on a batch so small that chance gives it: not a signal.
    # (The credit-card suite's clean 150-row batch read 0.33 at p 0.032.)
    chance = policy.drift_bounds(evidence(prediction_shift=0.45, prediction_p_value=0.032))
    assert chance.default == "none" and not chance.predictions_moved
    assert chance.cause == "unknown"
    # Significant but under the threshold (a big batch); and not measured at all.
    for small in (
        evidence(prediction_shift=0.2, prediction_p_value=1e-6),
        evidence(prediction_shift=None, prediction_p_value=None),
    ):
        quiet = policy.drift_bounds(small)
        assert quiet.default == "none" and not quiet.predictions_moved


def test_a_drop_counts_only_when_significant(policy: Policy) -> None:
    # 0.04 measured, but its interval reaches below zero: noise of a small batch.
    noisy = policy.drift_bounds(evidence(drop=0.04, drop_low=-0.03))
    assert noisy.default == "none" and not noisy.significant_drop
    # Significant, yet a retrain would win back too little of what is sure: watched.
    thin = policy.drift_bounds(evidence(drop=0.04, drop_low=0.005, recent_signals=2))
    assert thin.significant_drop and thin.default == "none"
    assert any("not worth it" in s for s in thin.signals)
    # Significant but under the smallest drop that counts.
    tiny = policy.drift_bounds(evidence(drop=0.015, drop_low=0.005))
    assert not tiny.significant_drop


def test_a_severe_significant_drop_retrains_at_once(policy: Policy) -> None:
    # Concept drift: the inputs did not move, the champion got much worse.
    bounds = policy.drift_bounds(evidence(drop=0.2, drop_low=0.15, batches_since_retrain=0))
    assert bounds.default == "retrain" and bounds.allowed == ["retrain"]  # no other choice
    assert bounds.severity == "high" and bounds.expected_gain == pytest.approx(0.225)


def test_a_moderate_drop_must_persist_outside_the_cooldown(policy: Policy) -> None:
    first = policy.drift_bounds(evidence(drop=0.04, drop_low=0.03))
    assert first.default == "none" and first.significant_drop  # held back, not an alarm
    assert any("not yet persistent" in s for s in first.signals)
    persistent = policy.drift_bounds(evidence(drop=0.04, drop_low=0.03, recent_signals=1))
    assert persistent.default == "retrain" and persistent.allowed == ["retrain", "monitor"]
    cooling = policy.drift_bounds(
        evidence(drop=0.04, drop_low=0.03, recent_signals=1, batches_since_retrain=0)
    )
    assert cooling.default == "none" and any("cooldown" in s for s in cooling.signals)


def test_wasted_retrains_raise_the_bar(policy: Policy) -> None:
    """P(promotion) from the model's yield: after rejected challengers the same drop is no
    longer worth a retrain (the loop backs off and says why)."""
    drop = dict(drop=0.04, drop_low=0.03, recent_signals=2)
    assert policy.drift_bounds(evidence(**drop)).default == "retrain"  # 1/2 x 0.03 x 3
    wasted = policy.drift_bounds(evidence(**drop, retrains=3, promotions=0))  # 1/5
    assert wasted.default == "none"
    assert any("not worth it" in s and "0 of 3 retrains" in s for s in wasted.signals)
    fruitful = policy.drift_bounds(evidence(**drop, retrains=3, promotions=3))
    assert fruitful.default == "retrain"


def test_without_labels_a_drop_is_watched_and_labels_asked_for(policy: Policy) -> None:
    # No labelled rows in the batch: no holdout could judge a challenger.
    est = dict(labelled=False, estimated=True, drop=0.2, drop_low=0.1)
    bounds = policy.drift_bounds(evidence(**est, weighted_share=0.6))
    assert bounds.default == "monitor" and "retrain" not in bounds.allowed
    assert bounds.labels_requested
    assert not policy.drift_bounds(evidence(**est)).labels_requested  # drop without drift


def test_retrain_always_and_never(policy: Policy) -> None:
    always = policy.model_copy(
        update={"drift": policy.drift.model_copy(update={"retrain": "always"})}
    )
    assert always.drift_bounds(evidence()).default == "retrain"
    assert always.drift_bounds(evidence(labelled=False)).default == "none"
    never = policy.model_copy(
        update={"drift": policy.drift.model_copy(update={"retrain": "never"})}
    )
    held = never.drift_bounds(evidence(drop=0.3, drop_low=0.2))  # severe: watched, not trained
    assert held.default == "monitor" and "retrain" not in held.allowed and held.significant_drop
    lesser = never.drift_bounds(evidence(drop=0.03, drop_low=0.01))
    assert lesser.default == "none" and lesser.significant_drop


def test_every_risk_rule(policy: Policy) -> None:
    assert policy.assess_risk(inputs()).tier == "low"
    cases = {
        "no champion": inputs(has_champion=False, champion_family=None),
        "family changes": inputs(challenger_family="catboost"),
        "small against its interval": inputs(gain=0.02, ci_low=0.005, ci_high=0.035),
        "predictions diverge": inputs(divergence=0.3),
        "quality warnings": inputs(window_quality_warnings=2),
    }
    for reason, case in cases.items():
        risk = policy.assess_risk(case)
        assert risk.tier == "high" and any(reason in r for r in risk.reasons), (reason, risk)


def test_llm_may_raise_never_lower_and_promotion_needs_approval() -> None:
    assert Policy.raise_tier("low", "high") == "high"
    assert Policy.raise_tier("high", "low") == "high"
    assert Policy.raise_tier("low", None) == "low"
    Policy.check_promotion("low", None)
    Policy.check_promotion("high", "bob")
    with pytest.raises(PolicyViolation, match="refused"):
        Policy.check_promotion("high", None)


def test_bounds_of_other_agents(policy: Policy) -> None:
    assert policy.ingestion_allowed(False) == ["quarantine"]
    assert policy.evaluator_allowed(-0.001) == ["reject"]
    assert policy.evaluator_allowed(0.01) == ["promote", "reject"]


def test_custom_and_broken_policy_files(tmp_path: Path) -> None:
    custom = tmp_path / "p.yaml"
    custom.write_text("drift:\n  monitor_share: 0.9\n")
    loaded = Policy.load(custom)
    assert loaded.drift.monitor_share == 0.9 and loaded.drift.max_metric_drop == 0.02
    broken = tmp_path / "b.yaml"
    broken.write_text("drift:\n  monitor_share: [not a number\n")
    with pytest.raises(ConfigError, match="invalid policy"):
        Policy.load(broken)
    wrong = tmp_path / "w.yaml"
    wrong.write_text("optimizer:\n  families: [xgboost]\n")
    with pytest.raises(ConfigError, match="invalid policy"):
        Policy.load(wrong)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("drift: {monitor_shar: 0.4}\n", "drift.monitor_shar"),
        ("drfit: {monitor_share: 0.4}\n", "drfit"),
        ("risk:\n  max_divergance: 0.5\n", "risk.max_divergance"),
        ("optimizer: {max_trails: 5}\n", "optimizer.max_trails"),
        ("retraining: {holdout: 0.2}\n", "retraining.holdout"),
        ("evaluator: {nboot: 10}\n", "evaluator.nboot"),
    ],
)
def test_an_unknown_policy_key_is_refused_by_name(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"invalid policy file .*unknown key '{key}'"):
        Policy.load(path)


def test_a_wrong_value_is_named_by_its_key_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("drift: {monitor_share: lots}\n")
    with pytest.raises(ConfigError, match=r"drift\.monitor_share: .*valid number"):
        Policy.load(path)


def test_runtime_policy_models_refuse_unknown_fields() -> None:
    with pytest.raises(ValueError, match="divergance"):
        inputs(divergance=0.3)


def test_a_stale_champion_retrains_without_any_decay(policy: Policy) -> None:
    """Seasonal streams: the champion holds its baseline, yet a model fitted on the latest
    batches beats it on this batch. That gain, when significant, is a signal like a drop."""
    stale = dict(fresh_gain=0.04, fresh_gain_low=0.03)
    first = policy.drift_bounds(evidence(**stale))
    assert first.stale and first.default == "none"  # not yet persistent
    again = policy.drift_bounds(evidence(**stale, recent_signals=1))
    assert again.default == "retrain" and again.expected_gain == pytest.approx(0.045)
    noise = policy.drift_bounds(evidence(fresh_gain=0.04, fresh_gain_low=-0.01, recent_signals=1))
    assert not noise.stale and noise.default == "none"


def test_a_drop_no_quick_retrain_fixes_never_retrains(policy: Policy) -> None:
    """A season makes the batch harder: the champion drops against its baseline, but a quick
    retrain on the same window does no better on the holdout. Nothing to win back."""
    harder = policy.drift_bounds(
        evidence(
            drop=0.12, drop_low=0.1, fresh_gain=-0.02, fresh_gain_low=-0.03, fresh_gain_high=-0.01
        )
    )
    # Severe (0.12, surely over 0.02): never retrained, but watched, so a person sees it.
    assert harder.significant_drop and harder.default == "monitor"
    assert "retrain" not in harder.allowed
    assert any("nothing to win back" in s for s in harder.signals)
    lesser = policy.drift_bounds(
        evidence(
            drop=0.04, drop_low=0.01, fresh_gain=-0.02, fresh_gain_low=-0.03, fresh_gain_high=-0.01
        )
    )
    assert lesser.significant_drop and lesser.default == "none"


def test_an_estimated_severe_drop_is_watched_without_asking_for_labels(policy: Policy) -> None:
    """No labels: a severe estimated drop is watched; labels are asked for only beside
    material drift (the estimate alone can be the calibration's error)."""
    estimated = evidence(labelled=False, estimated=True, drop=0.2, drop_low=0.1)
    bounds = policy.drift_bounds(estimated)
    assert bounds.default == "monitor" and not bounds.labels_requested
    assert "retrain" not in bounds.allowed
    # An inconclusive quick retrain (a small holdout) vetoes nothing: the drop decides.
    unsure = policy.drift_bounds(
        evidence(
            drop=0.12, drop_low=0.1, fresh_gain=0.01, fresh_gain_low=-0.02, fresh_gain_high=0.04
        )
    )
    assert unsure.default == "retrain"


def test_a_severe_signal_must_surely_count(policy: Policy) -> None:
    """Severity skips the wait and the cooldown (a drop's, the cost too), so its point must reach
    ``severe_metric_drop`` and its lower bound ``max_metric_drop``. The flights quick suite's
    no_drift batch 1: a 1,000-row batch whose drop of 0.059 barely cleared zero retrained at
    once, and lost; persistence and cost now weigh it."""
    noisy = policy.drift_bounds(evidence(drop=0.059, drop_low=0.005, recent_signals=1))
    assert noisy.significant_drop and noisy.severity != "high"
    assert noisy.default == "none" and any("not worth it" in s for s in noisy.signals)
    lucky = policy.drift_bounds(
        evidence(fresh_gain=0.073, fresh_gain_low=0.014, fresh_gain_high=0.13)
    )
    assert lucky.stale and lucky.default == "none"
    assert any("not yet persistent" in s for s in lucky.signals)
    # Surely one that counts, either signal: at once, in the cooldown (this drop at any cost).
    drop = policy.drift_bounds(evidence(drop=0.06, drop_low=0.02, batches_since_retrain=0))
    assert drop.allowed == ["retrain"] and any("surely one that counts" in s for s in drop.signals)
    # The flights year's February: a champion that holds its baseline (no drop), and a quick
    # retrain that surely wins a lot. Holding it for persistence cost 0.012 of the year's AUC.
    large = dict(fresh_gain=0.064, fresh_gain_low=0.05, fresh_gain_high=0.08)
    gain = policy.drift_bounds(evidence(**large, batches_since_retrain=0))
    assert gain.allowed == ["retrain"] and gain.severity == "high"


def test_a_severe_gain_skips_the_wait_but_still_pays_its_cost(policy: Policy) -> None:
    """A champion that holds its baseline is not damaged: a quick retrain that surely wins
    is an opportunity, which must be worth its cost. The regression quick suite's
    deploy_drop batch 5: gain 0.087, lower bound 0.023 (expected 0.5 x 0.023 x 3 = 0.034 <
    0.04) retrained at once on a window holding a broken feature, and was promoted."""
    thin = dict(fresh_gain=0.087, fresh_gain_low=0.023, fresh_gain_high=0.15)
    held = policy.drift_bounds(evidence(**thin, batches_since_retrain=0))
    assert held.stale and held.default == "none" and held.severity == "medium"
    assert any("not worth it" in s for s in held.signals)
    assert not any("cooldown" in s or "persistent" in s for s in held.signals)
    # The same thin lower bound on a severe drop: damage, retrained whatever the cost; and
    # beside a significant drop (not itself severe) the severe gain pays at any cost too.
    drop = policy.drift_bounds(evidence(drop=0.087, drop_low=0.023))
    assert drop.allowed == ["retrain"] and drop.severity == "high"
    hurt = policy.drift_bounds(evidence(**thin, drop=0.03, drop_low=0.005))
    assert hurt.significant_drop and hurt.allowed == ["retrain"] and hurt.severity == "high"
    assert not any("if worth its cost" in s for s in hurt.signals)
    assert any("if worth its cost" in s for s in held.signals)


def test_a_severe_drop_retrains_whatever_the_yield(policy: Policy) -> None:
    """No starvation: four rejected challengers make a moderate drop not worth a retrain,
    never a severe one."""
    moderate = policy.drift_bounds(
        evidence(drop=0.04, drop_low=0.03, recent_signals=2, retrains=4, promotions=0)
    )
    assert moderate.default == "none" and any("not worth it" in s for s in moderate.signals)
    severe = policy.drift_bounds(
        evidence(drop=0.09, drop_low=0.06, recent_signals=2, retrains=4, promotions=0)
    )
    assert severe.default == "retrain"


def test_a_models_own_metric_wins_and_must_measure_its_task(policy: Policy) -> None:
    assert policy.model_metric("rmse", "regression").name == "rmse"
    assert policy.model_metric("macro_f1", "multiclass").name == "macro_f1"
    # No metric of its own: the policy's default where it measures the task, else the
    # task's primary metric (the shipped default roc_auc does not measure a regression).
    assert policy.model_metric("", "binary").name == "roc_auc"
    assert policy.model_metric(None, "multiclass").name == "roc_auc"
    assert policy.model_metric("", "regression").name == "rmse"
    pr = Policy.model_validate({"evaluator": {"metric": "pr_auc"}})
    assert pr.model_metric("", "binary").name == "pr_auc"
    assert pr.model_metric("", "multiclass").name == "roc_auc"
    assert pr.model_metric("log_loss", "binary").name == "log_loss"  # the model's own wins
    with pytest.raises(ConfigError, match="does not measure a regression model"):
        policy.model_metric("roc_auc", "regression")


def test_the_evaluator_metric_is_any_known_metric(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("evaluator: {metric: rmse}\n")
    assert Policy.load(path).evaluator.metric == "rmse"
    path.write_text("evaluator: {metric: accuracy}\n")
    with pytest.raises(ConfigError, match=r"evaluator.metric: .*unknown metric 'accuracy'"):
        Policy.load(path)


@pytest.mark.parametrize(
    ("task", "words"),
    [
        ("binary", "mean |p_challenger - p_champion|"),
        ("multiclass", "mean total variation of the class probabilities"),
        ("regression", "mean |y_challenger - y_champion| / target std"),
    ],
)
def test_divergence_is_high_risk_in_every_task_in_its_own_words(
    policy: Policy, task: str, words: str
) -> None:
    assessed = policy.assess_risk(inputs(task=task, divergence=0.2))
    assert assessed.tier == "high"
    assert assessed.reasons == [f"predictions diverge: {words} 0.200 > 0.12"]
    assert policy.assess_risk(inputs(task=task, divergence=0.1)).tier == "low"


def test_no_retrain_on_a_batch_whose_holdout_cannot_judge(policy: Policy) -> None:
    """A severe drop on a 150-row batch: its 45-row holdout cannot judge a challenger (the
    evaluator rejects any), so a retrain could only lose; the drop is still a signal."""
    small = "45 labelled holdout rows (needs at least 100)"
    held = policy.drift_bounds(evidence(drop=0.2, drop_low=0.15, holdout_too_small=small))
    assert held.significant_drop and held.default == "monitor" and "retrain" not in held.allowed
    assert any("too small to judge a challenger on (45 labelled" in s for s in held.signals)
    # The same drop on a holdout that can judge retrains at once.
    assert policy.drift_bounds(evidence(drop=0.2, drop_low=0.15)).default == "retrain"
