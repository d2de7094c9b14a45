"""Risk policy: thresholds and rules in YAML, decisions in code.

The policy sets the bounds of every agent's choice and decides the risk tier of a promotion.
Agents (LLMs) choose inside the bounds; the policy's own choice is the deterministic fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from driftpilot.errors import ConfigError, PolicyViolation

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")
DriftAction = Literal["none", "monitor", "retrain"]
Severity = Literal["none", "low", "medium", "high"]
RiskTier = Literal["low", "high"]


class _Strict(BaseModel):
    """A policy model: an unknown key (a typo such as ``retrain_shar``) is an error, never
    silently ignored, so a threshold someone meant to set cannot quietly keep its default."""

    model_config = ConfigDict(extra="forbid")


class IngestionRules(_Strict):
    max_consecutive_quarantines: int = Field(
        2,
        ge=1,
        description="After this many quarantines in a row, the next batch that fails only on "
        "values (not on its schema) is put to a person: accept it as the new normal?",
    )
    hard_limits: dict[str, dict[str, tuple[float | None, float | None]]] = Field(
        default_factory=dict,
        description="model -> column -> [low, high]: values a column can never take (null: "
        "unbounded). Beyond them a batch is impossible; beyond the reference range it is "
        "only shifted.",
    )


class DriftRules(_Strict):
    monitor_share: float = 0.25
    retrain_share: float = 0.5
    max_metric_drop: float = 0.02
    severity_high_share: float = 0.75


class OptimizerLimits(_Strict):
    families: list[Literal["lightgbm", "catboost"]] = ["lightgbm", "catboost"]
    default_family: Literal["lightgbm", "catboost"] = "lightgbm"
    min_trials: int = 3
    max_trials: int = 30
    default_trials: int = 8
    max_timeout_s: float = 300


class RetrainLimits(_Strict):
    min_window: int = 1
    max_window: int = 6
    default_window: int = 2
    holdout_fraction: float = 0.3


class EvaluatorRules(_Strict):
    metric: Literal["roc_auc", "pr_auc", "log_loss"] = "roc_auc"
    n_boot: int = 500
    confidence: float = 0.95


class RiskRules(_Strict):
    no_champion_is_high: bool = True
    family_change_is_high: bool = True
    quality_warnings_are_high: bool = True
    risky_warning_checks: list[str] = ["constant_column", "new_categories"]
    min_gain_to_halfwidth: float = 3.0
    max_divergence: float = 0.12


class DriftBounds(_Strict):
    """What the drift analyst may choose, and what the policy itself would choose."""

    allowed: list[DriftAction]
    default: DriftAction
    severity: Severity
    signals: list[str] = Field(description="Why: the signals that fired.")


class RiskInputs(_Strict):
    has_champion: bool
    champion_family: str | None
    challenger_family: str
    gain: float
    ci_low: float
    ci_high: float
    divergence: float
    window_quality_warnings: int


class RiskAssessment(_Strict):
    tier: RiskTier
    reasons: list[str] = Field(description="Every rule that made it high (empty when low).")


def _problems(exc: ValidationError) -> str:
    """Every problem of a policy file, each naming its key path, e.g.
    ``unknown key 'drift.retrain_shar'``."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        else:
            problems.append(f"{key}: {err['msg']}")
    return "; ".join(problems)


