import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from driftpilot.core.errors import DataError, SchemaError
from driftpilot.core.tasks import Task
from tools.datasets import FLIGHTS
from tools.drift import DriftConfig, data_drift, prediction_drift, score_predictions

WEATHER = ["temp", "dewp", "humid", "pressure"]


def test_january_vs_july_drifts_on_weather(months: dict[str, pl.DataFrame], tmp_path: Path) -> None:
    report = tmp_path / "jan_vs_jul.html"
    result = data_drift(
        months["2013-01"],
        months["2013-07"],
        numeric=FLIGHTS.numeric,
        categorical=FLIGHTS.categorical,
        report_path=report,
    )
    drifted = set(result.drifted_columns())
    assert {"temp", "dewp"} <= drifted
    assert result.dataset_drift and result.drift_share >= 0.5
    temp = next(c for c in result.columns if c.column == "temp")
    assert (
        temp.method == "Wasserstein distance (normed)" and temp.threshold == 0.1 and temp.score > 1
    )
    assert result.columns[0].drifted  # most drifted first
    assert report.exists() and report.stat().st_size > 10_000
    assert result.n_reference == months["2013-01"].height


def test_same_month_halves_do_not_drift(months: dict[str, pl.DataFrame]) -> None:
    jan = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=3)
    half = jan.height // 2
    result = data_drift(jan.head(half), jan.tail(half), numeric=WEATHER, categorical=["carrier"])
    assert result.n_drifted == 0 and not result.dataset_drift


def test_small_samples_use_p_values(
    jan_sample: pl.DataFrame, months: dict[str, pl.DataFrame]
) -> None:
    result = data_drift(
        jan_sample.head(400), months["2013-07"].head(400), numeric=["temp"], categorical=["origin"]
    )
    temp = next(c for c in result.columns if c.column == "temp")
    assert temp.method == "ks" and temp.drifted and temp.score < temp.threshold


def test_config_overrides_method_and_subsamples(months: dict[str, pl.DataFrame]) -> None:
    cfg = DriftConfig(num_method="psi", threshold=0.2, max_rows=3000)
    result = data_drift(months["2013-01"], months["2013-07"], numeric=["temp"], config=cfg)
    assert result.columns[0].method == "psi" and result.columns[0].threshold == 0.2


def test_bad_inputs(jan_sample: pl.DataFrame) -> None:
    with pytest.raises(SchemaError, match="lacks columns"):
        data_drift(jan_sample, jan_sample.drop("temp"), numeric=["temp"])
    with pytest.raises(DataError, match="empty"):
        data_drift(jan_sample, jan_sample.head(0), numeric=["temp"])
    with pytest.raises(SchemaError, match="no columns"):
        data_drift(jan_sample, jan_sample, numeric=[])


def test_columns_that_cannot_be_tested(jan_sample: pl.DataFrame) -> None:
    infinite = jan_sample.with_columns(pl.lit(float("inf")).alias("temp"))
    with pytest.raises(DataError, match="empty column 'temp'"):
        data_drift(jan_sample, infinite, numeric=["temp"])
    with pytest.raises(DataError, match="numerical values only"):
        data_drift(jan_sample, jan_sample, numeric=["carrier"])
    with pytest.raises(DataError, match="not for categorical"):
        data_drift(
            jan_sample,
            jan_sample,
            numeric=[],
            categorical=["carrier"],
            config=DriftConfig(cat_method="ks"),
        )
    with pytest.raises(DataError, match="no_such_test"):
        data_drift(
            jan_sample, jan_sample, numeric=["temp"], config=DriftConfig(num_method="no_such_test")
        )


