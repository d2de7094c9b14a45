"""The numbers a batch's quality checks read, in one streaming aggregate over its scan
(``tools.quality.check_batch`` turns them into issues): per reference column its nulls,
non-finite values, extremes, distinct values, values beyond the reference range or a hard
limit, unseen categories; per label column its missing and unknown values. A batch bigger
than memory is never collected; a DataFrame goes through the same aggregate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

if TYPE_CHECKING:  # both modules import this one (kind_of, the aggregate)
    from tools.quality import HardLimits, QualityThresholds
    from tools.quality_profile import ColumnProfile, Kind, ReferenceProfile


def kind_of(dtype: pl.DataType) -> Kind:
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_numeric():
        return "numeric"
    if dtype.is_temporal():
        return "datetime"
    if dtype in (pl.String, pl.Categorical, pl.Enum) or isinstance(dtype, pl.Categorical | pl.Enum):
        return "categorical"
    return "other"


Role = Literal["label", "empty_label", "column"]


def roles_of(
    schema: pl.Schema, reference: ReferenceProfile, labels: set[str], skip: set[str]
) -> list[tuple[ColumnProfile, Role]]:
    """The value checks each reference column gets: a label's (of the right kind, or one
    that reads as another kind because it is empty), a feature's of the right kind, or none
    (absent, a time column, re-typed: the schema checks report those)."""
    roles: list[tuple[ColumnProfile, Role]] = []
    for profile in reference.columns:
        if profile.name not in schema or profile.name in skip:
            continue
        same_kind = kind_of(schema[profile.name]) == profile.kind
        if profile.name in labels:
            roles.append((profile, "label" if same_kind else "empty_label"))
        elif same_kind:
            roles.append((profile, "column"))
    return roles


def aggregate(
    frame: pl.LazyFrame,
    schema: pl.Schema,
    roles: list[tuple[ColumnProfile, Role]],
    hard_limits: HardLimits,
    limits: QualityThresholds,
    extra: list[pl.Expr] | None = None,
) -> dict[str, Any]:
    """Every count the checks need, as one streaming aggregate over the batch: keys are
    ``<what>:<column>`` (and ``len``); ``extra``: more aggregates to read in the same pass
    (the defect signatures' counts)."""
    exprs: list[pl.Expr] = [pl.len().alias("len"), *(extra or [])]
    exprs += [pl.col(n).null_count().alias(f"nulls:{n}") for n in schema]
    for profile, role in roles:
        name, dtype = profile.name, schema[profile.name]
        if role == "empty_label":
            continue
        exprs += _base_exprs(name, dtype)
        if role == "label":
            exprs += _label_exprs(name, profile)
            continue
        exprs += _value_exprs(name, dtype, profile, limits)
        bounds = hard_limits.get(name)
        if bounds is not None and profile.kind == "numeric":
            exprs += _hard_limit_exprs(name, bounds)
    return frame.select(exprs).collect(engine="streaming").row(0, named=True)


def _base_exprs(name: str, dtype: pl.DataType) -> list[pl.Expr]:
    """NaNs and infinities of a float column (counted as nulls and as non-finite)."""
    column = pl.col(name)
    if not dtype.is_float():
        return [pl.lit(0).alias(f"nan:{name}"), pl.lit(0).alias(f"inf:{name}")]
    return [
        column.is_nan().fill_null(False).sum().alias(f"nan:{name}"),
        column.is_infinite().fill_null(False).sum().alias(f"inf:{name}"),
    ]


def _value_exprs(
    name: str, dtype: pl.DataType, profile: ColumnProfile, limits: QualityThresholds
) -> list[pl.Expr]:
    """A feature's counts over its values. Numbers are counted raw (masking every value by
    finiteness cost a third of the check): min and max skip NaN, a NaN compares above every
    number and an infinity lies beyond every finite bound, so ``ColumnStats.of`` takes the
    NaNs and infinities off (and ``_finite_extremes`` redoes min and max if there were any
    infinities)."""
    column = pl.col(name)
    exprs = []
    if profile.kind == "numeric":  # constant: the smallest value is the largest
        exprs += [column.min().alias(f"min:{name}"), column.max().alias(f"max:{name}")]
    else:
        exprs.append(column.drop_nulls().n_unique().alias(f"unique:{name}"))
    if profile.kind == "numeric" and profile.min is not None and profile.max is not None:
        low, high = _far_bounds(profile, limits)
        bounds = {"wild": (low, high), "out": (profile.min, profile.max)}
        for key, (lo, hi) in bounds.items():
            beyond = (column < lo) | (column > hi)
            if math.isfinite(lo) and math.isfinite(hi):
                exprs.append(beyond.sum().alias(f"{key}_raw:{name}"))
            else:  # a reference with infinities: count the finite values only
                finite = column.is_finite() if dtype.is_float() else column.is_not_null()
                exprs.append((finite.fill_null(False) & beyond).sum().alias(f"{key}:{name}"))
    if profile.kind == "categorical" and profile.categories is not None:
        unseen = column.is_not_null() & ~column.cast(pl.String).is_in(profile.categories)
        exprs.append(unseen.sum().alias(f"unseen:{name}"))
    return exprs


def _far_bounds(profile: ColumnProfile, limits: QualityThresholds) -> tuple[float, float]:
    """Beyond these a value lies far outside the reference range."""
    assert profile.min is not None and profile.max is not None
    span = max(profile.max - profile.min, abs(profile.max), 1e-9)
    return (
        profile.min - limits.range_tolerance * span,
        profile.max + limits.range_tolerance * span,
    )


def finite_extremes(frame: pl.LazyFrame, names: list[str], stats: dict[str, Any]) -> None:
    """Min and max of the finite values of ``names`` (columns with infinities, whose raw
    extremes are infinite) into ``stats``: a second, rare pass over those columns."""
    if not names:
        return
    exprs = []
    for name in names:
        kept = pl.when(pl.col(name).is_finite()).then(pl.col(name))
        exprs += [kept.min().alias(f"min:{name}"), kept.max().alias(f"max:{name}")]
    stats.update(frame.select(exprs).collect(engine="streaming").row(0, named=True))


def _label_exprs(name: str, profile: ColumnProfile) -> list[pl.Expr]:
    known = label_values(profile)
    if known is None:
        return [pl.lit(0).alias(f"foreign:{name}")]
    column = pl.col(name)
    foreign = column.is_not_null() & ~column.cast(pl.String).is_in(sorted(known))
    return [foreign.sum().alias(f"foreign:{name}")]


def _hard_limit_exprs(name: str, bounds: tuple[float | None, float | None]) -> list[pl.Expr]:
    values = pl.col(name).cast(pl.Float64)
    valid = values.is_not_null() & ~values.is_nan()
    beyond = values.is_infinite()
    low, high = bounds
    if low is not None:
        beyond = beyond | (values < low)
    if high is not None:
        beyond = beyond | (values > high)
    return [
        valid.fill_null(False).sum().alias(f"hl_n:{name}"),
        (valid & beyond).fill_null(False).sum().alias(f"hl_beyond:{name}"),
    ]


@dataclass(frozen=True)
class ColumnStats:
    """A feature column's counts: rows, nulls, NaNs, infinities, finite values, and whether
    the finite values are one value."""

    rows: int
    nulls: int
    nans: int
    infinite: int
    finite: int
    constant: bool
    wild: int
    outside: int
    unseen: int

    @classmethod
    def of(cls, stats: dict[str, Any], name: str) -> ColumnStats:
        low, high = stats.get(f"min:{name}"), stats.get(f"max:{name}")
        unique = stats.get(f"unique:{name}")
        constant = (low is not None and low == high) if unique is None else unique == 1
        rows, nulls = int(stats["len"]), int(stats[f"nulls:{name}"])
        nans, infinite = int(stats[f"nan:{name}"]), int(stats[f"inf:{name}"])

        def beyond(key: str) -> int:
            # raw counts include every NaN (above any bound) and infinity (beyond any)
            if f"{key}_raw:{name}" in stats:
                return int(stats[f"{key}_raw:{name}"]) - nans - infinite
            return int(stats.get(f"{key}:{name}") or 0)

        return cls(
            rows=rows,
            nulls=nulls,
            nans=nans,
            infinite=infinite,
            finite=rows - nulls - nans - infinite,
            constant=constant,
            wild=beyond("wild"),
            outside=beyond("out"),
            unseen=int(stats.get(f"unseen:{name}") or 0),
        )

    @property
    def null_rate(self) -> float:
        return (self.nulls + self.nans) / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class LabelStats:
    """A label column's counts: rows, nulls, NaNs, values the reference never had."""

    rows: int
    nulls: int
    nans: int
    foreign: int

    @classmethod
    def of(cls, stats: dict[str, Any], name: str) -> LabelStats:
        return cls(
            rows=int(stats["len"]),
            nulls=int(stats[f"nulls:{name}"]),
            nans=int(stats[f"nan:{name}"]),
            foreign=int(stats[f"foreign:{name}"]),
        )


def label_values(profile: ColumnProfile) -> set[str] | None:
    """The label values of the reference, as text (None: unknown)."""
    if profile.categories is not None:
        return set(profile.categories)
    if profile.kind == "numeric" and profile.min is not None and profile.max is not None:
        low, high = profile.min, profile.max
        if low.is_integer() and high.is_integer() and high - low <= 1:
            # 0/1 labels read as integers or floats alike
            return (
                {f"{v:g}" for v in (low, high)}
                | {str(int(v)) for v in (low, high)}
                | {f"{v:.1f}" for v in (low, high)}
            )
    return None
