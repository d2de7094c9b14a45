"""The learning-curve eval's one computation: what a challenger's rows win over the
champion's, in the metric's own direction."""

import pytest

from driftpilot.core.tasks import metric
from evals.learning_curve import BATCHES, SIZES, champion_vs_challenger


def test_every_batch_size_has_its_champion_and_challenger_rows() -> None:
    for rows in BATCHES:
        assert rows * 14 // 10 in SIZES and rows * 17 // 10 in SIZES


def test_a_lower_rmse_with_more_rows_is_a_gain_and_a_higher_auc_too() -> None:
    rmse = [{"rows": n, "mean": 30.0 - n / 1000} for n in SIZES]
    won = champion_vs_challenger(rmse, metric("rmse", "regression").gain)
    assert won["batch_1000"] == pytest.approx(0.3 / 28.6, abs=1e-4)
    assert won["batch_3000"] == pytest.approx(0.9 / 25.8, abs=1e-4)
    auc = [{"rows": n, "mean": 0.7 + n / 100_000} for n in SIZES]
    assert champion_vs_challenger(auc, metric("roc_auc", "binary").gain)["batch_3000"] > 0
