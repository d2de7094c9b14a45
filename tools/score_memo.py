"""A scorer that scores each distinct row once.

One monitor run reads the champion's scores several times: the metric on the labelled batch,
the prediction shift on a sample of the batch and of the holdout, the label-shift check on the
labelled rows of both, the estimate without labels on both. Those are overlapping samples of
the same two frames, and scoring (building the booster's matrix, then predicting) was the
largest part of a run's time. ``MemoScorer`` wraps the champion for one run: a row is known by
its content hash (``polars.DataFrame.hash_rows``), so a filter, a sample or a second read of a
frame finds the scores already computed and only new rows reach the model.

A 64-bit hash over n rows collides with probability about n^2 / 2^65 (3e-8 at a million rows);
identical rows share their score, which is the model's answer for both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from driftpilot.core.errors import ModelError

_SEED = 20_261_207  # any fixed seed: keys are compared within one process only


class MemoScorer:
    """``scorer`` (anything with ``predict_scores``) with each distinct row scored at most
    once. Other attributes (``task``, ``classes``, ``report``...) are the scorer's; a check
    that asks what the champion *is* (``tools.calibrate.uncalibrated``) must get the scorer
    itself. Meant for one run: the memo grows with the rows scored and goes with the wrapper."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self._keys = np.empty(0, dtype=np.uint64)  # sorted
        self._scores: np.ndarray | None = None  # row i scores _keys[i]

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the wrapper lacks: the champion's own.
        return getattr(self.__dict__["scorer"], name)

    @property
    def rows_scored(self) -> int:
        """Distinct rows the scorer scored so far."""
        return int(self._keys.size)

    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
        """The scorer's scores of ``frame``'s rows, in their order (``Scorer.predict_scores``)."""
        if frame.height == 0:
            return np.asarray(self.scorer.predict_scores(frame))
        keys = frame.hash_rows(seed=_SEED).to_numpy()
        where, found = self._find(keys)
        if not found.all():
            new_keys, first = np.unique(keys[~found], return_index=True)
            rows = np.flatnonzero(~found)[first]
            self._add(new_keys, np.asarray(self.scorer.predict_scores(frame[rows])))
            where, found = self._find(keys)
        assert self._scores is not None
        return self._scores[where]

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        where = np.searchsorted(self._keys, keys)
        inside = where < self._keys.size
        found = np.zeros(keys.size, dtype=bool)
        found[inside] = self._keys[where[inside]] == keys[inside]
        return where, found

    def _add(self, keys: np.ndarray, scores: np.ndarray) -> None:
        if scores.shape[0] != keys.size:
            # The contract is one score per row; a wrong count must not be memoised.
            raise ModelError(f"the model gave {scores.shape[0]} scores for {keys.size} rows")
        merged = np.concatenate([self._keys, keys])
        values = scores if self._scores is None else np.concatenate([self._scores, scores])
        order = np.argsort(merged, kind="stable")
        self._keys, self._scores = merged[order], values[order]
