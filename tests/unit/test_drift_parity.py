"""The native drift numbers (``tools.drift_stats`` via ``tools.drift.data_drift``) against
Evidently 0.7's own ``DataDriftPreset`` report, column by column, on every shipped dataset:
the same method names and thresholds, p-values and distances within 1e-6, the same verdicts,
the same skipped columns and the same drift share (ours and Evidently's own count).

Each dataset is cut into a reference window and a later batch, with a batch under 1,000 rows
(the p-value tests whatever the reference size) and a reference of at most 1,000 rows
(Evidently's own p-value branch: K-S, chi-square, Z). The three flights datasets
(``flights``, ``flights_delay``, ``flights_delay_class``) share their table and features: the
flights cases cover all three. The credit-card table is a download: ``full_data``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from driftpilot.core.settings import Settings
from tools.datasets import (
    CREDITCARD,
    FLIGHTS,
    GAPMINDER,
    SEATTLE_WEATHER,
    SPECS,
    DatasetSpec,
    creditcard,
    gapminder,
    seattle_weather,
)
from tools.drift import DriftConfig, DriftResult, data_drift

TOLERANCE = 1e-6
FLIGHT_SPECS = {"flights", "flights_delay", "flights_delay_class"}


def evidently_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    numeric: list[str],
    categorical: list[str],
    config: DriftConfig,
) -> dict[str, Any]:
    """Evidently's report on the columns ``data_drift`` tests, read back from its snapshot:
    per column (method, threshold, score, verdict of its test) and its DriftedColumnsCount."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    preset = DataDriftPreset(
        drift_share=config.drift_share,
        num_method=config.num_method,
        cat_method=config.cat_method,
        threshold=config.threshold,
    )
    columns = [*numeric, *categorical]
    snapshot = (
        Report([preset], include_tests=True)
        .run(
            Dataset.from_pandas(current.select(columns).to_pandas(), data_definition=definition),
            Dataset.from_pandas(reference.select(columns).to_pandas(), data_definition=definition),
        )
        .dict()
    )
    verdicts = {
        t["metric_config"]["metric_id"]: t["status"] == "FAIL"
        for t in snapshot["tests"]
        if t["metric_config"]["params"]["type"].endswith(":ValueDrift")
    }
    out: dict[str, Any] = {"columns": {}}
    for metric in snapshot["metrics"]:
        kind = metric["config"]["type"]
        if kind.endswith(":ValueDrift"):
            out["columns"][metric["config"]["column"]] = (
                metric["config"]["method"],
                float(metric["config"]["threshold"]),
                float(metric["value"]),
                verdicts[metric["id"]],
            )
        elif kind.endswith(":DriftedColumnsCount"):
            out["count"] = int(metric["value"]["count"])
            out["share"] = float(metric["value"]["share"])
    return out


def assert_parity(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    spec: DatasetSpec,
    config: DriftConfig | None = None,
) -> DriftResult:
    """``data_drift`` and Evidently agree on every tested column and on the drift share."""
    cfg = config or DriftConfig()
    ours = data_drift(
        reference, current, numeric=spec.numeric, categorical=spec.categorical, config=cfg
    )
    # Evidently is given what data_drift tests: the small-batch methods, the tested columns.
    if current.height < cfg.small_batch_rows and cfg.threshold is None:
        cfg = cfg.model_copy(
            update={
                "num_method": cfg.num_method or "ks",
                "cat_method": cfg.cat_method or "chisquare",
            }
        )
    numeric = [c for c in spec.numeric if c not in ours.skipped_columns]
    categorical = [c for c in spec.categorical if c not in ours.skipped_columns]
    theirs = evidently_drift(reference, current, numeric, categorical, cfg)
    assert set(theirs["columns"]) == {c.column for c in ours.columns}
    for col in ours.columns:
        method, threshold, score, drifted = theirs["columns"][col.column]
        where = f"{spec.name}: {col.column} ({method})"
        assert col.method == method, where
        assert col.threshold == threshold, where
        assert abs(col.score - score) <= TOLERANCE, f"{where}: {col.score} vs {score}"
        assert col.drifted == drifted, where
    assert ours.n_drifted == theirs["count"]
    assert ours.drift_share == pytest.approx(theirs["share"], abs=1e-4)
    return ours


def methods(result: DriftResult) -> set[str]:
    return {c.method for c in result.columns}


@pytest.fixture(scope="module")
def seattle() -> pl.DataFrame:
    return seattle_weather()


@pytest.fixture(scope="module")
def gap() -> pl.DataFrame:
    return gapminder()


def test_flights_reference_month_against_a_later_month(months: dict[str, pl.DataFrame]) -> None:
    result = assert_parity(months["2013-01"].head(6000), months["2013-07"].head(5000), FLIGHTS)
    assert {"Wasserstein distance (normed)", "Jensen-Shannon distance"} <= methods(result)
    assert result.n_drifted > 0 and result.n_columns == len(FLIGHTS.features)
    assert set(SPECS) >= FLIGHT_SPECS and all(
        SPECS[name].features == FLIGHTS.features for name in FLIGHT_SPECS
    )


def test_flights_small_batch_and_small_reference(months: dict[str, pl.DataFrame]) -> None:
    july = months["2013-07"]
    small_batch = assert_parity(months["2013-01"].head(6000), july.head(500), FLIGHTS)
    assert methods(small_batch) == {"ks", "chisquare"}
    small_ref = assert_parity(months["2013-01"].head(800), july.head(3000), FLIGHTS)
    assert {"K-S p_value", "chi-square p_value"} <= methods(small_ref)


