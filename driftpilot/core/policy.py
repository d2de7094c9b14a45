"""Risk policy: thresholds and rules in YAML, decisions in code.

The policy sets the bounds of every agent's choice and decides the risk tier of a promotion.
Agents (LLMs) choose inside the bounds; the policy's own choice is the deterministic fallback.

Causes (issue 21). ``drift_bounds`` runs the drift rules (``rule_bounds``), then the drift
episode's hold (``retraining.max_failed_retrains`` losing challengers and unchanged evidence:
a retrain or recalibration becomes monitor, unless a person asked), then the cause the numbers
read (``causes:`` maps each to the actions it allows: a label shift recalibrates, an expected
change watches, a pipeline defect only monitors; world change and unknown keep the rules).
``by_cause`` bounds an LLM that names another cause from a note: never wider than the
numbers' bounds, monitor aside.

What the drift policy reads, and so which measurements are worth making (issue 23). The bounds
of ``Policy.drift_bounds`` read only ``DriftEvidence``: the weighted share, whether the batch is
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
  significance (and, once significant, as the gain a retrain is sure of);
- the quick retrain runs only under ``retrain: auto`` (``skip_quick_retrain``; it never ran
  elsewhere): ``always`` and ``never`` fix the allowed actions without it (its gain could only
  raise the severity and set the stale flag). Under ``auto`` on a labelled batch it always
  runs: staleness alone retrains (a severe gain at once), and a quick retrain that surely wins
  nothing holds a significant drop back, so every outcome stays possible until it is measured;
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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from driftpilot.core.causes import CAUSES, Cause, CauseReading
from driftpilot.core.errors import ConfigError, PolicyViolation
from driftpilot.core.metric_text import gain_margin, quote, versus
from driftpilot.core.tasks import METRICS, PRIMARY, Metric, Task, metric

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")
DriftAction = Literal["none", "monitor", "retrain", "recalibrate"]
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


class LabelShiftRules(_Strict):
    """When a labelled classifier batch reads as a label shift (``agents.drift_causes``)."""

    label_psi: float = Field(
        0.1, gt=0, description="PSI of the class distribution (batch vs reference) that moves."
    )
    relative_change: float = Field(
        0.3,
        gt=0,
        description="Or: a class's share moved by this share of itself (0.3: 20 % -> 26 %), "
        "beyond three standard errors of the batch's share.",
    )
    min_rows: int = Field(200, ge=10, description="Labelled rows needed to read prevalence.")
    class_score_shift: float = Field(
        0.2,
        gt=0,
        description="The largest normed Wasserstein distance between the champion's scores of "
        "one class on the batch and on the reference that still reads as the same class.",
    )
    explained_ratio: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Without a champion to score with: the class shares explain the feature "
        "drift when, at the batch's class shares, the importance-weighted effect size falls to "
        "at most this share of itself.",
    )


class SeasonalityRules(_Strict):
    """An expected change: the same drift signature at the same point of the last period."""

    period_batches: int | None = Field(
        None, ge=2, description="Batches in a period (12: monthly batches, a year); null: off."
    )
    tolerance_batches: int = Field(
        1, ge=0, description="How many batches either side of the same point still count."
    )
    min_overlap: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Jaccard overlap of the drifted columns (now vs then) that makes the same "
        "signature.",
    )


class DriftRules(_Strict):
    retrain: Literal["auto", "always", "never"] = Field(
        "auto",
        description="auto: retrain when the evidence below says so; always: on every labelled "
        "batch; never: watch only.",
    )
    # Drift that matters: effect sizes (tools.shift), weighted by the champion's importance.
    numeric_measure: Literal["wasserstein", "psi"] = "wasserstein"
    categorical_measure: Literal["psi", "jensenshannon"] = "psi"
    wasserstein_threshold: float = Field(0.5, description="Normed Wasserstein of a shifted column.")
    psi_threshold: float = Field(0.2, description="PSI of a shifted column.")
    jensenshannon_threshold: float = Field(0.1, description="Jensen-Shannon of a shifted column.")
    monitor_share: float = Field(
        0.3,
        description="Share of the champion's importance on shifted columns that makes drift "
        "material (monitor).",
    )
    severity_high_share: float = Field(0.6, description="Weighted share reported as high severity.")
    # A drop that matters: the champion's metric on the batch, with its bootstrap interval,
    # against its out-of-time baseline (and that baseline's interval). Drops and gains are
    # read as driftpilot.core.tasks.Metric reads them: in points for bounded metrics (ROC AUC,
    # log loss, R²), as a share of the baseline for RMSE and MAE (0.02 = 2 % worse), so one
    # threshold means the same for every task.
    max_metric_drop: float = Field(
        0.02,
        description="Smallest drop that counts (if significant): metric points, or a share of "
        "the baseline for RMSE/MAE.",
    )
    severe_metric_drop: float = Field(
        0.05, description="A significant drop this large retrains at once (no wait, no cooldown)."
    )
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence of the drop's interval.")
    n_boot: int = Field(300, ge=50, description="Bootstrap replicates of the batch's metric.")
    measure: Literal["needed", "all"] = Field(
        "needed",
        description="needed: skip a measurement whose answer cannot change the drift bounds "
        "(the run's evidence names each with its reason); all: measure everything (e.g. the "
        "estimate beside a measured score, a record of how far estimates can be trusted).",
    )
    sample_rows: int = Field(
        50_000,
        ge=1_000,
        description="Labelled rows above which the batch's metric and its bootstrap, and the "
        "quick retrain's window and holdout, use a stratified sample of this many rows (the "
        "evidence states the rows used; the interval then includes the sampling error).",
    )
    label_shift: LabelShiftRules = Field(
        default_factory=lambda: LabelShiftRules(),
        description="When a classifier's batch reads as a label shift (prevalence moved, each "
        "class looks the same): recalibrate, do not retrain.",
    )
    seasonality: SeasonalityRules = Field(
        default_factory=lambda: SeasonalityRules(),
        description="When a drift repeats at the same point of the last period (expected).",
    )
    notes_lookback_days: float = Field(
        7.0,
        ge=0,
        description="Notes written up to this many days before the batch's first time are "
        "shown to the drift analyst with the notes inside its time range.",
    )


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
    # When a retrain is worth it (cost-aware, as in CARA and "When to retrain", ICML 2025).
    horizon_batches: float = Field(
        3.0, description="Batches a drop is expected to last if the champion is kept."
    )
    retrain_cost: float = Field(
        0.04,
        description="Cost of one retrain in metric points x batches (compute, review, risk): "
        "retrain when P(promotion) x the drop's lower bound x horizon reaches it.",
    )
    cooldown_batches: int = Field(
        1, ge=0, description="Batches to let pass after a retrain attempt before the next."
    )
    persistence_k: int = Field(2, ge=1, description="Drift must show in k of the last n batches.")
    persistence_n: int = Field(3, ge=1)
    max_failed_retrains: int = Field(
        2,
        ge=1,
        description="Losing challengers in one drift episode after which no retrain runs until "
        "the evidence changes (other columns shift, the drop deepens beyond its interval) or a "
        "person asks (driftpilot.core.episodes).",
    )


_LABEL_SHIFT: list[DriftAction] = ["recalibrate", "monitor"]
_EXPECTED: list[DriftAction] = ["monitor", "none"]
_DEFECT: list[DriftAction] = ["monitor"]


class CauseRules(_Strict):
    """The actions each cause allows (``Policy.drift_bounds``). null: the drift rules' own
    bounds (the retrain rules of world change, as before causes)."""

    label_shift: list[DriftAction] | None = Field(
        _LABEL_SHIFT,
        description="Prevalence moved, each class looks the same: recalibrate the champion "
        "(labelled batches only), never retrain.",
    )
    expected_change: list[DriftAction] | None = Field(
        _EXPECTED, description="A recurring change the model has seen: watch."
    )
    pipeline_defect: list[DriftAction] | None = Field(
        _DEFECT, description="Broken data upstream: never train on it."
    )
    world_change: list[DriftAction] | None = None
    unknown: list[DriftAction] | None = None

    def actions(self, cause: Cause) -> list[DriftAction] | None:
        """The actions ``cause`` allows (None: the drift rules' bounds)."""
        found: list[DriftAction] | None = getattr(self, cause)
        return found


class EvaluatorRules(_Strict):
    metric: str = Field(
        "roc_auc",
        description="Primary metric of a model that names none, when it measures the model's "
        "task (else the task's own primary metric). A model's own metric always wins.",
    )
    n_boot: int = 500
    confidence: float = 0.95
    max_valid_gap: float = Field(
        0.25,
        gt=0,
        description="A challenger whose holdout score is more than this below its own "
        "validation score (metric points, or a share for RMSE/MAE) is a training defect: "
        "flagged with the numbers and rejected, whatever its gain.",
    )

    @field_validator("metric")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}")
        return name


