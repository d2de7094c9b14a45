"""Graph state of one control run. Each agent writes its own slice; ``events`` accumulates."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field
from typing_extensions import TypedDict

from driftpilot.core.errors import PolicyViolation

R = TypeVar("R", bound=str)

# The slices are typing_extensions TypedDicts (plain dicts in the checkpoints, as before; the
# typing ones are opaque to pydantic on Python 3.11, so LangGraph's JSON schemas failed on
# them). Each field is described; a slice may carry more keys than it names (older runs,
# a replay's "replay" notes), and every key is optional (total=False): a slice grows as its
# agent writes it.


def _d(text: str) -> Any:
    return Field(description=text)


class BatchRef(TypedDict):
    """The batch a run was started on."""

    batch_id: Annotated[str, _d("The batch's name (e.g. its month).")]
    path: Annotated[str, _d("Where the incoming batch was staged (parquet).")]
    n_rows: Annotated[int, _d("Rows in the batch.")]
    content_hash: Annotated[str, _d("sha256 of the batch's content.")]


class IngestionSlice(TypedDict, total=False):
    """What the ingestion agent decided and where it filed the batch."""

    action: Annotated[Literal["accept", "quarantine", "escalate"], _d("The decision.")]
    reason: Annotated[str, _d("Why the batch was quarantined ('' when accepted).")]
    path: Annotated[str, _d("The filed copy of the batch.")]
    warnings: Annotated[list[str], _d("Quality warnings (the batch passed).")]
    risky_warnings: Annotated[list[str], _d("Warning checks the risk rules count.")]
    conversions: Annotated[list[str], _d("Types conformed to the reference window.")]
    time_range: Annotated[dict[str, Any] | None, _d("The batch's first and last time.")]
    quarantine_streak: Annotated[int, _d("Quarantines in a row before this batch.")]
    accepted_by: Annotated[str, _d("Who accepted an escalated batch as the new normal.")]


class EscalationSlice(TypedDict, total=False):
    """A person's answer to an escalated quarantine."""

    decision: Annotated[str, _d("approve or reject.")]
    approver: Annotated[str, _d("Who answered.")]
    comment: Annotated[str | None, _d("What they said.")]
    accepted: Annotated[bool, _d("The batch goes on (approved, and bound to this batch).")]


