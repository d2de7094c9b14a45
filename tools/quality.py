"""Quality tools: is a new batch fit to be used at all?

A batch is checked against a *reference profile* of the data the model was trained on
(columns, kinds, null rates, value ranges, categories). The verdict lists every issue with
a severity: any ``error`` means the batch must be quarantined; ``warning`` means it may be
used but the finding should travel with it (e.g. into the risk assessment).

Only impossible data is an error: no rows, a schema break (missing or re-typed column), a
null or infinity storm, values beyond a column's declared hard limits, a batch already seen,
and the signatures of a broken pipeline (``tools.defects``: a column rescaled by a unit
factor, a burst of nulls or of one default value, duplicated rows or keys, a varied column
gone constant), each named by ``QualityIssue.signature``.
Values beyond the reference range, however far, are plausible (a covariate shift: a sensor
reads higher, prices rise) and only warn: the drift analyst weighs them. A batch without its
labels (they arrive later) is accepted with a ``missing_labels`` warning.

Findings reach an LLM, so they are built from trusted parts only: column names of the
model's schema (the reference profile), counts, shares and reference numbers. No cell value
of the batch and no header it brought along appears in an issue: the names of columns
outside the schema are kept, sanitised, in ``QualityVerdict.extra_columns`` for people.

The reference profile itself (``profile_reference``) is ``tools.quality_profile``'s; the
aggregate the checks read, ``tools.quality_scan``'s; the defect signatures, ``tools.defects``'.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.identity import safe_label
from tools import defects
from tools.data import content_hash
from tools.defect_rules import DefectThresholds
from tools.quality_profile import ColumnProfile, ReferenceProfile, dtype_name
from tools.quality_scan import (
    ColumnStats,
    LabelStats,
    aggregate,
    finite_extremes,
    kind_of,
    label_values,
    roles_of,
)

MAX_LABEL = 40  # a foreign column name, sanitised, is cut to this length

Check = Literal[
    "empty",
    "missing_column",
    "missing_labels",
    "extra_column",
    "type_mismatch",
    "null_spike",
    "out_of_range",
    "hard_limit",
    "non_finite",
    "duplicate_batch",
    "constant_column",
    "new_categories",
    "unit_change",
    "default_burst",
    "duplicate_rows",
    "duplicate_keys",
]


class QualityThresholds(BaseModel):
    """Limits of the quality checks (defaults suit monthly/daily batches)."""

    null_increase: float = Field(0.2, description="Error when a column's null rate rises by more.")
    sparse_null_rate: float = Field(
        0.5,
        description="Columns at least this null in the reference (e.g. wind gusts, recorded only "
        "when gusty) only warn on a null-rate rise: their null rate moves with the season.",
    )
    range_tolerance: float = Field(
        1.0,
        description="Values beyond [min - t*span, max + t*span] of the reference are called far "
        "outside (still a warning: only hard limits make an error).",
    )
    max_out_of_range_share: float = Field(
        0.01,
        description="Error above this share of values beyond a hard limit or non-finite; a "
        "smaller share warns.",
    )
    max_new_category_share: float = Field(
        0.2, description="Warning above this share of new categories."
    )
    max_categories: int = Field(
        1000, description="Categorical columns keep at most this many values."
    )
    defects: DefectThresholds = Field(
        default_factory=DefectThresholds, description="When a pipeline defect signature fires."
    )


class QualityIssue(BaseModel):
    """One finding about a batch."""

    check: Check = Field(description="Which check found it.")
    severity: Literal["error", "warning"] = Field(description="error = quarantine the batch.")
    column: str | None = Field(None, description="Column of the model's schema, if any.")
    value: float | None = Field(
        None, description="Measured value (a rate, share or count), if any."
    )
    message: str = Field(description="Plain-language explanation.")
    signature: str | None = Field(
        None,
        description="The pipeline defect it is the signature of, e.g. 'unit_change:temp "
        "x1.8+32' (None: not a defect signature).",
    )


class QualityVerdict(BaseModel):
    """Result of checking one batch. ``ok`` is False when any issue is an error."""

    ok: bool
    n_rows: int
    content_hash: str
    issues: list[QualityIssue]
    extra_columns: list[str] = Field(
        default_factory=list,
        description="Sanitised names of the batch's columns outside the schema: for people "
        "(audit, quarantine record), never for an LLM.",
    )

    @property
    def errors(self) -> list[QualityIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[QualityIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    def reason(self) -> str:
        """One line naming every error (the quarantine reason)."""
        return "; ".join(i.message for i in self.errors) or "ok"

    def signature(self) -> str:
        """The pipeline defect signatures of the errors, '; '-joined ('' for none)."""
        found = dict.fromkeys(i.signature for i in self.errors if i.signature)
        return "; ".join(s for s in found if s)


HardLimits = dict[str, tuple[float | None, float | None]]


def check_batch(
    frame: pl.DataFrame | pl.LazyFrame,
    reference: ReferenceProfile,
    *,
    seen_hashes: Iterable[str] = (),
    thresholds: QualityThresholds | None = None,
    time_columns: Iterable[str] = (),
    label_columns: Iterable[str] = (),
    hard_limits: HardLimits | None = None,
    digest: str | None = None,
    key_columns: Iterable[str] = (),
) -> QualityVerdict:
    """Validate a new batch against the reference profile of the model's data.

    Checks: empty batch; missing, extra and re-typed columns; null-rate spikes (NaN storm);
    infinities; values beyond a column's hard limits (errors); values outside the reference
    range (a warning: plausible shift); a batch identical to one already seen (same content
    hash); columns that became constant; unseen categories; the pipeline defect signatures of
    ``tools.defects`` (``key_columns``: a key the rows must not repeat; without one, whole rows
    repeated far above the reference's rate are the duplicate signature).

    ``time_columns`` are checked for presence and type only: time always moves on.
    ``label_columns`` (the target) may be missing or partly null: labels arrive late, so that
    is a ``missing_labels`` warning, not an error. ``hard_limits`` maps a numeric column to
    the (low, high) bounds its values can never leave (None: unbounded on that side).

    A LazyFrame (a scan of a batch bigger than memory) is checked as it streams: every count
    the checks need is one aggregate over the scan, and the content hash a second pass (or
    ``digest``, the batch's hash when the caller already has it). A DataFrame goes through
    the same aggregate, so both give the same verdict. The numeric columns' quantiles (for the
    unit-change signature) are read on a systematic sample of the batch.

    Returns:
        QualityVerdict with ``ok`` False when any issue has severity 'error'; ``reason()``
        gives the quarantine reason.
    """
    limits = thresholds or QualityThresholds()
    lazy = frame.lazy()
    schema = lazy.collect_schema()
    labels, skip = set(label_columns), set(time_columns)
    roles = roles_of(schema, reference, labels, skip)
    keys = [k for k in key_columns if k in schema]
    extra = _defect_exprs(schema, reference, roles, keys) + _span_exprs(schema, reference)
    stats = aggregate(lazy, schema, roles, hard_limits or {}, limits, extra)
    numeric = [p.name for p, role in roles if role == "column" and p.kind == "numeric"]
    finite_extremes(lazy, [n for n in numeric if stats[f"inf:{n}"]], stats)
    height = int(stats["len"])
    quantiles = defects.batch_quantiles(lazy, {n: schema[n] for n in numeric}, height)
    bursts = _default_breakdown(lazy, stats, roles, limits.defects)
    digest = digest or content_hash(frame)
    issues: list[QualityIssue] = []
    if height == 0:
        issues.append(QualityIssue(check="empty", severity="error", message="batch has no rows"))
    if digest in set(seen_hashes):
        issues.append(
            QualityIssue(
                check="duplicate_batch",
                severity="error",
                message=f"batch content {digest[:12]} was already ingested",
            )
        )
    issues.extend(_schema_issues(schema, stats, reference, labels))
    outside = _extra_columns(schema, reference)
    if outside:
        issues.append(
            QualityIssue(
                check="extra_column",
                severity="warning",
                value=float(len(outside)),
                message=f"{len(outside)} column(s) outside the model's schema (ignored)",
            )
        )
    if height:
        for profile, role in roles:
            if role == "label":
                issues.extend(_label_issues(LabelStats.of(stats, profile.name), profile))
            elif role == "empty_label" and stats[f"nulls:{profile.name}"] == height:
                issues.extend(_label_issues(LabelStats(height, height, 0, 0), profile))
            elif role == "column":
                column = ColumnStats.of(stats, profile.name)
                counts = bursts.get(profile.name, {})
                found = _defect_issues(column, profile, quantiles, counts, limits.defects)
                burst = any(i.check == "default_burst" for i in found)
                issues.extend(_column_issues(column, profile, limits, burst, _span(stats)))
                issues.extend(found)
                bounds = (hard_limits or {}).get(profile.name)
                if bounds is not None and profile.kind == "numeric":
                    issues.extend(_hard_limit_issues(stats, profile, bounds, limits))
        issues.extend(_duplicate_issues(stats, reference, keys, limits.defects))
    ok = not any(i.severity == "error" for i in issues)
    return QualityVerdict(
        ok=ok, n_rows=height, content_hash=digest, issues=issues, extra_columns=outside
    )


def _defect_exprs(
    schema: pl.Schema,
    reference: ReferenceProfile,
    roles: list[tuple[ColumnProfile, Any]],
    keys: list[str],
) -> list[pl.Expr]:
    """The defect signatures' counts, for the quality aggregate: default values per feature
    column, distinct rows over the reference's duplicate columns present, distinct keys."""
    columns = {p.name: p.kind for p, role in roles if role == "column" and p.shape is not None}
    rows = [c for c in reference.duplicate_columns if c in schema]
    measured = reference.duplicate_share is not None
    return defects.count_exprs(columns, rows if measured else [], keys)


def _span_exprs(schema: pl.Schema, reference: ReferenceProfile) -> list[pl.Expr]:
    """The first and last time of the batch, in the units the reference's steady spans were
    read in (none without a time column on both sides)."""
    name = reference.time_column
    if name is None or name not in schema:
        return []
    values = defects.time_values(name, schema[name])
    return [values.min().alias("time_first"), values.max().alias("time_last")]


def _span(stats: dict[str, Any]) -> float | None:
    """How much time the batch spans (None: unknown)."""
    first, last = stats.get("time_first"), stats.get("time_last")
    if first is None or last is None:
        return None
    return float(last) - float(first)


def _issue(found: defects.Defect) -> QualityIssue:
    return QualityIssue(
        check=found.kind,
        severity="error",
        column=found.column,
        value=found.value,
        message=found.message,
        signature=found.signature,
    )


def _default_breakdown(
    frame: pl.LazyFrame,
    stats: dict[str, Any],
    roles: list[tuple[ColumnProfile, Any]],
    limits: DefectThresholds,
) -> dict[str, dict[str, int]]:
    """Each default value's count in the columns whose default values could be a burst."""
    columns = {
        p.name: p.kind
        for p, role in roles
        if role == "column"
        and f"dflt:{p.name}" in stats
        and defects.may_burst(stats, p.name, ColumnStats.of(stats, p.name).finite, limits)
    }
    return defects.default_breakdown(frame, columns)


def _defect_issues(
    column: ColumnStats,
    profile: ColumnProfile,
    quantiles: dict[str, list[float] | None],
    counts: dict[str, int],
    limits: DefectThresholds,
) -> list[QualityIssue]:
    """A feature column's unit-change and default-burst signatures (errors); ``counts``: its
    default values' counts (empty: too few to be a burst)."""
    shape = profile.shape
    if shape is None:
        return []
    found: list[defects.Defect | None] = []
    batch = quantiles.get(profile.name)
    if profile.kind == "numeric":
        found.append(
            defects.unit_change(profile.name, batch, shape.quantiles, column.finite, limits)
        )
    bounds = (profile.min, profile.max)
    pile = defects.plateau(batch, bounds) if profile.kind == "numeric" else None
    found.append(defects.default_burst(profile.name, counts, pile, column.finite, shape, limits))
    return [_issue(f) for f in found if f is not None]


def _duplicate_issues(
    stats: dict[str, Any], reference: ReferenceProfile, keys: list[str], limits: DefectThresholds
) -> list[QualityIssue]:
    found = []
    if keys:
        keyed, distinct = int(stats["keyed_rows"]), int(stats["distinct_keys"])
        found.append(defects.duplicated_keys(keys, keyed, distinct, limits))
    elif reference.duplicate_share is not None and "distinct_rows" in stats:
        rows, distinct = int(stats["len"]), int(stats["distinct_rows"])
        expected = reference.duplicate_share
        if reference.duplicate_pairs is not None:  # the same rows repeat more in a larger batch
            expected = defects.expected_duplicate_share(
                rows, reference.n_rows, expected, reference.duplicate_pairs
            )
        found.append(defects.duplicated_rows(rows, distinct, expected, limits))
    return [_issue(f) for f in found if f is not None]


def _extra_columns(schema: pl.Schema, reference: ReferenceProfile) -> list[str]:
    """Names of the batch's columns the schema does not know, as safe labels: the header is
    as untrusted as the cells below it."""
    expected = {c.name for c in reference.columns}
    return [safe_label(c, MAX_LABEL) for c in schema if c not in expected]


def _schema_issues(
    schema: pl.Schema, stats: dict[str, Any], reference: ReferenceProfile, labels: set[str]
) -> list[QualityIssue]:
    issues = []
    for name in [c.name for c in reference.columns if c.name not in schema]:
        if name in labels:
            issues.append(
                QualityIssue(
                    check="missing_labels",
                    severity="warning",
                    column=name,
                    value=1.0,
                    message=f"the batch has no {name!r} labels yet (they may be attached later)",
                )
            )
            continue
        issues.append(
            QualityIssue(
                check="missing_column",
                severity="error",
                column=name,
                message=f"column {name!r} is missing",
            )
        )
    for profile in reference.columns:
        if profile.name in schema:
            dtype = schema[profile.name]
            kind = kind_of(dtype)
            empty = stats[f"nulls:{profile.name}"] == stats["len"]
            if profile.name in labels and empty:
                continue  # an empty label column reads as any type: labels to come
            if kind != profile.kind:
                issues.append(
                    QualityIssue(
                        check="type_mismatch",
                        severity="error",
                        column=profile.name,
                        message=f"column {profile.name!r} is {kind} ({dtype_name(dtype)}), "
                        f"expected {profile.kind} ({profile.dtype})",
                    )
                )
    return issues


def _column_issues(
    stats: ColumnStats,
    profile: ColumnProfile,
    limits: QualityThresholds,
    burst: bool = False,
    span: float | None = None,
) -> list[QualityIssue]:
    """A feature's null, non-finite, constant, range and category findings. ``burst``: the
    column has a default-burst signature (a constant column of it is that burst, named
    once); ``span``: the time the batch spans (None: unknown)."""
    issues = []
    name = profile.name
    null_issue = _null_issue(stats, profile, limits)
    if null_issue is not None:
        issues.append(null_issue)
    if stats.infinite:  # a share of the values that are neither null nor NaN
        issues.append(_non_finite(name, stats.infinite / (stats.finite + stats.infinite), limits))
    if stats.finite > 1 and stats.constant and profile.n_unique > 1:
        issues.append(_constant_issue(stats, profile, limits, burst, span))
    if profile.kind == "numeric" and profile.min is not None and profile.max is not None:
        issues.extend(_range_issues(stats, profile, limits))
    if profile.kind == "categorical" and profile.categories is not None and stats.finite:
        share = stats.unseen / stats.finite
        if share > limits.max_new_category_share:
            issues.append(
                QualityIssue(
                    check="new_categories",
                    severity="warning",
                    column=name,
                    value=round(share, 4),
                    message=f"{share:.0%} of {name!r} values were never seen in the reference",
                )
            )
    return issues


def _null_issue(
    stats: ColumnStats, profile: ColumnProfile, limits: QualityThresholds
) -> QualityIssue | None:
    """A null storm (a rise above ``null_increase``) or a null burst (far above the
    reference's share: ``tools.defects.null_burst``): an error named ``null_burst``, but a
    warning in a column the reference already had mostly null (its share moves with the
    season)."""
    name, rate, before = profile.name, stats.null_rate, profile.null_rate
    storm = rate - before > limits.null_increase
    if not storm and not defects.null_burst(rate, before, limits.defects):
        return None
    sparse = before >= limits.sparse_null_rate
    return QualityIssue(
        check="null_spike",
        severity="warning" if sparse else "error",
        column=name,
        value=round(rate, 4),
        message=f"column {name!r} is {rate:.0%} null (reference {before:.0%})"
        + ("" if sparse else ": a burst of nulls"),
        signature=None if sparse else f"null_burst:{name}",
    )


def _constant_issue(
    stats: ColumnStats,
    profile: ColumnProfile,
    limits: QualityThresholds,
    burst: bool,
    span: float | None,
) -> QualityIssue:
    """A column holding one value: an error (``gone_constant``) when the reference was spread
    enough that so many rows agreeing is no chance, over a time ``span`` it rarely held one
    value for (``tools.defects.gone_constant``), else a warning (a quiet batch of a column
    with few values, an hour-of-day in an hourly batch)."""
    name, shape = profile.name, profile.shape
    gone = (
        not burst
        and shape is not None
        and defects.gone_constant(profile.n_unique, shape, stats.finite, limits.defects, span)
    )
    spread = f", none above {shape.top_share:.0%} of rows" if gone and shape else ""
    return QualityIssue(
        check="constant_column",
        severity="error" if gone else "warning",
        column=name,
        value=float(stats.finite),
        message=f"column {name!r} holds one value in all {stats.finite} non-null rows "
        f"({profile.n_unique} distinct in the reference{spread})"
        + (": a column gone constant" if gone else ""),
        signature=f"gone_constant:{name}" if gone else None,
    )


def _non_finite(name: str, share: float, limits: QualityThresholds) -> QualityIssue:
    """Infinities are never a shift: a storm of them (above the tolerated share) is an error."""
    return QualityIssue(
        check="non_finite",
        severity="error" if share > limits.max_out_of_range_share else "warning",
        column=name,
        value=round(share, 4),
        message=f"{share:.1%} of {name!r} is infinite",
    )


def _range_issues(
    stats: ColumnStats, profile: ColumnProfile, limits: QualityThresholds
) -> list[QualityIssue]:
    assert profile.min is not None and profile.max is not None
    if stats.finite == 0:
        return []
    wild = stats.wild / stats.finite
    outside = stats.outside / stats.finite
    name = profile.name
    if wild > limits.max_out_of_range_share:
        return [
            QualityIssue(
                check="out_of_range",
                severity="warning",
                column=name,
                value=round(wild, 4),
                message=f"{wild:.1%} of {name!r} lies far outside the reference range "
                f"[{profile.min:g}, {profile.max:g}]",
            )
        ]
    if outside > 0:
        return [
            QualityIssue(
                check="out_of_range",
                severity="warning",
                column=name,
                value=round(outside, 4),
                message=f"{outside:.1%} of {name!r} lies outside the reference range "
                f"[{profile.min:g}, {profile.max:g}]",
            )
        ]
    return []


def _label_issues(stats: LabelStats, profile: ColumnProfile) -> list[QualityIssue]:
    """Labels may come later: a partly or wholly unlabelled batch warns, never quarantines.
    A label the reference never had (a 7 among 0/1) is impossible: an error."""
    issues = []
    labelled = stats.rows - stats.nulls
    if label_values(profile) is not None and labelled:
        foreign = stats.foreign / labelled
        if foreign > 0:
            issues.append(
                QualityIssue(
                    check="type_mismatch",
                    severity="error",
                    column=profile.name,
                    value=round(foreign, 4),
                    message=f"{foreign:.1%} of the {profile.name!r} labels are values the "
                    "reference never had",
                )
            )
    rate = (stats.nulls + stats.nans) / stats.rows if stats.rows else 0.0
    if rate > profile.null_rate:
        issues.append(
            QualityIssue(
                check="missing_labels",
                severity="warning",
                column=profile.name,
                value=round(rate, 4),
                message=f"{rate:.0%} of the batch has no {profile.name!r} label yet",
            )
        )
    return issues


def _hard_limit_issues(
    stats: dict[str, Any],
    profile: ColumnProfile,
    bounds: tuple[float | None, float | None],
    limits: QualityThresholds,
) -> list[QualityIssue]:
    """Values a column can never take (declared per model): infinities, or beyond the hard
    limits. Above ``max_out_of_range_share`` of the rows the batch is impossible (error)."""
    name = profile.name
    valid, beyond = int(stats[f"hl_n:{name}"]), int(stats[f"hl_beyond:{name}"])
    if valid == 0 or beyond == 0:
        return []
    share = beyond / valid
    low, high = bounds
    return [
        QualityIssue(
            check="hard_limit",
            severity="error" if share > limits.max_out_of_range_share else "warning",
            column=name,
            value=round(share, 4),
            message=f"{share:.1%} of {name!r} lies beyond its hard limits "
            f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]",
        )
    ]
