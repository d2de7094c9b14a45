"""Estimation tools: how good is one model on a batch, with labels or without them.

``metric_interval`` gives a model's metric on a labelled batch with a bootstrap interval
(``tools.metrics.interval``; classes resampled separately, so every replicate of a
classifier's interval keeps its classes and the interval exists even with a handful of
positives, fraud at 0.17 %). A binary ROC AUC, the most common case, has its own stratified
path: the same interval, several times faster on big batches.

Without labels, ``fit_estimator`` (on labelled reference rows the model did not train on) and
``estimate`` (on the batch) estimate the model's primary metric, one method per task:

**Binary and multiclass: confidence-based performance estimation (CBPE, as in NannyML:
https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html).** An
isotonic ``Calibrator`` maps the model's score to the probability that the label is 1 (binary)
or, per class, that the label is that class (multiclass, one-vs-rest, the calibrated class
probabilities renormalised to sum to 1). On the batch each row's calibrated probability is read
as the chance of each label, which gives expected true / false positives at every threshold of
the model's score, hence an expected ROC curve and AUC (multiclass: the macro mean of the
one-vs-rest AUCs, as the realised metric). The interval is the spread of the realised AUC when
labels are drawn from the calibrated probabilities.

What CBPE assumes, and when not to trust it:

* Calibration still holds on the batch: P(label | score) is the same as on the reference rows.
  That is true under pure *covariate shift* (the distribution of x moves, P(y | x) does not)
  when the score carries all of x's information about y (a well-specified model), which is why
  CBPE can follow a change in AUC caused by the batch moving into regions where the model
  separates the classes better or worse. With an imperfect model, P(y | score) itself moves a
  little under covariate shift; on a simulated 0.7-std shift a LightGBM model's AUC was
  over-estimated by about 0.015, a logistic model's by about 0.005.
* It cannot see *concept drift*: if P(y | x) itself changes (fraudsters change tactics, a label
  definition changes), the calibrated probabilities are simply wrong and the estimate stays
  where the reference was while the real AUC falls. Only labels reveal that; check the estimate
  against realised metrics whenever labels arrive.
* It is unreliable when the calibrator is weak: few reference rows or few rows of a class
  (isotonic steps are then coarse; a multiclass class absent from the reference keeps the
  model's raw probability), scores on the batch outside the reference range (the map is
  clipped to its end values), or a batch whose scores fall almost entirely in one step.
* The multiclass calibration is one-vs-rest per class, then renormalised: it corrects each
  class's probability given that class's score only, not the joint distribution of the scores.
* The reported interval only covers the sampling spread of labels drawn from the calibrated
  probabilities. It does not include the calibrator's own error nor any violation of the
  assumptions above, so it is a lower bound on the real uncertainty.

Measured on real flights (``evals/bench_estimate_tasks.py``; 12 monthly batches of 8,000
rows, seasonal covariate shift without concept drift): binary CBPE off by 0.012 on average,
multiclass 0.007 (macro ROC AUC); forward in time, where delays relate to the features
differently each season, both over-estimated the AUC by about 0.09.

**Regression: direct loss estimation (DLE, as in NannyML:
https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html#direct-loss-estimation-dle).**
A LightGBM regressor (one thread) learns the champion's loss per row, the squared error for
RMSE and the absolute error for MAE, from the row's features and the champion's prediction, on
the reference rows. It is cross-fitted (``DLE_FOLDS`` folds, each model stopped early on a
slice of its own training rows), so the reference's own estimate comes from models that never
saw those rows (not optimistic), and a batch gets the mean of the fold models. The estimated
RMSE is the square root of the mean predicted squared error; the MAE the mean predicted
absolute error. The interval is a residual bootstrap: each replicate adds to each batch row's
predicted loss the out-of-fold residual of a reference row with a similar predicted loss, drawn
with replacement, so it covers the noise of the realised loss around its expectation.

What DLE assumes, and when not to trust it:

* Like CBPE, only covariate shift: the distribution of the loss given the features and the
  prediction is the reference's. A change in how the target relates to the features (concept
  drift: a new cause of delays the features do not carry) moves the real loss and not the
  estimate. Check it against realised metrics when labels arrive.
* The loss model must see what the loss depends on: features that explain the size of the
  errors (weather for flight delays) must be among ``features``. Losses driven by what no
  feature carries average out to the reference's level, so the estimate follows only the part
  of a change the features explain.
* Squared errors are heavy-tailed (a handful of five-hour delays dominate a month's RMSE): a
  small batch's realised RMSE swings with its few extreme rows, which no estimate from the
  features can foresee; trust the estimate on batches of thousands of rows, not dozens.
* Measured on real flights (same bench): the estimated RMSE of the arrival delay was off by
  6.3 % of the realised RMSE on average (5.9 % and 7.5 % with other seeds), by up to 20 % in
  a single month (October and November, whose realised RMSE fell below the reference's);
  forward in time, 7.9 % on average.
* It needs enough reference rows to learn the loss (``MIN_DLE_ROWS``), and batches inside the
  reference's range of features and predictions (a tree model extrapolates flat).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import ConfigError, DataError, SchemaError
from driftpilot.core.tasks import Task, check_task
from driftpilot.core.tasks import metric as metric_info
from tools.metrics import MAX_CELLS, MetricInterval, encode_labels, interval, weighted

if TYPE_CHECKING:  # sklearn takes a while to import; only needed once a calibrator is fitted
    from sklearn.isotonic import IsotonicRegression

__all__ = [
    "ESTIMABLE",
    "Calibrator",
    "EstimatedPerformance",
    "MetricInterval",
    "PerformanceEstimator",
    "estimate",
    "estimate_performance",
    "fit_calibrator",
    "fit_estimator",
    "metric_interval",
]

MIN_CALIBRATION_ROWS = 20
MIN_DLE_ROWS = 200  # reference rows a loss model needs (fewer: folds of a few dozen rows)
DLE_FOLDS = 3
DLE_BINS = 10  # predicted-loss strata of the residual bootstrap

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

    @property
    def roc_auc(self) -> float:
        """``value`` under its former name, read by callers written for binary CBPE (until
        they read ``value``)."""
        if self.metric != "roc_auc":
            raise AttributeError(f"this estimate is of {self.metric}, not roc_auc")
        return self.value


class Calibrator:
    """Isotonic map from raw model scores to calibrated probabilities of label 1.

    Fit it with ``fit_calibrator`` on labelled rows the model did not train on (a reference or
    validation slice); the map is monotone, so it never changes the ranking of the scores.
    """

    def __init__(self, iso: IsotonicRegression, n_rows: int, n_positive: int) -> None:
        self._iso = iso
        self.n_rows = n_rows  # labelled rows the map was fitted on
        self.n_positive = n_positive  # of which label 1

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated P(label = 1) per score; scores outside the fitted range are clipped."""
        s = _scores(scores)
        return np.clip(np.asarray(self._iso.predict(s), dtype=float), 0.0, 1.0)

    def __repr__(self) -> str:
        return f"Calibrator(n_rows={self.n_rows}, n_positive={self.n_positive})"


