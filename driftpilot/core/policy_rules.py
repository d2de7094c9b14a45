"""The policy file's sections: the thresholds and limits people set in YAML.

Each section is a strict model, so a typo in a key is an error rather than a silent default.
The decisions that read them live beside (``driftpilot.core.policy``: the ``Policy`` that
loads the file, risk and measurement skips; ``driftpilot.core.policy_drift``: the drift
bounds); this module only says what can be set and what it means.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from driftpilot.core.causes import Cause
from driftpilot.core.tasks import METRICS

DriftAction = Literal["none", "monitor", "retrain", "recalibrate"]


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
        "beyond three standard errors of the difference of the two shares (both are samples).",
    )
    min_rows: int = Field(200, ge=10, description="Labelled rows needed to read prevalence.")
    class_score_shift: float = Field(
        0.3,
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
    max_left_effect: float = Field(
        0.4,
        gt=0,
        description="The feature drift left against the reference at the batch's class shares "
        "(importance-weighted effect size over its threshold, 1 = on average at the bar) that "
        "still reads as the same classes: a label shift leaves noise (0.11-0.19 on the quick "
        "suites' 1,000-row label shifts), a covariate shift that moved the labels with it "
        "keeps its drift (0.56-0.66).",
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
    prediction_threshold: float = Field(
        0.3,
        gt=0,
        description="Normed Wasserstein distance of the champion's predictions (batch against "
        "its holdout; multiclass: the mean over the classes' probabilities) at or above which, "
        "if significant (prediction_p_value), the predictions moved (monitor).",
    )
    prediction_p_value: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="The two-sample Kolmogorov-Smirnov p-value of the predictions under which "
        "their move is not chance (a small batch moves far by chance).",
    )
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
        0.05,
        description="A drop (or a quick retrain's gain) this large, whose lower bound reaches "
        "max_metric_drop, retrains at once: no wait, no cooldown; a drop at any cost, a gain "
        "(the champion no worse than its baseline) only if worth its cost.",
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
        "validation score (metric points, or a share for RMSE/MAE, read on the validation's "
        "scale: the holdout's score times the ratio of the two sets' chance levels) is a "
        "training defect: flagged with the numbers and rejected, whatever its gain.",
    )
    min_holdout_rows: int = Field(
        100,
        ge=2,
        description="Labelled holdout rows a gain needs to count (the evaluator's, and the "
        "drift analyst's quick retrain): on fewer, a paired bootstrap's interval is too "
        "narrow to promote on, and the challenger is rejected.",
    )
    min_class_rows: int = Field(
        10,
        ge=1,
        description="A classifier's holdout also needs two classes with at least this many "
        "labelled rows each (an ROC AUC on three positives is a coin).",
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
