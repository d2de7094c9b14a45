from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from driftpilot.core.errors import ConfigError, DataError, SchemaError
from driftpilot.core.tasks import Task
from tools.evaluate import compare_models, compare_scores


class Column:
    """A 'model' whose score is a column of the frame (keeps the test about evaluation)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
        return frame[self.name].to_numpy()


@pytest.fixture(scope="module")
def holdout() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    signal = 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1.5, 4000))))
    return pl.DataFrame(
        {"y": y, "good": signal, "noise": rng.random(4000), "good2": signal * 0.999}
    )


def test_better_challenger_has_an_interval_above_zero(holdout: pl.DataFrame) -> None:
    c = compare_models(Column("noise"), Column("good"), holdout, "y", n_boot=400)
    assert c.gain > 0.2 and c.ci_low > 0 and c.significant
    assert c.champion == pytest.approx(roc_auc_score(holdout["y"], holdout["noise"]))


def test_equivalent_models_are_not_significant(holdout: pl.DataFrame) -> None:
    c = compare_models(Column("good"), Column("good2"), holdout, "y", n_boot=300)
    assert c.gain == pytest.approx(0, abs=1e-9) and not c.significant
    assert c.prediction_divergence < 0.01


@pytest.mark.parametrize("metric", ["log_loss", "pr_auc"])
def test_other_metrics_are_signed_so_positive_is_better(holdout: pl.DataFrame, metric: str) -> None:
    c = compare_models(Column("noise"), Column("good"), holdout, "y", metric=metric, n_boot=60)
    assert c.gain > 0 and c.ci_low > 0


def test_interval_narrows_with_more_rows() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (500, 8000):
        y = rng.integers(0, 2, n)
        a, b = y + rng.normal(0, 1.2, n), y + rng.normal(0, 1.0, n)
        c = compare_scores(y, a, b, n_boot=300)
        widths.append(c.ci_high - c.ci_low)
    assert widths[1] < widths[0] / 2


def test_bad_holdouts(holdout: pl.DataFrame) -> None:
    with pytest.raises(SchemaError, match="target"):
        compare_models(Column("noise"), Column("good"), holdout, "label")
    with pytest.raises(DataError, match="two classes"):
        compare_models(Column("noise"), Column("good"), holdout.filter(pl.col("y") == 1), "y")


# ------------------------------------------------------------- every task, on real flights

TARGETS: dict[Task, str] = {
    "binary": "delayed",
    "multiclass": "delay_class",
    "regression": "arr_delay",
}
METRICS_BY_TASK: dict[Task, list[str]] = {
    "binary": ["roc_auc", "log_loss"],
    "multiclass": ["roc_auc", "log_loss", "macro_f1"],
    "regression": ["rmse", "mae", "r2"],
}


@pytest.fixture(scope="module")
def flight_tasks(flights_df: pl.DataFrame) -> pl.DataFrame:
    """January to March flights: delayed, delay_class and arr_delay, one target per task."""
    return flights_df.filter(pl.col("time_hour").dt.month() <= 3)


def _fit(frame: pl.DataFrame, task: Task, rows: int, rounds: int) -> Any:
    from tools.datasets import FLIGHTS
    from tools.train import TrainSpec, train_model

    spec = TrainSpec(
        task=task,
        target=TARGETS[task],
        numeric=FLIGHTS.numeric,
        categorical=FLIGHTS.categorical,
        time_col=FLIGHTS.time_col,
        max_rounds=rounds,
    )
    return train_model(frame.head(rows), spec)


@pytest.fixture(scope="module")
def trained(flight_tasks: pl.DataFrame) -> dict[Task, tuple[Any, Any, pl.DataFrame]]:
    """Per task: a weak champion (1,500 January rows, 3 rounds), a stronger challenger (all
    of January and February, up to 300 rounds) and a March holdout neither saw."""
    early = flight_tasks.filter(pl.col("time_hour").dt.month() <= 2)
    march = flight_tasks.filter(pl.col("time_hour").dt.month() == 3).sample(n=6000, seed=3)
    return {
        task: (_fit(early, task, 1500, 3), _fit(early, task, early.height, 300), march)
        for task in TARGETS
    }


@pytest.mark.parametrize("task", list(TARGETS))
def test_a_truly_better_challenger_wins_in_every_metric(
    trained: dict[Task, tuple[Any, Any, pl.DataFrame]], task: Task
) -> None:
    weak, strong, march = trained[task]
    for name in METRICS_BY_TASK[task]:
        c = compare_models(
            weak,
            strong,
            march,
            TARGETS[task],
            task=task,
            metric=name,
            n_boot=300,
        )
        assert (c.task, c.metric, c.n_rows) == (task, name, march.height)
        assert c.significant and c.ci_low > 0 and c.gain > 0, (name, c)
        better = c.challenger > c.champion
        assert better == c.higher_is_better, (name, c)  # the direction of the metric is kept
        assert c.prediction_divergence > 0


@pytest.mark.parametrize("task", list(TARGETS))
def test_a_copy_gains_nothing(
    trained: dict[Task, tuple[Any, Any, pl.DataFrame]], task: Task
) -> None:
    _, strong, march = trained[task]
    name = METRICS_BY_TASK[task][0]
    c = compare_models(strong, strong, march, TARGETS[task], task=task, metric=name, n_boot=200)
    assert c.gain == 0 and c.ci_low == 0 and c.ci_high == 0 and not c.significant
    assert c.prediction_divergence == 0


def test_regression_gain_is_a_share_and_divergence_is_over_the_spread(
    trained: dict[Task, tuple[Any, Any, pl.DataFrame]],
) -> None:
    weak, strong, march = trained["regression"]
    c = compare_models(weak, strong, march, "arr_delay", task="regression", metric="rmse")
    assert c.gain == pytest.approx((c.champion - c.challenger) / c.champion)
    y = march["arr_delay"].to_numpy()
    moved = np.abs(weak.predict_scores(march) - strong.predict_scores(march)).mean()
    assert c.prediction_divergence == pytest.approx(moved / y.std())


def test_a_challenger_with_a_new_class_is_aligned(
    trained: dict[Task, tuple[Any, Any, pl.DataFrame]],
) -> None:
    """A challenger that knows a class the champion never saw: the champion's columns are
    widened (probability 0 for the new class) so both are measured on the same labels."""
    _, strong, march = trained["multiclass"]

    class Narrow:  # the champion without 'very_late' (renormalised), a real model's scores
        def __init__(self) -> None:
            self.classes = [c for c in strong.classes if c != "very_late"]

        def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
            p = strong.predict_scores(frame)[:, [strong.classes.index(c) for c in self.classes]]
            return p / p.sum(axis=1, keepdims=True)

    c = compare_models(Narrow(), strong, march, "delay_class", task="multiclass", n_boot=200)
    assert c.significant and c.gain > 0.01


def test_a_metric_of_another_task_is_refused(
    trained: dict[Task, tuple[Any, Any, pl.DataFrame]],
) -> None:
    weak, strong, march = trained["regression"]
    with pytest.raises(ConfigError, match="does not measure a regression"):
        compare_models(weak, strong, march, "arr_delay", task="regression", metric="roc_auc")