def test_the_decision_does_not_import_evidently() -> None:
    # The decision's numbers are native: Evidently (seconds to import) only renders reports.
    code = (
        "import sys, numpy as np, polars as pl\n"
        "from tools.drift import data_drift, prediction_drift\n"
        "rng = np.random.default_rng(0)\n"
        "a = pl.DataFrame({'x': rng.normal(0, 1, 3000), 'c': rng.choice(['a', 'b', 'c'], 3000)})\n"
        "b = pl.DataFrame({'x': rng.normal(1, 1, 2000), 'c': rng.choice(['a', 'b'], 2000)})\n"
        "r = data_drift(a, b, numeric=['x'], categorical=['c'])\n"
        "assert r.n_drifted == 2, r\n"
        "assert prediction_drift(rng.random(500), rng.random(400)) is not None\n"
        "assert 'evidently' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_prediction_drift_sees_a_shifted_score() -> None:
    rng = np.random.default_rng(0)
    same = prediction_drift(rng.beta(2, 5, 3000), rng.beta(2, 5, 3000))
    moved = prediction_drift(rng.beta(2, 5, 3000), rng.beta(5, 2, 3000))
    assert same is not None and moved is not None
    assert not same.drifted and moved.drifted


def test_score_predictions_metrics() -> None:
    y = np.array([0, 0, 1, 1])
    perfect = score_predictions(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert (
        perfect.get("roc_auc") == 1.0 and perfect.get("pr_auc") == 1.0 and perfect.get("f1") == 1.0
    )
    one_class = score_predictions(np.array([0, 0]), np.array([0.1, 0.2]))
    assert one_class.get("roc_auc") is None and one_class.get("f1") == 0.0
    with pytest.raises(DataError, match="0/1"):
        score_predictions(np.array([0, 2]), np.array([0.1, 0.2]))


def test_an_all_null_sparse_column_is_skipped_with_its_reason(
    jan_sample: pl.DataFrame, months: dict[str, pl.DataFrame]
) -> None:
    # Seven real flights in calm weather: no wind gust recorded (Evidently used to raise).
    calm = months["2013-02"].filter(pl.col("wind_gust").is_null()).head(7)
    result = data_drift(jan_sample, calm, numeric=FLIGHTS.numeric, categorical=FLIGHTS.categorical)
    assert result.skipped_columns == {
        "wind_gust": "every value is null in the batch (a drift test needs 5)"
    }
    tested = {c.column for c in result.columns}
    assert tested == set(FLIGHTS.features) - {"wind_gust"} and result.n_columns == len(tested)
    assert result.drift_share == round(result.n_drifted / result.n_columns, 4)


def test_a_batch_too_small_for_any_test(jan_sample: pl.DataFrame, tmp_path: Path) -> None:
    report = tmp_path / "tiny.html"
    result = data_drift(
        jan_sample, jan_sample.head(3), numeric=WEATHER, categorical=["carrier"], report_path=report
    )
    assert result.n_columns == 0 and result.columns == []
    assert result.drift_share == 0.0 and not result.dataset_drift
    assert set(result.skipped_columns) == {*WEATHER, "carrier"}
    assert "only 3 non-null value(s) in the batch" in result.skipped_columns["temp"]
    assert result.report_path is None and not report.exists()
    assert prediction_drift(np.linspace(0, 1, 500), np.array([0.2, 0.4])) is None


def test_small_batches_are_tested_with_p_values(months: dict[str, pl.DataFrame]) -> None:
    # A distance with a fixed threshold reads the noise of a few hundred rows as drift; a
    # p-value test does not (same month), and still sees summer (July).
    jan = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=7)
    reference, same = jan.head(9000), jan.tail(6000).sample(n=120, seed=0)
    result = data_drift(reference, same, numeric=FLIGHTS.numeric, categorical=FLIGHTS.categorical)
    assert {c.method for c in result.columns} == {"ks", "chisquare"}
    assert result.drift_share <= 0.1 and not result.dataset_drift
    july = months["2013-07"].sample(n=300, seed=0)
    summer = data_drift(reference, july, numeric=WEATHER)
    temp = next(c for c in summer.columns if c.column == "temp")
    assert temp.drifted and temp.score < temp.threshold


def test_a_chosen_p_value_test_is_read_as_a_p_value(months: dict[str, pl.DataFrame]) -> None:
    # 'ks' is reported by that name: its score is a p-value, drifted below the threshold.
    cfg = DriftConfig(num_method="ks")
    jan = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=3)
    half = jan.height // 2
    same = data_drift(jan.head(half), jan.tail(half), numeric=["sched_dep_time"], config=cfg)
    assert same.columns[0].score > 0.05 and not same.columns[0].drifted
    moved = data_drift(months["2013-01"], months["2013-07"], numeric=["temp"], config=cfg)
    assert moved.columns[0].score < 0.05 and moved.columns[0].drifted


