"""tools.estimate for every task on real flights: the metric's interval with labels
(``tools.metrics.interval``), and the estimate without them (CBPE for classifiers, DLE for
regressions) against the realised metric.

The targets of issue 19 (multiclass CBPE within 0.02 of the realised macro ROC AUC, DLE within
10 % of the realised RMSE, on average over flights months without concept drift) are measured
at full size by ``evals/bench_estimate_tasks.py``. Here the same set-up runs on a few thousand
rows and four months, and checks behaviour and a coarse accuracy: a small month's realised
RMSE swings with its few extreme delays (on these sizes, seeds 0-2 gave DLE 9-14 % and
multiclass CBPE 0.010-0.016 off), so the limits are looser than the targets.
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
from tools.estimate import estimate, fit_estimator
from tools.metrics import interval, value

SIZES = Sizes(train=10_000, reference=6_000, batch=3_000)
MONTHS = range(1, 13, 3)  # January, April, July, October
N_BOOT = 30  # the estimates' intervals are not what these tests measure


@pytest.fixture(scope="module")
def frame(flights_df: pl.DataFrame) -> pl.DataFrame:
    """The year's flights: delayed, delay_class and arr_delay, one target per task."""
    return flights_df


@pytest.fixture(scope="module")
def fitted(frame: pl.DataFrame) -> dict[Task, dict[str, Any]]:
    """Per task: a model fitted on 6,000 January flights, its labelled reference (3,000 other
    January flights) and a July batch of 2,000."""
    from tools.train import TrainSpec, train_model

    jan = frame.filter(pl.col("month") == 1).sample(fraction=1.0, shuffle=True, seed=0)
    jul = frame.filter(pl.col("month") == 7).sample(n=2000, seed=0)
    out: dict[Task, dict[str, Any]] = {}
    for task, target in TARGETS.items():
        spec = TrainSpec(
            task=task,
            target=target,
            numeric=FLIGHTS.numeric,
            categorical=FLIGHTS.categorical,
            max_rounds=60,
        )
        model = train_model(jan.head(6000), spec)
        out[task] = {"model": model, "reference": jan.slice(6000, 3000), "batch": jul}
    return out


# ------------------------------------------------------------------ labelled: the interval


@pytest.mark.parametrize("task", list(TARGETS))
def test_interval_of_every_metric_covers_its_value(
    fitted: dict[Task, dict[str, Any]], task: Task
) -> None:
    model, rows = fitted[task]["model"], fitted[task]["batch"]
    y, s = model.encode(rows[TARGETS[task]]), model.predict_scores(rows)
    for name in metrics_for(task):
        r = interval(name, task, y, s, n_boot=100)
        assert (r.metric, r.task, r.n_rows, r.n_boot) == (name, task, rows.height, 100)
        assert r.value == pytest.approx(value(name, task, y, s))
        assert r.low is not None and r.high is not None and r.value is not None
        assert r.low <= r.value <= r.high and r.high - r.low > 0, (name, r)
        wider = interval(name, task, y[:300], s[:300], n_boot=100)
        assert wider.high - wider.low > r.high - r.low  # type: ignore[operator]


def test_multiclass_labels_can_be_passed_with_their_classes(
    fitted: dict[Task, dict[str, Any]],
) -> None:
    """fit_estimator encodes the labels against ``classes``; the interval reads class
    indices only, and says so."""
    model, rows = fitted["multiclass"]["model"], fitted["multiclass"]["reference"]
    s = model.predict_scores(rows)
    by_label = fit_estimator(
        "multiclass", "roc_auc", rows["delay_class"], s, classes=model.classes, n_boot=N_BOOT
    )
    by_index = fit_estimator(
        "multiclass", "roc_auc", model.encode(rows["delay_class"]), s, n_boot=N_BOOT
    )
    assert by_label.reference == by_index.reference and by_label.reference is not None
    with pytest.raises(DataError, match="class indices"):
        fit_estimator("multiclass", "roc_auc", rows["delay_class"].to_numpy(), s)
    with pytest.raises(DataError, match="class indices"):
        interval("roc_auc", "multiclass", rows["delay_class"].to_numpy(), s)
    with pytest.raises(ConfigError, match="does not measure a multiclass"):
        interval("rmse", "multiclass", model.encode(rows["delay_class"]), s)


# --------------------------------------------------------------- unlabelled: the estimate


def test_multiclass_cbpe_within_0_03_on_months_without_concept_drift(frame: pl.DataFrame) -> None:
    found = covariate_shift(frame, "multiclass", N_BOOT, 0, SIZES, MONTHS)
    assert found["method"] == "cbpe" and len(found["batches"]) == len(MONTHS)
    assert found["mean_abs_error"] <= 0.03, found["batches"]


