"""Shift tools: has the data moved by an amount that matters, not merely detectably?

On the flights monthly stream Evidently flags 44-69 % of the columns every month against
January, while the January champion's ROC AUC moves by at most 0.065. This module measures
drift in ways that do not grow with the sample size and weighs it by what the model uses
(see ``evals/shift_calibration.py`` for how the measures read on that stream):

- ``effect_sizes``: a per-column *effect size* with a fixed materiality threshold. Numeric
  columns: normed Wasserstein distance, W1(reference, current) / std(reference) (as Evidently
  defines it; material at >= 0.1 by this module's default, 0.5 in the shipped policy), or PSI
  on reference-quantile bins. Categorical
  columns: PSI (material at >= 0.2) or the Jensen-Shannon distance (>= 0.1). Each column
  carries the champion's feature importance, and ``weighted_share`` is the share of that
  importance sitting on materially shifted columns: drift in a feature the model ignores
  counts for nothing.
- ``domain_classifier``: how well a small LightGBM tells reference rows from batch rows,
  as an out-of-fold ROC AUC (0.5: indistinguishable, 1.0: fully separable), with the features
  it used most. It sees joint shifts a per-column view misses.

Missing values: nulls, NaN and +/-inf are missing. The effect sizes compare the distributions
of the observed values (a change in the missing rate is the quality checks' business); the
domain classifier sees missing values as such (NaN for numbers, an own code for categories),
so a change in the missing rate can separate the sides. A column with fewer than
``min_values`` observed values on a side is not measured; it is listed in
``skipped_columns`` with the reason, and the shares count only measured columns.

numpy, polars, scipy and LightGBM only; scipy and LightGBM are imported when used.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import DataError, SchemaError
from tools import metrics
from tools.drift import require_columns

# Floor of a bin's share in PSI / Jensen-Shannon, so that an empty bin (a category new in the
# batch) gives a large finite value; the same floor Evidently uses.
_SHARE_FLOOR = 1e-4


class ShiftConfig(BaseModel):
    """Measures and materiality thresholds of the effect-size check."""

    numeric_measure: Literal["wasserstein", "psi"] = Field(
        "wasserstein",
        description="Numeric columns: 'wasserstein' = W1(reference, current) / std(reference) "
        "(normed Wasserstein, as Evidently defines it); 'psi' = population stability index "
        "on reference-quantile bins.",
    )
    categorical_measure: Literal["psi", "jensenshannon"] = Field(
        "psi",
        description="Categorical columns: 'psi' (population stability index over the union "
        "of categories) or 'jensenshannon' (Jensen-Shannon distance, natural log).",
    )
    wasserstein_threshold: float = Field(
        0.1, gt=0, description="Normed Wasserstein at or above this is material."
    )
    psi_threshold: float = Field(0.2, gt=0, description="PSI at or above this is material.")
    jensenshannon_threshold: float = Field(
        0.1, gt=0, description="Jensen-Shannon distance at or above this is material."
    )
    psi_bins: int = Field(
        10, ge=2, description="Reference-quantile bins of a numeric column's PSI (ties merge)."
    )
    max_rows: int = Field(
        20_000, ge=1, description="Uniformly subsample each side to this many rows (seeded)."
    )
    min_values: int = Field(
        5,
        ge=1,
        description="Columns with fewer observed values on either side are not measured "
        "(listed in skipped_columns with the reason).",
    )


class ColumnShift(BaseModel):
    """Effect size of one column's shift."""

    column: str
    kind: Literal["numeric", "categorical"]
    measure: str = Field(description="'wasserstein', 'psi' or 'jensenshannon'.")
    value: float = Field(description="Effect size; 0 = same distribution, larger = more shifted.")
    threshold: float = Field(description="Materiality threshold of the measure.")
    material: bool = Field(description="value >= threshold: the shift is large enough to matter.")
    importance: float = Field(
        description="The champion's importance of the column, renormalised to sum to 1 over "
        "the measured columns (0 when unknown)."
    )


class ShiftResult(BaseModel):
    """Effect-size drift between a reference and a current batch."""

    columns: list[ColumnShift] = Field(
        description="Measured columns, most shifted (value / threshold) first."
    )
    skipped_columns: dict[str, str] = Field(
        default_factory=dict, description="Columns not measured, with the reason (too few values)."
    )
    material_share: float = Field(description="Material columns / measured columns (0 if none).")
    weighted_share: float = Field(
        description="Share of the champion's importance on material columns (importance "
        "renormalised over the measured columns). Without importance (none given, or none on "
        "the measured columns) it equals material_share."
    )
    elapsed_s: float = Field(description="Wall time of the check.")
    auc_se: float | None = Field(
        None,
        description="Standard error of the AUC at the rows used (Hanley & McNeil, 1982): the "
        "error bound the subsample (``max_rows`` a side) comes with.",
    )

    def material_columns(self) -> list[str]:
        """Names of the materially shifted columns, most shifted first."""
        return [c.column for c in self.columns if c.material]


