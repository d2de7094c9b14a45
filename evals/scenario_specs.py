"""The scenario suite's catalogue (``evals.scenarios`` runs it): each scenario's drift, its
true cause and the note that says it, the distractor notes, how each drift that acts on labels
is made per task, the stream tiers, and the right actions per batch (``expected``) from the
ground truth and what could be known of its cause. The module docstring of ``evals.scenarios``
holds the table of causes and right actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from driftpilot.core.causes import Cause
from driftpilot.core.tasks import Task
from tools.synth import DEFECTS, GroundTruth

# Distractor notes: plausible, about the same days, and irrelevant to the data.
DISTRACTORS = (
    "Quarterly all-hands at 15:00; the dashboards are read-only for an hour.",
    "Alice is on call this week instead of Bob.",
    "Renamed the alert channel to #ml-ops.",
    "Finance closed the quarter today.",
    "Office network maintenance on Saturday night.",
)
Variant = Literal["none", "distractor", "note"]  # no note, a distractor, the note of the cause
VARIANTS: tuple[Variant, ...] = ("none", "distractor", "note")


@dataclass(frozen=True)
class Case:
    """A scenario: how its drift is injected (``ScenarioSpec`` fields, plus the suite's own
    ``batch_rows`` and ``labels``), its true cause from the onset (None: nothing to find), the
    note that says the cause (``{column}``: the drift's first column) and, when only that note
    can tell the cause, the cause the numbers alone read (``numbers``)."""

    drift: dict[str, Any]
    cause: Cause | None = None
    note: str | None = None
    numbers: Cause | None = None

    @property
    def note_decides(self) -> bool:
        return self.numbers is not None


# name -> its case (onset, length and batch size come from the tier)
SCENARIOS: dict[str, Case] = {
    # Stream shapes rather than drifts (the keys beyond ScenarioSpec's are the suite's own):
    # batches of 150 rows, where a metric moves by sampling noise alone; and labels that
    # arrive late (batches from the onset come without the target column).
    "small_noisy_batches": Case({"kind": "none", "batch_rows": 150}),
    "late_labels": Case({"kind": "none", "labels": "late"}),
    "no_drift": Case({"kind": "none"}),
    "covariate_shift": Case(
        {"kind": "covariate_shift", "magnitude": 1.5},
        "world_change",
        "New customer segment since today: a partner airline's passengers book through us.",
    ),
    "abrupt_concept_drift": Case(
        {"kind": "concept_drift", "magnitude": 0.9},
        "world_change",
        "Supplier changed: the new ground-handling company decides which flights wait.",
    ),
    "gradual_concept_drift": Case(
        {"kind": "gradual_concept_drift", "magnitude": 0.9, "ramp": 3},
        "world_change",
        "New rules for slot allocation roll out over the coming days.",
    ),
    "label_shift": Case(
        {"kind": "label_shift", "magnitude": 2.5},
        "label_shift",
        "Storm season: the share of delayed flights is up, the same kinds of flights as usual.",
    ),
    "corruption": Case(
        {"kind": "corruption", "corruption": "nan_storm"},
        "pipeline_defect",
        "ETL job 7 failed half-way overnight; its rows were loaded anyway.",
    ),
    "range_shift": Case(
        {"kind": "range_shift", "magnitude": 1.5},
        "world_change",
        "New fleet of long-haul aircraft in service from today.",
    ),
    "unit_change": Case(
        {"kind": "unit_change"},
        "pipeline_defect",
        "ETL release 4.2 switched {column} to Fahrenheit.",
    ),
    "join_bug": Case(
        {"kind": "join_bug", "magnitude": 0.3},
        "pipeline_defect",
        "Warehouse migration: the bookings join was rewritten today.",
    ),
    "default_fill": Case(
        {"kind": "default_fill", "magnitude": 0.4},
        "pipeline_defect",
        "Ingest service v2 deployed: a missing {column} is now written as 0.",
    ),
    "seasonal_repeat": Case(
        {"kind": "seasonal_repeat", "magnitude": 2.5},
        "expected_change",
        "Spring campaign, same as last year.",
    ),
    "lasting_concept_change": Case(
        {"kind": "lasting_concept_change", "magnitude": 0.9},
        "world_change",
        "Supplier changed, new customer segment: the old delay patterns no longer hold.",
    ),
    # Only the note tells these causes: the numbers read a world change.
    "campaign_shift": Case(
        {"kind": "covariate_shift", "magnitude": 2.5},
        "expected_change",
        "Spring campaign started today, same as last year: cheap fares on long routes.",
        numbers="world_change",
    ),
    "deploy_drop": Case(
        {"kind": "broken_feature"},
        "pipeline_defect",
        "Deployed feature service v3.1 at 00:30 with a new encoder for {column}.",
        numbers="world_change",
    ),
}
# The cause the numbers read for each kind of drift (a case's own ``numbers`` overrides it).
KIND_CAUSE: dict[str, Cause] = {
    "covariate_shift": "world_change",
    "range_shift": "world_change",
    "concept_drift": "world_change",
    "gradual_concept_drift": "world_change",
    "lasting_concept_change": "world_change",
    "broken_feature": "world_change",
    "label_shift": "label_shift",
    "seasonal_repeat": "expected_change",
    **dict.fromkeys(DEFECTS, "pipeline_defect"),
}
# How each scenario that acts on labels is made, per task (tools.synth): the results say it.
MECHANISMS: dict[Task, dict[str, str]] = {
    "binary": {
        "labels": "teacher LightGBM's P(1), log-odds sharpened x2; y ~ Bernoulli",
        "concept_drift": "labels flipped on a share of the rows where the first numeric "
        "column is above its median",
        "label_shift": "positive rate multiplied by the magnitude (rows resampled by class)",
    },
    "multiclass": {
        "labels": "teacher LightGBM's class probabilities raised to the power 2, renormalised; "
        "a class drawn from them",
        "concept_drift": "on the same share of rows a binary flip touches, the label moves one "
        "class on (cyclic permutation of the sorted classes)",
        "label_shift": "the reference's rarest class's prior multiplied by the magnitude "
        "(rows resampled by class: P(x | class) kept)",
    },
    "regression": {
        "labels": "teacher LightGBM's prediction stretched x2 around the mean, plus Gaussian "
        "noise of its residual std / 2",
        "concept_drift": "on the same share of rows a binary flip touches, the target rises by "
        "twice its reference std (a changed relation)",
        "label_shift": "rows resampled with weight magnitude ** z (z: standardised target): the "
        "target's distribution moves up, P(x | y) kept",
    },
}
# (task, scenario) -> why it is not run for that task. Empty: every scenario has an
# equivalent for every task; an entry here is printed and written to the results.
SKIPPED: dict[tuple[Task, str], str] = {}
# Scenarios where P(y | x) holds: confidence-based estimation (CBPE) should work there, and its
# error is scored (a concept drift or a prior shift breaks the calibration it relies on).
CALIBRATION_HOLDS = frozenset({"none", "covariate_shift", "range_shift"})
# (batches, onset, rows per batch, CTGAN epochs). The champion trains on the reference (2
# batches, 70 % of it), a challenger on the last 2 batches but the current one's holdout: at
# 1,000 rows a batch (the quick tier's before) the regression sat on the steep part of its
# learning curve: the challenger's 300 more rows alone won 4.8 % RMSE, over max_metric_drop, and
# clean batches retrained for a gain no drift caused (issue 21's false retrains). At 3,000 rows
# its 900 more rows win 1.5 % RMSE, the classifiers' at most 0.006 ROC AUC
# (evals.learning_curve).
QUICK, FULL = (6, 3, 3000, 10), (10, 5, 2000, 20)


def first_drift(truth: GroundTruth) -> int | None:
    """The first batch that carries the drift (a seasonal repeat's first shift is a period
    before its onset)."""
    if truth.onset is None:
        return None
    return truth.onset - (truth.period or 0) if truth.kind == "seasonal_repeat" else truth.onset


def expected(
    truth: GroundTruth,
    index: int,
    promoted_since_onset: bool,
    *,
    labels_late: bool = False,
    task: Task = "binary",
    cause: Cause | None = None,
    failed_retrains: int = 0,
    max_failed: int = 2,
) -> set[str]:
    """The right actions for batch ``index`` of a stream with this ground truth, when what
    can be known of its cause is ``cause`` (None: what the numbers read, ``KIND_CAUSE``).

    With ``labels_late``, no target column from the onset on: accept it and watch, never
    quarantine a batch for its missing labels. A pipeline defect is quarantined (a defect the
    numbers cannot see, once a note tells it, is watched or quarantined: never trained on); an
    expected change watched; a classifier's label shift recalibrated until a recalibration is
    promoted (a regression's moves its RMSE: monitor or retrain until a challenger is
    promoted); a world change as the drift says (moved inputs watched or retrained until a
    challenger trained on them is promoted, then watched or left), a lasting one retrained
    until ``max_failed`` challengers lost, then watched."""
    first = first_drift(truth)
    if truth.onset is not None and index >= truth.onset and labels_late:
        return {"none", "monitor"}
    if first is None or index < first:
        return {"none"}
    if not truth.drifted(index):  # between and after a seasonal repeat's shifts
        return {"none", "monitor"}
    cause = cause or KIND_CAUSE.get(truth.kind, "world_change")
    if truth.kind == "seasonal_repeat" and index < (truth.onset or 0):
        cause = "world_change"  # its first shift: nothing to recognise it by yet
    if cause == "pipeline_defect":
        return {"quarantine"} if truth.kind in DEFECTS else {"monitor", "quarantine"}
    if cause == "expected_change":
        return {"none", "monitor"}
    if cause == "label_shift":
        if task == "regression":
            # Its target moved: retrained, then the champion serving was trained on the moved
            # target, as after a covariate shift's promotion.
            return {"none", "monitor"} if promoted_since_onset else {"monitor", "retrain"}
        return {"none", "monitor"} if promoted_since_onset else {"recalibrate"}
    if truth.kind in ("covariate_shift", "range_shift") and promoted_since_onset:
        # The champion now serving was trained on the moved inputs: nothing left to act on
        # (as after a concept drift's promotion).
        return {"none", "monitor"}
    if truth.kind in ("covariate_shift", "range_shift", "seasonal_repeat"):
        return {"monitor", "retrain"}
    if truth.kind == "lasting_concept_change":
        return {"retrain"} if failed_retrains < max_failed else {"monitor"}
    ramping = truth.kind == "gradual_concept_drift" and index < first + (truth.ramp or 1) - 1
    if truth.kind == "broken_feature":  # read as a concept change: no reason to insist
        return {"none", "monitor"} if promoted_since_onset else {"monitor", "retrain"}
    if promoted_since_onset:
        return {"none", "monitor", "retrain"} if ramping else {"none", "monitor"}
    return {"monitor", "retrain"} if ramping else {"retrain"}


def true_cause(case: Case, truth: GroundTruth, index: int) -> str | None:
    """The cause of batch ``index``'s drift (None where nothing drifted): the case's, but a
    seasonal repeat's first shift is new, a world change."""
    if not truth.drifted(index):
        return None
    if truth.kind == "seasonal_repeat" and truth.onset is not None and index < truth.onset:
        return "world_change"
    return case.cause