def test_regression_dle_within_20_percent_on_months_without_concept_drift(
    frame: pl.DataFrame,
) -> None:
    found = covariate_shift(frame, "regression", N_BOOT, 0, SIZES, MONTHS)
    assert found["method"] == "dle" and found["metric"] == "rmse"
    assert found["mean_abs_relative_error"] <= 0.20, found["batches"]


def test_cbpe_cannot_see_concept_drift(frame: pl.DataFrame) -> None:
    """Forward in time, flights' delays relate to their features differently (summer): the
    estimate stays near the spring reference while the realised AUC falls: what the module
    docstring warns about, measured."""
    found = forward(frame, "multiclass", N_BOOT, 0, Sizes(8000, 4000, 3000), range(6, 9, 2))
    # (seeds 0-2: 0.023-0.049 too high; the full bench: about 0.09)
    assert found["mean_error"] > 0.02 and found["coverage"] == 0, found["batches"]


def test_binary_estimator_is_cbpe_calibrated_on_the_reference(
    fitted: dict[Task, dict[str, Any]],
) -> None:
    model, ref, batch = (fitted["binary"][k] for k in ("model", "reference", "batch"))
    y_ref, s_ref = model.encode(ref["delayed"]), model.predict_scores(ref)
    estimator = fit_estimator("binary", "roc_auc", y_ref, s_ref, n_boot=N_BOOT)
    s = model.predict_scores(batch)
    est = estimate(estimator, s, n_boot=N_BOOT, seed=4)
    assert est == estimate(estimator, s, n_boot=N_BOOT, seed=4)
    assert est.method == "cbpe" and est.expected_positive_rate is not None
    assert est.low <= est.value <= est.high and est.n_rows == batch.height
    assert estimator.reference is not None
    assert estimator.reference.value == pytest.approx(
        value("roc_auc", "binary", y_ref, s_ref), abs=0.01
    )


def test_dle_reference_estimate_is_out_of_fold(fitted: dict[Task, dict[str, Any]]) -> None:
    """The reference's own estimate comes from loss models that never saw those rows: close to
    the realised RMSE, not below it the way an in-sample fit would be."""
    model, ref, batch = (fitted["regression"][k] for k in ("model", "reference", "batch"))
    y_ref, s_ref = ref["arr_delay"].to_numpy(), model.predict_scores(ref)
    estimator = fit_estimator(
        "regression", "rmse", y_ref, s_ref, ref, FLIGHTS.features, n_boot=N_BOOT
    )
    realised = value("rmse", "regression", y_ref, s_ref)
    assert estimator.reference is not None and realised is not None
    assert estimator.reference.value == pytest.approx(realised, rel=0.05)
    mae = fit_estimator("regression", "mae", y_ref, s_ref, ref, FLIGHTS.features, n_boot=N_BOOT)
    s = model.predict_scores(batch)
    est, est_rmse = estimate(mae, s, batch, n_boot=N_BOOT), estimate(estimator, s, batch)
    assert est.metric == "mae" and est_rmse.metric == "rmse" and est.value < est_rmse.value
    assert est.method == "dle" and est.expected_positive_rate is None
    assert est.n_rows == batch.height


def test_estimators_refuse_what_they_cannot_do(fitted: dict[Task, dict[str, Any]]) -> None:
    model, ref = fitted["regression"]["model"], fitted["regression"]["reference"]
    y_ref, s_ref = ref["arr_delay"].to_numpy(), model.predict_scores(ref)
    with pytest.raises(ConfigError, match="reference rows and the feature"):
        fit_estimator("regression", "rmse", y_ref, s_ref)
    with pytest.raises(ConfigError, match="cannot be estimated"):
        fit_estimator("regression", "r2", y_ref, s_ref, ref, FLIGHTS.features)
    with pytest.raises(DataError, match="at least 200"):
        fit_estimator("regression", "rmse", y_ref[:50], s_ref[:50], ref.head(50), ["temp"])
    estimator = fit_estimator(
        "regression", "rmse", y_ref, s_ref, ref, FLIGHTS.features, n_boot=N_BOOT
    )
    with pytest.raises(DataError, match="batch's rows"):
        estimate(estimator, s_ref)
    multi, mref = fitted["multiclass"]["model"], fitted["multiclass"]["reference"]
    cbpe = fit_estimator(
        "multiclass",
        "roc_auc",
        multi.encode(mref["delay_class"]),
        multi.predict_scores(mref),
        n_boot=N_BOOT,
    )
    with pytest.raises(DataError, match="classes"):
        estimate(cbpe, multi.predict_scores(mref)[:, :3])
    with pytest.raises(DataError, match=r"shape \(n, k >= 2\)"):
        estimate(cbpe, np.zeros(10))
