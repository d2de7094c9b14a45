"""The run's memo of the champion's scores: the same numbers as the model, each row scored once."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from driftpilot.core.errors import ModelError
from tools.score_memo import MemoScorer


class _Counting:
    """Scores P(1) from x (binary) or three class probabilities (multiclass); counts rows."""

    def __init__(self, classes: int = 0) -> None:
        self.rows = 0
        self.classes = classes
        self.task = "multiclass" if classes else "binary"

    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
        self.rows += frame.height
        p = 1 / (1 + np.exp(-frame["x"].to_numpy()))
        if not self.classes:
            return p
        raw = np.stack([p, 1 - p, np.full_like(p, 0.5)], axis=1)
        return raw / raw.sum(axis=1, keepdims=True)


def _frame(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {"x": rng.normal(0, 1, n), "c": rng.choice(["a", "b"], n), "y": rng.integers(0, 2, n)}
    )


@pytest.mark.parametrize("classes", [0, 3])
def test_samples_filters_and_rereads_of_a_frame_score_no_row_twice(classes: int) -> None:
    base = _Counting(classes)
    memo = MemoScorer(base)
    batch, holdout = _frame(2000, 1), _frame(500, 2)
    plain = _Counting(classes)
    for frame in (
        batch.sample(700, seed=3),
        batch,
        batch.filter(pl.col("y") == 1),
        holdout.sample(200, seed=4),
        holdout,
        batch.reverse(),
    ):
        np.testing.assert_array_equal(memo.predict_scores(frame), plain.predict_scores(frame))
    assert base.rows == memo.rows_scored == 2500
    assert memo.task == base.task and memo.classes == classes


def test_identical_rows_share_one_score_and_empty_frames_pass_through() -> None:
    base = _Counting()
    memo = MemoScorer(base)
    one = _frame(1, 5)
    twice = pl.concat([one, one, one])
    scores = memo.predict_scores(twice)
    assert scores.shape == (3,) and len(set(scores.tolist())) == 1 and base.rows == 1
    assert memo.predict_scores(twice[:0]).shape == (0,)


def test_a_model_that_answers_the_wrong_number_of_rows_is_refused_and_not_remembered() -> None:
    class Short(_Counting):
        def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
            return super().predict_scores(frame)[:-1]

    memo = MemoScorer(Short())
    with pytest.raises(ModelError, match="gave 9 scores for 10 rows"):
        memo.predict_scores(_frame(10, 6))
    assert memo.rows_scored == 0


def test_rows_of_another_schema_never_share_a_score() -> None:
    # hash_rows reads values in column order, not names or types: these rows hash alike.
    class Weighted:
        def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
            return (10 * frame["a"].cast(pl.Float64) + frame["b"].cast(pl.Float64)).to_numpy()

    memo = MemoScorer(Weighted())
    first = pl.DataFrame({"a": [1.0], "b": [2.0]})
    swapped = pl.DataFrame({"b": [1.0], "a": [2.0]})
    narrower = pl.DataFrame({"a": [1], "b": [2]}, schema={"a": pl.Int32, "b": pl.Int32})
    assert memo.predict_scores(first).tolist() == [12.0]
    assert memo.predict_scores(swapped).tolist() == [21.0]
    assert memo.predict_scores(narrower).tolist() == [12.0] and memo.rows_scored == 3


def test_a_copy_and_the_wrapped_model() -> None:
    import copy

    from tools.score_memo import unwrapped

    base = _Counting()
    memo = MemoScorer(base)
    assert copy.copy(memo).scorer is base and unwrapped(memo) is base and unwrapped(base) is base
    with pytest.raises(AttributeError):
        _ = memo.no_such_attribute