@dataclass
class PerformanceEstimator:
    """What ``fit_estimator`` learnt on the reference; ``estimate`` applies it to a batch."""

    task: Task
    metric: str
    method: Literal["cbpe", "dle"]
    n_rows: int  # labelled reference rows it was fitted on
    calibrators: list[Calibrator | None] = field(default_factory=list)  # CBPE, one per class
    loss_models: list[Any] = field(default_factory=list)  # DLE: one booster per fold
    columns: _Columns | None = None  # DLE: how the features are laid out for the boosters
    residual_bins: list[np.ndarray] = field(default_factory=list)  # DLE: OOF residuals/stratum
    bin_edges: np.ndarray | None = None  # DLE: predicted-loss quantiles between the strata
    reference: EstimatedPerformance | None = None  # the estimate on the reference rows
    reference_losses: np.ndarray = field(default_factory=lambda: np.empty(0))  # DLE: OOF

    def __repr__(self) -> str:
        return f"PerformanceEstimator({self.method}, {self.task}, {self.metric}, {self.n_rows})"


# --------------------------------------------------------------------------- validation


def _labels(y_true: Any) -> np.ndarray:
    y = np.asarray(y_true).ravel()
    if not y.dtype == bool and not np.issubdtype(y.dtype, np.number):
        raise DataError(f"labels must be 0/1 numbers, got dtype {y.dtype}")
    return encode_labels(y, "binary")


