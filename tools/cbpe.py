"""Confidence-based performance estimation (CBPE, as in NannyML:
https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html): a binary
or multiclass model's ROC AUC on a batch without labels. ``tools.estimate`` is the entry point
(``fit_estimator`` / ``estimate``); this module holds the method.

An isotonic ``Calibrator`` maps the model's score to the probability that the label is 1
(binary) or, per class, that the label is that class (multiclass, one-vs-rest, the calibrated class
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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from driftpilot.core.errors import DataError
from driftpilot.core.tasks import Task
from tools.metrics import MAX_CELLS, weighted

if TYPE_CHECKING:  # sklearn takes a while to import; only needed once a calibrator is fitted
    from sklearn.isotonic import IsotonicRegression

__all__ = ["MIN_CALIBRATION_ROWS", "Calibrator", "CbpeEstimate", "estimate_cbpe", "fit_calibrators"]

MIN_CALIBRATION_ROWS = 20


class Calibrator:
    """Isotonic map from raw model scores to calibrated probabilities of label 1.

    Fitted on labelled rows the model did not train on (a reference or validation slice); the
    map is monotone, so it never changes the ranking of the scores.
    """

    def __init__(self, iso: IsotonicRegression, n_rows: int, n_positive: int) -> None:
        self._iso = iso
        self.n_rows = n_rows  # labelled rows the map was fitted on
        self.n_positive = n_positive  # of which label 1

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Calibrated P(label = 1) per score; scores outside the fitted range are clipped."""
        s = np.asarray(scores, dtype=float).ravel()
        return np.clip(np.asarray(self._iso.predict(s), dtype=float), 0.0, 1.0)

    def __repr__(self) -> str:
        return f"Calibrator(n_rows={self.n_rows}, n_positive={self.n_positive})"


class CbpeEstimate(NamedTuple):
    """The expected (macro) ROC AUC of a batch and the interval of its simulated labels."""

    value: float
    low: float
    high: float
    expected_positive_rate: float | None  # binary: mean calibrated P(1); multiclass: None


def fit_calibrators(task: Task, y: np.ndarray, s: np.ndarray) -> list[Calibrator | None]:
    """The calibration of a classifier's scores on labelled reference rows: binary one map
    (``y`` 0/1, ``s`` (n,)); multiclass one map per class, one-vs-rest (``y`` class indices,
    ``s`` (n, k)), None for a class without both outcomes among the rows (it keeps the model's
    raw probability).

    Raises:
        DataError: fewer than 20 rows, a single class, or labels and scores that differ in
            number.
    """
    if task == "binary":
        return [_fit_calibrator(y, s)]
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
        calibrators.append(_fit_calibrator(is_c, s[:, c]) if both else None)
    return calibrators


def estimate_cbpe(
    calibrators: list[Calibrator | None],
    s: np.ndarray,
    n_boot: int,
    confidence: float,
    rng: np.random.Generator,
) -> CbpeEstimate:
    """CBPE on a batch's scores (binary (n,), multiclass (n, k); checked, not empty)."""
    if s.ndim == 1:
        calibrator = calibrators[0]
        assert calibrator is not None  # a binary estimator always has its map
        q = calibrator.transform(s)[:, None]
        s = s[:, None]
    else:
        q = _calibrated(calibrators, s)
    value = _expected_macro_auc(s, q)
    sims = _simulated_macro_auc(s, q, n_boot, rng)
    low, high = value, value
    if len(sims):
        alpha = (1 - confidence) / 2
        low, high = (float(b) for b in np.quantile(sims, [alpha, 1 - alpha]))
    positive_rate = float(q.mean()) if s.shape[1] == 1 else None
    return CbpeEstimate(value, low, high, positive_rate)


def _fit_calibrator(y: np.ndarray, s: np.ndarray) -> Calibrator:
    """Isotonic calibration of scores ``s`` on 0/1 labels ``y``."""
    if len(y) != len(s):
        raise DataError(f"{len(y)} labels but {len(s)} scores")
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


def _calibrated(calibrators: list[Calibrator | None], s: np.ndarray) -> np.ndarray:
    """Per-class calibrated probabilities, renormalised to sum to 1 per row (a row whose
    calibrated probabilities are all 0 keeps the model's own)."""
    if s.shape[1] != len(calibrators):
        raise DataError(
            f"scores have {s.shape[1]} classes, the estimator was fitted on {len(calibrators)}"
        )
    q = np.column_stack(
        [s[:, c] if cal is None else cal.transform(s[:, c]) for c, cal in enumerate(calibrators)]
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
