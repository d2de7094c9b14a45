"""Estimation tools: how good is one model on a batch, with labels or without them.

``metric_interval`` gives a model's metric on a labelled batch with a stratified percentile
bootstrap interval: positives and negatives are resampled separately, so every replicate keeps
both classes and the interval exists even with a handful of positives (fraud at 0.17 %).

``estimate_performance`` estimates the ROC AUC of a batch *without labels* by
confidence-based performance estimation (CBPE, as in NannyML:
https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html). A
``Calibrator`` (isotonic regression) is fitted on labelled reference rows the model did not
train on; on the new batch each row's calibrated probability ``p`` is read as the chance that
its label is 1, which gives expected true / false positives at every threshold and therefore an
expected ROC curve and AUC.

What CBPE assumes, and when not to trust it:

* Calibration still holds on the batch: P(y = 1 | score) is the same as on the reference rows.
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
* It is unreliable when the calibrator is weak: few reference rows or few positives (isotonic
  steps are then coarse), scores on the batch outside the reference range (the map is clipped
  to its end values), or a batch whose scores fall almost entirely in one isotonic step.
* The reported interval only covers the sampling spread of labels drawn from the calibrated
  probabilities. It does not include the calibrator's own error nor any violation of the
  assumptions above, so it is a lower bound on the real uncertainty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from driftpilot.core.errors import ConfigError, DataError

if TYPE_CHECKING:  # sklearn takes a while to import; only needed once a calibrator is fitted
    from sklearn.isotonic import IsotonicRegression

IntervalMetric = Literal["roc_auc"]  # extend with e.g. "pr_auc" when implemented

MIN_CALIBRATION_ROWS = 20


class MetricInterval(BaseModel):
    """One model's metric on a labelled batch, with a stratified bootstrap interval."""

    metric: IntervalMetric = Field(description="Metric measured (ROC AUC: 0.5 random, 1 perfect).")
    value: float | None = Field(
        description="Metric on all rows; None when the labels hold a single class (or none)."
    )
    low: float | None = Field(
        description="Lower bound of the percentile bootstrap interval; None with a single class."
    )
    high: float | None = Field(
        description="Upper bound of the percentile bootstrap interval; None with a single class."
    )
    n_rows: int = Field(description="Labelled rows measured.")
    n_positive: int = Field(description="Rows with label 1.")
    confidence: float = Field(description="Confidence level of the interval, e.g. 0.95.")
    n_boot: int = Field(
        description="Bootstrap replicates (positives and negatives resampled separately)."
    )


class EstimatedPerformance(BaseModel):
    """ROC AUC of a model on an unlabelled batch, estimated from calibrated probabilities."""

    method: Literal["cbpe"] = Field(
        default="cbpe",
        description="Confidence-based performance estimation (NannyML CBPE); assumes only "
        "covariate shift and cannot detect concept drift.",
    )
    roc_auc: float = Field(description="Expected ROC AUC given the calibrated probabilities.")
    low: float = Field(
        description="Lower bound: sampling spread of the realised AUC if labels were drawn from "
        "the calibrated probabilities (excludes calibration error and concept drift)."
    )
    high: float = Field(description="Upper bound of the same interval.")
    expected_positive_rate: float = Field(
        description="Mean calibrated probability: the share of label 1 the batch should have."
    )
    n_rows: int = Field(description="Rows of the batch (no labels needed).")
    confidence: float = Field(description="Confidence level of the interval, e.g. 0.95.")


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


# --------------------------------------------------------------------------- validation


def _labels(y_true: Any) -> np.ndarray:
    y = np.asarray(y_true).ravel()
    if y.dtype == bool:
        return y.astype(np.int8)
    if not np.issubdtype(y.dtype, np.number):
        raise DataError(f"labels must be 0/1 numbers, got dtype {y.dtype}")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        examples = ", ".join(repr(v) for v in np.unique(y[bad])[:5].tolist())
        raise DataError(f"labels must be 0 or 1; found {int(bad.sum())} other values ({examples})")
    return y.astype(np.int8)


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


# --------------------------------------------------------------------------- labelled batch


