import numpy as np
import pytest

from driftpilot.core.errors import DataError
from tools.prediction_shift import prediction_shift


def test_a_moved_prediction_counts_and_a_resample_does_not() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(10.0, 2.0, 2000)
    same = prediction_shift(reference, rng.normal(10.0, 2.0, 1000), task="regression")
    assert same.value < same.noise and not same.moved(0.3)
    # A move of 0.5 std: W1 / std reads 0.5, far above what 1,000 rows give by chance.
    moved = prediction_shift(reference, rng.normal(11.0, 2.0, 1000), task="regression")
    assert moved.value == pytest.approx(0.5, abs=0.08)
    assert moved.noise < 0.15 and moved.moved(0.3)
    assert (moved.reference_rows, moved.batch_rows) == (2000, 1000)


def test_the_noise_floor_grows_as_the_batch_shrinks() -> None:
    rng = np.random.default_rng(1)
    reference = rng.beta(2, 5, 3000)
    big = prediction_shift(reference, rng.beta(2, 5, 2000), task="binary")
    tiny = [prediction_shift(reference, rng.beta(2, 5, 6), task="binary") for _ in range(20)]
    assert min(t.noise for t in tiny) > 3 * big.noise
    # Six rows of an unmoved model read far from the reference, yet rarely further than
    # chance: the threshold alone would call almost every one of them a move.
    assert np.mean([t.value for t in tiny]) >= 0.3
    assert sum(t.moved(0.3) for t in tiny) <= 1


def test_multiclass_reads_the_mean_over_the_classes_probabilities() -> None:
    rng = np.random.default_rng(2)
    reference = rng.dirichlet([4, 2, 1], 3000)
    moved = rng.dirichlet([1, 2, 4], 800)  # the first class's share moves, the last's too
    found = prediction_shift(reference, moved, task="multiclass")
    per_class = [
        prediction_shift(reference[:, k], moved[:, k], task="regression").value for k in range(3)
    ]
    assert found.value == pytest.approx(np.mean(per_class), abs=2e-4)
    assert found.moved(0.3)


def test_scores_of_the_wrong_shape_are_a_clear_error() -> None:
    with pytest.raises(DataError, match="multiclass scores must have 2"):
        prediction_shift(np.ones(10), np.ones(10), task="multiclass")
    with pytest.raises(DataError, match="3 reference classes against 2"):
        prediction_shift(np.ones((10, 3)), np.ones((10, 2)), task="multiclass")
    with pytest.raises(DataError, match="need 2 a side"):
        prediction_shift(np.arange(10.0), np.array([1.0]), task="regression")