class DomainCheck(BaseModel):
    """Can a classifier tell the reference rows from the batch rows?"""

    auc: float = Field(
        description="Out-of-fold ROC AUC of a small LightGBM separating reference rows (0) from "
        "batch rows (1); 0.5 = indistinguishable, 1.0 = fully separable."
    )
    n_reference: int = Field(description="Reference rows used (after subsampling).")
    n_current: int = Field(description="Batch rows used (after subsampling).")
    top_features: dict[str, float] = Field(
        description="Up to 5 features by normalised gain (share of the total), largest first."
    )
    elapsed_s: float = Field(description="Wall time of the check.")
    auc_se: float | None = Field(
        None,
        description="Standard error of the AUC at the rows used (Hanley & McNeil, 1982): the "
        "error bound the subsample (``max_rows`` a side) comes with.",
    )


# -- effect sizes -----------------------------------------------------------------------------


def effect_sizes(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    *,
    numeric: list[str],
    categorical: list[str],
    importance: dict[str, float] | None = None,
    config: ShiftConfig | None = None,
    seed: int = 0,
) -> ShiftResult:
    """Per-column effect sizes of the shift, with materiality and importance weighting.

    Unlike a p-value, an effect size does not grow with the number of rows: 50,000 rows
    from the same distribution are not material, a 1.5-std move of one column is.

    Args:
        reference: the model's reference window (e.g. its training data).
        current: the new batch.
        numeric: numeric feature columns (ints, floats, booleans).
        categorical: categorical feature columns (compared as strings).
        importance: the champion's feature importance (e.g. ``TrainReport.feature_importance``);
            any scale, renormalised over the measured columns. None: unweighted.
        config: measures, thresholds, subsampling, minimum values per side.
        seed: subsampling seed.

    Returns:
        ShiftResult: per-column measure, value, threshold, materiality and importance (most
        shifted first), the skipped columns with reasons, the share of material columns and
        the importance-weighted share. A constant numeric reference column (std 0) is normed
        by its mean absolute value instead, or by 1.0 when that is 0 too.

    Raises:
        SchemaError: a column is missing on either side, a numeric column is not numeric, or
            no column is given.
        DataError: either side is empty.
    """
    cfg = config or ShiftConfig()
    columns = [*numeric, *categorical]
    require_columns(reference, columns, "reference")
    require_columns(current, columns, "current")
    _require_numeric(reference, current, numeric)
    started = time.perf_counter()
    ref = _subsample(reference.select(columns), cfg.max_rows, seed)
    cur = _subsample(current.select(columns), cfg.max_rows, seed)
    measured: list[tuple[str, Literal["numeric", "categorical"], str, float, float]] = []
    skipped: dict[str, str] = {}
    for column in numeric:
        a, b = _finite(ref[column]), _finite(cur[column])
        reason = _too_few(len(a), len(b), cfg.min_values)
        if reason:
            skipped[column] = reason
            continue
        if cfg.numeric_measure == "wasserstein":
            value, threshold = normed_wasserstein(a, b), cfg.wasserstein_threshold
        else:
            value, threshold = _psi(*_quantile_bin_shares(a, b, cfg.psi_bins)), cfg.psi_threshold
        measured.append((column, "numeric", cfg.numeric_measure, value, threshold))
    for column in categorical:
        ref_counts, cur_counts = _counts(ref[column]), _counts(cur[column])
        reason = _too_few(sum(ref_counts.values()), sum(cur_counts.values()), cfg.min_values)
        if reason:
            skipped[column] = reason
            continue
        p, q = _category_shares(ref_counts, cur_counts)
        if cfg.categorical_measure == "psi":
            value, threshold = _psi(p, q), cfg.psi_threshold
        else:
            value, threshold = _jensenshannon(p, q), cfg.jensenshannon_threshold
        measured.append((column, "categorical", cfg.categorical_measure, value, threshold))
    weights = _weights([m[0] for m in measured], importance)
    shifts = [
        ColumnShift(
            column=name,
            kind=kind,
            measure=measure,
            value=round(value, 6),
            threshold=threshold,
            material=value >= threshold,
            importance=round(weights.get(name, 0.0), 6),
        )
        for name, kind, measure, value, threshold in measured
    ]
    shifts.sort(key=lambda c: (-c.value / c.threshold, c.column))
    n_material = sum(c.material for c in shifts)
    material_share = n_material / len(shifts) if shifts else 0.0
    weighted = sum(weights[c.column] for c in shifts if c.material) if weights else material_share
    return ShiftResult(
        columns=shifts,
        skipped_columns=skipped,
        material_share=round(material_share, 4),
        weighted_share=round(min(weighted, 1.0), 4),
        elapsed_s=round(time.perf_counter() - started, 4),
    )