class DriftSlice(TypedDict, total=False):
    """The drift analyst's verdict, the policy's signals and the measurements."""

    action: Annotated[
        Literal["none", "monitor", "retrain", "recalibrate"],
        _d("The verdict (recalibrate: a label shift, the champion's calibration is refitted)."),
    ]
    severity: Annotated[str, _d("none, low, medium or high.")]
    drift_share: Annotated[float, _d("Evidently: share of columns whose test fired.")]
    weighted_share: Annotated[float, _d("Importance-weighted share of material shifts.")]
    material: Annotated[bool, _d("The shift is material under the policy.")]
    significant_drop: Annotated[bool, _d("The champion's score dropped significantly.")]
    stale: Annotated[bool, _d("Too long since the last retrain.")]
    predictions_moved: Annotated[
        bool, _d("The champion's predictions moved (drift.prediction_threshold, significant).")
    ]
    labels_requested: Annotated[bool, _d("An estimated drop with material drift: labels asked.")]
    expected_gain: Annotated[float | None, _d("P(promotion) of a retrain from history.")]
    signals: Annotated[list[str], _d("The policy's signals, in words.")]
    drifted_columns: Annotated[list[str], _d("Columns that shifted materially.")]
    skipped_columns: Annotated[dict[str, str], _d("Columns not tested, with the reason.")]
    domain_auc: Annotated[float | None, _d("The domain classifier's AUC.")]
    report: Annotated[
        str | None, _d("The Evidently report (gzip HTML); None: rendered after the run.")
    ]
    champion_version: Annotated[int | None, _d("The champion measured.")]
    metric: Annotated[str, _d("The model's metric every score is in (roc_auc, rmse, ...).")]
    higher_is_better: Annotated[bool, _d("The metric's direction (False: rmse, log_loss, mae).")]
    baseline: Annotated[float | None, _d("The champion's out-of-time score in the metric.")]
    score: Annotated[float, _d("The champion's score on the labelled batch.")]
    score_low: Annotated[float, _d("Its interval's lower bound.")]
    score_high: Annotated[float, _d("Its interval's upper bound.")]
    metric_drop: Annotated[
        float,
        _d(
            "How much worse the (estimated) score is than the baseline: > 0 worse in either "
            "direction; points, or a share of the baseline for rmse/mae."
        ),
    ]
    metric_drop_low: Annotated[float, _d("The drop's lower bound.")]
    estimated_score: Annotated[float, _d("The champion's score estimated without labels.")]
    estimated_low: Annotated[float, _d("The estimate's lower bound.")]
    estimated_high: Annotated[float, _d("The estimate's upper bound.")]
    estimate_method: Annotated[str, _d("cbpe (classifiers) or dle (regression).")]
    estimate_error: Annotated[str, _d("Why no estimate could be made.")]
    fresh_gain: Annotated[
        float, _d("What a quick retrain wins over the champion (> 0 better, metric's units).")
    ]
    fresh_gain_low: Annotated[float, _d("Its interval's lower bound.")]
    fresh_gain_high: Annotated[float, _d("Its interval's upper bound.")]
    prediction_shift: Annotated[
        float,
        _d(
            "How far the champion's predictions on the batch moved from those on its holdout "
            "(normed Wasserstein; multiclass: mean over the classes' probabilities)."
        ),
    ]
    prediction_p_value: Annotated[float, _d("Its two-sample Kolmogorov-Smirnov p-value.")]
    prediction_shift_error: Annotated[str, _d("Why the predictions' shift was not measured.")]
    holdout_too_small: Annotated[
        str,
        _d(
            "Why the batch's holdout could judge no challenger (too few labelled rows, or "
            "a classifier's classes too small)."
        ),
    ]
    skipped: Annotated[
        dict[str, str],
        _d("Measurements not made because they could not change the bounds, with the reason."),
    ]
    sampled: Annotated[
        dict[str, Any], _d("Measurements made on a stratified sample: its size and why.")
    ]
    cause: Annotated[
        str,
        _d(
            "Why the batch drifted (driftpilot.core.causes): pipeline_defect, expected_change, "
            "world_change, label_shift or unknown; the numbers' unless a cited note showed "
            "another."
        ),
    ]
    cause_reasons: Annotated[list[str], _d("Why that cause, in words with numbers.")]
    cited_notes: Annotated[list[int], _d("The ids of the notes the cause rests on.")]
    episode: Annotated[
        dict[str, Any] | None,
        _d("The drift episode as of this batch (driftpilot.core.episodes.Episode; None: none)."),
    ]


class OptimizerSlice(TypedDict, total=False):
    """The study the optimizer ran."""

    family: Annotated[str, _d("The model family tuned.")]
    n_trials: Annotated[int, _d("Trials planned.")]
    study: Annotated[str, _d("The Optuna study's name.")]
    best_params: Annotated[dict[str, Any], _d("The best trial's parameters.")]
    loss: Annotated[str, _d("The validation loss minimised (log_loss, rmse).")]
    best_value: Annotated[float | None, _d("The best trial's validation loss (lower better).")]
    n_complete: Annotated[int, _d("Trials completed.")]
    n_pruned: Annotated[int, _d("Trials pruned.")]


