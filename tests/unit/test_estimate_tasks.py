"""tools.estimate for every task on real flights: the metric's interval with labels, and the
estimate without them (CBPE for classifiers, DLE for regressions) against the realised metric.

The targets of issue 19 (multiclass CBPE within 0.02 of the realised macro ROC AUC, DLE within
10 % of the realised RMSE, on average over flights months without concept drift) are measured
at full size by ``evals/bench_estimate_tasks.py``; here the same set-up runs on fewer rows and
months and must meet the same targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest

from driftpilot.core.errors import ConfigError, DataError
from driftpilot.core.tasks import Task, metrics_for
from evals.bench_estimate_tasks import TARGETS, Sizes, covariate_shift, forward
from tools.datasets import FLIGHTS
from tools.estimate import (
    estimate,
    estimate_performance,
    fit_calibrator,
    fit_estimator,
    metric_interval,
)
from tools.metrics import interval, value

SIZES = Sizes(train=30_000, reference=20_000, batch=8_000)
MONTHS = range(1, 13, 2)  # six months, winter to autumn


@pytest.fixture(scope="module")
def frame(flights_df: pl.DataFrame) -> pl.DataFrame:
    """The year's flights: delayed, delay_class and arr_delay, one target per task."""
    return flights_df


@pytest.fixture(scope="module")
def fitted(frame: pl.DataFrame) -> dict[Task, dict[str, Any]]:
    """Per task: a model fitted on 12,000 January flights, its labelled reference (4,000 other
    January flights) and a July batch of 4,000."""
    from tools.train import TrainSpec, train_model

    jan = frame.filter(pl.col("month") == 1).sample(fraction=1.0, shuffle=True, seed=0)
    jul = frame.filter(pl.col("month") == 7).sample(n=4000, seed=0)
    out: dict[Task, dict[str, Any]] = {}
    for task, target in TARGETS.items():
        spec = TrainSpec(
            task=task,
            target=target,
            numeric=FLIGHTS.numeric,
            categorical=FLIGHTS.categorical,
            max_rounds=150,
        )
        model = train_model(jan.head(12_000), spec)
        out[task] = {"model": model, "reference": jan.slice(12_000, 4000), "batch": jul}
    return out


# ------------------------------------------------------------------ labelled: the interval


@pytest.mark.parametrize("task", list(TARGETS))
def test_metric_interval_of_every_metric_covers_its_value(
    fitted: dict[Task, dict[str, Any]], task: Task
) -> None:
    model, rows = fitted[task]["model"], fitted[task]["batch"]
    y, s = model.encode(rows[TARGETS[task]]), model.predict_scores(rows)
    for name in metrics_for(task):
        r = metric_interval(y, s, metric=name, task=task, n_boot=200)
        assert (r.metric, r.task, r.n_rows, r.n_boot) == (name, task, rows.height, 200)
        assert r.value == pytest.approx(value(name, task, y, s))
        assert r.low is not None and r.high is not None and r.value is not None
        assert r.low <= r.value <= r.high and r.high - r.low > 0, (name, r)
        wider = metric_interval(y[:500], s[:500], metric=name, task=task, n_boot=200)
        assert wider.high - wider.low > r.high - r.low  # type: ignore[operator]


def test_multiclass_labels_can_be_passed_with_their_classes(
    fitted: dict[Task, dict[str, Any]],
) -> None:
    model, rows = fitted["multiclass"]["model"], fitted["multiclass"]["batch"]
    s = model.predict_scores(rows)
    by_label = metric_interval(rows["delay_class"], s, task="multiclass", classes=model.classes)
    by_index = metric_interval(model.encode(rows["delay_class"]), s, task="multiclass")
    assert by_label == by_index
    with pytest.raises(DataError, match="class indices"):
        metric_interval(rows["delay_class"].to_numpy(), s, task="multiclass")
    with pytest.raises(ConfigError, match="does not measure a multiclass"):
        metric_interval(model.encode(rows["delay_class"]), s, task="multiclass", metric="rmse")


def test_the_fast_binary_auc_path_agrees_with_the_generic_interval(
    fitted: dict[Task, dict[str, Any]],
) -> None:
    model, rows = fitted["binary"]["model"], fitted["binary"]["batch"]
    y, s = model.encode(rows["delayed"]), model.predict_scores(rows)
    fast = metric_interval(y, s, n_boot=1000, seed=1)
    generic = interval("roc_auc", "binary", y, s, n_boot=1000, seed=1)
    assert fast.value == pytest.approx(generic.value, abs=1e-12)
    assert fast.low == pytest.approx(generic.low, abs=0.004)
    assert fast.high == pytest.approx(generic.high, abs=0.004)


# --------------------------------------------------------------- unlabelled: the estimate


