"""Pipeline defect signatures: the shapes a broken pipeline leaves in a batch, named.

A drift moves values; a broken pipeline leaves a signature that no world change makes:

- ``unit_change``: a numeric column rescaled by a unit factor (x1.8+32 for °C read as °F,
  its inverse, x1000, x100, x0.01, x0.001). The batch's quantiles match the reference's
  quantiles mapped by the factor far better than unmapped, and its spread moved by the
  factor: a covariate shift or a range that moved keeps its spread and fits no factor;
- ``null_burst``: a column's null share jumps far above the reference's (read by
  ``tools.quality``'s null check, which quarantines it with this signature);
- ``default_burst``: one default value (0, -1, -999, "", "unknown", ...) or a value the
  numbers pile up on strictly inside the reference's range, rare in it (a mean written for a
  missing value) suddenly holds a large share of a column where the reference had little (a
  new value beyond the range is a new year or version: a shift, not a fill);
- ``duplicate_rows`` / ``duplicate_keys``: rows (or keys) repeated far above the rate the
  reference's rows would repeat at the batch's row count, as a fan-out join leaves them;
- ``gone_constant``: a column whose reference values were spread (many distinct values, none
  common) holds one value in every row, over a time span the reference rarely held one value
  for (``tools.quality``'s constant check, an error then: an hour-of-day in an hourly batch is
  no defect).

The reference side (``ColumnShape``, per column) is measured on the in-memory reference by
``column_shape``; the batch side streams: ``count_exprs`` join the quality aggregate (one
pass over the batch) and ``batch_quantiles`` reads a systematic sample of at most
``SAMPLE_ROWS`` rows of the numeric columns (a second, light pass: exact quantiles of 10M rows
cost seconds per column, a sample's are as good for a factor of 1.8 or more).

Findings quote only schema column names, the factors and default values of this module, and
numbers (never a cell's text): they reach an LLM.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from tools.defect_rules import UNIT_FACTORS, ColumnShape, DefectThresholds

DefectKind = Literal[
    "unit_change", "null_burst", "default_burst", "duplicate_rows", "duplicate_keys",
    "gone_constant",
]  # fmt: skip
# Every 5th percentile and the 1st and 99th: a pile of 20 % of the rows spans 3 of them.
QUANTILES: tuple[float, ...] = (0.01, *(round(0.05 * i, 2) for i in range(1, 20)), 0.99)
# The unit factors are fitted on these (a finer grid matched a day's wind directions, whose
# values are tens of degrees, to the reference rescaled (x-32)/1.8: 19 false fits in 1,464
# daily batches against monthly references, none on these nine).
UNIT_QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
_UNIT_AT = [QUANTILES.index(q) for q in UNIT_QUANTILES]
SAMPLE_ROWS = 200_000  # the batch's quantiles are read on at most this many rows
TOP_VALUES = 5  # the reference keeps the shares of its this many most common values
# Values a pipeline fills in for "unknown": counted exactly in every batch.
DEFAULT_NUMBERS: tuple[float, ...] = (0.0, -1.0, -99.0, -999.0, -9999.0, 9999.0, 99999.0)
DEFAULT_TEXTS: tuple[str, ...] = (
    "", "unknown", "none", "null", "n/a", "na", "nan", "-", "?", "missing", "0", "-1",
)  # fmt: skip


def value_key(value: object) -> str:
    """One key per value whatever its type: 0, 0.0 and an integer column's 0 alike."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"s:{value}"
    return f"n:{float(value)!r}"


