"""The defect signatures' rules: the unit factors a pipeline may apply, the thresholds a
signature fires at (``DefectThresholds``) and what they read of a reference column
(``ColumnShape``); ``tools.defects`` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class UnitFactor:
    """A unit conversion ``x * scale + offset`` a pipeline may apply by mistake."""

    label: str
    scale: float
    offset: float
    meaning: str

    def apply(self, value: float) -> float:
        return value * self.scale + self.offset


UNIT_FACTORS: tuple[UnitFactor, ...] = (
    UnitFactor("x1.8+32", 1.8, 32.0, "°C read as °F"),
    UnitFactor("(x-32)/1.8", 1 / 1.8, -32 / 1.8, "°F read as °C"),
    UnitFactor("x1000", 1000.0, 0.0, "e.g. kilo- read as base unit"),
    UnitFactor("x100", 100.0, 0.0, "e.g. a share read as a percentage"),
    UnitFactor("x0.01", 0.01, 0.0, "e.g. a percentage read as a share"),
    UnitFactor("x0.001", 0.001, 0.0, "e.g. base unit read as kilo-"),
)


class DefectThresholds(BaseModel):
    """When a signature counts as a defect. Each was checked against the shipped real data
    (flights months and equal-size batches, credit-card 4-hour batches): none fires on a
    clean real batch (tests/unit/test_defects.py)."""

    min_rows: int = Field(
        200, description="Value signatures (unit, default, constant) need this many values."
    )
    unit_fit: float = Field(
        0.12,
        description="A factor fits when the batch's quantiles sit on average within this "
        "share of rows of the mapped reference's (``distance``) ...",
    )
    unit_unmapped: float = Field(
        0.3,
        description="... and the unmapped reference's at least this far for a factor that "
        "scales by less than 2 either way (°C and °F: a day's narrow spread can look like it) ...",
    )
    unit_unmapped_far: float = Field(
        0.1,
        description="... or this far for a factor of 100 or more (a spread that moved 100-fold "
        "is no natural shift; a column centred on 0 stays half inside its reference).",
    )
    unit_margin: float = Field(3.0, description="... and by this many times the mapped miss.")
    unit_tight: float = Field(
        0.05,
        description="A fit this close allows its spread ``unit_spread_tight`` off (a skewed "
        "column's 5-95 spread moves by a third between samples of 1,000 rows).",
    )
    unit_spread_tight: float = Field(1.5, description="See unit_tight.")
    unit_spread: float = Field(
        1.25,
        description="... and the batch's spread is the reference's times the factor, within "
        "this ratio either way (a shift keeps its spread).",
    )
    null_rise: float = Field(
        0.15,
        description="A null burst: the null share rises by more (a day's wind directions "
        "were 15 % null against 1-3 % in monthly references) ...",
    )
    null_ratio: float = Field(5.0, description="... and to this many times the reference's.")
    default_rise: float = Field(
        0.2,
        description="A default burst: one value's share rises by more (a value no list "
        "names: above the share of the reference's most common value by more) ...",
    )
    default_rare: float = Field(
        0.01,
        description="... and the reference had it in at most this share of rows (a common "
        "value piling up is a quiet batch: one weekday in a day's batch).",
    )
    duplicate_rise: float = Field(
        0.05, description="Duplicated rows: their share rises by more ..."
    )
    duplicate_ratio: float = Field(3.0, description="... and to this many times the reference's.")
    duplicate_keys: float = Field(0.01, description="Duplicated keys: above this share.")
    constant_unique: int = Field(
        20, description="A column gone constant: the reference had this many distinct values ..."
    )
    constant_top_share: float = Field(
        0.2, description="... and no value above this share of its rows."
    )


class ColumnShape(BaseModel):
    """What the defect signatures read of a reference column."""

    quantiles: list[float] | None = Field(
        None, description="Numeric columns: the finite values' quantiles at QUANTILES."
    )
    top_share: float = Field(0.0, description="Share of its most common value (non-null rows).")
    value_shares: dict[str, float] = Field(
        default_factory=dict,
        description="Shares (of non-null rows) of its most common values and of every "
        "default value (0 when absent), keyed by ``value_key``.",
    )
    bound: float = Field(
        0.0,
        description="Share of the least common value kept among the most common: any other "
        "value had at most this (0: every value is kept).",
    )
    steady_span: float | None = Field(
        None,
        description="How long the column holds one value, in the reference's time order and "
        "its time column's units (seconds for a datetime): half of the reference's time lies "
        "in stretches of one value lasting at least this (``steady_span``; None: no time "
        "column).",
    )

    def share_of(self, key: str) -> float:
        """The reference's share of a value: known, else its upper bound."""
        return self.value_shares.get(key, self.bound)