@pytest.mark.parametrize("method", ["psi", "jensenshannon", "kl_div"])
def test_flights_binned_methods(months: dict[str, pl.DataFrame], method: str) -> None:
    # every numeric flights column but hour has more than 20 values: Sturges histograms
    # (integers among them: NumPy's width of at least 1); the categorical ones per value
    cfg = DriftConfig(num_method=method, cat_method=method)
    result = assert_parity(months["2013-01"].head(3000), months["2013-02"].head(2000), FLIGHTS, cfg)
    assert methods(result) == {method}


def test_seattle_weather(seattle: pl.DataFrame) -> None:
    year = pl.col("date").dt.year()
    first, rest = seattle.filter(year == 2012), seattle.filter(year >= 2013)
    small_ref = assert_parity(first, rest, SEATTLE_WEATHER)  # 366-row reference: p-values
    assert methods(small_ref) == {"K-S p_value"}
    last = seattle.filter(year == 2015)
    small_batch = assert_parity(seattle.filter(year <= 2014), last, SEATTLE_WEATHER)
    assert methods(small_batch) == {"ks"}  # a 365-row batch: the small-batch rule
    with_threshold = DriftConfig(threshold=0.1)  # no small-batch rule: Evidently's choice
    result = assert_parity(seattle.filter(year <= 2014), last, SEATTLE_WEATHER, with_threshold)
    assert methods(result) == {"Wasserstein distance (normed)"}


def test_gapminder(gap: pl.DataFrame) -> None:
    year = pl.col("year").dt.year()
    result = assert_parity(gap.filter(year <= 1962), gap.filter(year >= 1972), GAPMINDER)
    assert methods(result) == {"K-S p_value", "chi-square p_value"} and result.n_drifted > 0
    late = gap.filter(year >= 1997)
    distances = assert_parity(gap.filter(year <= 1987), late, GAPMINDER, DriftConfig(threshold=0.1))
    assert "Jensen-Shannon distance" in methods(distances)


@pytest.mark.full_data
def test_creditcard(settings: Settings) -> None:
    table = creditcard(settings)
    hour = (pl.col("Time") // 3600).cast(pl.Int64)
    reference, batch = table.filter(hour < 12), table.filter(hour.is_between(30, 35))
    result = assert_parity(reference, batch, CREDITCARD)
    assert methods(result) == {"Wasserstein distance (normed)"}
    assert_parity(reference, batch.head(600), CREDITCARD)


def synthetic(n: int, seed: int, shift: float) -> pl.DataFrame:
    """Columns for the corners: two values (Z-test), nulls, NaN and inf, a Categorical dtype,
    integers with nulls, a new category in the batch, a constant column."""
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1, n)
    x[:7] = np.nan
    x[7:9] = np.inf
    ints = rng.integers(0, 40, n).astype(float)
    cats = rng.choice(["a", "b", "c", "d"] if shift else ["a", "b", "c"], n)
    return pl.DataFrame(
        {
            "x": x,
            "flag": rng.choice([0, 1], n, p=[0.7 - shift / 10, 0.3 + shift / 10]),
            "few": rng.integers(0, 4, n),
            "ints": pl.Series(ints, dtype=pl.Float64).cast(pl.Int64).scatter([0, 1], None),
            "const": np.ones(n),
            "cat": pl.Series(cats).cast(pl.Categorical),
            "yes": rng.choice(["yes", "no"], n),
        }
    )


SYNTHETIC = FLIGHTS.model_copy(
    update={
        "name": "synthetic",
        "numeric": ["x", "flag", "few", "ints", "const"],
        "categorical": ["cat", "yes"],
    }
)


@pytest.mark.parametrize(("n_ref", "n_cur"), [(800, 1200), (3000, 2000), (3000, 400)])
def test_synthetic_corners(n_ref: int, n_cur: int) -> None:
    reference, batch = synthetic(n_ref, 1, 0.0), synthetic(n_cur, 2, 0.5)
    result = assert_parity(reference, batch, SYNTHETIC)
    assert result.n_columns == 7
    if n_ref <= 1000:  # Evidently's p-value branch, by the number of distinct values
        by_column = {c.column: c.method for c in result.columns}
        assert by_column["flag"] == by_column["yes"] == "Z-test p_value"
        assert by_column["few"] == "chi-square p_value" and by_column["x"] == "K-S p_value"
    if n_ref == 3000 and n_cur == 2000:
        psi = DriftConfig(num_method="psi", cat_method="psi")
        assert methods(assert_parity(reference, batch, SYNTHETIC, psi)) == {"psi"}


def test_a_method_without_a_native_version_is_evidentlys(months: dict[str, pl.DataFrame]) -> None:
    cfg = DriftConfig(num_method="mannw", cat_method="hellinger")
    spec = FLIGHTS.model_copy(update={"numeric": ["temp", "hour"], "categorical": ["origin"]})
    result = assert_parity(months["2013-01"].head(2000), months["2013-07"].head(1500), spec, cfg)
    assert methods(result) == {"mannw", "hellinger"}


def test_a_lazy_frame_gives_the_same_numbers(tmp_path: Path, seattle: pl.DataFrame) -> None:
    path = tmp_path / "seattle.parquet"
    seattle.write_parquet(path)
    cut = pl.col("date").dt.year() <= 2013
    eager = data_drift(seattle.filter(cut), seattle.filter(~cut), numeric=SEATTLE_WEATHER.numeric)
    lazy = data_drift(
        pl.scan_parquet(path).filter(cut),
        pl.scan_parquet(path).filter(~cut),
        numeric=SEATTLE_WEATHER.numeric,
    )
    assert lazy.model_dump(exclude={"elapsed_s"}) == eager.model_dump(exclude={"elapsed_s"})
