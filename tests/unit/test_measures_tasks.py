"""The drift analyst's and the evaluator's measurements read every task's labels and every
metric's direction: which labelled batches a metric is defined on, which side of an interval
can shrink a drop, a drop in a relative metric's units, and the stand-in scorer for a model
without a champion."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import polars as pl
import pytest

from agents.drift_measures import _drop, _slack, classes_of, measurable
from agents.evaluator import _no_champion
from driftpilot.core.tasks import METRICS
from tools.metrics import value


@pytest.mark.parametrize(
    ("values", "task", "ok"),
    [
        ([0, 1, 1], "binary", True),
        ([1, 1, 1], "binary", False),  # one class: no AUC
        (["late", "early"], "multiclass", True),
        (["late", "late", None], "multiclass", False),
        ([3.0, 7.5], "regression", True),
        ([4.0, 4.0, 4.0], "regression", False),  # no spread: no R², a degenerate interval
        ([4.0, None], "regression", False),  # one row
    ],
)
def test_a_batch_is_labelled_when_its_metric_is_defined(
    values: list[object], task: str, ok: bool
) -> None:
    assert measurable(pl.Series("y", values), task) is ok  # type: ignore[arg-type]
    assert measurable(None, task) is False  # type: ignore[arg-type]


def test_the_slack_that_can_shrink_a_drop_is_on_the_metrics_better_side() -> None:
    # A ROC AUC of 0.70 [0.66, 0.75]: it could be 0.05 higher (better).
    assert _slack(METRICS["roc_auc"], 0.70, 0.66, 0.75, better=True) == pytest.approx(0.05)
    assert _slack(METRICS["roc_auc"], 0.70, 0.66, 0.75, better=False) == pytest.approx(0.04)
    # An RMSE of 40 [38, 43]: better is lower, 2 below.
    assert _slack(METRICS["rmse"], 40.0, 38.0, 43.0, better=True) == pytest.approx(2.0)
    assert _slack(METRICS["rmse"], 40.0, 38.0, 43.0, better=False) == pytest.approx(3.0)
    assert _slack(METRICS["rmse"], 40.0, None, None, better=False) == 0.0  # no interval


def test_a_relative_drop_and_its_bound_are_shares_of_the_baseline() -> None:
    # RMSE 40 -> 43: 7.5 % worse; a combined slack of 2 minutes is 5 % of the baseline.
    assert _drop(METRICS["rmse"], 40.0, 43.0, 2.0) == {
        "metric_drop": 0.075,
        "metric_drop_low": 0.025,
    }
    # Log loss is bounded: its drop is in points, lower is better.
    assert _drop(METRICS["log_loss"], 0.50, 0.53, 0.01) == {
        "metric_drop": 0.03,
        "metric_drop_low": 0.02,
    }
    assert _drop(METRICS["roc_auc"], 0.80, 0.83, 0.01)["metric_drop"] == pytest.approx(-0.03)


def test_without_a_champion_the_stand_in_knows_nothing_in_every_task() -> None:
    holdout = pl.DataFrame({"y": [10.0, 20.0, 30.0, 40.0], "x": [1, 2, 3, 4]})

    class Challenger:
        classes: ClassVar[list[str]] = ["early", "late", "on_time"]

    binary = _no_champion("binary", Challenger(), holdout, "y").predict_scores(holdout)
    assert binary.shape == (4,) and set(binary.tolist()) == {0.5}
    multi = _no_champion("multiclass", Challenger(), holdout, "y")
    scores = multi.predict_scores(holdout)
    assert scores.shape == (4, 3) and np.allclose(scores.sum(axis=1), 1.0)
    assert classes_of(multi) == Challenger.classes  # compare_models encodes by these
    regression = _no_champion("regression", Challenger(), holdout, "y")
    level = regression.predict_scores(holdout)
    assert level.tolist() == [25.0] * 4  # the mean: an R² of 0
    assert value("r2", "regression", holdout["y"].to_numpy(), level) == 0.0
    assert math.isclose(value("roc_auc", "multiclass", np.array([0, 1, 2, 0]), scores) or 0, 0.5)
    assert classes_of(object()) is None