class RiskRules(_Strict):
    no_champion_is_high: bool = True
    family_change_is_high: bool = True
    quality_warnings_are_high: bool = True
    risky_warning_checks: list[str] = ["constant_column", "new_categories"]
    min_gain_to_halfwidth: float = 3.0
    max_divergence: float = Field(
        0.12,
        description="Prediction divergence above which a promotion is high risk: binary mean "
        "|p_challenger - p_champion|; multiclass mean total variation between the class "
        "distributions; regression mean |y_challenger - y_champion| over the target's std.",
    )


class PeopleRules(_Strict):
    """Who may do what by hand (the roles of driftpilot.core.identity)."""

    rollback_role: Literal["operator", "approver", "admin"] = Field(
        "approver",
        description="Least role that may roll a champion back (chat, API and CLI), always "
        "with a reason; from the chat only after the person confirms the proposal.",
    )


class DriftEvidence(_Strict):
    """What the drift policy weighs (built by the drift analyst from the tools' results)."""

    weighted_share: float = Field(description="Champion importance on shifted columns (0-1).")
    labelled: bool = Field(
        description="The batch has labelled rows the model's metric is defined on (classifiers: "
        "two classes or more; regression: two rows or more with a spread)."
    )
    drop: float | None = Field(
        None,
        description="How much worse the champion's metric is on the batch than its baseline "
        "(Metric.drop: > 0 worse, whatever the metric's direction; a share for RMSE/MAE).",
    )
    drop_low: float | None = Field(None, description="Lower bound of the drop's interval.")
    estimated: bool = Field(
        False, description="The drop is estimated without labels (CBPE or DLE), not measured."
    )
    fresh_gain: float | None = Field(
        None,
        description="What a quick retrain (default parameters, the retrain's window) wins over "
        "the champion on the batch's holdout, in the model's metric (Metric.gain: > 0 better): "
        "what a retrain can win back.",
    )
    fresh_gain_low: float | None = Field(None, description="Lower bound of that gain.")
    fresh_gain_high: float | None = Field(None, description="Upper bound of that gain.")
    recent_signals: int = Field(
        0, description="Of the previous persistence_n - 1 batches, those with drift or a drop."
    )
    batches_since_retrain: int | None = Field(
        None, description="Batches since the last retrain attempt (None: never)."
    )
    retrains: int = Field(0, description="Latest retrain attempts of this model (up to 4).")
    promotions: int = Field(0, description="Of which promoted.")
    reading: CauseReading | None = Field(
        None,
        description="The cause the numbers read beyond the drift rules (label_shift, "
        "expected_change); None: world_change when drift or a performance signal fired, "
        "else unknown.",
    )
    episode_hold: list[str] = Field(
        default_factory=list,
        description="Why the drift episode holds a retrain (driftpilot.core.episodes."
        "retrain_hold; empty: no hold, or a person asked).",
    )