class Policy(_Strict):
    """The whole policy file."""

    ingestion: IngestionRules = IngestionRules()
    drift: DriftRules = DriftRules()
    optimizer: OptimizerLimits = OptimizerLimits()
    retraining: RetrainLimits = RetrainLimits()
    evaluator: EvaluatorRules = EvaluatorRules()
    risk: RiskRules = RiskRules()

    @classmethod
    def load(cls, path: Path | None = None) -> Policy:
        """Read a policy YAML (the shipped defaults when ``path`` is None)."""
        source = path or DEFAULT_POLICY
        try:
            data = yaml.safe_load(source.read_text()) or {}
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid policy file {source}: {_problems(exc)}") from exc
        except (OSError, yaml.YAMLError, ValueError) as exc:
            raise ConfigError(f"invalid policy file {source}: {exc}") from exc

    # -- bounds per agent -------------------------------------------------------------------

    def hard_limits(self, model: str) -> dict[str, tuple[float | None, float | None]]:
        """The hard limits declared for ``model``'s columns (none by default)."""
        return dict(self.ingestion.hard_limits.get(model, {}))

    def ingestion_allowed(self, quality_ok: bool) -> list[Literal["accept", "quarantine"]]:
        """Hard quality failures always quarantine; a clean batch may still be quarantined."""
        return ["accept", "quarantine"] if quality_ok else ["quarantine"]

    def drift_bounds(
        self, drift_share: float, metric_drop: float | None, prediction_drifted: bool
    ) -> DriftBounds:
        """Retrain needs two signals: drift share AND a measured (or, without labels,
        estimated from prediction drift) performance drop."""
        rules = self.drift
        signals = []
        drifted = drift_share >= rules.retrain_share
        if drifted:
            signals.append(f"drift_share {drift_share:.2f} >= {rules.retrain_share}")
        if metric_drop is not None:
            dropped = metric_drop >= rules.max_metric_drop
            if dropped:
                signals.append(f"metric_drop {metric_drop:.3f} >= {rules.max_metric_drop}")
        else:
            dropped = prediction_drifted
            if dropped:
                signals.append("prediction drift (no labels: estimated drop)")
        severity: Severity = (
            "high"
            if drift_share >= rules.severity_high_share
            else "medium"
            if drifted
            else "low"
            if drift_share >= rules.monitor_share
            else "none"
        )
        # Retraining needs labelled rows of this batch (its holdout judges the challenger):
        # without them an estimated drop is watched, and the labels asked for.
        if drifted and dropped and metric_drop is not None:
            return DriftBounds(
                allowed=["monitor", "retrain"],
                default="retrain",
                severity=severity,
                signals=signals,
            )
        watch = drifted or dropped or drift_share >= rules.monitor_share
        return DriftBounds(
            allowed=["none", "monitor"],
            default="monitor" if watch else "none",
            severity=severity,
            signals=signals,
        )

    def evaluator_allowed(self, ci_low: float) -> list[Literal["promote", "reject"]]:
        """Reject is forced unless the gain's interval lies above zero."""
        return ["promote", "reject"] if ci_low > 0 else ["reject"]

    def assess_risk(self, inputs: RiskInputs) -> RiskAssessment:
        """The risk tier of promoting the challenger; every rule that fired is named."""
        rules, reasons = self.risk, []
        if rules.no_champion_is_high and not inputs.has_champion:
            reasons.append("no champion yet")
        if rules.family_change_is_high and inputs.champion_family not in (
            None,
            inputs.challenger_family,
        ):
            reasons.append(f"family changes {inputs.champion_family} -> {inputs.challenger_family}")
        half_width = (inputs.ci_high - inputs.ci_low) / 2
        if inputs.gain < rules.min_gain_to_halfwidth * half_width:
            reasons.append(
                f"gain {inputs.gain:+.4f} is small against its interval "
                f"(half-width {half_width:.4f})"
            )
        if inputs.divergence > rules.max_divergence:
            reasons.append(
                f"predictions diverge: mean |diff| {inputs.divergence:.3f} > {rules.max_divergence}"
            )
        if rules.quality_warnings_are_high and inputs.window_quality_warnings > 0:
            reasons.append(f"training window had {inputs.window_quality_warnings} quality warnings")
        return RiskAssessment(tier="high" if reasons else "low", reasons=reasons)

    @staticmethod
    def raise_tier(policy_tier: RiskTier, proposed: RiskTier | None) -> RiskTier:
        """The LLM may raise a tier, never lower it."""
        return "high" if "high" in (policy_tier, proposed) else "low"

    @staticmethod
    def check_promotion(tier: str, approved_by: str | None, problem: str | None = None) -> None:
        """Fail closed: only a ``low`` tier promotes without an approval; any other tier needs
        an approval (by a different principal, bound to this action); an unknown tier raises.

        Raises:
            PolicyViolation: unknown tier, or no valid approval for a tier other than low.
        """
        if tier not in ("low", "high"):
            raise PolicyViolation(f"unknown risk tier {tier!r}: promotion refused")
        if tier != "low" and (problem or not approved_by):
            raise PolicyViolation(
                f"{tier}-risk promotion refused: "
                f"{problem or 'no approval by a different principal'}"
            )
