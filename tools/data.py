"""Data tools: load tables, cut them into time batches, hash and persist batches.

Polars end to end. A *batch* is the unit DriftPilot reasons about: one slice of a source
(one hour/day/week/month of a time column, or N rows), identified by a content hash so that
the same data arriving twice is recognised.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import DataError, FormatError, IntegrityError, SchemaError
from driftpilot.core.settings import Settings, get_settings

Period = Literal["hour", "day", "week", "month"]

_TRUNCATE = {"hour": "1h", "day": "1d", "week": "1w", "month": "1mo"}
_SECONDS = {"hour": 3600, "day": 86_400, "week": 604_800}
_ID_FORMAT = {"hour": "%Y-%m-%dT%H", "day": "%Y-%m-%d", "week": "%Y-%m-%d", "month": "%Y-%m"}


class BatchInfo(BaseModel):
    """What is known about one batch without looking at its rows."""

    batch_id: str = Field(description="Stable name of the batch, e.g. '2013-03' for a month.")
    n_rows: int = Field(description="Number of rows in the batch.")
    content_hash: str = Field(description="sha256 of the batch content (row order ignored).")
    start: datetime | float | None = Field(None, description="First value of the time column.")
    end: datetime | float | None = Field(None, description="Last value of the time column.")
    path: str | None = Field(None, description="Parquet file the batch was persisted to, if any.")


@dataclass(frozen=True)
class Batch:
    """A batch: its rows and its description."""

    info: BatchInfo
    frame: pl.DataFrame


def load_table(path: str | Path, *, lazy: bool = False) -> pl.DataFrame | pl.LazyFrame:
    """Load a CSV or Parquet file (or a glob of them) with Polars.

    Args:
        path: a file path or glob ending in .csv, .csv.gz, .tsv or .parquet.
        lazy: return a LazyFrame that scans the file(s) instead of reading them now.

    Raises:
        DataError: the path matches no file.
        FormatError: the extension is not CSV/TSV/Parquet, or the file cannot be parsed.
    """
    text = str(path)
    if not any(c in text for c in "*?[") and not Path(text).exists():
        raise DataError(f"no such file: {text}")
    suffix = text.lower()
    try:
        if suffix.endswith(".parquet"):
            frame: pl.LazyFrame = pl.scan_parquet(text)
        elif suffix.endswith((".csv", ".csv.gz", ".tsv")):
            sep = "\t" if suffix.endswith(".tsv") else ","
            frame = pl.scan_csv(
                text, separator=sep, try_parse_dates=True, infer_schema_length=10_000
            )
        else:
            raise FormatError(f"unsupported file type {text!r}: expected .csv, .tsv or .parquet")
        return frame if lazy else frame.collect()
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError) as exc:
        raise FormatError(f"cannot read {text}: {exc}") from exc


Frame = pl.DataFrame | pl.LazyFrame
HASH_CHUNK_ROWS = 1_000_000  # a lazy batch is hashed this many rows at a time


def content_hash(frame: Frame) -> str:
    """sha256 of a frame's schema and rows, independent of row order.

    Two batches with the same rows (in any order) and the same column names and dtypes
    share a hash; this is how a batch delivered twice is recognised. A LazyFrame is hashed in
    chunks as it streams (a row's hash depends on that row alone): the same digest as the
    frame collected, with only the 8-byte row hashes held at once.
    """
    digest = hashlib.sha256()
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    for name, dtype in schema.items():
        digest.update(f"{name}:{dtype};".encode())
    if isinstance(frame, pl.DataFrame):
        row_hashes = frame.hash_rows(seed=0)
    else:
        chunks = [
            chunk.hash_rows(seed=0)
            for chunk in frame.collect_batches(chunk_size=HASH_CHUNK_ROWS, maintain_order=False)
        ]
        row_hashes = pl.concat(chunks) if chunks else pl.Series([], dtype=pl.UInt64)
    if row_hashes.len():
        digest.update(row_hashes.sort().to_numpy().tobytes())
    return digest.hexdigest()


def n_rows(frame: Frame) -> int:
    """The number of rows (a Parquet scan answers from the file's metadata)."""
    if isinstance(frame, pl.DataFrame):
        return frame.height
    return int(frame.select(pl.len()).collect().item())


def make_batch(frame: pl.DataFrame, batch_id: str, time_col: str | None = None) -> Batch:
    """Wrap rows as a Batch, computing its hash and time range."""
    start = end = None
    if time_col is not None and frame.height:
        start, end = frame[time_col].min(), frame[time_col].max()
    info = BatchInfo(
        batch_id=batch_id,
        n_rows=frame.height,
        content_hash=content_hash(frame),
        start=start,
        end=end,
    )
    return Batch(info=info, frame=frame)


def split_batches(
    frame: pl.DataFrame,
    time_col: str,
    *,
    every: Period | None = "month",
    n_rows: int | None = None,
) -> list[Batch]:
    """Cut a table into consecutive batches ordered by a time column.

    Args:
        frame: the table.
        time_col: column giving each row's time. A datetime/date column is cut by calendar
            period; a numeric column is read as seconds since a start (as in the Kaggle
            credit-card file) and cut into fixed-length windows.
        every: calendar period of one batch: hour, day, week or month.
        n_rows: instead of a period, cut into batches of this many rows (time-ordered).

    Returns:
        Batches in time order; empty periods produce no batch.

    Raises:
        SchemaError: the time column is missing or has an unusable type.
        DataError: neither or both of ``every`` and ``n_rows`` are usable.
    """
    if time_col not in frame.columns:
        raise SchemaError(f"time column {time_col!r} not in columns {frame.columns}")
    ordered = frame.sort(time_col)
    if n_rows is not None:
        if n_rows <= 0:
            raise DataError(f"n_rows must be positive, got {n_rows}")
        return [
            make_batch(ordered.slice(offset, n_rows), f"rows-{offset:09d}", time_col)
            for offset in range(0, ordered.height, n_rows)
        ]
    if every not in _TRUNCATE:
        raise DataError(f"every must be one of {sorted(_TRUNCATE)}, got {every!r}")
    keyed = ordered.with_columns(_period_key(ordered[time_col], every).alias("__batch_key"))
    batches = []
    for (key,), part in keyed.group_by("__batch_key", maintain_order=True):
        rows = part.drop("__batch_key")
        batches.append(make_batch(rows, _batch_name(key, every), time_col))
    return batches


def _period_key(column: pl.Series, every: Period) -> pl.Series:
    dtype = column.dtype
    if dtype.is_temporal():
        return column.dt.truncate(_TRUNCATE[every])
    if dtype.is_numeric():
        if every == "month":
            raise SchemaError(f"numeric time column {column.name!r} cannot be cut by month")
        return (column // _SECONDS[every]).cast(pl.Int64)
    raise SchemaError(f"time column {column.name!r} has type {dtype}; expected datetime or number")


def _batch_name(key: object, every: Period) -> str:
    if isinstance(key, datetime):
        return key.strftime(_ID_FORMAT[every])
    if hasattr(key, "strftime"):  # a date
        return key.strftime(_ID_FORMAT[every])
    return f"{every}-{int(key):05d}"  # type: ignore[call-overload]


def batch_dir(source: str, settings: Settings | None = None) -> Path:
    """Where the batches of one source are persisted: ``<batches_dir>/<source>/``."""
    settings = settings or get_settings()
    assert settings.batches_dir is not None
    return settings.batches_dir / source


def conform(frame: Frame, reference: pl.Schema) -> tuple[Frame, list[str]]:
    """Give the batch's columns the reference's dtypes where that changes no value, so the
    batch can join the model's training window.

    - A time column in another zone is converted to the reference's zone (same instants; a
      CSV carries offsets, not zones, and parses as UTC). A time column without a zone is
      read as wall-clock time in the reference's zone.
    - Numbers are cast to the reference's numeric type only if every value survives (an
      integer column for a float one, say); strings to categoricals and back.
    Anything else is left as it is, for the quality checks to report. Returns the frame (a
    LazyFrame stays lazy: the casts are part of its plan, and the lossless check of numeric
    casts is one streaming aggregate over the columns that need it) and one note per
    converted column (column names from the reference only).
    """
    lazy = frame.lazy()
    schema = lazy.collect_schema()
    wanted = {n: w for n, w in reference.items() if n in schema and schema[n] != w}
    numeric = [n for n, w in wanted.items() if schema[n].is_numeric() and w.is_numeric()]
    lossless = _lossless_casts(lazy, {n: wanted[n] for n in numeric})
    casts: list[pl.Expr] = []
    notes: list[str] = []
    for name, want in wanted.items():
        have = schema[name]
        if name in numeric:
            if not lossless[name]:
                continue
            cast = pl.col(name).cast(want).alias(name)
        else:
            maybe = _other_cast(name, have, want)
            if maybe is None:
                continue
            cast = maybe
        casts.append(cast)
        notes.append(f"column {name!r} converted from {have} to {want}")
    if not casts:
        return frame, notes
    conformed = lazy.with_columns(casts)
    return (conformed if isinstance(frame, pl.LazyFrame) else conformed.collect()), notes


def _lossless_casts(frame: pl.LazyFrame, wanted: dict[str, pl.DataType]) -> dict[str, bool]:
    """Per column: does every value survive the cast to ``wanted`` (no new null, the same
    number)? One aggregate over those columns."""
    if not wanted:
        return {}
    checks = []
    for name, want in wanted.items():
        column = pl.col(name)
        cast = column.cast(want, strict=False)
        same = (cast.cast(pl.Float64) == column.cast(pl.Float64)).fill_null(True).all()
        checks.append(((cast.null_count() == column.null_count()) & same).alias(name))
    row = frame.select(checks).collect(engine="streaming").row(0, named=True)
    return {name: bool(ok) for name, ok in row.items()}


def _other_cast(name: str, have: pl.DataType, want: pl.DataType) -> pl.Expr | None:
    """The cast of a time or text column to the reference's type (None: left as it is)."""
    column = pl.col(name)
    if isinstance(want, pl.Datetime) and isinstance(have, pl.Datetime):
        if have.time_zone is None and want.time_zone is not None:
            # Wall-clock times at a daylight-saving change: the earlier of two, and a
            # time that never happened is missing (the quality checks count it).
            column = column.dt.replace_time_zone(
                want.time_zone, ambiguous="earliest", non_existent="null"
            )
        elif want.time_zone is not None:
            column = column.dt.convert_time_zone(want.time_zone)
        else:
            column = column.dt.replace_time_zone(None)
        return column.dt.cast_time_unit(want.time_unit).alias(name)
    if {type(have), type(want)} <= {pl.String, pl.Categorical, pl.Enum}:
        return column.cast(pl.String).cast(want, strict=False).alias(name)
    return None


def write_parquet_atomic(frame: Frame, target: Path) -> None:
    """Write Parquet under a temporary name in the same folder, then rename: a crash never
    leaves a half-written file where a reader would take it for whole. A LazyFrame is
    streamed to the file (its rows are never all in memory)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".parquet.tmp")
    os.close(fd)
    try:
        if isinstance(frame, pl.LazyFrame):
            frame.sink_parquet(tmp, engine="streaming")
        else:
            frame.write_parquet(tmp)
        os.replace(tmp, target)
    except pl.exceptions.ComputeError as exc:
        # Polars words a full disk as it meets it ("No space left", or only "Invalid thrift:
        # transport error" when the footer's write fails): the folder's free space decides.
        if no_room(target.parent):
            raise OSError(errno.ENOSPC, f"no space left writing {target.name}: {exc}") from exc
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def no_room(folder: Path, floor_bytes: int = 1 << 20) -> bool:
    """The file system of ``folder`` has less than ``floor_bytes`` free for this user."""
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize < floor_bytes


def persist_batch(batch: Batch, directory: Path) -> BatchInfo:
    """Write a batch to ``directory/<batch_id>.parquet`` atomically (see ``batch_dir``).

    Returns the batch info with ``path`` set.
    """
    target = directory / f"{batch.info.batch_id}.parquet"
    write_parquet_atomic(batch.frame, target)
    return batch.info.model_copy(update={"path": str(target)})


def read_batch(info: BatchInfo, time_col: str | None = None) -> Batch:
    """Load a persisted batch back and check its content hash.

    Raises:
        DataError: the batch was never persisted or its file is missing.
        IntegrityError: the file's content no longer matches the recorded hash.
    """
    if info.path is None or not Path(info.path).exists():
        raise DataError(f"batch {info.batch_id!r} has no persisted file")
    frame = pl.read_parquet(info.path)
    actual = content_hash(frame)
    if actual != info.content_hash:
        raise IntegrityError(
            f"batch {info.batch_id!r} at {info.path} changed: "
            f"hash {actual[:12]} != {info.content_hash[:12]}"
        )
    return Batch(info=info, frame=frame)