def test_multiclass_cbpe_within_0_02_on_months_without_concept_drift(frame: pl.DataFrame) -> None:
    found = covariate_shift(frame, "multiclass", 100, 0, SIZES, MONTHS)
    assert found["method"] == "cbpe" and len(found["batches"]) == len(MONTHS)
    assert found["mean_abs_error"] <= 0.02, found["batches"]


def test_regression_dle_within_10_percent_on_months_without_concept_drift(
    frame: pl.DataFrame,
) -> None:
    found = covariate_shift(frame, "regression", 100, 0, SIZES, MONTHS)
    assert found["method"] == "dle" and found["metric"] == "rmse"
    assert found["mean_abs_relative_error"] <= 0.10, found["batches"]


def test_cbpe_cannot_see_concept_drift(frame: pl.DataFrame) -> None:
    """Forward in time, flights' delays relate to their features differently (summer): the
    estimate stays near the spring reference while the realised AUC falls: what the module
    docstring warns about, measured."""
    found = forward(frame, "multiclass", 50, 0, Sizes(15_000, 8_000, 4_000), range(6, 9, 2))
    assert found["mean_error"] > 0.03, found["batches"]


def test_binary_estimator_is_the_calibrator_path(fitted: dict[Task, dict[str, Any]]) -> None:
    model, ref, batch = (fitted["binary"][k] for k in ("model", "reference", "batch"))
    y_ref, s_ref = model.encode(ref["delayed"]), model.predict_scores(ref)
    estimator = fit_estimator("binary", "roc_auc", y_ref, s_ref)
    s = model.predict_scores(batch)
    est = estimate(estimator, s, n_boot=100, seed=4)
    assert est == estimate_performance(s, fit_calibrator(y_ref, s_ref), n_boot=100, seed=4)
    assert est.method == "cbpe" and est.expected_positive_rate is not None
    assert est.low <= est.value <= est.high and est.roc_auc == est.value
    assert estimator.reference is not None
    assert estimator.reference.value == pytest.approx(
        value("roc_auc", "binary", y_ref, s_ref), abs=0.01
    )


def test_dle_reference_estimate_is_out_of_fold(fitted: dict[Task, dict[str, Any]]) -> None:
    """The reference's own estimate comes from loss models that never saw those rows: close to
    the realised RMSE, not below it the way an in-sample fit would be."""
    model, ref, batch = (fitted["regression"][k] for k in ("model", "reference", "batch"))
    y_ref, s_ref = ref["arr_delay"].to_numpy(), model.predict_scores(ref)
    estimator = fit_estimator("regression", "rmse", y_ref, s_ref, ref, FLIGHTS.features)
    realised = value("rmse", "regression", y_ref, s_ref)
    assert estimator.reference is not None and realised is not None
    assert estimator.reference.value == pytest.approx(realised, rel=0.05)
    mae = fit_estimator("regression", "mae", y_ref, s_ref, ref, FLIGHTS.features)
    s = model.predict_scores(batch)
    est, est_mae = estimate(mae, s, batch), estimate(estimator, s, batch)
    assert est.metric == "mae" and est_mae.metric == "rmse" and est.value < est_mae.value
    assert est.method == "dle" and est.expected_positive_rate is None and est.n_rows == 4000


def test_estimators_refuse_what_they_cannot_do(fitted: dict[Task, dict[str, Any]]) -> None:
    model, ref = fitted["regression"]["model"], fitted["regression"]["reference"]
    y_ref, s_ref = ref["arr_delay"].to_numpy(), model.predict_scores(ref)
    with pytest.raises(ConfigError, match="reference rows and the feature"):
        fit_estimator("regression", "rmse", y_ref, s_ref)
    with pytest.raises(ConfigError, match="cannot be estimated"):
        fit_estimator("regression", "r2", y_ref, s_ref, ref, FLIGHTS.features)
    with pytest.raises(DataError, match="at least 200"):
        fit_estimator("regression", "rmse", y_ref[:50], s_ref[:50], ref.head(50), ["temp"])
    estimator = fit_estimator("regression", "rmse", y_ref, s_ref, ref, FLIGHTS.features)
    with pytest.raises(DataError, match="batch's rows"):
        estimate(estimator, s_ref)
    multi, mref = fitted["multiclass"]["model"], fitted["multiclass"]["reference"]
    cbpe = fit_estimator(
        "multiclass", "roc_auc", multi.encode(mref["delay_class"]), multi.predict_scores(mref)
    )
    with pytest.raises(DataError, match="classes"):
        estimate(cbpe, multi.predict_scores(mref)[:, :3])
    with pytest.raises(DataError, match=r"shape \(n, k >= 2\)"):
        estimate(cbpe, np.zeros(10))
