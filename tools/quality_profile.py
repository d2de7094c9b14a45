"""The reference profile: what the model's training data looked like, for the quality checks
of every later batch (``tools.quality.check_batch``).

Per column its kind, dtype, null rate, distinct values, numeric range and known categories,
and the shape the pipeline defect signatures read (``tools.defects.column_shape``, and with a
time column how long each column holds one value); for the whole frame the share of repeated
rows and of equal row pairs. It is computed once, when a model is added, and kept:
its own module so the checks (``tools.quality``) and the streaming aggregate
(``tools.quality_scan``) can share its types without one importing the other's logic.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import SchemaError
from tools import defects
from tools.defect_rules import ColumnShape
from tools.quality_scan import kind_of

Kind = Literal["numeric", "categorical", "datetime", "boolean", "other"]
VALUED = ("numeric", "categorical")  # the kinds a column gone constant is read in


class ColumnProfile(BaseModel):
    """What a column looked like in the reference data."""

    name: str
    kind: Kind = Field(description="Logical kind: numeric, categorical, datetime, boolean, other.")
    dtype: str = Field(description="Polars dtype in the reference, without parameters.")
    null_rate: float = Field(description="Share of nulls (NaN counts as null) in the reference.")
    n_unique: int = Field(description="Distinct non-null values in the reference.")
    min: float | None = Field(None, description="Smallest value (numeric columns).")
    max: float | None = Field(None, description="Largest value (numeric columns).")
    categories: list[str] | None = Field(None, description="Known values (categorical columns).")
    shape: ColumnShape | None = Field(
        None, description="What the pipeline defect signatures read (None: not measured)."
    )


class ReferenceProfile(BaseModel):
    """Expected schema and value envelope of a model's input data."""

    n_rows: int
    columns: list[ColumnProfile]
    duplicate_share: float | None = Field(
        None,
        description="Share of rows repeating an earlier row over ``duplicate_columns`` (None: "
        "not measured).",
    )
    duplicate_pairs: int | None = Field(
        None,
        description="Pairs of rows equal over ``duplicate_columns``: the chance two rows repeat, "
        "which says how often a batch of another size repeats its rows (None: not measured).",
    )
    time_column: str | None = Field(
        None,
        description="The time column the columns' ``shape.steady_span`` were read along "
        "(None: none given).",
    )
    duplicate_columns: list[str] = Field(
        default_factory=list,
        description="The columns a repeated row repeats: all but the datetime ones (a fan-out "
        "join's copies may be stamped with a time of their own). A time in seconds stays: "
        "credit-card rows alike but for it are repeat charges (7 % of a night hour's rows).",
    )

    def column(self, name: str) -> ColumnProfile | None:
        return next((c for c in self.columns if c.name == name), None)


def dtype_name(dtype: pl.DataType) -> str:
    """A dtype without its parameters: an Enum's or a Struct's carry the batch's own values
    and field names."""
    return str(dtype.base_type())


def _null_rate(series: pl.Series) -> float:
    if series.len() == 0:
        return 0.0
    nulls = series.null_count()
    if series.dtype.is_float():
        nulls += int(series.is_nan().sum() or 0)
    return nulls / series.len()


def profile_reference(
    frame: pl.DataFrame,
    columns: Iterable[str] | None = None,
    *,
    max_categories: int = 1000,
    time_column: str | None = None,
) -> ReferenceProfile:
    """Describe reference data (the model's training window) for later quality checks.

    Args:
        frame: reference rows.
        columns: columns to profile (default: all).
        max_categories: categorical columns with more distinct values keep no category list.
        time_column: the column ordering the rows in time (datetime, date or numeric): the
            numeric and categorical columns' ``shape.steady_span`` are read along it, so that
            a batch's column constant over a short span is judged against the reference's
            stretches of that span (``tools.defects.gone_constant``).
    """
    names = list(columns) if columns is not None else frame.columns
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise SchemaError(f"reference lacks columns {missing}")
    profiles = []
    for name in names:
        series = frame[name]
        kind = kind_of(series.dtype)
        values = series.drop_nulls()
        if series.dtype.is_float():
            values = values.drop_nans()
        profile = ColumnProfile(
            name=name,
            kind=kind,
            dtype=dtype_name(series.dtype),
            null_rate=_null_rate(series),
            n_unique=values.n_unique(),
        )
        if kind == "numeric" and values.len():
            profile.min, profile.max = float(values.min()), float(values.max())  # type: ignore[arg-type]
        if kind == "categorical" and profile.n_unique <= max_categories:
            profile.categories = sorted(values.cast(pl.String).unique().to_list())
        profile.shape = defects.column_shape(series, kind)
        profiles.append(profile)
    if time_column is not None and time_column in frame.columns:
        valued = [p for p in profiles if p.shape is not None and p.kind in VALUED]
        spans = defects.steady_spans(frame, time_column, [p.name for p in valued])
        for p in valued:
            assert p.shape is not None
            p.shape.steady_span = spans.get(p.name)
    else:
        time_column = None
    repeated = [p.name for p in profiles if p.kind != "datetime"]
    share, pairs = defects.repeats(frame.select(repeated))
    return ReferenceProfile(
        n_rows=frame.height,
        columns=profiles,
        duplicate_share=share,
        duplicate_pairs=pairs,
        time_column=time_column,
        duplicate_columns=repeated,
    )
