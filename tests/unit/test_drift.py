from pathlib import Path

import numpy as np
import polars as pl
import pytest

from driftpilot.errors import DataError, SchemaError
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
    assert "p_value" in temp.method and temp.drifted and temp.score < temp.threshold


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


def test_prediction_drift_sees_a_shifted_score() -> None:
    rng = np.random.default_rng(0)
    same = prediction_drift(rng.beta(2, 5, 3000), rng.beta(2, 5, 3000))
    moved = prediction_drift(rng.beta(2, 5, 3000), rng.beta(5, 2, 3000))
    assert not same.drifted and moved.drifted


def test_score_predictions_metrics() -> None:
    y = np.array([0, 0, 1, 1])
    perfect = score_predictions(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect.roc_auc == 1.0 and perfect.pr_auc == 1.0 and perfect.f1 == 1.0
    one_class = score_predictions(np.array([0, 0]), np.array([0.1, 0.2]))
    assert one_class.roc_auc is None and one_class.f1 == 0.0
    with pytest.raises(DataError, match="0/1"):
        score_predictions(np.array([0, 2]), np.array([0.1, 0.2]))