class DriftBounds(_Strict):
    """What the drift analyst may choose, and what the policy itself would choose."""

    allowed: list[DriftAction]
    default: DriftAction
    severity: Severity
    signals: list[str] = Field(description="Why: the signals that fired.")
    material: bool = Field(False, description="The drift is material (weighted share).")
    significant_drop: bool = Field(False, description="The drop counts (large and significant).")
    stale: bool = Field(False, description="A quick retrain wins significantly on the holdout.")
    labels_requested: bool = Field(False, description="An estimated drop with material drift.")
    expected_gain: float | None = Field(
        None,
        description="P(promotion) x the drop's lower bound x horizon: what a retrain is "
        "expected to win back.",
    )
    cause: Cause = Field("unknown", description="The cause the numbers read.")
    cause_reasons: list[str] = Field(
        default_factory=list, description="Why that cause, in words with numbers."
    )
    by_cause: dict[Cause, list[DriftAction]] = Field(
        default_factory=dict,
        description="The actions allowed if an analyst names another cause (from a note): "
        "each is the cause's mapped actions within these bounds (monitor always stays "
        "possible), so a cause can narrow the actions, never widen them. A cause absent here "
        "cannot be named.",
    )
    episode_held: bool = Field(False, description="The drift episode held a retrain.")


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


