"""Prediction shift: have the champion's outputs moved by an amount that matters?

The importance-weighted share (``tools.shift.effect_sizes``) reads the inputs one column at a
time: two columns that carry 15 % of the importance and move by 1.5 standard deviations stay
under a materiality bar of 30 %, yet the champion's predictions move by 0.4 of their spread. The
predictions are what the model's users see, and their move is what a label-free monitor
(Evidently's prediction drift, NannyML's output drift) watches.

``prediction_shift`` is an effect size with a significance test:

- the effect: the normed Wasserstein distance, W1(reference, current) / std(reference), of the
  prediction (a binary classifier's P(1), a regression's value); a multiclass model's is the
  mean over its classes of each class probability's. It does not grow with the batch size, so
  one threshold (``drift.prediction_threshold``) fits batches of any size;
- the test: the two-sample Kolmogorov-Smirnov p-value (multiclass: the smallest over the
  classes, times their number). A small batch moves far by chance, most of all when the scores
  are skewed (a fraud model's few high scores): the shift counts only when chance is unlikely
  to give it. The test is free of the scores' distribution; a noise floor from resamples of
  the reference is not (its mean plus three standard deviations let a clean 150-row batch of
  the credit-card fraud model through in the scenario suite).

The reference is the champion's out-of-time holdout (rows it was not trained on): in-sample
predictions of a boosted model spread wider than its predictions on new rows.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from driftpilot.core.errors import DataError
from driftpilot.core.tasks import Task
from tools.shift import normed_wasserstein


class PredictionShift(BaseModel):
    """How far the champion's predictions moved between a reference and a batch (whether
    that counts is the policy's: ``driftpilot.core.policy_drift``'s predictions_moved)."""

    value: float = Field(
        description="Normed Wasserstein distance of the predictions (multiclass: the mean "
        "over the classes' probabilities); 0 = the same distribution."
    )
    p_value: float = Field(
        description="Two-sample Kolmogorov-Smirnov p-value of the predictions (multiclass: "
        "the smallest over the classes times their number, at most 1)."
    )
    reference_rows: int
    batch_rows: int


def prediction_shift(
    reference_scores: np.ndarray, current_scores: np.ndarray, *, task: Task
) -> PredictionShift:
    """The shift of a model's predictions from ``reference_scores`` to ``current_scores``
    (binary and regression: shape (n,); multiclass: (n, k) probabilities) and its p-value
    (see the module docstring).

    Raises:
        DataError: scores of the wrong shape for the task, or fewer than two on a side.
    """
    from scipy.stats import ks_2samp

    ref, cur = _columns(reference_scores, task), _columns(current_scores, task)
    if ref.shape[1] != cur.shape[1]:
        raise DataError(f"{ref.shape[1]} reference classes against {cur.shape[1]} in the batch")
    if min(len(ref), len(cur)) < 2:
        raise DataError(f"{len(ref)} reference and {len(cur)} batch predictions: need 2 a side")
    k = ref.shape[1]
    value = np.mean([normed_wasserstein(ref[:, j], cur[:, j]) for j in range(k)])
    p_value = min(float(ks_2samp(ref[:, j], cur[:, j]).pvalue) for j in range(k)) * k
    return PredictionShift(
        value=round(float(value), 4),
        p_value=min(1.0, float(f"{p_value:.3g}")),
        reference_rows=len(ref),
        batch_rows=len(cur),
    )


def _columns(scores: np.ndarray, task: Task) -> np.ndarray:
    """The predictions as an (n, k) matrix of finite numbers: one column unless multiclass."""
    s = np.asarray(scores, dtype=float)
    want = 2 if task == "multiclass" else 1
    if s.ndim != want:
        raise DataError(f"{task} scores must have {want} dimension(s), got shape {s.shape}")
    s = s.reshape(len(s), -1)
    return s[np.isfinite(s).all(axis=1)]
