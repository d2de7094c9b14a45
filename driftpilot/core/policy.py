"""Risk policy: thresholds and rules in YAML, decisions in code.

The policy sets the bounds of every agent's choice and decides the risk tier of a promotion.
Agents (LLMs) choose inside the bounds; the policy's own choice is the deterministic fallback.

The file's sections are ``driftpilot.core.policy_rules``; the drift bounds (the drift rules,
the episode's hold and the cause, issue 21) are ``driftpilot.core.policy_drift``, which
``Policy.drift_bounds`` applies. This module loads the file and holds the other decisions.

What the drift policy reads, and so which measurements are worth making (issue 23). The bounds
of ``Policy.drift_bounds`` read only ``DriftEvidence``: the weighted share, the predictions'
shift and its p-value (measured on every batch: it needs no labels), whether the batch is
labelled (its metric measured), the drop and its lower bound, whether that drop is estimated,
the quick retrain's gain with its bounds, and the history. Under ``drift.measure: needed`` (the
default) the drift analyst skips a measurement whose answer cannot change the bounds (allowed
actions, default, severity, the flags the history counts, the expected gain, the signals), and
says so in the run's evidence (``performance.skipped``, each with its reason). The rules,
checked over a grid of every task and retrain mode (tests/unit/test_policy_skips.py) and on
real batches (tests/integration/test_measure_skips.py); ``measure: all`` measures everything:

- the estimate without labels (CBPE, DLE) is skipped when the champion's metric was measured on
  the batch's labels: the measured drop is the one the policy reads (``skip_estimate``);
- the bootstrap interval of the batch's metric is skipped when the drop cannot be significant
  whatever it says: no baseline (no drop), a point drop under ``max_metric_drop``, or a point
  drop that the baseline's own interval covers, since the drop's lower bound subtracts at least
  the baseline's half-width (``skip_interval``). The lower bound is read only through that
  significance (and, once significant, as the gain a retrain is sure of and in the severity);
- the quick retrain runs only under ``retrain: auto`` (``skip_quick_retrain``; it never ran
  elsewhere): ``always`` and ``never`` fix the allowed actions without it (its gain could only
  raise the severity and set the stale flag). Under ``auto`` on a labelled batch it always
  runs: staleness alone retrains (a severe gain at once if worth its cost), and a quick
  retrain that surely wins nothing holds a significant drop back, so every outcome stays
  possible until it is measured;
- the domain classifier never reaches the bounds: it informs an LLM analyst choosing within
  them (and the reader), so it runs only when an LLM chooses (``skip_domain_classifier``; with
  the builtin backend the action is the policy's own). It fits on at most 5,000 rows a side
  and states its AUC's standard error at that size.

Above ``drift.sample_rows`` labelled rows, the batch's metric with its bootstrap and the quick
retrain's window and holdout are stratified samples (by class; a regression by the target's
deciles); the evidence states the rows used (``performance.sampled``), and the intervals,
computed on the sample, include its error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from driftpilot.core import policy_drift
from driftpilot.core.errors import ConfigError, PolicyViolation
from driftpilot.core.metric_text import gain_margin, quote, versus
from driftpilot.core.policy_drift import DriftBounds, DriftEvidence
from driftpilot.core.policy_rules import (
    CauseRules,
    DriftRules,
    EvaluatorRules,
    IngestionRules,
    OptimizerLimits,
    PeopleRules,
    RetrainLimits,
    RiskRules,
    _Strict,
)
from driftpilot.core.tasks import METRICS, PRIMARY, Metric, Task, metric

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")
RiskTier = Literal["low", "high"]


class RiskInputs(_Strict):
    task: Task = Field("binary", description="The model's task (how divergence is read).")
    has_champion: bool
    champion_family: str | None
    challenger_family: str
    gain: float
    ci_low: float
    ci_high: float
    divergence: float
    window_quality_warnings: int


# How each task's prediction divergence is measured (tools.metrics.divergence), in words.
DIVERGENCE: dict[Task, str] = {
    "binary": "mean |p_challenger - p_champion|",
    "multiclass": "mean total variation of the class probabilities",
    "regression": "mean |y_challenger - y_champion| / target std",
}


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
    people: PeopleRules = PeopleRules()
    causes: CauseRules = CauseRules()

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

    def model_metric(self, own: str | None, task: Task) -> Metric:
        """The metric a model is measured, retrained and promoted by: its own (``own``, the
        managed model's ``metric``) when it names one, else the policy's
        ``evaluator.metric`` when that measures the task, else the task's primary metric.

        Raises:
            ConfigError: the model's own metric does not measure its task.
        """
        if own:
            return metric(own, task)
        fallback = METRICS[self.evaluator.metric]
        return fallback if task in fallback.tasks else METRICS[PRIMARY[task]]

    def hard_limits(self, model: str) -> dict[str, tuple[float | None, float | None]]:
        """The hard limits declared for ``model``'s columns (none by default)."""
        return dict(self.ingestion.hard_limits.get(model, {}))

    def ingestion_allowed(self, quality_ok: bool) -> list[Literal["accept", "quarantine"]]:
        """Hard quality failures always quarantine; a clean batch may still be quarantined."""
        return ["accept", "quarantine"] if quality_ok else ["quarantine"]

    def drift_bounds(self, ev: DriftEvidence) -> DriftBounds:
        """none / monitor / retrain / recalibrate under this policy: the drift rules, then the
        episode's hold, then the cause (``policy_drift.drift_bounds``)."""
        return policy_drift.drift_bounds(ev, self.drift, self.retraining, self.causes)

    def rule_bounds(self, ev: DriftEvidence) -> DriftBounds:
        """The drift rules' bounds alone, before the episode and the cause
        (``policy_drift.rule_bounds``)."""
        return policy_drift.rule_bounds(ev, self.drift, self.retraining)

    # -- which drift measurements can change drift_bounds (module docstring) ----------------

    def skip_estimate(self, measured: bool) -> str | None:
        """Why the estimate without labels cannot change the drift bounds (None: it can).
        ``measured``: the champion's metric was measured on the batch's labels."""
        if measured and self.drift.measure == "needed":
            return (
                "the metric was measured on the batch's labels: the measured drop is the one "
                "the policy reads"
            )
        return None

    def skip_interval(self, drop: float | None, most_low: float | None) -> str | None:
        """Why the bootstrap interval of the batch's metric cannot change the drift bounds
        (None: it can). ``drop``: the point drop as the policy reads it (rounded to 4
        places; None without a baseline); ``most_low``: the largest its lower bound can be,
        the drop minus the baseline's half-width on its worse side (in the drop's units).
        The policy reads the lower bound only to call the drop significant (and, once it is,
        as the gain a retrain is sure of), so a drop that cannot be significant needs none."""
        rules = self.drift
        if rules.measure == "all":
            return None
        if drop is None or most_low is None:
            return "no baseline: no drop to test"
        if drop < rules.max_metric_drop:
            return f"point drop {versus(drop, rules.max_metric_drop)}: never significant"
        if round(most_low, 4) <= 0:
            return (
                f"the baseline's interval alone covers the point drop {quote(drop)}: its lower "
                f"bound is at most {quote(most_low, digits=4)}, never > 0"
            )
        return None

    def skip_quick_retrain(self) -> str | None:
        """Why a quick retrain need not run on a labelled batch (None: it must). Outside
        ``retrain: auto`` the mode fixes the action without it (always: retrain every labelled
        batch; never: watch), so it is skipped whatever ``drift.measure`` says (its gain would
        only colour the severity and the stale flag). Under ``auto`` it always runs: a stale
        champion retrains without any drop (a severe gain at once if worth its cost), and a
        retrain that surely wins nothing holds a significant drop back, so every outcome stays
        possible until it is measured."""
        if self.drift.retrain != "auto":
            return f"retrain: {self.drift.retrain} decides the action without a retrain's gain"
        return None

    def skip_domain_classifier(self, llm_chooses: bool) -> str | None:
        """Why the domain classifier cannot change the drift decision (None: it can). Its AUC
        never reaches ``drift_bounds``; an LLM choosing within the bounds is shown it, so it
        can sway that choice, but the builtin backend takes the policy's own choice."""
        if not llm_chooses and self.drift.measure == "needed":
            return "the builtin backend takes the policy's choice, which never reads the AUC"
        return None

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
            reasons.append(gain_margin(inputs.gain, half_width, rules.min_gain_to_halfwidth))
        if inputs.divergence > rules.max_divergence:
            diverge = versus(inputs.divergence, rules.max_divergence, strict=True)
            reasons.append(f"predictions diverge: {DIVERGENCE[inputs.task]} {diverge}")
        if rules.quality_warnings_are_high and inputs.window_quality_warnings > 0:
            warnings = inputs.window_quality_warnings
            reasons.append(f"training window had {warnings} quality warning{'s' * (warnings != 1)}")
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