def metric_interval(
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    metric: IntervalMetric = "roc_auc",
    n_boot: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
) -> MetricInterval:
    """The metric of ``scores`` against 0/1 ``y_true``, with a stratified bootstrap interval.

    Each replicate draws ``n_positive`` positives and ``n_rows - n_positive`` negatives with
    replacement from their own class, so the class balance is fixed and every replicate has
    both classes. ROC AUC is computed by the Mann-Whitney rank formula: negatives are sorted
    once, each positive's rank among them is found once, and a replicate only needs the
    cumulative counts of its resampled negatives (vectorised over replicates).

    Raises:
        DataError: labels other than 0/1, NaN scores, or lengths that differ.
        ConfigError: n_boot < 1 or confidence outside (0, 1).
    """
    if metric != "roc_auc":
        raise ConfigError(f"unsupported metric {metric!r}; supported: roc_auc")
    _check_args(n_boot, confidence)
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
        metric=metric,
        value=value,
        low=low,
        high=high,
        n_rows=len(y),
        n_positive=n_pos,
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


def fit_calibrator(y_true: np.ndarray, scores: np.ndarray) -> Calibrator:
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
    scores: np.ndarray,
    calibrator: Calibrator,
    *,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> EstimatedPerformance:
    """Expected ROC AUC of ``scores`` on an unlabelled batch (NannyML's CBPE).

    Rows are sorted by calibrated probability ``p`` (descending, equal ``p`` grouped); at each
    threshold the expected true positives are ``cumsum(p)`` and false positives
    ``cumsum(1 - p)``, giving TPR = TP / sum(p) and FPR = FP / sum(1 - p); the AUC is the
    trapezoid area under that curve. The interval is the spread of the realised AUC of
    ``scores`` when labels are drawn ``n_boot`` times from Bernoulli(p); draws with a single
    class are skipped (on a tiny batch with none left, the interval collapses to the estimate).

    Raises:
        DataError: empty batch, NaN scores, or calibrated probabilities all 0 or all 1 (no
            expected positives or negatives: the AUC is undefined).
        ConfigError: n_boot < 1 or confidence outside (0, 1).
    """
    _check_args(n_boot, confidence)
    s = _scores(scores)
    if len(s) == 0:
        raise DataError("the batch is empty")
    p = calibrator.transform(s)
    exp_pos, exp_neg = float(p.sum()), float((1 - p).sum())
    if exp_pos <= 0 or exp_neg <= 0:
        raise DataError(
            "calibrated probabilities are all "
            f"{'0' if exp_pos <= 0 else '1'}: the batch has no expected "
            f"{'positives' if exp_pos <= 0 else 'negatives'}, so its AUC is undefined"
        )
    roc_auc = _expected_auc(p)
    sims = _simulated_auc(s, p, n_boot, np.random.default_rng(seed))
    low, high = _bounds(sims, confidence) if len(sims) else (roc_auc, roc_auc)
    return EstimatedPerformance(
        roc_auc=roc_auc,
        low=low,
        high=high,
        expected_positive_rate=float(p.mean()),
        n_rows=len(s),
        confidence=confidence,
    )


def _expected_auc(p: np.ndarray) -> float:
    """CBPE point estimate: trapezoid area of the expected ROC curve (ties grouped)."""
    levels, inverse = np.unique(p, return_inverse=True)  # ascending distinct probabilities
    tp = np.bincount(inverse, weights=p, minlength=len(levels))[::-1]  # descending thresholds
    fp = np.bincount(inverse, weights=1 - p, minlength=len(levels))[::-1]
    tpr = np.r_[0.0, np.cumsum(tp)] / p.sum()
    fpr = np.r_[0.0, np.cumsum(fp)] / (1 - p).sum()
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _simulated_auc(
    s: np.ndarray, p: np.ndarray, n_boot: int, rng: np.random.Generator, chunk: int = 50
) -> np.ndarray:
    """Realised AUC of ``s`` for ``n_boot`` label draws y ~ Bernoulli(p); draws with a single
    class are dropped."""
    order = np.argsort(s, kind="mergesort")
    s_sorted, p_sorted = s[order], p[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # tie groups of s
    sizes = np.diff(np.r_[starts, len(s)])
    out: list[np.ndarray] = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        y = rng.random((b, len(s))) < p_sorted
        pos = np.add.reduceat(y, starts, axis=1, dtype=np.int64)
        neg = sizes - pos
        below = np.cumsum(neg, axis=1) - neg  # negatives with a strictly lower score
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
        out.append(auc[(n_pos > 0) & (n_neg > 0)])
    return np.concatenate(out)
