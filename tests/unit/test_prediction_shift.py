import numpy as np
import pytest

from driftpilot.core.errors import DataError
from driftpilot.core.policy_drift import DriftEvidence, _predictions_moved
from driftpilot.core.policy_rules import DriftRules
from tools.prediction_shift import PredictionShift, prediction_shift


def _moved(found: PredictionShift, threshold: float, alpha: float) -> bool:
    """The policy's reading of the shift (drift.prediction_threshold, prediction_p_value)."""
    rules = DriftRules(prediction_threshold=threshold, prediction_p_value=alpha)
    evidence = DriftEvidence(
        weighted_share=0.0,
        labelled=True,
        prediction_shift=found.value,
        prediction_p_value=found.p_value,
    )
    return _predictions_moved(evidence, rules)


def test_a_moved_prediction_counts_and_a_resample_does_not() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(10.0, 2.0, 2000)
    same = prediction_shift(reference, rng.normal(10.0, 2.0, 1000), task="regression")
    assert same.value < 0.1 and same.p_value > 0.01 and not _moved(same, 0.3, 0.01)
    # A move of 0.5 std: W1 / std reads 0.5, and 1,000 rows make it sure.
    moved = prediction_shift(reference, rng.normal(11.0, 2.0, 1000), task="regression")
    assert moved.value == pytest.approx(0.5, abs=0.08)
    assert moved.p_value < 1e-6 and _moved(moved, 0.3, 0.01)
    assert (moved.reference_rows, moved.batch_rows) == (2000, 1000)


def test_a_small_batch_of_skewed_scores_moves_far_by_chance_and_does_not_count() -> None:
    # A fraud model's scores: almost all near 0, a few near 1. Batches of 150 rows of the
    # same model read far from the reference whenever they hold a high score or two.
    rng = np.random.default_rng(1)

    def scores(n: int) -> np.ndarray:
        return np.where(rng.random(n) < 0.003, rng.beta(8, 2, n), rng.beta(1, 300, n))

    reference = scores(3000)
    small = [prediction_shift(reference, scores(150), task="binary") for _ in range(40)]
    # An effect size alone would fire on several (4 at 0.15, 2 at 0.25, seed 1) ...
    assert sum(s.value >= 0.15 for s in small) >= 3
    # ... the K-S test at the policy's 0.01 on none.
    assert not any(_moved(s, 0.15, 0.01) for s in small)


def test_multiclass_reads_the_mean_over_the_classes_probabilities() -> None:
    rng = np.random.default_rng(2)
    reference = rng.dirichlet([4, 2, 1], 3000)
    # The first and last classes' probabilities move; the middle one's hardly does.
    moved = rng.dirichlet([3.4, 2, 1.3], 300)
    found = prediction_shift(reference, moved, task="multiclass")
    per_class = [
        prediction_shift(reference[:, k], moved[:, k], task="regression") for k in range(3)
    ]
    assert found.value == pytest.approx(np.mean([c.value for c in per_class]), abs=2e-4)
    # The smallest p-value, corrected for the three looks (Bonferroni).
    assert found.p_value == pytest.approx(3 * min(c.p_value for c in per_class), rel=0.01)
    assert _moved(found, 0.3, 0.01)


def test_scores_of_the_wrong_shape_are_a_clear_error() -> None:
    with pytest.raises(DataError, match="multiclass scores must have 2"):
        prediction_shift(np.ones(10), np.ones(10), task="multiclass")
    with pytest.raises(DataError, match="3 reference classes against 2"):
        prediction_shift(np.ones((10, 3)), np.ones((10, 2)), task="multiclass")
    with pytest.raises(DataError, match="need 2 a side"):
        prediction_shift(np.arange(10.0), np.array([1.0]), task="regression")