def column_shape(series: pl.Series, kind: str) -> ColumnShape:
    """The reference numbers a column's signatures are read against (``series`` in memory)."""
    values = series.drop_nulls()
    if values.dtype.is_float():
        values = values.filter(values.is_finite())
    if values.len() == 0:
        return ColumnShape()
    if kind == "categorical":
        values = values.cast(pl.String)
    elif kind == "numeric":
        values = values.cast(pl.Float64)
    counts = values.value_counts(sort=True, name="n")
    total = values.len()
    shares = {value_key(v): n / total for v, n in counts.head(TOP_VALUES).iter_rows()}
    if kind == "categorical":  # read as the batch's are: trimmed, lower case
        texts = values.str.strip_chars().str.to_lowercase()
        shares |= {value_key(t): int((texts == t).sum()) / total for t in DEFAULT_TEXTS}
    elif kind == "numeric":
        shares |= {value_key(v): int((values == v).sum()) / total for v in DEFAULT_NUMBERS}
    quantiles = None
    if kind == "numeric":
        quantiles = [float(values.quantile(q, "nearest")) for q in QUANTILES]  # type: ignore[arg-type]
    return ColumnShape(
        quantiles=quantiles,
        top_share=shares[value_key(counts.row(0)[0])],
        value_shares=shares,
        bound=0.0 if counts.height <= TOP_VALUES else counts["n"][TOP_VALUES - 1] / total,
    )