def _weights(measured: list[str], importance: dict[str, float] | None) -> dict[str, float]:
    """Importance renormalised over the measured columns; empty when there is none to use."""
    if not importance:
        return {}
    raw = {c: max(float(importance.get(c, 0.0)), 0.0) for c in measured}
    raw = {c: v if np.isfinite(v) else 0.0 for c, v in raw.items()}
    total = sum(raw.values())
    return {c: v / total for c, v in raw.items()} if total > 0 else {}


def _too_few(n_ref: int, n_cur: int, min_values: int) -> str | None:
    for side, n in (("batch", n_cur), ("reference", n_ref)):
        if n < min_values:
            what = "every value is missing" if n == 0 else f"only {n} non-missing value(s)"
            return f"{what} in the {side} (an effect size needs {min_values})"
    return None


def _finite(series: pl.Series) -> np.ndarray:
    """The observed values of a numeric column as float64: null, NaN and +/-inf dropped."""
    values = series.cast(pl.Float64).drop_nulls().to_numpy()
    return np.asarray(values[np.isfinite(values)], dtype=np.float64)


def _counts(series: pl.Series) -> dict[str, int]:
    """Count per category (as a string); nulls dropped."""
    counts = series.cast(pl.String).drop_nulls().value_counts()
    return dict(zip(counts[:, 0].to_list(), counts[:, 1].to_list(), strict=True))


def normed_wasserstein(ref: np.ndarray, cur: np.ndarray) -> float:
    """W1(ref, cur) / std(ref). A constant reference (std 0) is normed by its mean absolute
    value, or by 1.0 when that is 0 too: a move of a constant column is then measured
    relative to its level (or in its own units around 0).

    Both numbers come from the value counts (``tools.drift_stats``): the same values as
    scipy's ``wasserstein_distance`` and ``np.std``, ~8x less CPU on a 20k-row batch."""
    from tools.drift_stats import wasserstein_and_std

    distance, scale = wasserstein_and_std(pl.Series(ref), pl.Series(cur))
    if not scale > 0:
        scale = float(np.mean(np.abs(ref))) or 1.0
    return distance / scale