# ------------------------------------------------------- prediction drift of every task


@pytest.fixture(scope="module")
def task_scores(flights_df: pl.DataFrame) -> dict[Task, dict[str, np.ndarray]]:
    """Per task, a real flights model fitted on January and its scores on two disjoint
    samples of the rest of January and on July."""
    from tools.train import TrainSpec, train_model

    frame = flights_df
    jan = frame.filter(pl.col("month") == 1).sample(fraction=1.0, shuffle=True, seed=0)
    jul = frame.filter(pl.col("month") == 7).sample(n=4000, seed=0)
    out = {}
    tasks: tuple[tuple[Task, str], ...] = (
        ("multiclass", "delay_class"),
        ("regression", "arr_delay"),
    )
    for task, target in tasks:
        spec = TrainSpec(
            task=task,
            target=target,
            numeric=FLIGHTS.numeric,
            categorical=FLIGHTS.categorical,
            max_rounds=100,
        )
        model = train_model(jan.head(12_000), spec)
        out[task] = {
            "jan_a": model.predict_scores(jan.slice(12_000, 4000)),
            "jan_b": model.predict_scores(jan.slice(16_000, 4000)),
            "jul": model.predict_scores(jul),
        }
    return out


@pytest.mark.parametrize(
    ("task", "column"), [("multiclass", "predicted_class"), ("regression", "prediction")]
)
def test_prediction_drift_of_every_task(
    task_scores: dict[Task, dict[str, np.ndarray]], task: Task, column: str
) -> None:
    scores = task_scores[task]
    same = prediction_drift(scores["jan_a"], scores["jan_b"], task=task)
    summer = prediction_drift(scores["jan_a"], scores["jul"], task=task)
    assert same is not None and summer is not None
    assert same.column == summer.column == column
    assert not same.drifted and summer.drifted, (same, summer)


def test_multiclass_prediction_drift_reads_the_predicted_class(
    task_scores: dict[Task, dict[str, np.ndarray]],
) -> None:
    """The class distribution, not the probabilities: a model whose probabilities all move
    toward the same arg-max shows no drift in what it predicts."""
    ref = task_scores["multiclass"]["jan_a"]
    sharper = ref**3 / (ref**3).sum(axis=1, keepdims=True)  # same arg-max per row
    found = prediction_drift(ref, sharper, task="multiclass")
    assert found is not None and not found.drifted and found.score in (0.0, 1.0)
    with pytest.raises(DataError, match=r"shape \(n, k\)"):
        prediction_drift(ref[:, 0], ref[:, 0], task="multiclass")


def test_a_frame_and_its_scan_are_sampled_alike() -> None:
    """max_rows draws the same rows from a DataFrame and from a LazyFrame (by row index), so a
    decision on a scan and a report from a frame read one sample."""
    rng = np.random.default_rng(0)
    ref = pl.DataFrame({"x": rng.normal(size=5000), "c": rng.choice(["a", "b"], 5000)})
    cur = pl.DataFrame({"x": rng.normal(0.05, size=5000), "c": rng.choice(["a", "b"], 5000)})
    config = DriftConfig(max_rows=1000)
    args = {"numeric": ["x"], "categorical": ["c"], "config": config}
    framed = data_drift(ref, cur, **args)  # type: ignore[arg-type]
    scanned = data_drift(ref.lazy(), cur.lazy(), **args)  # type: ignore[arg-type]
    assert [c.model_dump() for c in framed.columns] == [c.model_dump() for c in scanned.columns]
    everything = data_drift(ref, cur, numeric=["x"], categorical=["c"])
    assert [c.score for c in everything.columns] != [c.score for c in framed.columns]