class RetrainingSlice(TypedDict, total=False):
    """The challenger retraining fitted and logged (an MLflow run, not yet a version)."""

    mlflow_run_id: Annotated[str, _d("The MLflow run of the challenger.")]
    model_uri: Annotated[str, _d("The logged model.")]
    model_id: Annotated[str | None, _d("MLflow's logged-model id.")]
    family: Annotated[str, _d("The challenger's family.")]
    window: Annotated[int, _d("Accepted batches trained on.")]
    rows: Annotated[int, _d("Training rows.")]
    window_path: Annotated[str, _d("The training window (parquet).")]
    holdout_path: Annotated[str, _d("The holdout (parquet).")]
    valid_metric: Annotated[str, _d("The model's metric, as valid_score is in.")]
    valid_score: Annotated[float | None, _d("The fit's validation score in that metric.")]
    valid_chance: Annotated[
        float | None,
        _d("What predicting the mean scores in validation (RMSE, MAE; else None): its scale."),
    ]
    window_quality_warnings: Annotated[int, _d("Risky warnings of the window's batches.")]
    version: Annotated[int, _d("The registered version (runs before cicd registered it).")]
    trainer: Annotated[str, _d("The owner's trainer that fitted it (package.module:fit).")]
    trainer_log: Annotated[str | None, _d("The trainer's output (kept; also on the MLflow run).")]
    failed: Annotated[bool, _d("The trainer gave no challenger: the run ends, champion kept.")]
    reason: Annotated[str, _d("Why it failed: raised, timeout, out_of_memory, unusable, ...")]
    error: Annotated[str, _d("The failure, in words.")]
    log_tail: Annotated[str, _d("The end of the failed trainer's output.")]


class EvaluationSlice(TypedDict, total=False):
    """Champion vs challenger on the holdout, and the evaluator's verdict."""

    action: Annotated[Literal["promote", "reject"], _d("The verdict.")]
    metric: Annotated[str, _d("The metric compared (the model's own).")]
    task: Annotated[str, _d("binary, multiclass or regression.")]
    higher_is_better: Annotated[bool, _d("The metric's direction.")]
    n_rows: Annotated[int, _d("Holdout rows.")]
    champion: Annotated[float, _d("The champion's score.")]
    challenger: Annotated[float, _d("The challenger's score.")]
    gain: Annotated[
        float,
        _d("How much better the challenger is: > 0 better; points, or a share for rmse/mae."),
    ]
    ci_low: Annotated[float, _d("The gain's interval, lower bound.")]
    ci_high: Annotated[float, _d("The gain's interval, upper bound.")]
    confidence: Annotated[float, _d("The interval's confidence.")]
    n_boot: Annotated[int, _d("Bootstrap resamples.")]
    significant: Annotated[bool, _d("The interval excludes zero on the better side.")]
    prediction_divergence: Annotated[
        float,
        _d(
            "How differently the two predict: binary mean |dp|, multiclass mean total "
            "variation, regression mean |dy| over the target's std."
        ),
    ]
    interval_above_zero: Annotated[bool, _d("The challenger is better at this confidence.")]
    champion_version: Annotated[int | None, _d("The champion compared (None: none yet).")]
    challenger_score: Annotated[float | None, _d("The challenger's own score (new baseline).")]
    challenger_low: Annotated[float | None, _d("Its interval's lower bound.")]
    challenger_high: Annotated[float | None, _d("Its interval's upper bound.")]


class CicdSlice(TypedDict, total=False):
    """The release decision."""

    tier: Annotated[Literal["low", "high"], _d("low promotes at once; high waits for a person.")]
    reasons: Annotated[list[str], _d("The high-risk rules that fired.")]
    summary: Annotated[str, _d("What the promotion changes, for the approver.")]
    version: Annotated[int, _d("The challenger's registered version.")]


class ApprovalSlice(TypedDict, total=False):
    """A person's answer to a high-risk promotion."""

    decision: Annotated[Literal["approve", "reject"], _d("The answer.")]
    approver: Annotated[str, _d("Who answered.")]
    comment: Annotated[str | None, _d("What they said.")]


class PromotionSlice(TypedDict, total=False):
    """What the promote step did."""

    status: Annotated[Literal["promoted", "superseded"], _d("Moved, or the champion had moved.")]
    version: Annotated[int, _d("The challenger's version.")]
    previous: Annotated[int | None, _d("The champion it replaced.")]
    approved_by: Annotated[str, _d("Who authorised it (policy:low-risk for low risk).")]
    family: Annotated[str, _d("The new champion's family.")]
    window_path: Annotated[str, _d("The new reference window.")]
    baseline: Annotated[float, _d("The new champion's out-of-time score in the metric.")]
    compared_against: Annotated[int | None, _d("Superseded: the champion it was compared to.")]
    champion_now: Annotated[int | None, _d("Superseded: the champion by then.")]