def _quantile_bin_shares(
    ref: np.ndarray, cur: np.ndarray, bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shares of each side in bins cut at the reference quantiles (tied edges merged; values
    outside the reference range fall in the end bins)."""
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1))[1:-1])
    n_bins = len(edges) + 1
    ref_counts = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=n_bins)
    cur_counts = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=n_bins)
    return ref_counts / len(ref), cur_counts / len(cur)


def _category_shares(ref: dict[str, int], cur: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Shares of each side over the union of categories."""
    union = sorted(set(ref) | set(cur))
    p = np.array([ref.get(c, 0) for c in union], dtype=np.float64)
    q = np.array([cur.get(c, 0) for c in union], dtype=np.float64)
    return p / p.sum(), q / q.sum()


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    """Population stability index sum((q - p) * ln(q / p)), shares floored at 1e-4."""
    p = np.where(p == 0, _SHARE_FLOOR, p)
    q = np.where(q == 0, _SHARE_FLOOR, q)
    return float(np.sum((q - p) * np.log(q / p)))


def _jensenshannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log, in [0, sqrt(ln 2)])."""
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(p, q))


# -- domain classifier ------------------------------------------------------------------------


def domain_classifier(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    *,
    numeric: list[str],
    categorical: list[str],
    threads: int,
    seed: int = 0,
    max_rows: int = 5_000,
    folds: int = 3,
    n_estimators: int = 60,
) -> DomainCheck:
    """How separable the batch is from the reference: out-of-fold ROC AUC of a small LightGBM.

    Each side is subsampled to at most ``max_rows`` (seeded) and labelled (reference 0, batch
    1); a stratified ``folds``-fold split scores every row with a model that did not see it,
    so the AUC is honest (about 0.5 for two samples of one distribution, at any size). Numeric
    columns go in as floats (null and +/-inf as NaN); categorical columns as integer codes
    over the union of both sides' values, with null as a code of its own. Rows present on both
    sides (a batch that overlaps the reference) pull the AUC below 0.5: a duplicate teaches
    the other label. Read anything up to about 0.55 as no shift.

    Args:
        reference: the model's reference window.
        current: the new batch.
        numeric: numeric feature columns.
        categorical: categorical feature columns.
        threads: LightGBM threads. Measured on 20k x 16 flights rows (5k per side, 3 folds,
            60 rounds) on a 2-core machine: 0.16-0.3 s with 1 or 2 threads when idle; with the
            other core busy, 2 threads took 2-4 s (OpenMP threads wait at every small tree's
            barrier) while 1 thread stayed at 0.3-0.45 s. Prefer 1 on a shared machine.
        seed: subsampling, fold and LightGBM seed (the result is deterministic).
        max_rows: rows per side at most.
        folds: cross-validation folds (at least 2).
        n_estimators: boosting rounds per fold.

    Returns:
        DomainCheck: AUC, rows used per side, up to 5 features by normalised gain.

    Raises:
        SchemaError: a column is missing, a numeric column is not numeric, or no column given.
        DataError: either side is empty or has fewer rows than ``folds``.
    """
    import lightgbm as lgb

    columns = [*numeric, *categorical]
    require_columns(reference, columns, "reference")
    require_columns(current, columns, "current")
    _require_numeric(reference, current, numeric)
    if folds < 2:
        raise DataError(f"folds must be at least 2, got {folds}")
    started = time.perf_counter()
    ref = _subsample(reference.select(columns), max_rows, seed)
    cur = _subsample(current.select(columns), max_rows, seed)
    for side, frame in (("reference", ref), ("current", cur)):
        if frame.height < folds:
            raise DataError(
                f"{side} data has {frame.height} rows: a {folds}-fold domain check needs {folds}"
            )
    x = _domain_matrix(ref, cur, numeric, categorical)
    y = np.concatenate([np.zeros(ref.height), np.ones(cur.height)])
    fold_of = _stratified_folds(y, folds, seed)
    params: dict[str, Any] = {
        "objective": "binary",
        "learning_rate": 0.1,
        "num_leaves": 15,
        "min_data_in_leaf": 20,
        "max_bin": 63,
        "num_threads": threads,
        "verbose": -1,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
    }
    categorical_idx = list(range(len(numeric), len(columns)))
    oof = np.zeros(len(y))
    gain = np.zeros(len(columns))
    for k in range(folds):
        train, test = fold_of != k, fold_of == k
        data = lgb.Dataset(
            x[train],
            label=y[train],
            feature_name=[f"f{i}" for i in range(len(columns))],
            categorical_feature=categorical_idx,
            params={"max_bin": 63, "verbose": -1},
        )
        booster = lgb.train(params, data, num_boost_round=n_estimators)
        oof[test] = booster.predict(x[test])
        gain += booster.feature_importance(importance_type="gain")
    total = float(gain.sum())
    ranked = sorted(
        ((columns[i], float(g) / total) for i, g in enumerate(gain) if g > 0 and total > 0),
        key=lambda item: -item[1],
    )
    auc = metrics.value("roc_auc", "binary", y, oof)
    assert auc is not None  # both sides hold rows (checked above): both classes are present
    return DomainCheck(
        auc=round(auc, 4),
        n_reference=ref.height,
        n_current=cur.height,
        top_features={name: round(share, 4) for name, share in ranked[:5]},
        elapsed_s=round(time.perf_counter() - started, 4),
        auc_se=round(auc_standard_error(auc, ref.height, cur.height), 4),
    )


def auc_standard_error(auc: float, n_negative: int, n_positive: int) -> float:
    """The standard error of a ROC AUC measured on ``n_negative`` and ``n_positive`` rows
    (Hanley & McNeil, 1982; read symmetrically about 0.5, so an AUC below 0.5 gets the error
    of its mirror). About 0.0058 at 0.5 with 5,000 rows a side; it shrinks as 1/sqrt(n).

    Raises:
        DataError: a side without rows.
    """
    if n_negative < 1 or n_positive < 1:
        raise DataError(f"an AUC needs rows on both sides, got {n_negative} and {n_positive}")
    a = max(auc, 1.0 - auc)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = a * (1 - a) + (n_positive - 1) * (q1 - a * a) + (n_negative - 1) * (q2 - a * a)
    return float(np.sqrt(max(var, 0.0) / (n_negative * n_positive)))


def stratified_sample(
    frame: pl.DataFrame, n: int, by: str | None = None, *, numeric: bool = False, seed: int = 0
) -> pl.DataFrame:
    """About ``n`` rows of ``frame`` (the frame itself when it has no more), in their order,
    drawn without replacement (seeded) in proportion to each stratum: the classes of ``by``
    (null a class of its own), or its deciles when ``numeric`` (a regression's target), so a
    sample keeps the class shares and the target's tails; uniform when ``by`` is None. Every
    stratum keeps at least one row (so a sample of fewer rows than strata exceeds ``n``).

    Raises:
        DataError: ``n`` < 1.
    """
    if n < 1:
        raise DataError(f"a sample needs at least one row, got n={n}")
    if frame.height <= n:
        return frame
    rng = np.random.default_rng(seed)
    codes = _strata(frame[by], numeric) if by is not None else np.zeros(frame.height, np.int64)
    sizes = np.bincount(codes)
    exact = sizes * (n / frame.height)
    quota = np.maximum(np.floor(exact).astype(np.int64), np.minimum(sizes, 1))
    rest = max(n - int(quota.sum()), 0)  # largest remainders first: the total is n
    room = np.flatnonzero(quota < sizes)
    quota[room[np.argsort(-(exact - quota)[room], kind="stable")[:rest]]] += 1
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    picks = [
        order[start + rng.choice(size, take, replace=False)]
        for start, size, take in zip(starts, sizes, quota, strict=True)
        if take
    ]
    return frame[np.sort(np.concatenate(picks))]


def _strata(values: pl.Series, numeric: bool) -> np.ndarray:
    """A stratum per row: the dense rank of a class (null last), or a numeric value's decile
    by rank (nulls an eleventh stratum)."""
    if numeric:
        ranks = values.cast(pl.Float64).rank("ordinal")
        valid = values.len() - values.null_count()
        deciles = ((ranks - 1) * 10 // max(valid, 1)).fill_null(10)
        return deciles.cast(pl.Int64).to_numpy()
    ranks = values.rank("dense").fill_null(0)  # rank starts at 1: 0 is the null class
    return ranks.cast(pl.Int64).to_numpy()


def _domain_matrix(
    ref: pl.DataFrame, cur: pl.DataFrame, numeric: list[str], categorical: list[str]
) -> np.ndarray:
    """Both sides stacked as one float64 matrix: numeric columns (non-finite -> NaN), then the
    categorical codes (union of values, sorted; null the last code)."""
    both = pl.concat([ref, cur], how="vertical_relaxed")
    parts = []
    for column in numeric:
        values = both[column].cast(pl.Float64).to_numpy().astype(np.float64, copy=True)
        values[~np.isfinite(values)] = np.nan
        parts.append(values)
    for column in categorical:
        strings = both[column].cast(pl.String)
        levels = sorted(strings.drop_nulls().unique().to_list())
        codes = strings.replace_strict(
            levels, list(range(len(levels))), default=len(levels), return_dtype=pl.Float64
        )
        parts.append(codes.to_numpy())
    return np.column_stack(parts) if parts else np.empty((both.height, 0))


def _stratified_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number per row: each class shuffled (seeded) and dealt round-robin to the folds."""
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), dtype=np.int64)
    for label in (0.0, 1.0):
        rows = rng.permutation(np.flatnonzero(y == label))
        fold_of[rows] = np.arange(len(rows)) % folds
    return fold_of


# -- shared -----------------------------------------------------------------------------------


def _require_numeric(reference: pl.DataFrame, current: pl.DataFrame, numeric: list[str]) -> None:
    for side, frame in (("reference", reference), ("current", current)):
        wrong = [
            f"{c} ({frame[c].dtype})"
            for c in numeric
            if not (frame[c].dtype.is_numeric() or frame[c].dtype == pl.Boolean)
            and frame[c].dtype != pl.Null
        ]
        if wrong:
            raise SchemaError(f"{side} numeric columns are not numeric: {wrong}")


def _subsample(frame: pl.DataFrame, max_rows: int, seed: int) -> pl.DataFrame:
    return frame.sample(n=max_rows, seed=seed) if frame.height > max_rows else frame


__all__ = [
    "ColumnShift",
    "DomainCheck",
    "ShiftConfig",
    "ShiftResult",
    "auc_standard_error",
    "domain_classifier",
    "effect_sizes",
    "stratified_sample",
]
