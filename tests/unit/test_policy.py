from pathlib import Path

import pytest

from driftpilot.errors import ConfigError, PolicyViolation
from driftpilot.policy import Policy, RiskInputs


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


def test_retrain_needs_drift_and_a_drop(policy: Policy) -> None:
    both = policy.drift_bounds(0.6, 0.05, False)
    assert (
        both.default == "retrain"
        and both.allowed == ["monitor", "retrain"]
        and len(both.signals) == 2
    )
    drift_only = policy.drift_bounds(0.9, 0.0, False)
    assert drift_only.default == "monitor" and "retrain" not in drift_only.allowed
    assert drift_only.severity == "high"
    drop_only = policy.drift_bounds(0.1, 0.05, False)
    assert "retrain" not in drop_only.allowed and drop_only.default == "monitor"
    quiet = policy.drift_bounds(0.0, -0.01, False)
    assert quiet.default == "none" and quiet.severity == "none"


def test_without_labels_a_drop_is_watched_never_retrained_on(policy: Policy) -> None:
    # No labelled rows in the batch: no holdout could judge a challenger.
    bounds = policy.drift_bounds(0.6, None, True)
    assert bounds.default == "monitor" and "retrain" not in bounds.allowed
    assert "prediction drift (no labels: estimated drop)" in bounds.signals
    assert policy.drift_bounds(0.6, None, False).default == "monitor"


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
    custom.write_text("drift:\n  retrain_share: 0.9\n")
    loaded = Policy.load(custom)
    assert loaded.drift.retrain_share == 0.9 and loaded.drift.monitor_share == 0.25
    broken = tmp_path / "b.yaml"
    broken.write_text("drift:\n  retrain_share: [not a number\n")
    with pytest.raises(ConfigError, match="invalid policy"):
        Policy.load(broken)
    wrong = tmp_path / "w.yaml"
    wrong.write_text("optimizer:\n  families: [xgboost]\n")
    with pytest.raises(ConfigError, match="invalid policy"):
        Policy.load(wrong)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("drift: {retrain_shar: 0.4}\n", "drift.retrain_shar"),
        ("drfit: {retrain_share: 0.4}\n", "drfit"),
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
    path.write_text("drift: {retrain_share: lots}\n")
    with pytest.raises(ConfigError, match=r"drift\.retrain_share: .*valid number"):
        Policy.load(path)


def test_runtime_policy_models_refuse_unknown_fields() -> None:
    with pytest.raises(ValueError, match="divergance"):
        inputs(divergance=0.3)