def _scores(scores: Any) -> np.ndarray:
    s = np.asarray(scores, dtype=float).ravel()
    if not np.isfinite(s).all():
        raise DataError(f"scores hold {int((~np.isfinite(s)).sum())} NaN or infinite values")
    return s


def _check_args(n_boot: int, confidence: float) -> None:
    if n_boot < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")


def _paired(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y, s = _labels(y_true), _scores(scores)
    if len(y) != len(s):
        raise DataError(f"{len(y)} labels but {len(s)} scores")
    return y, s


def _bounds(values: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def _encoded(y: Any, task: Task, classes: Sequence[Any] | None) -> np.ndarray:
    """Labels as tools.metrics reads them: binary 0/1, multiclass class index, regression
    values. Multiclass labels are encoded against ``classes`` when given, else must already
    be indices."""
    if task == "binary":
        return _labels(y)
    if task == "regression":
        return encode_labels(y, task)
    if classes is not None:
        return encode_labels(y, task, classes)
    out = np.asarray(y).ravel()
    if not np.issubdtype(out.dtype, np.integer):
        raise DataError(
            f"multiclass labels must be class indices (or pass classes), got dtype {out.dtype}"
        )
    return out


# --------------------------------------------------------------------------- labelled batch


def metric_interval(
    y_true: Any,
    scores: Any,
    *,
    metric: str = "roc_auc",
    task: Task = "binary",
    n_boot: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
    classes: Sequence[Any] | None = None,
) -> MetricInterval:
    """The metric of ``scores`` against the labels, with a percentile bootstrap interval.

    Labels: binary 0/1 (bools and floats accepted), multiclass class indices (or the labels
    themselves with ``classes``, the order of the score columns), regression the values.
    Classifiers are resampled per class (``tools.metrics.interval``); the binary ROC AUC takes
    the stratified fast path of ``_binary_auc_interval``.

    Raises:
        DataError: labels that do not fit the task, NaN scores, or lengths that differ.
        ConfigError: a metric of another task, n_boot < 1 or confidence outside (0, 1).
    """
    metric_info(metric, task)
    _check_args(n_boot, confidence)
    y = _encoded(y_true, task, classes)
    if task == "binary" and metric == "roc_auc":
        return _binary_auc_interval(y, scores, n_boot, confidence, seed)
    return interval(metric, task, y, scores, n_boot=n_boot, confidence=confidence, seed=seed)


def _binary_auc_interval(
    y_true: np.ndarray, scores: Any, n_boot: int, confidence: float, seed: int
) -> MetricInterval:
    """Binary ROC AUC with a stratified bootstrap: each replicate draws ``n_positive``
    positives and ``n_rows - n_positive`` negatives with replacement from their own class.
    Negatives are sorted once, each positive's rank among them is found once, and a replicate
    only needs the cumulative counts of its resampled negatives (vectorised over replicates).
    None for value and bounds when the labels hold a single class."""
    y, s = _paired(y_true, scores)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    value = low = high = None  # one class only: no ROC AUC to give
    if n_pos and n_neg:
        neg = np.sort(s[y == 0])
        pos = s[y == 1]
        below = np.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
        upto = np.searchsorted(neg, pos, side="right")  # ... plus those tied with it
        value = float((below + upto).sum() / (2.0 * n_pos * n_neg))
        aucs = _stratified_auc_boot(below, upto, n_neg, n_boot, np.random.default_rng(seed))
        low, high = _bounds(aucs, confidence)
    return MetricInterval(
        metric="roc_auc",
        task="binary",
        higher_is_better=True,
        value=value,
        low=low,
        high=high,
        n_rows=len(y),
        confidence=confidence,
        n_boot=n_boot,
    )


def _stratified_auc_boot(
    below: np.ndarray, upto: np.ndarray, n_neg: int, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """AUC per replicate; ``below``/``upto`` index the sorted negatives for each positive."""
    n_pos = len(below)
    chunk = max(1, min(n_boot, 4_000_000 // max(n_neg, n_pos, 1)))  # bounds memory (~32 MB)
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        # multiplicity of each sorted negative in each replicate, then cumulative with a 0 column
        # (int32 is enough: b * n_neg <= 4e6, and is faster than int64 / float64)
        offset = (np.arange(b, dtype=np.int32) * n_neg)[:, None]
        draws = rng.integers(0, n_neg, (b, n_neg), dtype=np.int32) + offset
        counts = np.bincount(draws.ravel(), minlength=b * n_neg).reshape(b, n_neg)
        cum = np.zeros((b, n_neg + 1), dtype=np.int32)
        np.cumsum(counts, axis=1, out=cum[:, 1:])
        picks = rng.integers(0, n_pos, (b, n_pos), dtype=np.int32)  # resampled positives
        flat, row = cum.ravel(), (np.arange(b, dtype=np.int64) * (n_neg + 1))[:, None]
        wins = flat[below[picks] + row].sum(axis=1, dtype=np.int64)  # negatives below ...
        wins += flat[upto[picks] + row].sum(axis=1, dtype=np.int64)  # ... + (below + ties)
        out[start : start + b] = wins / (2.0 * n_pos * n_neg)
    return out


# --------------------------------------------------------------------------- unlabelled batch


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
    module docstring). ``y_ref`` as ``metric_interval`` reads labels; ``s_ref`` the model's
    scores on those rows. DLE also needs the rows themselves (``reference``) and the
    ``features`` its loss model reads. The estimator's ``reference`` is its estimate on the
    reference rows themselves (``confidence``, ``n_boot``; DLE: out of fold), the level a
    batch's estimate is compared with.

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
    y = _encoded(y_ref, task, classes)
    if task == "regression":
        if reference is None or not features:
            raise ConfigError("DLE needs the reference rows and the feature columns")
        found = _fit_dle(metric, y, _scores(s_ref), reference, list(features), seed)
        # the reference's own estimate from out-of-fold losses (not optimistic)
        found.reference = _dle_result(
            found, found.reference_losses, confidence, n_boot, np.random.default_rng(seed)
        )
    elif task == "binary":
        found = PerformanceEstimator(
            task, metric, "cbpe", len(y), calibrators=[fit_calibrator(y, s_ref)]
        )
    else:
        found = _fit_multiclass_cbpe(y, _class_scores(s_ref, len(y)))
    if found.reference is None:  # CBPE: the estimate on the rows it was calibrated on
        found.reference = estimate(
            found, s_ref, reference, confidence=confidence, seed=seed, n_boot=n_boot
        )
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
    if estimator.method == "dle":
        return _estimate_dle(estimator, scores, frame, confidence, n_boot, rng)
    if estimator.task == "binary":
        s = _scores(scores)
        if len(s) == 0:
            raise DataError("the batch is empty")
        calibrator = estimator.calibrators[0]
        assert calibrator is not None
        q = calibrator.transform(s)[:, None]
        s = s[:, None]
    else:
        s = _class_scores(scores)
        q = _calibrated(estimator, s)
    value = _expected_macro_auc(s, q)
    sims = _simulated_macro_auc(s, q, n_boot, rng)
    low, high = _bounds(sims, confidence) if len(sims) else (value, value)
    return EstimatedPerformance(
        method="cbpe",
        task=estimator.task,
        metric=estimator.metric,
        value=value,
        low=low,
        high=high,
        n_rows=len(s),
        confidence=confidence,
        expected_positive_rate=float(q.mean()) if estimator.task == "binary" else None,
    )


# ----------------------------------------------------------------------------- CBPE


def fit_calibrator(y_true: Any, scores: Any) -> Calibrator:
    """Isotonic calibration of ``scores`` on labelled rows the model did not train on.

    Raises:
        DataError: labels other than 0/1, NaN scores, a single class or fewer than 20 rows.
    """
    y, s = _paired(y_true, scores)
    n_pos = int(y.sum())
    if len(y) < MIN_CALIBRATION_ROWS:
        raise DataError(
            f"calibration needs at least {MIN_CALIBRATION_ROWS} labelled rows, got {len(y)}"
        )
    if n_pos == 0 or n_pos == len(y):
        raise DataError(f"calibration needs both classes; got {len(y)} rows, {n_pos} positive")
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(s, y.astype(float))
    return Calibrator(iso, n_rows=len(y), n_positive=n_pos)


def estimate_performance(
    scores: Any,
    calibrator: Calibrator,
    *,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> EstimatedPerformance:
    """Binary CBPE with a calibrator fitted by ``fit_calibrator``: ``estimate`` of the
    estimator it makes (the form callers used before ``fit_estimator``)."""
    estimator = PerformanceEstimator(
        "binary", "roc_auc", "cbpe", calibrator.n_rows, calibrators=[calibrator]
    )
    return estimate(estimator, scores, n_boot=n_boot, confidence=confidence, seed=seed)


def _class_scores(scores: Any, n: int | None = None) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2 or s.shape[1] < 2 or (n is not None and len(s) != n):
        raise DataError(f"multiclass scores must have shape (n, k >= 2), got {s.shape}")
    if len(s) == 0:
        raise DataError("the batch is empty")
    if not np.isfinite(s).all():
        raise DataError(f"scores hold {int((~np.isfinite(s)).sum())} NaN or infinite values")
    return s


def _fit_multiclass_cbpe(y: np.ndarray, s: np.ndarray) -> PerformanceEstimator:
    """One isotonic map per class, one-vs-rest; a class without both outcomes among the
    reference rows keeps the model's raw probability (None)."""
    if len(y) < MIN_CALIBRATION_ROWS:
        raise DataError(
            f"calibration needs at least {MIN_CALIBRATION_ROWS} labelled rows, got {len(y)}"
        )
    present = np.unique(y[y >= 0])
    if len(present) < 2:
        raise DataError(f"calibration needs at least two classes; got {len(present)}")
    calibrators: list[Calibrator | None] = []
    for c in range(s.shape[1]):
        is_c = (y == c).astype(np.int8)
        both = 0 < is_c.sum() < len(is_c)
        calibrators.append(fit_calibrator(is_c, s[:, c]) if both else None)
    return PerformanceEstimator("multiclass", "roc_auc", "cbpe", len(y), calibrators=calibrators)


def _calibrated(estimator: PerformanceEstimator, s: np.ndarray) -> np.ndarray:
    """Per-class calibrated probabilities, renormalised to sum to 1 per row (a row whose
    calibrated probabilities are all 0 keeps the model's own)."""
    if s.shape[1] != len(estimator.calibrators):
        raise DataError(
            f"scores have {s.shape[1]} classes, the estimator was fitted on "
            f"{len(estimator.calibrators)}"
        )
    q = np.column_stack(
        [
            s[:, c] if cal is None else cal.transform(s[:, c])
            for c, cal in enumerate(estimator.calibrators)
        ]
    )
    total = q.sum(axis=1, keepdims=True)
    return np.where(total > 0, q / np.where(total > 0, total, 1.0), s)


def _soft(s: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row twice, once as a positive weighted ``q`` and once as a negative weighted
    ``1 - q``: a weighted ROC AUC of these rows is the expected AUC of the scores ``s`` when
    each row is positive with probability ``q`` (pairs counted with their expected weight)."""
    n = len(s)
    return np.r_[np.ones(n), np.zeros(n)], np.r_[s, s], np.r_[q, 1 - q]


def _expected_macro_auc(s: np.ndarray, q: np.ndarray) -> float:
    """CBPE point estimate: the expected ROC AUC of each score column (one-vs-rest) with
    positives expected per ``q``, averaged over the columns that expect both outcomes."""
    aucs = []
    for c in range(s.shape[1]):
        exp_pos, exp_neg = q[:, c].sum(), (1 - q[:, c]).sum()
        if exp_pos > 0 and exp_neg > 0:
            y2, s2, w = _soft(s[:, c], q[:, c])
            aucs.append(float(weighted("roc_auc", "binary", y2, s2, w[None, :])[0]))
    if not aucs:
        which = "positives" if q.sum() <= 0 else "negatives"
        raise DataError(
            f"calibrated probabilities are all {'0' if which == 'positives' else '1'}: the "
            f"batch has no expected {which}, so its AUC is undefined"
        )
    return float(np.mean(aucs))


def _simulated_macro_auc(
    s: np.ndarray, q: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Realised (macro) AUC of ``s`` for ``n_boot`` label draws from ``q`` (binary: a
    Bernoulli per row; multiclass: a class per row); a class that drew no positives or no
    negatives is left out of the mean, a draw with no class defined is dropped."""
    n, k = s.shape
    binary = k == 1
    step = max(1, min(n_boot, MAX_CELLS // max(2 * n * k, 1)))
    out: list[np.ndarray] = []
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        u = rng.random((b, n))
        if binary:
            drawn = [(u < q[:, 0]).astype(float)]
        else:
            # (a draw above a cumulative sum that rounds below 1 belongs to the last class)
            label = np.minimum(
                (u[:, :, None] > np.cumsum(q, axis=1)[None, :, :]).sum(axis=2), k - 1
            )
            drawn = [(label == c).astype(float) for c in range(k)]
        per_class = []
        for c, is_c in enumerate(drawn):
            y2, s2, _ = _soft(s[:, c], q[:, c])
            per_class.append(weighted("roc_auc", "binary", y2, s2, np.hstack([is_c, 1 - is_c])))
        stacked = np.vstack(per_class)
        defined = ~np.isnan(stacked)
        with np.errstate(invalid="ignore", divide="ignore"):
            macro = np.where(defined, stacked, 0).sum(axis=0) / defined.sum(axis=0)
        out.append(macro[defined.any(axis=0)])
    return np.concatenate(out)


# ----------------------------------------------------------------------------- DLE


@dataclass
class _Columns:
    """The loss model's design: numeric features as floats, the others as categories frozen
    to the reference's values, then the model's prediction."""

    numeric: list[str]
    categories: dict[str, list[str]]

    @classmethod
    def of(cls, reference: pl.DataFrame, features: list[str]) -> _Columns:
        missing = [c for c in features if c not in reference.columns]
        if missing:
            raise SchemaError(f"reference lacks feature columns {missing}")
        numeric = [c for c in features if reference[c].dtype.is_numeric()]
        categories = {
            c: sorted(reference[c].drop_nulls().cast(pl.String).unique().to_list())
            for c in features
            if c not in numeric
        }
        return cls(numeric, categories)

    def design(self, frame: pl.DataFrame, prediction: np.ndarray) -> Any:
        import pandas as pd

        missing = [c for c in [*self.numeric, *self.categories] if c not in frame.columns]
        if missing:
            raise SchemaError(f"the batch lacks feature columns {missing}")
        out = frame.select([pl.col(c).cast(pl.Float64) for c in self.numeric]).to_pandas()
        for col, values in self.categories.items():
            out[col] = pd.Categorical(frame[col].cast(pl.String).to_list(), categories=values)
        out["__prediction__"] = prediction
        return out


_DLE_PARAMS: dict[str, Any] = {
    "objective": "regression",  # the conditional mean of the loss is what the metric averages
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 50,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.9,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_threads": 1,
    "verbose": -1,
    "deterministic": True,
    "force_row_wise": True,
}


def _loss(metric: str, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    return (s - y) ** 2 if metric == "rmse" else np.abs(s - y)


def _from_loss(metric: str, mean_loss: np.ndarray) -> np.ndarray:
    return np.sqrt(mean_loss) if metric == "rmse" else mean_loss


def _fit_dle(
    metric: str,
    y: np.ndarray,
    s: np.ndarray,
    reference: pl.DataFrame,
    features: list[str],
    seed: int,
) -> PerformanceEstimator:
    """Cross-fitted loss models; the out-of-fold predictions give the reference's own
    estimate and the residuals of the bootstrap."""
    if len(y) != len(s) or reference.height != len(y):
        raise DataError(f"{len(y)} labels, {len(s)} predictions, {reference.height} rows")
    if len(y) < MIN_DLE_ROWS:
        raise DataError(f"DLE needs at least {MIN_DLE_ROWS} reference rows, got {len(y)}")
    columns = _Columns.of(reference, features)
    x = columns.design(reference, s)
    loss = _loss(metric, y, s)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(y)) % DLE_FOLDS
    oof = np.empty(len(y))
    models = []
    for f in range(DLE_FOLDS):
        fit_rows = np.flatnonzero(fold != f)
        model = _fit_loss_model(x, loss, fit_rows, rng, seed + f)
        held = np.flatnonzero(fold == f)
        oof[held] = np.clip(model.predict(x.iloc[held]), 0.0, None)
        models.append(model)
    edges = np.unique(np.quantile(oof, np.linspace(0, 1, DLE_BINS + 1)[1:-1]))
    stratum = np.searchsorted(edges, oof, side="right")
    residuals = loss - oof
    found = PerformanceEstimator(
        "regression",
        metric,
        "dle",
        len(y),
        loss_models=models,
        columns=columns,
        # (a stratum left empty by tied quantiles draws from every residual)
        residual_bins=[
            residuals[stratum == b] if (stratum == b).any() else residuals
            for b in range(len(edges) + 1)
        ],
        bin_edges=edges,
    )
    found.reference_losses = oof
    return found


def _fit_loss_model(
    x: Any, loss: np.ndarray, rows: np.ndarray, rng: np.random.Generator, seed: int
) -> Any:
    """A booster of the loss on ``rows``, stopped early on a random fifth of them."""
    import lightgbm as lgb

    shuffled = rng.permutation(rows)
    n_stop = max(1, len(rows) // 5)
    stop, train = shuffled[:n_stop], shuffled[n_stop:]
    params = {**_DLE_PARAMS, "seed": seed}
    train_set = lgb.Dataset(x.iloc[train], loss[train], params={"feature_pre_filter": False})
    stop_set = lgb.Dataset(
        x.iloc[stop], loss[stop], reference=train_set, params={"feature_pre_filter": False}
    )
    return lgb.train(
        params,
        train_set,
        num_boost_round=500,
        valid_sets=[stop_set],
        callbacks=[lgb.early_stopping(30, verbose=False)],
    )


def _estimate_dle(
    estimator: PerformanceEstimator,
    scores: Any,
    frame: pl.DataFrame | None,
    confidence: float,
    n_boot: int,
    rng: np.random.Generator,
) -> EstimatedPerformance:
    s = _scores(scores)
    if len(s) == 0:
        raise DataError("the batch is empty")
    if frame is None or frame.height != len(s):
        got = "no rows" if frame is None else f"{frame.height} rows"
        raise DataError(f"DLE needs the batch's rows with its {len(s)} predictions, got {got}")
    assert estimator.columns is not None
    x = estimator.columns.design(frame, s)
    predicted = np.mean([m.predict(x) for m in estimator.loss_models], axis=0)
    return _dle_result(estimator, np.clip(predicted, 0.0, None), confidence, n_boot, rng)


def _dle_result(
    estimator: PerformanceEstimator,
    predicted: np.ndarray,
    confidence: float,
    n_boot: int,
    rng: np.random.Generator,
) -> EstimatedPerformance:
    """The metric of the predicted losses, and the residual bootstrap's interval: each
    replicate adds to each row's predicted loss the residual of a reference row of the same
    predicted-loss stratum, drawn with replacement."""
    assert estimator.bin_edges is not None
    n = len(predicted)
    stratum = np.searchsorted(estimator.bin_edges, predicted, side="right")
    step = max(1, min(n_boot, MAX_CELLS // max(n, 1)))
    reps = []
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        noise = np.empty((b, n))
        for k, pool in enumerate(estimator.residual_bins):
            rows = np.flatnonzero(stratum == k)
            if len(rows):
                noise[:, rows] = pool[rng.integers(0, len(pool), (b, len(rows)))]
        # clipped after averaging: clipping each row's negative draw would bias the mean up
        reps.append(
            _from_loss(estimator.metric, np.clip((predicted + noise).mean(axis=1), 0, None))
        )
    low, high = _bounds(np.concatenate(reps), confidence)
    return EstimatedPerformance(
        method="dle",
        task="regression",
        metric=estimator.metric,
        value=float(_from_loss(estimator.metric, np.asarray(predicted.mean()))),
        low=low,
        high=high,
        n_rows=n,
        confidence=confidence,
    )
