"""A user's table for ``driftpilot eval`` (split from ``evals.harness``): ``load_table`` reads a
CSV or Parquet file, ``prepare`` checks and maps its target, gives it a usable time column and
infers its features (numbers are numeric, strings and booleans categorical, identifier-like
columns left out) unless named, and ``cut`` turns it into batches: by calendar period, by ``N``
hours, or by ``N`` rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from driftpilot.core.errors import ConfigError, DataError, SchemaError

ROW_ORDER = "__row"  # the time column of a table ordered by its rows (--order-by row)
_MAX_CATEGORIES = 200  # a string column with more distinct values is an identifier, not a feature


def load_table(path: Path) -> pl.DataFrame:
    """A CSV or Parquet file as a frame (clear errors for a missing or unreadable file)."""
    from tools.data import load_table as read

    frame = read(path)
    assert isinstance(frame, pl.DataFrame)
    return frame


def prepare(
    frame: pl.DataFrame,
    *,
    target: str,
    time_col: str | None,
    order_by_row: bool = False,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
    positive: str | None = None,
) -> tuple[pl.DataFrame, str, list[str], list[str], list[str]]:
    """Check the target, give the table a usable time column and infer its features.

    A two-valued target becomes 0/1 (``positive``, else the second in sort order, is 1); any
    other is left as it is, for the model's task to be inferred from it as ``model add``
    infers it (a few labels: multiclass; many numbers: regression).

    Returns the frame, its time column, the numeric and categorical features, and notes for
    the user (what was inferred, mapped or left out).

    Raises:
        SchemaError: a named column is missing, or the time column cannot be read as time.
        DataError: the target holds fewer than two values, or ``positive`` is given and is
            not one of its two values.
    """
    notes: list[str] = []
    named = [target, *(numeric or []), *(categorical or [])] + ([time_col] if time_col else [])
    missing = [c for c in named if c not in frame.columns]
    if missing:
        raise SchemaError(f"columns {missing} are not in the table; it has {frame.columns}")
    frame, note = _target(frame, target, positive)
    notes += [note] if note else []
    if order_by_row:
        if time_col:
            raise ConfigError("give either --time or --order-by row, not both")
        frame = frame.with_row_index(ROW_ORDER)
        time_col = ROW_ORDER
        notes.append("rows are in time order (--order-by row)")
    elif not time_col:
        raise ConfigError("name the time column with --time, or use --order-by row")
    else:
        frame = _as_time(frame, time_col)
    num, cat, left_out = infer_features(frame, [target, time_col], numeric, categorical)
    if left_out:
        notes.append(f"left out (identifiers or unusable types): {', '.join(left_out)}")
    if not num and not cat:
        raise SchemaError("no feature columns: every column is the target, the time or left out")
    return frame, time_col, num, cat, notes


def _target(
    frame: pl.DataFrame, target: str, positive: str | None
) -> tuple[pl.DataFrame, str | None]:
    """The target as the model learns it, with a note for the user when it was mapped: two
    values map to 0 and 1 (the second in sort order, or ``positive``, is 1); more are kept as
    they are (a multiclass or regression target: the note names the task inferred)."""
    values = frame[target].drop_nulls().unique().sort()
    shown = ", ".join(map(str, values.head(5).to_list()))
    if values.len() < 2:
        raise DataError(
            f"target {target!r} holds {values.len()} value(s) ({shown}): nothing to learn"
        )
    if values.len() > 2:
        if positive is not None:
            raise DataError(
                f"--positive names the 1 of a two-valued target; {target!r} holds "
                f"{values.len()} values ({shown}, ...)"
            )
        from tools.metrics import infer_task

        task, reason = infer_task(frame[target])  # what ``model add`` will infer from it
        return frame, f"{reason}: a {task} model"
    if positive is None and values.dtype.is_integer() and values.to_list() == [0, 1]:
        return frame, None
    low, high = values.to_list()
    if positive is not None:
        if positive not in map(str, (low, high)):
            raise DataError(
                f"--positive {positive!r} is not a value of {target!r}: {low!r}, {high!r}"
            )
        low, high = (high, low) if str(low) == positive else (low, high)
    mapped = frame.with_columns(
        pl.when(pl.col(target).is_null())
        .then(None)
        .otherwise((pl.col(target) == high).cast(pl.Int8))
        .alias(target)
    )
    return mapped, f"target {target!r}: {low!r} -> 0, {high!r} -> 1"


def _as_time(frame: pl.DataFrame, time_col: str) -> pl.DataFrame:
    dtype = frame[time_col].dtype
    if dtype.is_temporal() or dtype.is_numeric():
        return frame
    if dtype == pl.String:
        try:
            parsed = frame[time_col].str.to_datetime(strict=False)
        except pl.exceptions.ComputeError:  # no date format fits the first values
            parsed = None
        if parsed is not None and parsed.null_count() == frame[time_col].null_count():
            return frame.with_columns(parsed.alias(time_col))
    raise SchemaError(
        f"time column {time_col!r} ({dtype}) is neither a date/time nor a number; "
        "use --order-by row if the rows are in time order"
    )


def infer_features(
    frame: pl.DataFrame,
    exclude: list[str],
    numeric: list[str] | None,
    categorical: list[str] | None,
) -> tuple[list[str], list[str], list[str]]:
    """Numbers are numeric, strings and booleans categorical; a string column with more than
    200 distinct values, or an integer column with a distinct value on every row, is an
    identifier and is left out. Named columns are taken as named."""
    named = set(numeric or []) | set(categorical or [])
    num, cat = list(numeric or []), list(categorical or [])
    left_out: list[str] = []
    for name in frame.columns:
        if name in exclude or name in named:
            continue
        dtype = frame[name].dtype
        if dtype.is_integer() and frame.height > _MAX_CATEGORIES and _unique(frame[name]):
            left_out.append(name)  # an integer key (order id, row number): not a feature
        elif dtype.is_numeric():
            num.append(name)
        elif dtype in (pl.String, pl.Categorical, pl.Boolean, pl.Enum):
            many = frame[name].n_unique() > _MAX_CATEGORIES
            (left_out if many else cat).append(name)
        else:
            left_out.append(name)
    return num, cat, left_out


def _unique(column: pl.Series) -> bool:
    return column.n_unique() == column.len()


_HOURS = re.compile(r"^(\d+)h$")


def cut(frame: pl.DataFrame, time_col: str, batch: str) -> list[tuple[str, pl.DataFrame]]:
    """Cut a table into time-ordered batches: ``month|week|day|hour``, ``<N>h`` (windows of N
    hours; a numeric time column counts seconds) or ``<N>`` rows.

    Raises:
        ConfigError: an unknown batch size.
    """
    from tools.data import split_batches

    if batch.isdigit():
        return [
            (b.info.batch_id, b.frame) for b in split_batches(frame, time_col, n_rows=int(batch))
        ]
    if batch in ("month", "week", "day", "hour"):
        parts = split_batches(frame, time_col, every=batch)  # type: ignore[arg-type]
        return [(b.info.batch_id, b.frame) for b in parts]
    hours = _HOURS.match(batch)
    if hours is None or int(hours.group(1)) == 0:
        raise ConfigError(
            f"--batch must be month, week, day, hour, <N>h or <N> rows; got {batch!r}"
        )
    return _hour_windows(frame, time_col, int(hours.group(1)))


def _hour_windows(frame: pl.DataFrame, time_col: str, hours: int) -> list[tuple[str, pl.DataFrame]]:
    column = frame[time_col]
    if column.dtype.is_temporal():
        key = column.dt.truncate(f"{hours}h")
        names = key.dt.strftime("%Y-%m-%dT%H")
    elif column.dtype.is_numeric():
        key = (column // (3600 * hours)).cast(pl.Int64)
        names = pl.Series([f"h{int(k) * hours:05d}" for k in key])
    else:
        raise SchemaError(f"time column {time_col!r} ({column.dtype}) cannot be cut by hours")
    keyed = frame.with_columns(key.alias("__key"), names.alias("__name")).sort(time_col)
    out = []
    for (_, name), part in keyed.group_by("__key", "__name", maintain_order=True):
        out.append((str(name), part.drop("__key", "__name")))
    return out
