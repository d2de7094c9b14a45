"""tools.metrics against scikit-learn, per task, and the direction of every metric."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn import metrics as skm

from driftpilot.core.errors import ConfigError, DataError
from driftpilot.core.tasks import METRICS, PRIMARY, metric, metrics_for
from tools.metrics import (
    MetricInterval,
    bootstrap_weights,
    divergence,
    encode_labels,
    infer_task,
    interval,
    paired_gains,
    value,
    weighted,
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


# ------------------------------------------------ the binary ROC AUC interval (fast path)


def _labelled(n: int, seed: int, pos_rate: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < pos_rate).astype(int)
    return y, rng.normal(size=n) + 1.2 * y


def test_binary_auc_interval_value_equals_sklearn_and_holds_it() -> None:
    y, s = _labelled(3000, 0)
    s = np.round(s, 1)  # many ties
    r = interval("roc_auc", "binary", y, s, n_boot=300)
    assert isinstance(r, MetricInterval)
    assert r.value == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert r.value is not None and r.low is not None and r.high is not None
    assert r.low <= r.value <= r.high
    assert (r.n_rows, r.n_boot, r.confidence) == (3000, 300, 0.95)
    assert (r.metric, r.task, r.higher_is_better) == ("roc_auc", "binary", True)


def test_binary_auc_fast_path_agrees_with_the_weighted_bootstrap() -> None:
    """The stratified fast path gives the interval of the generic formulas (``weighted``
    under per-class ``bootstrap_weights``, what every other metric uses) up to the Monte
    Carlo error of two different random streams."""
    y, s = _labelled(4000, 9)
    s = np.round(s, 2)  # ties
    fast = interval("roc_auc", "binary", y, s, n_boot=1000, seed=1)
    w = bootstrap_weights(np.random.default_rng(1), len(y), 1000, strata=y)
    generic = np.quantile(weighted("roc_auc", "binary", y, s, w), [0.025, 0.975])
    assert fast.value == pytest.approx(value("roc_auc", "binary", y, s), abs=1e-12)
    assert fast.low == pytest.approx(generic[0], abs=0.004)
    assert fast.high == pytest.approx(generic[1], abs=0.004)


def test_binary_auc_bootstrap_matches_naive_stratified_resampling() -> None:
    # the vectorised replicate AUC equals sklearn on explicitly resampled rows
    y, s = _labelled(400, 1)
    r = interval("roc_auc", "binary", y, s, n_boot=400, seed=3)
    rng = np.random.default_rng(7)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    naive = []
    for _ in range(400):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        naive.append(skm.roc_auc_score(y[idx], s[idx]))
    lo, hi = np.quantile(naive, [0.025, 0.975])
    assert r.low == pytest.approx(lo, abs=0.015) and r.high == pytest.approx(hi, abs=0.015)


def test_binary_auc_interval_narrows_as_rows_grow() -> None:
    small = interval("roc_auc", "binary", *_labelled(200, 2))
    large = interval("roc_auc", "binary", *_labelled(2000, 2))
    assert small.low is not None and small.high is not None
    assert large.low is not None and large.high is not None
    assert large.high - large.low < 0.6 * (small.high - small.low)


def test_rare_positives_still_get_an_interval() -> None:
    rng = np.random.default_rng(4)
    y = np.zeros(3000, dtype=int)
    y[rng.choice(3000, 5, replace=False)] = 1
    s = rng.normal(size=3000) + 2.0 * y
    r = interval("roc_auc", "binary", y, s, n_boot=500)
    assert r.value is not None
    assert r.low is not None and r.high is not None
    assert 0 <= r.low <= r.value <= r.high <= 1 and r.high - r.low > 0.01


def test_single_class_gives_no_auc() -> None:
    r = interval("roc_auc", "binary", np.zeros(50, dtype=int), np.linspace(0, 1, 50))
    assert r.value is None and r.low is None and r.high is None
    assert r.n_rows == 50


@pytest.mark.parametrize(
    "labels", [np.array([0, 1, 2, 1]), np.array([0.0, 1.0, 0.5, 1.0]), np.array(list("abab"))]
)
def test_binary_labels_other_than_0_1_are_refused(labels: np.ndarray) -> None:
    with pytest.raises(DataError, match="0/1"):
        interval("roc_auc", "binary", labels, np.arange(4.0))


def test_bool_and_float_binary_labels_are_accepted() -> None:
    y, s = _labelled(300, 5)
    for name in ("roc_auc", "log_loss"):  # the fast path and the generic one
        ref = interval(name, "binary", y, s.clip(0, 1), n_boot=50)
        assert interval(name, "binary", y.astype(bool), s.clip(0, 1), n_boot=50) == ref
        assert interval(name, "binary", y.astype(float), s.clip(0, 1), n_boot=50) == ref


def test_multiclass_interval_labels_must_be_class_indices() -> None:
    y, s = _multiclass(100)
    with pytest.raises(DataError, match="class indices"):
        interval("roc_auc", "multiclass", y.astype(str), s)
    labels = pl.Series(["a", "b", "c", "d"])[y]
    encoded = encode_labels(labels, "multiclass", ["a", "b", "c", "d"])
    assert interval("roc_auc", "multiclass", encoded, s) == interval("roc_auc", "multiclass", y, s)


def test_interval_refuses_bad_inputs_and_arguments() -> None:
    with pytest.raises(DataError):
        interval("roc_auc", "binary", np.array([0, 1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(DataError):
        interval("roc_auc", "binary", np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(DataError, match="no labelled rows"):
        interval("roc_auc", "binary", np.array([], dtype=int), np.array([]))
    with pytest.raises(ConfigError):
        interval("roc_auc", "binary", np.array([0, 1]), np.array([0.1, 0.2]), n_boot=0)
    with pytest.raises(ConfigError):
        interval("roc_auc", "binary", np.array([0, 1]), np.array([0.1, 0.2]), confidence=1.0)
    with pytest.raises(ConfigError, match="does not measure a multiclass"):
        interval("rmse", "multiclass", np.array([0, 1]), np.eye(2))
