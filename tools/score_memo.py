"""A scorer that scores each distinct row once.

One monitor run reads the champion's scores several times: the metric on the labelled batch,
the prediction shift on a sample of the batch and of the holdout, the label-shift check on the
labelled rows of both, the estimate without labels on both. Those are overlapping samples of
the same two frames, and scoring (building the booster's matrix, then predicting) was the
largest part of a run's time. ``MemoScorer`` wraps the champion for one run: a row is known by
its content hash (``polars.DataFrame.hash_rows``) within its frame's schema, so a filter, a
sample or a second read of a frame finds the scores already computed and only new rows reach
the model.

- The hash reads values in column order and not their names or types (``{a: 1, b: 2}`` and
  ``{b: 1, a: 2}`` hash alike, as do an Int32 1 and a bool True): rows are compared only with
  rows of the very same schema (names, order, dtypes, an Enum's categories).
- A 64-bit hash over n rows collides with probability about n^2 / 2^65 (3e-8 at a million
  rows); identical rows share their score, which is the model's answer for both.
- It assumes what every predictor's contract says: a row's score does not depend on the other
  rows scored with it (true of boosters, scikit-learn pipelines and calibration maps).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from driftpilot.core.errors import ModelError

_SEED = 20_261_207  # any fixed seed: keys are compared within one process only


class _Scored:
    """Rows of one schema scored so far: sorted hash keys and the score of each."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)
        self.scores: np.ndarray | None = None

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        where = np.searchsorted(self.keys, keys)
        inside = where < self.keys.size
        found = np.zeros(keys.size, dtype=bool)
        found[inside] = self.keys[where[inside]] == keys[inside]
        return where, found

    def add(self, keys: np.ndarray, scores: np.ndarray) -> None:
        merged = np.concatenate([self.keys, keys])
        values = scores if self.scores is None else np.concatenate([self.scores, scores])
        order = np.argsort(merged, kind="stable")
        self.keys, self.scores = merged[order], values[order]


class MemoScorer:
    """``scorer`` (anything with ``predict_scores``) with each distinct row scored at most
    once. Other attributes (``task``, ``classes``, ``report``...) are the scorer's; a check
    that asks what the champion *is* (``tools.calibrate.uncalibrated``) must get the scorer
    itself (``unwrapped``). Meant for one run: the memo grows with the rows scored and goes
    with the wrapper."""

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self._by_schema: dict[tuple[tuple[str, pl.DataType], ...], _Scored] = {}

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the wrapper lacks: the champion's own. A copy made
        # without __init__ has no scorer yet: that is an AttributeError, as copy expects.
        if name == "scorer" or "scorer" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["scorer"], name)

    @property
    def rows_scored(self) -> int:
        """Distinct rows the scorer scored so far."""
        return sum(int(s.keys.size) for s in self._by_schema.values())

    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
        """The scorer's scores of ``frame``'s rows, in their order (``Scorer.predict_scores``)."""
        if frame.height == 0:
            return np.asarray(self.scorer.predict_scores(frame))
        seen = self._by_schema.setdefault(tuple(frame.schema.items()), _Scored())
        keys = frame.hash_rows(seed=_SEED).to_numpy()
        where, found = seen.find(keys)
        if not found.all():
            new_keys, first = np.unique(keys[~found], return_index=True)
            scores = np.asarray(self.scorer.predict_scores(frame[np.flatnonzero(~found)[first]]))
            if scores.ndim == 0 or scores.shape[0] != new_keys.size:
                # The contract is one score per row; a wrong count must not be memoised.
                got = "one number" if scores.ndim == 0 else f"{scores.shape[0]} scores"
                raise ModelError(f"the model gave {got} for {new_keys.size} rows")
            seen.add(new_keys, scores)
            where, found = seen.find(keys)
        assert seen.scores is not None
        return seen.scores[where]


def unwrapped(model: Any) -> Any:
    """The model a ``MemoScorer`` wraps (any other model as it is)."""
    return model.scorer if isinstance(model, MemoScorer) else model
