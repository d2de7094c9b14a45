"""tools.metrics against scikit-learn, per task, and the direction of every metric."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn import metrics as skm

from driftpilot.core.errors import ConfigError, DataError
from driftpilot.core.tasks import METRICS, PRIMARY, metric, metrics_for
from tools.metrics import (
    divergence,
    encode_labels,
    infer_task,
    interval,
    paired_gains,
    value,
)

RNG = np.random.default_rng(7)


def _binary(n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    y = (RNG.random(n) < 0.3).astype(int)
    s = np.clip(0.3 * y + RNG.random(n) * 0.7, 0, 1).round(2)  # ties on purpose
    return y, s


def _multiclass(n: int = 500, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    y = RNG.integers(0, k, n)
    logits = RNG.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, p


def _regression(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    y = RNG.normal(20, 5, n)
    return y, y + RNG.normal(0, 2, n)


def test_binary_metrics_match_sklearn() -> None:
    y, s = _binary()
    assert value("roc_auc", "binary", y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert value("pr_auc", "binary", y, s) == pytest.approx(skm.average_precision_score(y, s))
    assert value("log_loss", "binary", y, s) == pytest.approx(skm.log_loss(y, s), rel=1e-5)
    assert value("f1", "binary", y, s) == pytest.approx(skm.f1_score(y, s >= 0.5))


def test_multiclass_metrics_match_sklearn() -> None:
    y, p = _multiclass()
    ovr = skm.roc_auc_score(y, p, multi_class="ovr", average="macro")
    assert value("roc_auc", "multiclass", y, p) == pytest.approx(ovr)
    assert value("log_loss", "multiclass", y, p) == pytest.approx(skm.log_loss(y, p), rel=1e-5)
    f1 = skm.f1_score(y, p.argmax(axis=1), average="macro")
    assert value("macro_f1", "multiclass", y, p) == pytest.approx(f1)


def test_regression_metrics_match_sklearn() -> None:
    y, s = _regression()
    rmse = np.sqrt(skm.mean_squared_error(y, s))
    assert value("rmse", "regression", y, s) == pytest.approx(rmse)
    assert value("mae", "regression", y, s) == pytest.approx(skm.mean_absolute_error(y, s))
    assert value("r2", "regression", y, s) == pytest.approx(skm.r2_score(y, s))


def test_a_class_the_model_never_saw_counts_against_it() -> None:
    classes = ["early", "late", "on_time"]
    y = encode_labels(pl.Series(["late", "early", "diverted"]), "multiclass", classes)
    assert y.tolist() == [1, 0, -1]
    p = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    assert value("log_loss", "multiclass", y, p) > value("log_loss", "multiclass", y[:2], p[:2])


def test_every_metric_knows_its_direction() -> None:
    assert metric("rmse", "regression").gain(before=10.0, after=9.0) == pytest.approx(0.1)
    assert metric("rmse", "regression").drop(baseline=10.0, now=10.5) == pytest.approx(0.05)
    assert metric("log_loss", "binary").gain(before=0.5, after=0.4) == pytest.approx(0.1)
    assert metric("roc_auc", "binary").drop(baseline=0.8, now=0.78) == pytest.approx(0.02)
    assert metric("r2", "regression").gain(before=0.5, after=0.6) == pytest.approx(0.1)
    for task, name in PRIMARY.items():
        assert metrics_for(task)[0] == name
    assert {m.higher_is_better for m in METRICS.values()} == {True, False}


def test_a_metric_of_another_task_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="does not measure a regression model"):
        metric("roc_auc", "regression")
    with pytest.raises(ConfigError, match="unknown task"):
        metric("rmse", "ordinal")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0, 1, 1, 0], "binary"),
        ([True, False, True], "binary"),
        (["a", "b", "c", "a"], "multiclass"),
        ([1, 2, 3, 2, 1], "multiclass"),
        (list(np.linspace(-5, 90, 200)), "regression"),
        (list(range(100)), "regression"),
    ],
)
def test_infer_task_from_the_target(values: list[object], task: str) -> None:
    got, why = infer_task(pl.Series("y", values))
    assert got == task and "'y'" in why


def test_a_constant_target_cannot_be_learned() -> None:
    with pytest.raises(DataError, match="1 distinct"):
        infer_task(pl.Series("y", [3, 3, 3]))


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_interval_holds_the_value_and_narrows_with_rows(task: str) -> None:
    make = {"binary": _binary, "multiclass": _multiclass, "regression": _regression}[task]
    name = PRIMARY[task]  # type: ignore[index]
    small, large = (interval(name, task, *make(n), n_boot=300) for n in (200, 3000))  # type: ignore[arg-type]
    for got in (small, large):
        assert got.low is not None and got.high is not None and got.value is not None
        assert got.low <= got.value <= got.high
    assert (large.high - large.low) < (small.high - small.low)  # type: ignore[operator]


def test_paired_gain_sees_a_better_regressor_and_not_an_equal_one() -> None:
    y, worse = _regression(2000)
    better = y + (worse - y) * 0.8  # 20 % smaller errors
    gain, reps = paired_gains("rmse", "regression", y, worse, better, n_boot=400)
    assert gain == pytest.approx(0.2, abs=0.01)
    assert np.quantile(reps, 0.025) > 0
    same, reps = paired_gains("rmse", "regression", y, worse, worse.copy(), n_boot=200)
    assert same == 0 and np.allclose(reps, 0)


def test_divergence_per_task() -> None:
    assert divergence("binary", [0.2, 0.4], [0.3, 0.4]) == pytest.approx(0.05)
    a = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert divergence("multiclass", a, a[:, ::-1]) == pytest.approx(0.5)
    assert divergence("regression", [10, 20], [12, 20], spread=4.0) == pytest.approx(0.25)
    with pytest.raises(DataError, match="spread"):
        divergence("regression", [1], [2])


def test_wrong_score_shapes_are_refused() -> None:
    with pytest.raises(DataError, match=r"\(n, k\)"):
        value("roc_auc", "multiclass", [0, 1], [0.1, 0.9])