def repeats(frame: pl.DataFrame) -> tuple[float, int]:
    """The share of rows that repeat an earlier row exactly, and how many pairs of rows are
    equal (a group of c equal rows holds c(c-1)/2): (0.0, 0) for no rows."""
    if frame.height == 0 or frame.width == 0:
        return 0.0, 0
    counts = frame.group_by(frame.columns).len()["len"]
    return 1.0 - counts.len() / frame.height, int((counts * (counts - 1) // 2).sum())


def expected_duplicate_share(rows: int, reference_rows: int, share: float, pairs: int) -> float:
    """The share of ``rows`` i.i.d. rows of the reference's distribution expected to repeat an
    earlier one: the reference's own share at its own size, and for a larger batch the bound
    ``(rows - 1) / 2 * P(two rows are equal)``. The k-th row repeats an earlier one with
    probability at most ``(k - 1) * P(two rows are equal)``, so a larger batch of the same
    rows repeats more (2,000 discrete rows 0.9 % repeated, 100,000 of them 37 %). The pair
    probability is the reference's share of equal pairs, one pair added so that a reference
    with none still allows some at a batch 50 times its size."""
    if rows <= reference_rows or reference_rows < 2:
        return share
    chance = (pairs + 1) / (reference_rows * (reference_rows - 1) / 2)
    return max(share, min(1.0, (rows - 1) / 2 * chance))


def time_values(name: str, dtype: pl.DataType) -> pl.Expr:
    """A time column as numbers: seconds since the epoch for a date or datetime, the values
    themselves for a numeric time (credit cards' seconds, a year)."""
    if dtype.is_temporal():
        return pl.col(name).dt.epoch("ms").cast(pl.Float64) / 1000.0
    return pl.col(name).cast(pl.Float64)


STEADY_SHARE = 0.5  # ``steady_span``: the stretch length half of the reference's time lies in


def steady_spans(frame: pl.DataFrame, time_column: str, columns: list[str]) -> dict[str, float]:
    """Per column, how long it holds one value (``ColumnShape.steady_span``). The rows are read
    per timestamp in time order: a timestamp with two values holds none (a stretch of length
    0); consecutive timestamps of one and the same value form a stretch, lasting from its
    first timestamp to the next stretch's (an hour-of-day on hourly stamps: one hour). The
    steady span is the length that stretches at least as long cover STEADY_SHARE of the
    reference's time: a batch spanning less time is shorter than the reference's typical
    stretch of one value, so its column being constant is what the reference does too."""
    names = [n for n in columns if n != time_column]
    if not names:
        return {}
    values = [pl.col(n).fill_nan(None) if frame.schema[n].is_float() else pl.col(n) for n in names]
    # one pass over the rows: per timestamp each column's distinct values and one of them
    stamps = (
        frame.select(time_values(time_column, frame.schema[time_column]).alias("_t"), *values)
        .drop_nulls("_t")
        .group_by("_t")
        .agg(
            *(pl.col(n).drop_nulls().n_unique().alias(f"n:{n}") for n in names),
            *(pl.col(n).drop_nulls().first().alias(f"v:{n}") for n in names),
        )
        .sort("_t")
    )
    spans = {}
    for name in names:
        rows = stamps.select("_t", pl.col(f"n:{name}").alias("n"), pl.col(f"v:{name}").alias("_v"))
        rows = rows.filter(pl.col("n") > 0)  # timestamps where the column has a value
        if rows.height >= 2:
            spans[name] = _steady_span(rows)
    return spans


def _steady_span(stamps: pl.DataFrame) -> float:
    """``steady_spans`` of one column, from its timestamps in order (``_t``), each with its
    count of distinct values (``n``) and one of them (``_v``)."""
    stamps = stamps.with_columns(
        # a new stretch at a mixed timestamp, after one, or at a new value
        new=(pl.col("n") > 1) | (pl.col("n").shift(1) > 1) | (pl.col("_v") != pl.col("_v").shift(1))
    ).with_columns(run=pl.col("new").fill_null(True).cum_sum())
    runs = (
        stamps.group_by("run", maintain_order=True)
        .agg(pl.col("_t").first().alias("start"), (pl.col("n").max() > 1).alias("mixed"))
        .with_columns(end=pl.col("start").shift(-1).fill_null(stamps["_t"].max()))
        .with_columns(duration=pl.col("end") - pl.col("start"))
        # a mixed timestamp's time counts in the whole, in no stretch of one value
        .with_columns(length=pl.when(pl.col("mixed")).then(0.0).otherwise(pl.col("duration")))
        .sort("length", descending=True)
    )
    total = float(runs["duration"].sum())
    if total <= 0:
        return 0.0
    covered = runs["duration"].cum_sum() / total
    return float(runs.filter(covered >= STEADY_SHARE)["length"][0])


# -- the batch side: counts in the quality aggregate, quantiles of a sample ---------------------


def _texts(name: str) -> pl.Expr:
    return pl.col(name).cast(pl.String).str.strip_chars().str.to_lowercase()


def _is_default(name: str, kind: str) -> pl.Expr:
    """Whether a value is one of the default values (text: as written, upper case or
    capitalised; one ``is_in`` a column: trimming and lower-casing 10M strings per default
    value cost 25 s of a 10M-row check)."""
    if kind == "numeric":
        return pl.col(name).cast(pl.Float64).is_in(list(DEFAULT_NUMBERS))
    variants = sorted({v for t in DEFAULT_TEXTS for v in (t, t.upper(), t.capitalize())})
    return pl.col(name).cast(pl.String).is_in(variants)


def count_exprs(columns: Mapping[str, str], rows: list[str], keys: list[str]) -> list[pl.Expr]:
    """Expressions for the quality aggregate: per column (name -> kind: numeric and
    categorical ones) the count of its default values (``dflt:<name>``; which value they are
    is counted by ``default_breakdown``, for the few columns whose count could be a burst);
    the distinct rows over ``rows`` and keys over ``keys``, counted as distinct 64-bit row
    hashes (a set of 8 bytes a row; collisions are negligible below billions of rows). Not
    HyperLogLog: Polars 2.1's streaming ``approx_n_unique`` was 5-15 % off (26,287 distinct
    of 28,293 July flights, all distinct)."""
    exprs: list[pl.Expr] = [
        _is_default(name, kind).fill_null(False).sum().alias(f"dflt:{name}")
        for name, kind in columns.items()
        if kind in ("numeric", "categorical")
    ]
    if rows:
        exprs.append(pl.struct(rows).hash().n_unique().alias("distinct_rows"))
    if keys:
        complete = pl.all_horizontal(pl.col(k).is_not_null() for k in keys)
        exprs += [
            complete.sum().alias("keyed_rows"),
            pl.struct(keys).filter(complete).hash().n_unique().alias("distinct_keys"),
        ]
    return exprs


def default_breakdown(frame: pl.LazyFrame, columns: Mapping[str, str]) -> dict[str, dict[str, int]]:
    """Per column (name -> kind) the exact count of each default value (text trimmed and
    lower-cased), keyed by ``value_key``: a second pass over these columns only."""
    if not columns:
        return {}
    exprs: list[pl.Expr] = []
    keys: list[tuple[str, str]] = []
    for name, kind in columns.items():
        if kind == "numeric":
            values = pl.col(name).cast(pl.Float64)
            pairs = [(values == v, value_key(v)) for v in DEFAULT_NUMBERS]
        else:
            pairs = [(_texts(name) == t, value_key(t)) for t in DEFAULT_TEXTS]
        for hit, key in pairs:
            exprs.append(hit.fill_null(False).sum().alias(f"n{len(keys)}"))
            keys.append((name, key))
    row = frame.select(exprs).collect(engine="streaming").row(0)
    counts: dict[str, dict[str, int]] = {name: {} for name in columns}
    for (name, key), n in zip(keys, row, strict=True):
        counts[name][key] = int(n or 0)
    return counts


def batch_quantiles(
    frame: pl.LazyFrame, numeric: dict[str, pl.DataType], height: int
) -> dict[str, list[float] | None]:
    """The finite values' quantiles (at QUANTILES) of each numeric column, on every k-th row
    (at most SAMPLE_ROWS rows; a batch is time-ordered, so the sample spans it). None for a
    column without a finite value."""
    if not numeric or height == 0:
        return {}
    step = max(1, math.ceil(height / SAMPLE_ROWS))
    exprs = []
    for name, dtype in numeric.items():
        values = pl.col(name)
        if dtype.is_float():
            values = values.filter(values.is_finite())
        exprs.append(values.quantile(pl.lit(list(QUANTILES)), "nearest").alias(name))
    sample = frame.select(list(numeric)).gather_every(step)
    row = sample.select(exprs).collect(engine="streaming").row(0, named=True)
    return {name: _floats(value) for name, value in row.items()}


def _floats(value: Any) -> list[float] | None:
    if value is None:
        return None
    values = [None if v is None else float(v) for v in value]
    if any(v is None or math.isnan(v) for v in values):
        return None
    return [v for v in values if v is not None]


# -- the signatures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defect:
    """One signature found in a batch: what it is, where, how sure, in words with numbers."""

    kind: DefectKind
    column: str | None
    value: float
    message: str
    detail: str = ""  # the signature's qualifier: the factor, the default value

    @property
    def signature(self) -> str:
        """E.g. ``unit_change:temp x1.8+32``, ``default_burst:distance=0``,
        ``duplicate_rows``."""
        where = f":{self.column}" if self.column else ""
        sep = "=" if self.kind == "default_burst" else " "
        return f"{self.kind}{where}{sep + self.detail if self.detail else ''}"


def _spread(quantiles: list[float]) -> float:
    """5th to 95th percentile, else 1st to 99th (a column mostly one value)."""
    inner = quantiles[QUANTILES.index(0.95)] - quantiles[QUANTILES.index(0.05)]
    return inner if inner > 0 else quantiles[-1] - quantiles[0]


def _cdf(quantiles: list[float], value: float) -> float:
    """The share of a distribution below ``value``, read off its UNIT_QUANTILES (linear
    between them; 0 below the first, 1 above the last)."""
    if value < quantiles[0]:
        return 0.0
    if value > quantiles[-1]:
        return 1.0
    # a value inside a run of equal quantiles sits at the run's middle
    low = max(i for i, q in enumerate(quantiles) if q <= value)
    high = min(i for i, q in enumerate(quantiles) if q >= value)
    if quantiles[high] == quantiles[low]:
        return (UNIT_QUANTILES[low] + UNIT_QUANTILES[high]) / 2
    t = (value - quantiles[low]) / (quantiles[high] - quantiles[low])
    return UNIT_QUANTILES[low] + t * (UNIT_QUANTILES[high] - UNIT_QUANTILES[low])


def distance(a: list[float], b: list[float]) -> float:
    """How far apart two distributions are, in shares of rows, from their quantiles (at
    QUANTILES): the mean distance of each one's UNIT_QUANTILES from their level in the other,
    both ways (0: alike; 0.5 at most: no overlap). Scale-free, so a skewed column's long tail
    does not hide a body that moved."""
    a, b = [a[i] for i in _UNIT_AT], [b[i] for i in _UNIT_AT]
    ab = sum(abs(_cdf(b, x) - q) for x, q in zip(a, UNIT_QUANTILES, strict=True))
    ba = sum(abs(_cdf(a, x) - q) for x, q in zip(b, UNIT_QUANTILES, strict=True))
    return (ab + ba) / (2 * len(UNIT_QUANTILES))


def unit_change(
    name: str,
    batch: list[float] | None,
    reference: list[float] | None,
    values: int,
    limits: DefectThresholds,
) -> Defect | None:
    """The unit factor the batch's column was rescaled by, or None. Fires only when a factor's
    mapped reference lies close to the batch (``unit_fit``), the unmapped one does not
    (``unit_unmapped`` and ``unit_margin`` times farther) and the spread moved by the factor
    (``unit_spread``: a shift keeps its spread)."""
    if batch is None or reference is None or values < limits.min_rows:
        return None
    spread, ref_spread = _spread(batch), _spread(reference)
    if spread <= 0 or ref_spread <= 0:
        return None
    unmapped = distance(batch, reference)
    fits = [(distance(batch, [f.apply(r) for r in reference]), f) for f in UNIT_FACTORS]
    miss, factor = min(fits, key=lambda fit: fit[0])
    ratio = spread / (ref_spread * factor.scale)
    near = 0.5 <= factor.scale <= 2.0
    needed = limits.unit_unmapped if near else limits.unit_unmapped_far
    if miss > limits.unit_fit or unmapped < max(needed, limits.unit_margin * miss):
        return None
    allowed = limits.unit_spread_tight if miss <= limits.unit_tight else limits.unit_spread
    if not 1 / allowed <= ratio <= allowed:
        return None
    median = QUANTILES.index(0.5)
    return Defect(
        kind="unit_change",
        column=name,
        value=round(miss, 4),
        detail=factor.label,
        message=f"column {name!r} looks rescaled {factor.label} ({factor.meaning}): its median "
        f"{batch[median]:.4g} against the reference's {reference[median]:.4g} "
        f"({factor.label}: {factor.apply(reference[median]):.4g}), its spread {ratio:.2f} "
        f"times the rescaled reference's; its quantiles sit {miss:.0%} of rows off the "
        f"rescaled reference's, {unmapped:.0%} off the reference's",
    )


def _shown(key: str) -> str:
    """A default value as a finding may quote it (ours, or a number: never batch text)."""
    kind, _, raw = key.partition(":")
    if kind == "n":
        return f"{float(raw):g}"
    return repr(raw)


def default_burst(
    name: str,
    counts: dict[str, int],
    plateau: tuple[str, float] | None,
    values: int,
    shape: ColumnShape,
    limits: DefectThresholds,
) -> Defect | None:
    """The one value that floods the column, or None. ``counts``: exact counts of the
    default values; ``plateau``: a value the batch's quantiles pile up on, with the share
    they show (a lower bound)."""
    if values < limits.min_rows:
        return None
    candidates = [(key, n / values) for key, n in counts.items()]
    # A pile at a value no list names counts only when larger than any pile the reference
    # had: else it is that pile shifted (the hours without rain, after a shift of the column).
    if (
        plateau is not None
        and plateau[0] not in counts
        and plateau[1] - shape.top_share > limits.default_rise
    ):
        candidates.append(plateau)
    found = []
    for key, share in candidates:
        before = shape.share_of(key)
        if share - before > limits.default_rise and before <= limits.default_rare:
            found.append((share - before, key, share, before))
    if not found:
        return None
    _, key, share, before = max(found)
    return Defect(
        kind="default_burst",
        column=name,
        value=round(share, 4),
        detail=_shown(key),
        message=f"{share:.0%} of column {name!r} holds the one value {_shown(key)} "
        f"(reference {before:.1%}): a burst of a default value",
    )


def plateau(
    quantiles: list[float] | None, bounds: tuple[float | None, float | None] = (None, None)
) -> tuple[str, float] | None:
    """A value at least three consecutive quantiles share, with the share between the first
    and last of them (the value holds more): where a column's numbers pile up, counted only
    strictly inside the reference's smallest and largest value (``bounds``; None: open). A pile
    at a bound is a bound reached, not a fill: air saturated at 100 % humidity on a foggy day,
    a sensor at the end of its scale. A pile beyond them is a value the reference never had:
    a new year or version of a column of few values, a shift, not a fill (a fill beyond the
    range, -999, is a default value, counted as such)."""
    if quantiles is None:
        return None
    low, high = bounds
    best: tuple[str, float] | None = None
    start = 0
    for end in range(1, len(quantiles) + 1):
        if end < len(quantiles) and quantiles[end] == quantiles[start]:
            continue
        value = quantiles[start]
        inside = (low is None or value > low) and (high is None or value < high)
        if end - start >= 3 and inside:
            share = QUANTILES[end - 1] - QUANTILES[start]
            if best is None or share > best[1]:
                best = (value_key(quantiles[start]), share)
        start = end
    return best


def duplicated_rows(
    rows: int, distinct: int, reference: float, limits: DefectThresholds
) -> Defect | None:
    """Rows repeated far above ``reference``, the share the reference's rows would repeat at
    this batch's row count (``expected_duplicate_share``): a fan-out join; or None."""
    if rows < limits.min_rows:
        return None
    share = max(0.0, 1.0 - distinct / rows)
    if share - reference <= limits.duplicate_rise or share < limits.duplicate_ratio * reference:
        return None
    return Defect(
        kind="duplicate_rows",
        column=None,
        value=round(share, 4),
        message=f"about {share:.0%} of the rows repeat another row exactly (the reference's "
        f"rows would at this row count: {reference:.2%}): duplicated rows, as a fan-out join "
        "leaves them",
    )


def duplicated_keys(
    keys: list[str], keyed: int, distinct: int, limits: DefectThresholds
) -> Defect | None:
    """A key (unique by definition) repeated in more than ``duplicate_keys`` of the rows."""
    if keyed == 0:
        return None
    share = max(0.0, 1.0 - distinct / keyed)
    if share <= limits.duplicate_keys:
        return None
    return Defect(
        kind="duplicate_keys",
        column=",".join(keys),
        value=round(share, 4),
        message=f"about {share:.1%} of the rows repeat another row's key {', '.join(keys)}",
    )


def gone_constant(
    n_unique: int,
    shape: ColumnShape,
    values: int,
    limits: DefectThresholds,
    span: float | None = None,
) -> bool:
    """A constant column is a defect (not a quiet batch) when the reference was spread: many
    distinct values, none common, so that ``values`` rows agreeing is no chance; and, when
    the batch's time ``span`` and the reference's ``steady_span`` are known, the batch spans
    at least as long as the reference's typical stretch of one value. Rows close in time are
    no independent draws: an hour-of-day holds one value through an hourly batch, a day of
    the month through a daily one, and so did the reference over such spans. Without a time
    (no span, or a reference profiled without its time column) the spread alone decides."""
    steady = shape.steady_span
    if span is not None and steady is not None and span < steady:
        return False
    return (
        values >= limits.min_rows
        and n_unique >= limits.constant_unique
        and 0 < shape.top_share <= limits.constant_top_share
    )


def null_burst(rate: float, reference: float, limits: DefectThresholds) -> bool:
    """A null share far above the reference's: ``null_rise`` more and ``null_ratio`` times."""
    return rate - reference > limits.null_rise and rate >= limits.null_ratio * reference


def may_burst(stats: dict[str, Any], name: str, values: int, limits: DefectThresholds) -> bool:
    """Whether the default values of ``name`` (their count in the quality aggregate) are
    enough rows for one of them to be a burst: then ``default_breakdown`` counts each."""
    count = int(stats.get(f"dflt:{name}") or 0)
    return values >= limits.min_rows and count / values > limits.default_rise
