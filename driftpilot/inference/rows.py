"""Logged rows: validated against a model's schema, made canonical, and read back as a batch.

One logged row is a flat object: ``row_id``, the event time (the model's ``time_col``, alias
``event_time``), every feature, ``prediction``, optionally ``probabilities`` (binary: p(1);
multiclass: ``{class: p}``; in tables ``proba_<class>`` columns, binary ``proba_1`` or
``proba``) and optionally the model's target (a label already known). Validation is plain
Python (no frame per request): it is on the path of every acknowledgement. The stored payload
is the canonical JSON (sorted keys) of the validated row; its digest is what makes a retried
row recognisable.

``frame_of_rows`` turns a window's stored rows back into the frame a batch is: ``row_id``, the
time column, the features, ``prediction``, ``proba_<class>`` columns and the target (null
where no label came yet), with the dtypes the model's batches have.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driftpilot.core.errors import DataError

if TYPE_CHECKING:
    import polars as pl

    from driftpilot.store.models import ManagedModel

ROW_ID_MAX = 200
MAX_ERRORS = 20  # problems listed in one refusal; the count says how many there were
TIME_ALIAS = "event_time"
PROBA_TOLERANCE = 1e-3  # how far a multiclass row's probabilities may sum from 1
_FLAGS = {True: 1, False: 0}


@dataclass(frozen=True)
class RowError:
    """Why one row (0-based) of a request is refused; ``column`` None: the row as a whole."""

    row: int
    column: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "reason": self.reason}


class RowsRefused(DataError):
    """A request with at least one bad row: ``errors`` holds the first ``MAX_ERRORS``,
    ``count`` how many there were. Nothing of the request is written."""

    def __init__(self, errors: list[RowError], count: int) -> None:
        first = errors[0]
        where = f", column {first.column!r}" if first.column else ""
        more = f" (and {count - 1} more)" if count > 1 else ""
        super().__init__(f"row {first.row}{where}: {first.reason}{more}")
        self.errors, self.count = errors, count


@dataclass(frozen=True)
class Schema:
    """What a model's logged rows must hold: its task, columns and the types that matter.

    ``time_numeric``: the time column holds numbers, not instants (``time_dtype``: the
    reference's). ``target_dtype``: the reference's target dtype (None when the reference
    cannot be read). ``classes``: the
    classes the reference knows (multiclass; as strings), in its sorted order."""

    model: str
    task: str
    target: str
    time_col: str
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    time_numeric: bool = False
    time_dtype: Any = None
    target_dtype: Any = None
    classes: tuple[str, ...] = ()
    allowed: frozenset[str] = field(default=frozenset())

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


@dataclass(frozen=True)
class ValidRow:
    """One validated row: its id, event time as the store keeps it (UTC ISO 8601 or a number
    as text), canonical payload, digest and label (JSON text, or None)."""

    row_id: str
    event_time: str
    payload: str
    digest: str
    label: str | None


def named(row_ids: list[str], shown: int = 5) -> str:
    """The first ``shown`` row ids, quoted, and how many more (for an error message)."""
    more = f" and {len(row_ids) - shown} more" if len(row_ids) > shown else ""
    return ", ".join(repr(r) for r in row_ids[:shown]) + more


def schema_of(model: ManagedModel) -> Schema:
    """The schema a model's logged rows are validated against (its reference's dtypes are read
    once per reference file and kept)."""
    numeric = tuple(json.loads(model.numeric))
    categorical = tuple(json.loads(model.categorical))
    time_dtype, target_dtype, classes = _reference_facts(
        model.reference_path, model.time_col, model.target, model.task
    )
    allowed = frozenset(
        {"row_id", model.time_col, TIME_ALIAS, "prediction", "probabilities", model.target}
        | set(numeric)
        | set(categorical)
    )
    return Schema(
        model=model.name,
        task=model.task or "binary",
        target=model.target,
        time_col=model.time_col,
        numeric=numeric,
        categorical=categorical,
        time_numeric=time_dtype is not None and time_dtype.is_numeric(),
        time_dtype=time_dtype,
        target_dtype=target_dtype,
        classes=classes,
        allowed=allowed,
    )


def _reference_facts(
    path: str | None, time_col: str, target: str, task: str
) -> tuple[Any, Any, tuple[str, ...]]:
    """(time column dtype, target dtype, classes) of the reference; Nones when the reference
    cannot be read (the time is then an instant, the target's dtype left to the rows)."""
    if not path:
        return None, None, ()
    file = Path(path)
    try:
        mtime = file.stat().st_mtime_ns
    except OSError:
        return None, None, ()
    return _read_facts(str(file), mtime, time_col, target, task)


@lru_cache(maxsize=64)
def _read_facts(
    path: str, _mtime: int, time_col: str, target: str, task: str
) -> tuple[Any, Any, tuple[str, ...]]:
    import polars as pl

    schema = pl.read_parquet_schema(path)
    time_dtype = schema.get(time_col)
    target_dtype = schema.get(target)
    classes: tuple[str, ...] = ()
    if task == "multiclass" and target_dtype is not None:
        values = pl.scan_parquet(path).select(pl.col(target).unique()).collect()[target]
        classes = tuple(sorted(str(v) for v in values.drop_nulls().to_list()))
    return time_dtype, target_dtype, classes


# --- validation -------------------------------------------------------------------------


class _Bad(Exception):
    """One value refused: its column and the reason (collected into RowErrors)."""

    def __init__(self, column: str | None, reason: str) -> None:
        super().__init__(reason)
        self.column, self.reason = column, reason


def validate_rows(schema: Schema, rows: list[Any]) -> list[ValidRow]:
    """Every row of a request validated and made canonical, in order.

    Also refused: the same row id twice in the request with other content (the same row
    twice is kept once: a client's retry may repeat itself).

    Raises:
        RowsRefused: at least one row is bad (the first ``MAX_ERRORS`` problems, with the
            0-based row number, the column and the reason).
    """
    errors: list[RowError] = []
    count = 0
    valid: list[ValidRow] = []
    seen: dict[str, tuple[int, str]] = {}
    for i, raw in enumerate(rows):
        try:
            row = validate_row(schema, raw)
        except _Bad as bad:
            count += 1
            if len(errors) < MAX_ERRORS:
                errors.append(RowError(i, bad.column, bad.reason))
            continue
        before = seen.get(row.row_id)
        if before is None:
            seen[row.row_id] = (i, row.digest)
            valid.append(row)
        elif before[1] != row.digest:
            count += 1
            if len(errors) < MAX_ERRORS:
                reason = f"row id {row.row_id!r} is also row {before[0]}, with other content"
                errors.append(RowError(i, "row_id", reason))
    if count:
        raise RowsRefused(errors, count)
    return valid


def validate_row(schema: Schema, raw: Any) -> ValidRow:
    """One row validated and made canonical.

    Raises:
        _Bad: the first problem of the row.
    """
    if not isinstance(raw, dict):
        raise _Bad(None, f"a row must be an object, not {type(raw).__name__}")
    if not schema.allowed.issuperset(raw):  # a set operation: the common case costs least
        raw = _gather_probabilities(schema, raw)
        unknown = [k for k in raw if k not in schema.allowed]
        if unknown:
            raise _Bad(str(unknown[0])[:200], "unknown column (not a feature of the model)")
    out: dict[str, Any] = {"row_id": _row_id(raw.get("row_id"))}
    when = _event_time(schema, raw)
    out[schema.time_col] = when
    for name in schema.numeric:
        try:
            value = raw[name]
        except KeyError:
            raise _Bad(name, "missing feature (send null for a missing value)") from None
        # Inline fast path for a finite float (x - x is 0.0 unless x is inf or NaN).
        if type(value) is float and value - value == 0.0:
            out[name] = value
        else:
            out[name] = _number(name, value, nullable=True)
    for name in schema.categorical:
        if name not in raw:
            raise _Bad(name, "missing feature (send null for a missing value)")
        out[name] = _category(name, raw[name])
    if "prediction" not in raw or raw["prediction"] is None:
        raise _Bad("prediction", "missing prediction")
    out["prediction"] = _outcome(schema, "prediction", raw["prediction"])
    if raw.get("probabilities") is not None:
        out["probabilities"] = _probabilities(schema, raw["probabilities"])
    label = None
    if raw.get(schema.target) is not None:
        out[schema.target] = _outcome(schema, schema.target, raw[schema.target])
        label = json.dumps(out[schema.target])
    payload = canonical(out)
    event_time = when if isinstance(when, str) else repr(when)
    return ValidRow(out["row_id"], event_time, payload, digest_of(payload), label)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical(row: dict[str, Any]) -> str:
    """The canonical JSON of a validated row: sorted keys, no spaces, no NaN."""
    return _CANONICAL.encode(row)


def digest_of(payload: str) -> str:
    """SHA-256 (hex) of a canonical payload."""
    return hashlib.sha256(payload.encode()).hexdigest()


def _gather_probabilities(schema: Schema, raw: dict[str, Any]) -> dict[str, Any]:
    """A table row's ``proba_<class>`` (binary: ``proba``) columns as its ``probabilities``."""
    names = [k for k in raw if k.startswith("proba") and k not in schema.allowed]
    if not names:
        return raw
    rest = {k: v for k, v in raw.items() if k not in names}
    if "probabilities" in rest and rest["probabilities"] is not None:
        raise _Bad(names[0], "probabilities given twice (an object and proba columns)")
    found: dict[str, Any] = {}
    for name in names:
        if name == "proba":
            cls = "1"
        elif name.startswith("proba_") and len(name) > len("proba_"):
            cls = name[len("proba_") :]
        else:
            raise _Bad(name, "unknown column (not a feature of the model)")
        found[cls] = raw[name]
    if all(v is None for v in found.values()):
        rest["probabilities"] = None
    elif schema.task == "binary":
        if set(found) != {"1"}:
            raise _Bad(names[0], "a binary model's probability column is proba_1 (or proba)")
        rest["probabilities"] = found["1"]
    else:
        rest["probabilities"] = found
    return rest


def _row_id(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        raise _Bad("row_id", "missing row_id" if value is None else "row_id must be a string")
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise _Bad("row_id", "row_id must be a string (or an integer)")
    if not 1 <= len(value) <= ROW_ID_MAX:
        raise _Bad("row_id", f"row_id must have 1 to {ROW_ID_MAX} characters")
    if not value.isprintable():  # a NUL or a lone surrogate is no text a database stores
        raise _Bad("row_id", "row_id must be printable text (no control characters)")
    return value


def _event_time(schema: Schema, raw: dict[str, Any]) -> str | float:
    """The row's time: UTC ISO 8601 to the microsecond, or a number for a numeric time."""
    col = schema.time_col
    both = col != TIME_ALIAS and col in raw and TIME_ALIAS in raw
    if both:
        raise _Bad(TIME_ALIAS, f"the time is given twice ({col!r} and its alias {TIME_ALIAS!r})")
    name = col if col in raw else TIME_ALIAS
    value = raw.get(name)
    if value is None:
        raise _Bad(col, "missing event time")
    if schema.time_numeric:
        number = _number(col, value, nullable=False)
        assert number is not None
        return number
    if not isinstance(value, str):
        raise _Bad(col, "the event time must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _Bad(col, f"not an ISO 8601 time: {value[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _number(name: str, value: Any, *, nullable: bool) -> float | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(name, f"must be a number, not {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a float's range
        raise _Bad(name, "must be a finite number") from None
    if not math.isfinite(number):
        raise _Bad(name, "must be a finite number")
    return number


def _category(name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(name, f"must be a string, not {_kind(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Bad(name, "must be a string or a finite number")
    return str(value)


def _outcome(schema: Schema, name: str, value: Any) -> Any:
    """A prediction or a label as the task has it: binary 0/1, a class, or a number."""
    if schema.task == "regression":
        return _number(name, value, nullable=False)
    if schema.task == "binary":
        if isinstance(value, bool):
            return _FLAGS[value]
        if isinstance(value, int | float) and value in (0, 1):
            return int(value)
        if isinstance(value, str) and value.strip().lower() in _WORDS:
            return _WORDS[value.strip().lower()]
        raise _Bad(name, f"a binary model's {name} must be 0/1 or true/false, not {value!r:.40}")
    if isinstance(value, bool) or not isinstance(value, str | int):
        if not (isinstance(value, float) and value.is_integer()):
            raise _Bad(name, f"a class label must be a string or an integer, not {_kind(value)}")
        value = int(value)
    if isinstance(value, str) and not 1 <= len(value) <= ROW_ID_MAX:
        raise _Bad(name, f"a class label must have 1 to {ROW_ID_MAX} characters")
    return _class(schema, value)


def _class(schema: Schema, value: str | int) -> str | int:
    """A class typed as the model's classes are, so that 3 and "3" are one class (stored
    labels are compared as JSON text): an integer target's class is an int (a text that is
    an integer's own decimal, like "3" but not "03", becomes it); any other target's (text,
    or no reference to tell) is text."""
    want = schema.target_dtype
    if want is None or not want.is_integer():
        return value if isinstance(value, str) else str(value)
    if isinstance(value, int):
        return value
    try:
        number = int(value)
    except ValueError:
        return value  # a word for an integer target: kept, scoring counts it as wrong
    return number if str(number) == value else value


_WORDS = {"0": 0, "1": 1, "true": 1, "false": 0}


def _probabilities(schema: Schema, value: Any) -> Any:
    name = "probabilities"
    if schema.task == "regression":
        raise _Bad(name, "a regression model has no probabilities")
    if schema.task == "binary":
        return _probability(name, value)
    if not isinstance(value, dict) or not value:
        raise _Bad(name, "a multiclass model's probabilities are an object {class: p}")
    out = {str(k): _probability(f"proba_{k}", p) for k, p in value.items()}
    total = math.fsum(out.values())
    if abs(total - 1.0) > PROBA_TOLERANCE:
        raise _Bad(name, f"the probabilities sum to {total:.4f}, not 1")
    return out


def _probability(name: str, value: Any) -> float:
    number = _number(name, value, nullable=False)
    assert number is not None
    if not 0.0 <= number <= 1.0:
        raise _Bad(name, f"a probability must be between 0 and 1, not {number}")
    return number


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# --- tables and frames ---------------------------------------------------------------------


def rows_of_table(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """An uploaded table's rows as logged rows (instants as ISO 8601 text, so that they are
    validated like a JSON row's)."""
    import polars as pl

    zoned = [
        pl.col(n).dt.convert_time_zone("UTC") if dtype.time_zone else pl.col(n)
        for n, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime)
    ]
    if zoned:
        frame = frame.with_columns(zoned)
    texts = [
        pl.col(n).dt.to_string("%Y-%m-%dT%H:%M:%S%.f" if dtype != pl.Date else "%Y-%m-%d")
        for n, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) or dtype == pl.Date
    ]
    if texts:
        frame = frame.with_columns(texts)
    return frame.to_dicts()


def frame_of_rows(
    model: ManagedModel, payloads: list[str] | list[dict[str, Any]], labels: list[str | None]
) -> pl.DataFrame:
    """The batch frame of a window's rows, in the order given (the log's id order).

    The payloads are parsed by Polars (in Rust, without the GIL): a 10,000-row window costs
    the API's request threads little while it closes.

    Args:
        model: the model's row (its columns, task and reference).
        payloads: the rows' stored payloads (canonical JSON text, or already parsed).
        labels: the rows' stored labels (JSON text, or None while unlabelled), one per row; a
            label logged with the row counts when ``labels`` has none.

    Returns:
        Columns ``row_id``, the time column (Datetime(us, UTC), or the reference's numeric
        dtype), the numeric features (Float64), the categorical ones (String),
        ``prediction``, ``proba_<class>`` (binary: ``proba_1``; Float64) and the target
        (null where no label yet), the prediction and target in the reference's target dtype.
    """
    import polars as pl

    if len(payloads) != len(labels):
        raise ValueError(f"{len(payloads)} payloads but {len(labels)} labels")
    schema = schema_of(model)
    texts = pl.Series(
        "payload", [p if isinstance(p, str) else canonical(p) for p in payloads], dtype=pl.String
    )
    fields = _payload_fields(schema)
    if texts.len():
        decoded = texts.str.json_decode(pl.Struct(fields)).struct.unnest()
    else:
        decoded = pl.DataFrame(schema=fields)
    columns = [decoded["row_id"], _time_series(schema, decoded[schema.time_col])]
    columns += [decoded[n] for n in schema.features]
    columns.append(_outcome_series(schema, decoded["prediction"]))
    columns += _proba_columns(schema, decoded, texts)
    known = pl.Series(schema.target, _label_values(schema, labels), dtype=fields[schema.target])
    target = pl.select(pl.coalesce(known, decoded[schema.target])).to_series()
    columns.append(_outcome_series(schema, target.alias(schema.target)))
    return pl.DataFrame(columns)


def _payload_fields(schema: Schema) -> dict[str, Any]:
    """The dtypes a payload's fields are read as (before the batch's own dtypes)."""
    import polars as pl

    outcome = {"binary": pl.Int64, "regression": pl.Float64}.get(schema.task, pl.String)
    fields: dict[str, Any] = {
        "row_id": pl.String,
        schema.time_col: pl.Float64 if schema.time_numeric else pl.String,
    }
    fields |= {n: pl.Float64 for n in schema.numeric} | {n: pl.String for n in schema.categorical}
    fields |= {"prediction": outcome, schema.target: outcome}
    if schema.task == "binary":
        fields["probabilities"] = pl.Float64
    return fields


def _label_values(schema: Schema, labels: list[str | None]) -> list[Any]:
    """Stored labels as values of the payload's outcome dtype (a class as its text)."""
    values = [json.loads(label) if label is not None else None for label in labels]
    if schema.task in ("binary", "regression"):
        return values
    return [None if v is None else str(v) for v in values]


def _time_series(schema: Schema, values: pl.Series) -> pl.Series:
    """Instants (stored as UTC ISO 8601 to the microsecond) as Datetime(us, UTC); numbers in
    the reference's numeric dtype where no value changes."""
    if schema.time_numeric:
        return _cast_if_lossless(values, schema.time_dtype)
    return values.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", time_unit="us", time_zone="UTC")


def _outcome_series(schema: Schema, values: pl.Series) -> pl.Series:
    """Predictions or labels in the target's dtype: Float64 for a regression; a binary or
    multiclass model's as the reference's target (else Int8 for binary, String for classes)."""
    import polars as pl

    want = schema.target_dtype
    if schema.task == "regression":
        return _cast_if_lossless(values, want)
    if schema.task == "binary":
        if want is not None and (want == pl.Boolean or want.is_numeric()):
            return values.cast(want)
        return values.cast(pl.Int8)
    if want is None or want == pl.String:
        return values
    try:
        return values.cast(want, strict=True)
    except pl.exceptions.PolarsError:
        # A class the reference's dtype cannot hold (a word for an integer target): kept as
        # text, for scoring to count against the model, never dropped.
        return values


def _cast_if_lossless(series: pl.Series, want: Any) -> pl.Series:
    if want is None or want == series.dtype or not want.is_numeric():
        return series
    cast = series.cast(want, strict=False)
    same = cast.null_count() == series.null_count() and bool(
        (cast.cast(series.dtype) == series).fill_null(True).all()
    )
    return cast if same else series


def _proba_columns(schema: Schema, decoded: pl.DataFrame, texts: pl.Series) -> list[pl.Series]:
    """``proba_<class>`` columns: binary ``proba_1``; multiclass one per class the reference
    knows, then any other class the rows name (sorted). None when no row has probabilities."""
    import polars as pl

    if schema.task == "regression":
        return []
    if schema.task == "binary":
        values = decoded["probabilities"]
        return [] if values.null_count() == values.len() else [values.alias("proba_1")]
    objects = texts.str.json_path_match("$.probabilities")
    if objects.null_count() == objects.len():
        return []
    found = objects.str.json_decode(infer_schema_length=None).struct.unnest()
    classes = list(schema.classes) + sorted(set(found.columns) - set(schema.classes))
    return [
        (found[c] if c in found.columns else pl.Series(c, [None] * found.height))
        .cast(pl.Float64)
        .alias(f"proba_{c}")
        for c in classes
    ]
