"""How good is a model on a batch whose labels have not arrived: its primary metric estimated,
one method per task, with an interval.

``fit_estimator`` learns, on labelled reference rows the model did not train on, how to
estimate the metric; ``estimate`` applies it to a batch's scores (and rows):

* binary and multiclass: confidence-based performance estimation (CBPE, ``tools.cbpe``), the
  expected ROC AUC (multiclass: macro one-vs-rest) under calibrated probabilities;
* regression: direct loss estimation (DLE, ``tools.dle``), a model of the champion's loss per
  row, hence its RMSE or MAE.

Both assume covariate shift only: blind to concept drift (P(label | features) changing), so
check an estimate against the realised metric whenever labels arrive. The modules of the
methods say what else each assumes and when not to trust it, with the errors measured on real
flights by ``evals/bench_estimate_tasks.py`` (binary CBPE off by 0.012 on average, multiclass
0.007, DLE's RMSE by 6.3 %; forward in time, under concept drift, both CBPE estimates about
0.09 too high and DLE 7.9 % off).

With labels, a model's metric and its bootstrap interval are ``tools.metrics.interval``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import ConfigError, DataError
from driftpilot.core.tasks import Task, check_task
from driftpilot.core.tasks import metric as metric_info
from tools.cbpe import Calibrator, estimate_cbpe, fit_calibrators
from tools.dle import DleEstimate, DleModel, estimate_dle, fit_dle
from tools.metrics import checked_labels, encode_labels

__all__ = [
    "ESTIMABLE",
    "EstimatedPerformance",
    "PerformanceEstimator",
    "estimate",
    "fit_estimator",
]

# The metrics each task's estimator gives without labels.
ESTIMABLE: dict[Task, tuple[str, ...]] = {
    "binary": ("roc_auc",),
    "multiclass": ("roc_auc",),
    "regression": ("rmse", "mae"),
}


class EstimatedPerformance(BaseModel):
    """A model's metric on an unlabelled batch, estimated by CBPE or DLE."""

    method: Literal["cbpe", "dle"] = Field(
        description="cbpe: confidence-based performance estimation (classifiers); dle: direct "
        "loss estimation (regressions). Both assume covariate shift only: blind to concept "
        "drift."
    )
    task: Task = Field("binary", description="binary, multiclass or regression.")
    metric: str = Field("roc_auc", description="Metric estimated (see driftpilot.core.tasks).")
    value: float = Field(description="The estimated metric on the batch.")
    low: float = Field(
        description="Lower bound: spread of the realised metric if labels (CBPE) or losses "
        "(DLE) behave as on the reference (excludes concept drift)."
    )
    high: float = Field(description="Upper bound of the same interval.")
    n_rows: int = Field(description="Rows of the batch (no labels needed).")
    confidence: float = Field(description="Confidence level of the interval, e.g. 0.95.")
    expected_positive_rate: float | None = Field(
        None,
        description="Binary: mean calibrated probability, the share of label 1 the batch "
        "should have; None for the other tasks.",
    )


@dataclass
class PerformanceEstimator:
    """What ``fit_estimator`` learnt on the reference; ``estimate`` applies it to a batch."""

    task: Task
    metric: str
    method: Literal["cbpe", "dle"]
    n_rows: int  # labelled reference rows it was fitted on
    calibrators: list[Calibrator | None] = field(default_factory=list)  # CBPE, one per class
    dle: DleModel | None = None  # DLE: the loss models
    reference: EstimatedPerformance | None = None  # the estimate on the reference rows

    def __repr__(self) -> str:
        return f"PerformanceEstimator({self.method}, {self.task}, {self.metric}, {self.n_rows})"