def _severity(
    share: float, rules: DriftRules, material: bool, significant: bool, severe: bool
) -> Severity:
    if severe or share >= rules.severity_high_share:
        return "high"
    if material or significant:
        return "medium"
    return "low" if share >= rules.monitor_share / 2 else "none"


def _retrain(
    quiet: DriftBounds, gain: float | None, signals: list[str], severe: bool = False
) -> DriftBounds:
    # A severe signal leaves no choice, as a failed quality check leaves ingestion none:
    # watching a model that lost that much keeps serving it. Otherwise the default comes
    # first (the order the analyst's template lists the choices in).
    allowed: list[DriftAction] = ["retrain"] if severe else ["retrain", "monitor"]
    return quiet.model_copy(
        update={
            "allowed": allowed,
            "default": "retrain",
            "expected_gain": None if gain is None else round(gain, 4),
            "signals": signals,
        }
    )


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
        """none / monitor / retrain / recalibrate: the drift rules' bounds (``rule_bounds``),
        then the episode's hold, then the cause.

        - Episode: a retrain the rules allow but the drift episode holds
          (``ev.episode_hold``: ``retraining.max_failed_retrains`` challengers lost and the
          evidence did not change, nobody asked) becomes monitor, the hold's reasons in the
          signals (``episode_held``).
        - Cause: the numbers' cause (``ev.reading``; else world_change on material drift or a
          performance signal, else unknown) maps through ``causes:`` to the actions it
          allows. A mapped cause replaces the rules' bounds with its actions, keeping only
          those the evidence supports: monitor and none always, retrain only where the rules
          (after the hold) allow it, recalibrate only for a label shift on labelled rows. The
          default is the first kept (label shift: recalibrate). An unmapped cause keeps the
          rules' bounds; a prevalence move that is no label shift turns a quiet default into
          monitor.
        - ``by_cause``: what an analyst may do if it names another cause (read from a note):
          that cause's actions within these bounds, plus monitor; an unmapped one keeps
          these bounds. A cause can narrow the actions, never widen them."""
        base = self.rule_bounds(ev)
        bounds = self._episode(base, ev)
        cause, reasons = self._cause(bounds, ev)
        mapped = self.causes.actions(cause)
        if mapped is not None:
            bounds = self._mapped(bounds, ev, cause, mapped, reasons)
        else:
            bounds = self._unmapped(bounds, ev, cause, reasons)
        return bounds.model_copy(update={"by_cause": self._by_cause(bounds)})

    @staticmethod
    def _unmapped(
        bounds: DriftBounds, ev: DriftEvidence, cause: Cause, reasons: list[str]
    ) -> DriftBounds:
        """The rules' bounds with the cause. A reading that named no cause of its own (the
        labels' prevalence moved, and the class shares do not explain the inputs' move: a
        change in the world) says why in the signals, and turns a quiet default into monitor:
        the data moved in a way that matters, even where no column did alone."""
        update: dict[str, object] = {"cause": cause, "cause_reasons": reasons}
        if ev.reading is not None:
            update["signals"] = [*bounds.signals, f"cause {cause}: {'; '.join(reasons)}"]
            if bounds.default == "none" and "monitor" in bounds.allowed:
                update.update(allowed=["monitor", "none"], default="monitor")
        return bounds.model_copy(update=update)

    def _episode(self, bounds: DriftBounds, ev: DriftEvidence) -> DriftBounds:
        """A retrain the episode holds becomes monitor, with the hold's reasons."""
        if not ev.episode_hold or "retrain" not in bounds.allowed:
            return bounds
        held = [*bounds.signals, *(f"episode: {why}" for why in ev.episode_hold)]
        return bounds.model_copy(
            update={
                "allowed": ["monitor"],
                "default": "monitor",
                "signals": held,
                "episode_held": True,
            }
        )

    @staticmethod
    def _cause(bounds: DriftBounds, ev: DriftEvidence) -> tuple[Cause, list[str]]:
        """The numbers' cause and why: ``ev.reading``'s own cause first; then world_change on
        material drift or a performance signal; then the reading's (a prevalence move the
        class shares do not explain is a world change too); else unknown."""
        if ev.reading is not None and ev.reading.cause not in ("world_change", "unknown"):
            return ev.reading.cause, list(ev.reading.reasons)
        if bounds.material or bounds.significant_drop or bounds.stale:
            fired = [
                name
                for name, on in (
                    ("material drift", bounds.material),
                    ("a significant drop", bounds.significant_drop),
                    ("a stale champion", bounds.stale),
                )
                if on
            ]
            extra = list(ev.reading.reasons) if ev.reading is not None else []
            return "world_change", [f"{' and '.join(fired)}, no other cause reads", *extra]
        if ev.reading is not None:  # the labels moved, and not as a label shift: a change
            return ev.reading.cause, list(ev.reading.reasons)
        return "unknown", ["no material drift and no performance signal: no cause reads"]

    def _mapped(
        self,
        bounds: DriftBounds,
        ev: DriftEvidence,
        cause: Cause,
        mapped: list[DriftAction],
        reasons: list[str],
    ) -> DriftBounds:
        """The bounds of a mapped cause: its actions that the evidence supports."""
        supported = {"monitor", "none", *bounds.allowed}
        # The episode's hold stops any challenger, a recalibrated champion included.
        if cause == "label_shift" and ev.labelled and not ev.episode_hold:
            supported.add("recalibrate")
        allowed = [a for a in mapped if a in supported] or ["monitor"]
        signal = f"cause {cause}: {'; '.join(reasons)} -> {' or '.join(allowed)}"
        if "retrain" in bounds.allowed and "retrain" not in allowed:
            signal += " (no retrain)"
        return bounds.model_copy(
            update={
                "allowed": allowed,
                "default": allowed[0],
                "signals": [*bounds.signals, signal],
                "cause": cause,
                "cause_reasons": reasons,
                "expected_gain": bounds.expected_gain if "retrain" in allowed else None,
            }
        )

    def _by_cause(self, bounds: DriftBounds) -> dict[Cause, list[DriftAction]]:
        """What naming each cause allows within ``bounds`` (see ``drift_bounds``)."""
        out: dict[Cause, list[DriftAction]] = {}
        for cause in CAUSES:
            mapped = self.causes.actions(cause)
            if cause == bounds.cause or mapped is None:
                out[cause] = list(bounds.allowed)
                continue
            kept = [a for a in mapped if a in bounds.allowed or a == "monitor"]
            if kept:
                out[cause] = kept
        return out

    def rule_bounds(self, ev: DriftEvidence) -> DriftBounds:
        """none / monitor / retrain from material drift and a drop that matters (the drift
        rules, before the episode and the cause).

        Two performance signals: the champion dropped against its out-of-time baseline
        (decay), or a quick retrain beats it on the batch's holdout (staleness: what a
        retrain can win back); each counts when at least ``max_metric_drop`` and
        significant. A drop that a measured quick retrain does not fix (a harder season)
        never retrains. Monitor: material drift (alarms on anything else wear people out).
        Retrain (labelled batches only: their holdout judges the challenger) on a signal
        that is severe, or persisted in k of the last n batches outside the cooldown, AND
        whose sure part (lower bound) x P(promotion) x horizon covers the retrain's cost
        (severe signals retrain whatever the cost).
        A severe signal allows only retrain; otherwise the analyst may keep watching.
        Without labels an estimated drop with material drift asks for labels. Every rule
        that fired, or held a retrain back, is a signal."""
        rules, limits = self.drift, self.retraining
        signals: list[str] = []
        material = ev.weighted_share >= rules.monitor_share
        if material:
            signals.append(
                f"weighted drift {versus(ev.weighted_share, rules.monitor_share, digits=2)}"
            )
        significant = (
            ev.drop is not None
            and ev.drop_low is not None
            and ev.drop >= rules.max_metric_drop
            and ev.drop_low > 0
        )
        stale = (
            ev.fresh_gain is not None
            and ev.fresh_gain_low is not None
            and ev.fresh_gain >= rules.max_metric_drop
            and ev.fresh_gain_low > 0
        )
        severe = (significant and (ev.drop or 0.0) >= rules.severe_metric_drop) or (
            stale and (ev.fresh_gain or 0.0) >= rules.severe_metric_drop
        )
        if significant:
            kind = "estimated " if ev.estimated else ""
            signals.append(
                f"{kind}drop {versus(ev.drop or 0.0, rules.max_metric_drop)}, significant "
                f"(lower bound {versus(ev.drop_low or 0.0, 0, strict=True)})"
            )
        if stale:
            signals.append(
                f"stale: a quick retrain wins {quote(ev.fresh_gain or 0.0)} on the holdout "
                f"(lower bound {versus(ev.fresh_gain_low or 0.0, 0, strict=True)})"
            )
        if severe:
            signals.append(f"severe: at least {rules.severe_metric_drop}")
        severity = _severity(ev.weighted_share, rules, material, significant or stale, severe)
        # Monitor means material drift: a performance signal either retrains or, held back
        # (not yet persistent, cooling down, not worth it), waits in the signals and history.
        watch = material
        quiet = DriftBounds(
            allowed=["monitor", "none"] if watch else ["none", "monitor"],
            default="monitor" if watch else "none",
            severity=severity,
            signals=signals,
            material=material,
            significant_drop=significant,
            stale=stale,
        )
        if rules.retrain == "never" or not ev.labelled:
            if significant and ev.estimated and material:
                asked = [*signals, "labels requested: an estimated drop with material drift"]
                return quiet.model_copy(update={"labels_requested": True, "signals": asked})
            return quiet
        if rules.retrain == "always":
            return _retrain(quiet, None, [*signals, "policy: retrain on every labelled batch"])
        if not (significant or stale):
            return quiet
        surely_nothing = (
            ev.fresh_gain_high is not None and ev.fresh_gain_high < rules.max_metric_drop
        )
        if not stale and surely_nothing:
            # A quick retrain was measured and surely wins less than a drop that counts: the
            # batch is harder (a season), not the champion older. Retraining would not fix it.
            held = [
                *signals,
                f"a quick retrain surely wins less than {rules.max_metric_drop} on the holdout "
                f"(upper bound {versus(ev.fresh_gain_high or 0.0, rules.max_metric_drop)}): "
                "nothing to win back",
            ]
            return quiet.model_copy(update={"signals": held})
        p_promotion = (ev.promotions + 1) / (ev.retrains + 2)  # Laplace: 1/2 before any
        # What a retrain is sure to win back: the lower bound of the quick retrain's gain (or,
        # when none could be measured, of the drop). A wide interval (a small batch, a
        # baseline measured on few rows) promises little, and so triggers little.
        sure = (ev.fresh_gain_low if stale else ev.drop_low) or 0.0
        gain = p_promotion * sure * limits.horizon_batches
        held = self._held_back(ev, severe, gain)
        if held:
            update = {"expected_gain": round(gain, 4), "signals": [*signals, *held]}
            return quiet.model_copy(update=update)
        worth = f"expected gain {versus(gain, limits.retrain_cost, name='retrain cost')}"
        return _retrain(quiet, gain, [*signals, worth], severe)

    def _held_back(self, ev: DriftEvidence, severe: bool, gain: float) -> list[str]:
        """Why a significant drop does not retrain yet (empty: it does)."""
        limits, reasons = self.retraining, []
        if not severe:
            seen = ev.recent_signals + 1
            if seen < limits.persistence_k:
                reasons.append(
                    f"not yet persistent: {seen} of the last {limits.persistence_n} batches "
                    f"(needs {limits.persistence_k}, or a severe drop)"
                )
            since = ev.batches_since_retrain
            if since is not None and since < limits.cooldown_batches:
                reasons.append(
                    f"cooldown: {since} batches since the last retrain "
                    f"(needs {limits.cooldown_batches}, or a severe drop)"
                )
        if gain < limits.retrain_cost and not severe:  # a severe drop retrains whatever the cost
            reasons.append(
                f"not worth it: expected gain "
                f"{versus(gain, limits.retrain_cost, name='retrain cost')} (P(promotion) "
                f"{(ev.promotions + 1) / (ev.retrains + 2):.2f} from {ev.promotions} of "
                f"{ev.retrains} retrains promoted)"
            )
        return reasons

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
        champion retrains without any drop (a severe gain at once), and a retrain that surely
        wins nothing holds a significant drop back, so every outcome stays possible until it is
        measured."""
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