# The slices the agents write, in flow order (what a run's summary shows).
SLICES = (
    "ingestion",
    "escalation",
    "drift",
    "optimizer",
    "retraining",
    "evaluation",
    "cicd",
    "approval",
    "promotion",
)


class ControlState(TypedDict, total=False):
    """The state of one control run: its input, each agent's slice, the outcome, events."""

    run_id: str
    model: str
    requested_by: str
    # A person's request for a retrain: {"retrain_by": name, "reason": text} (set at run
    # creation). It lifts an episode's hold on retraining, never the policy's other rules.
    request: dict[str, Any]
    batch: BatchRef
    ingestion: IngestionSlice
    escalation: EscalationSlice
    drift: DriftSlice
    optimizer: OptimizerSlice
    retraining: RetrainingSlice
    evaluation: EvaluationSlice
    cicd: CicdSlice
    approval: ApprovalSlice
    promotion: PromotionSlice
    outcome: str
    events: Annotated[list[str], operator.add]


def _route(value: Any, routes: dict[Any, R], what: str) -> R:
    """Fail closed: a value no route names raises instead of falling through to a default."""
    if value not in routes:
        raise PolicyViolation(f"unknown {what} {value!r}: the control graph refuses to route it")
    return routes[value]


# Routers read typed decisions, never free text; unknown values raise.
def after_ingestion(state: ControlState) -> Literal["drift_analyst", "escalation", "report"]:
    routes: dict[str, Literal["drift_analyst", "escalation", "report"]] = {
        "accept": "drift_analyst",
        "quarantine": "report",
        "escalate": "escalation",  # one quarantine too many in a row: a person decides
    }
    return _route(state["ingestion"]["action"], routes, "ingestion action")


def after_escalation(state: ControlState) -> Literal["drift_analyst", "report"]:
    """Only an accepted escalation (approved, bound to this batch) goes on."""
    routes: dict[bool, Literal["drift_analyst", "report"]] = {
        True: "drift_analyst",
        False: "report",
    }
    return _route(state["escalation"]["accepted"], routes, "escalation answer")


def after_drift(state: ControlState) -> Literal["optimizer", "recalibrate", "report"]:
    """A retrain tunes a challenger; a label shift refits the champion's calibration."""
    routes: dict[str, Literal["optimizer", "recalibrate", "report"]] = {
        "retrain": "optimizer",
        "recalibrate": "recalibrate",
        "monitor": "report",
        "none": "report",
    }
    return _route(state["drift"]["action"], routes, "drift action")


def after_retraining(state: ControlState) -> Literal["evaluator", "report"]:
    """A challenger goes to the evaluator; a failed trainer's run ends (challenger_failed)."""
    routes: dict[bool, Literal["evaluator", "report"]] = {False: "evaluator", True: "report"}
    return _route(bool(state["retraining"].get("failed")), routes, "retraining result")


def after_evaluation(state: ControlState) -> Literal["cicd", "report"]:
    routes: dict[str, Literal["cicd", "report"]] = {"promote": "cicd", "reject": "report"}
    return _route(state["evaluation"]["action"], routes, "evaluation action")


def after_cicd(state: ControlState) -> Literal["promote", "approval"]:
    """Only ``low`` goes straight to promote; ``high`` waits for a person."""
    routes: dict[str, Literal["promote", "approval"]] = {"low": "promote", "high": "approval"}
    return _route(state["cicd"]["tier"], routes, "risk tier")


def after_approval(state: ControlState) -> Literal["promote", "report"]:
    routes: dict[str, Literal["promote", "report"]] = {"approve": "promote", "reject": "report"}
    return _route(state["approval"]["decision"], routes, "approval decision")