def fit_estimator(
    task: Task,
    metric: str,
    y_ref: Any,
    s_ref: Any,
    reference: pl.DataFrame | None = None,
    features: Sequence[str] | None = None,
    *,
    classes: Sequence[Any] | None = None,
    seed: int = 0,
    confidence: float = 0.95,
    n_boot: int = 200,
) -> PerformanceEstimator:
    """Learn, on labelled reference rows the model did not train on, how to estimate its
    ``metric`` on unlabelled batches: CBPE for classifiers, DLE for regressions (see the
    module docstring). ``y_ref``: binary 0/1 (bools and floats accepted), multiclass class
    indices (or the labels themselves with ``classes``, the order of the score columns),
    regression the values; ``s_ref`` the model's scores on those rows. DLE also needs the
    rows themselves (``reference``) and the ``features`` its loss model reads. The
    estimator's ``reference`` is its estimate on the reference rows themselves
    (``confidence``, ``n_boot``; DLE: out of fold), the level a batch's estimate is compared
    with.

    Raises:
        ConfigError: an unknown task, a metric the task's estimator does not give (see
            ``ESTIMABLE``), or a regression without ``reference`` and ``features``.
        DataError: labels or scores that do not fit, too few rows, or a single class.
    """
    check_task(task)
    metric_info(metric, task)
    _check_args(n_boot, confidence)
    if metric not in ESTIMABLE[task]:
        raise ConfigError(
            f"without labels a {task} model's {metric} cannot be estimated; "
            f"estimable: {list(ESTIMABLE[task])}"
        )
    if task == "multiclass" and classes is not None:
        y = encode_labels(y_ref, task, classes)
    else:
        y = checked_labels(y_ref, task)
    if task == "regression":
        if reference is None or not features:
            raise ConfigError("DLE needs the reference rows and the feature columns")
        dle = fit_dle(metric, y, _scores(s_ref), reference, list(features), seed)
        found = PerformanceEstimator(task, metric, "dle", len(y), dle=dle)
        own = dle.reference(confidence, n_boot, np.random.default_rng(seed))
        found.reference = _dle_performance(found, own, confidence)
        return found
    s = _scores(s_ref) if task == "binary" else _class_scores(s_ref, len(y))
    found = PerformanceEstimator(task, metric, "cbpe", len(y), fit_calibrators(task, y, s))
    # the estimate on the rows it was calibrated on
    found.reference = estimate(found, s, confidence=confidence, seed=seed, n_boot=n_boot)
    return found


def estimate(
    estimator: PerformanceEstimator,
    scores: Any,
    frame: pl.DataFrame | None = None,
    *,
    confidence: float = 0.95,
    seed: int = 0,
    n_boot: int = 200,
) -> EstimatedPerformance:
    """The estimated metric of the model whose ``scores`` these are on an unlabelled batch
    (``frame``: the batch's rows, needed by DLE for its features), with an interval.

    Raises:
        DataError: an empty batch, NaN scores, scores of the wrong shape, a DLE batch without
            its rows, or a CBPE batch with no expected positives or negatives.
        ConfigError: n_boot < 1 or confidence outside (0, 1).
    """
    _check_args(n_boot, confidence)
    rng = np.random.default_rng(seed)
    if estimator.dle is not None:
        found = estimate_dle(estimator.dle, _batch(scores), frame, confidence, n_boot, rng)
        return _dle_performance(estimator, found, confidence)
    s = _batch(scores) if estimator.task == "binary" else _class_scores(scores)
    cbpe = estimate_cbpe(estimator.calibrators, s, n_boot, confidence, rng)
    return EstimatedPerformance(
        method="cbpe",
        task=estimator.task,
        metric=estimator.metric,
        value=cbpe.value,
        low=cbpe.low,
        high=cbpe.high,
        n_rows=len(s),
        confidence=confidence,
        expected_positive_rate=cbpe.expected_positive_rate,
    )


def _dle_performance(
    estimator: PerformanceEstimator, found: DleEstimate, confidence: float
) -> EstimatedPerformance:
    return EstimatedPerformance(
        method="dle",
        task="regression",
        metric=estimator.metric,
        value=found.value,
        low=found.low,
        high=found.high,
        n_rows=found.n_rows,
        confidence=confidence,
    )


# --------------------------------------------------------------------------- validation


def _scores(scores: Any) -> np.ndarray:
    s = np.asarray(scores, dtype=float).ravel()
    if not np.isfinite(s).all():
        raise DataError(f"scores hold {int((~np.isfinite(s)).sum())} NaN or infinite values")
    return s


def _batch(scores: Any) -> np.ndarray:
    s = _scores(scores)
    if len(s) == 0:
        raise DataError("the batch is empty")
    return s


def _class_scores(scores: Any, n: int | None = None) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2 or s.shape[1] < 2 or (n is not None and len(s) != n):
        raise DataError(f"multiclass scores must have shape (n, k >= 2), got {s.shape}")
    if len(s) == 0:
        raise DataError("the batch is empty")
    if not np.isfinite(s).all():
        raise DataError(f"scores hold {int((~np.isfinite(s)).sum())} NaN or infinite values")
    return s


def _check_args(n_boot: int, confidence: float) -> None:
    if n_boot < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
