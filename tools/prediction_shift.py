"""Prediction shift: have the champion's outputs moved by an amount that matters?

The importance-weighted share (``tools.shift.effect_sizes``) reads the inputs one column at a
time: two columns that carry 15 % of the importance and move by 1.5 standard deviations stay
under a materiality bar of 30 %, yet the champion's predictions move by 0.4 of their spread. The
predictions are what the model's users see, and their move is what a label-free monitor
(Evidently's prediction drift, NannyML's output drift) watches.

``prediction_shift`` is an effect size with a noise floor:

- the effect: the normed Wasserstein distance, W1(reference, current) / std(reference), of the
  prediction (a binary classifier's P(1), a regression's value); a multiclass model's is the
  mean over its classes of each class probability's. It does not grow with the batch size, so
  one threshold (``drift.prediction_threshold``) fits batches of any size;
- the noise: the mean plus three standard deviations of the same distance between the
  reference and ``n_null`` resamples of it as large as the batch (with replacement). A small
  batch moves by chance; the shift counts only above what chance gives at its size.

The reference is the champion's out-of-time holdout (rows it was not trained on): in-sample
predictions of a boosted model spread wider than its predictions on new rows.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from driftpilot.core.errors import DataError
from driftpilot.core.tasks import Task
from tools.shift import normed_wasserstein

NULL_DRAWS = 100  # resamples of the reference that set the noise floor
NOISE_SDS = 3.0  # the floor: the null mean plus this many of its standard deviations


class PredictionShift(BaseModel):
    """How far the champion's predictions moved between a reference and a batch."""

    value: float = Field(
        description="Normed Wasserstein distance of the predictions (multiclass: the mean "
        "over the classes' probabilities); 0 = the same distribution."
    )
    noise: float = Field(
        description="What chance gives at the batch's size: the mean plus 3 standard "
        "deviations of the same distance between the reference and resamples of it as large "
        "as the batch."
    )
    reference_rows: int
    batch_rows: int

    def moved(self, threshold: float) -> bool:
        """At least ``threshold``, and more than chance gives."""
        return self.value >= threshold and self.value > self.noise


def prediction_shift(
    reference_scores: np.ndarray,
    current_scores: np.ndarray,
    *,
    task: Task,
    seed: int = 0,
    n_null: int = NULL_DRAWS,
) -> PredictionShift:
    """The shift of a model's predictions from ``reference_scores`` to ``current_scores``
    (binary and regression: shape (n,); multiclass: (n, k) probabilities), with the noise
    floor at the current side's size (see the module docstring).

    Raises:
        DataError: scores of the wrong shape for the task, or fewer than two on a side.
    """
    ref, cur = _columns(reference_scores, task), _columns(current_scores, task)
    if ref.shape[1] != cur.shape[1]:
        raise DataError(f"{ref.shape[1]} reference classes against {cur.shape[1]} in the batch")
    if min(len(ref), len(cur)) < 2:
        raise DataError(f"{len(ref)} reference and {len(cur)} batch predictions: need 2 a side")
    rng = np.random.default_rng(seed)
    null = [_distance(ref, ref[rng.integers(0, len(ref), len(cur))]) for _ in range(n_null)]
    return PredictionShift(
        value=round(_distance(ref, cur), 4),
        noise=round(float(np.mean(null) + NOISE_SDS * np.std(null)), 4),
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


def _distance(ref: np.ndarray, cur: np.ndarray) -> float:
    return float(np.mean([normed_wasserstein(ref[:, k], cur[:, k]) for k in range(ref.shape[1])]))
