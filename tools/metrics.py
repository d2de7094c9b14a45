"""Metrics for every task, as numbers and as bootstrap intervals.

Scores, the one shape every model returns (``TrainedModel.predict_scores``):

- binary: ``(n,)`` P(positive class);
- multiclass: ``(n, k)`` probabilities, columns in the order of the model's ``classes``;
- regression: ``(n,)`` predictions.

Labels reach the metrics encoded: binary 0/1, multiclass the index into the model's classes
(``encode_labels``; a class the model never saw is -1 and counts against it), regression the
target's values.

Every metric is written once, for a matrix of row weights ``w`` (replicates x rows): the value
is ``w`` = one row of ones, and a bootstrap is ``w`` = each resample's row multiplicities. So
the interval of a champion's metric and the evaluator's paired gain use the same formulas as
the point value, with one sort per score column and no per-resample Python loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import ConfigError, DataError
from driftpilot.core.tasks import Metric, Task, metric, metrics_for

EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] inside log loss
MAX_CELLS = 4_000_000  # replicate x row cells held at once (~32 MB of float64)
MAX_CLASSES = 20  # more distinct integer values than this reads as a regression target


# --------------------------------------------------------------------------- labels and tasks


def infer_task(target: pl.Series) -> tuple[Task, str]:
    """The task a target column implies, with the reason in words.

    Two values 0/1 (or booleans): binary. Text, or at most 20 distinct whole numbers:
    multiclass. Other numbers: regression.

    Raises:
        DataError: the column holds fewer than two distinct values.
    """
    values = target.drop_nulls()
    distinct = values.n_unique()
    if distinct < 2:
        raise DataError(
            f"target {target.name!r} holds {distinct} distinct value(s): nothing to learn"
        )
    dtype = values.dtype
    if dtype == pl.Boolean or (dtype.is_numeric() and set(values.unique().to_list()) <= {0, 1}):
        return "binary", f"target {target.name!r} holds two values, 0 and 1"
    if not dtype.is_numeric():
        return "multiclass", f"target {target.name!r} holds {distinct} labels ({dtype})"
    whole = dtype.is_integer() or bool((values.cast(pl.Float64) % 1 == 0).all())
    if whole and distinct <= MAX_CLASSES:
        return "multiclass", f"target {target.name!r} holds {distinct} whole-number labels"
    return "regression", f"target {target.name!r} holds {distinct} distinct numeric values"


def class_list(target: pl.Series) -> list[Any]:
    """The sorted distinct labels of a multiclass target (the models' class order)."""
    return sorted(target.drop_nulls().unique().to_list(), key=lambda v: (str(type(v)), v))


def encode_labels(y: Any, task: Task, classes: Sequence[Any] | None = None) -> np.ndarray:
    """Labels as the metrics read them (see the module docstring).

    Raises:
        DataError: binary labels other than 0/1, non-numeric regression targets, NaN targets.
    """
    values = np.asarray(y.to_numpy() if isinstance(y, pl.Series) else y).ravel()
    if task == "regression":
        if not np.issubdtype(values.dtype, np.number):
            raise DataError(f"a regression target must be numeric, got dtype {values.dtype}")
        out = values.astype(float)
        if not np.isfinite(out).all():
            raise DataError(f"the target holds {int((~np.isfinite(out)).sum())} NaN/inf values")
        return out
    if task == "binary":
        if values.dtype == bool:
            return values.astype(np.int8)
        bad = ~np.isin(values, (0, 1))
        if bad.any():
            shown = ", ".join(repr(v) for v in np.unique(values[bad])[:5].tolist())
            raise DataError(f"binary labels must be 0/1; found {int(bad.sum())} others ({shown})")
        return values.astype(np.int8)
    if not classes:
        raise ConfigError("multiclass labels need the model's classes")
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(v, -1) for v in values.tolist()], dtype=np.int64)


def _scores(s: Any, task: Task, n: int) -> np.ndarray:
    out = np.asarray(s, dtype=float)
    want = 2 if task == "multiclass" else 1
    if out.ndim != want or out.shape[0] != n:
        raise DataError(
            f"{task} scores must have shape {'(n, k)' if want == 2 else '(n,)'} "
            f"with n = {n} rows, got {out.shape}"
        )
    if not np.isfinite(out).all():
        raise DataError(f"scores hold {int((~np.isfinite(out)).sum())} NaN or infinite values")
    return out


# --------------------------------------------------------------------------- weighted metrics
# Each takes labels y (n,), scores s, weights w (b, n) and returns (b,) values (NaN: undefined).


def _auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC AUC of scores ``s`` for 0/1 ``y`` under each weight row; ties count one half."""
    order = np.argsort(s, kind="mergesort")
    sorted_s, y_sorted, ws = s[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])  # tie groups
    pos = np.add.reduceat(ws * y_sorted, starts, axis=1)
    neg = np.add.reduceat(ws * (1 - y_sorted), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def _roc_auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    if s.ndim == 1:
        return _auc(y, s, w)
    per_class = [_auc((y == c).astype(float), s[:, c], w) for c in range(s.shape[1])]
    return _nanmean(per_class)  # macro over the classes with both positives and negatives


def _pr_auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision (sklearn's step form, ties grouped) under each weight row."""
    order = np.argsort(-s, kind="mergesort")
    sorted_s, y_sorted, ws = s[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    tp = np.add.reduceat(ws * y_sorted, starts, axis=1)
    fp = np.add.reduceat(ws * (1 - y_sorted), starts, axis=1)
    ctp, cfp = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(ctp + cfp > 0, ctp / (ctp + cfp), 0.0)
        return (precision * tp).sum(axis=1) / tp.sum(axis=1)


def _log_loss(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    if s.ndim == 1:
        p = np.where(y == 1, s, 1 - s)
    else:  # a class the model never saw (-1) gets the floor probability
        p = np.where(y >= 0, s[np.arange(len(y)), np.clip(y, 0, None)], 0.0)
    loss = -np.log(np.clip(p, EPS, 1.0))
    return (w @ loss) / w.sum(axis=1)


def _f1(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    pred = (s >= 0.5).astype(float)
    tp, fp, fn = w @ (pred * y), w @ (pred * (1 - y)), w @ ((1 - pred) * y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)


def _macro_f1(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Macro F1 of the arg-max class over the classes present in the labels or predictions."""
    pred = np.argmax(s, axis=1)
    scores = []
    for c in range(s.shape[1]):
        is_c, said_c = (y == c).astype(float), (pred == c).astype(float)
        tp, fp, fn = w @ (is_c * said_c), w @ ((1 - is_c) * said_c), w @ (is_c * (1 - said_c))
        with np.errstate(invalid="ignore", divide="ignore"):
            scores.append(np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan))
    return _nanmean(scores)


def _rmse(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.sqrt((w @ (s - y) ** 2) / w.sum(axis=1))


def _mae(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (w @ np.abs(s - y)) / w.sum(axis=1)


def _r2(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    # R² is unchanged by a shift; centring first keeps w @ y² - total * mean² exact for
    # targets with a large mean and a small spread (prices).
    centre = float(y.mean()) if len(y) else 0.0
    y, s = y - centre, s - centre
    total = w.sum(axis=1)
    mean = (w @ y) / total
    ss_tot = w @ (y**2) - total * mean**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss_tot > 0, 1 - (w @ (s - y) ** 2) / ss_tot, np.nan)


_WEIGHTED: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "roc_auc": _roc_auc,
    "pr_auc": _pr_auc,
    "log_loss": _log_loss,
    "f1": _f1,
    "macro_f1": _macro_f1,
    "rmse": _rmse,
    "mae": _mae,
    "r2": _r2,
}


def _nanmean(rows: list[np.ndarray]) -> np.ndarray:
    """Mean over the defined values of each column; NaN where none is (undefined metric)."""
    stacked = np.vstack(rows)
    defined = ~np.isnan(stacked)
    count = defined.sum(axis=0)
    total = np.where(defined, stacked, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def weighted(name: str, task: Task, y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Metric ``name`` under each row of weights ``w`` (replicates x rows); NaN = undefined."""
    metric(name, task)  # a clear error for a metric of another task
    return _WEIGHTED[name](y, s, np.atleast_2d(np.asarray(w, dtype=float)))


def value(name: str, task: Task, y: Any, s: Any) -> float | None:
    """Metric ``name`` of scores ``s`` against encoded labels ``y``; None when undefined
    (a ROC AUC with one class, an R² of a constant target)."""
    y = np.asarray(y)
    out = float(weighted(name, task, y, _scores(s, task, len(y)), np.ones((1, len(y))))[0])
    return None if np.isnan(out) else out


def chance_level(name: str, task: Task, y: Any) -> float | None:
    """What a model that knows nothing of the inputs scores in metric ``name`` on labels
    ``y`` (encoded): a ROC AUC of 0.5 (binary, and multiclass macro one-vs-rest: a random
    ranking); a PR AUC of the positive share (a random ranking's precision); an R² of 0, an
    RMSE of the labels' standard deviation and an MAE of their mean distance to the median
    (predicting the mean, or the median, for every row).

    None where no such level exists: log loss (a know-nothing model's loss depends on the
    prior it holds, and under a label shift the holdout's own prior is one it could not know),
    F1 and macro F1 (they depend on the threshold at 0.5, not on what the model learnt).

    Raises:
        ConfigError: a metric of another task.
    """
    info = metric(name, task)
    if info.chance is not None:
        return info.chance
    labels = np.asarray(y, dtype=float)
    if not len(labels):
        return None
    if name == "pr_auc":
        return float(labels.mean())
    if name == "rmse":
        return float(labels.std())
    if name == "mae":
        return float(np.abs(labels - np.median(labels)).mean())
    return None


SPREAD_METRICS = ("rmse", "mae")  # in the target's units: their chance level is its spread


def spread_levels(y: Any, task: Task) -> dict[str, float]:
    """The chance level of each metric read in the target's units (``SPREAD_METRICS``) on
    labels ``y``: empty but for a regression. A score in those units is comparable across two
    sets only on the same scale: a holdout whose target spreads wider scores a higher RMSE
    with the same skill."""
    if task != "regression":
        return {}
    out = {name: chance_level(name, task, y) for name in SPREAD_METRICS}
    return {name: level for name, level in out.items() if level is not None}


def all_values(
    task: Task, y: Any, s: Any, names: Sequence[str] | None = None
) -> dict[str, float | None]:
    """Every metric of the task (or ``names``) at once: the row of a performance table."""
    return {n: value(n, task, y, s) for n in (names or metrics_for(task))}


# --------------------------------------------------------------------------- bootstrap


def bootstrap_weights(
    rng: np.random.Generator, n: int, size: int, strata: np.ndarray | None = None
) -> np.ndarray:
    """Row multiplicities of ``size`` bootstrap resamples of ``n`` rows (size x n).

    With ``strata`` (a class per row), each stratum is resampled within itself, so every
    replicate keeps the class counts: an interval exists even with a handful of positives."""
    out = np.zeros((size, n))
    groups = (
        [np.arange(n)]
        if strata is None
        else [np.flatnonzero(strata == g) for g in np.unique(strata)]
    )
    for rows in groups:
        m = len(rows)
        draws = rng.integers(0, m, (size, m)) + (np.arange(size) * m)[:, None]
        out[:, rows] = np.bincount(draws.ravel(), minlength=size * m).reshape(size, m)
    return out


def _chunks(n_rows: int, n_boot: int) -> list[int]:
    step = max(1, min(n_boot, MAX_CELLS // max(n_rows, 1)))
    return [min(step, n_boot - start) for start in range(0, n_boot, step)]


class MetricInterval(BaseModel):
    """One model's metric on labelled rows, with a percentile bootstrap interval."""

    metric: str = Field(description="Metric measured (see driftpilot.core.tasks).")
    task: Task = Field(description="binary, multiclass or regression.")
    higher_is_better: bool = Field(description="Direction of the metric.")
    value: float | None = Field(description="Metric on all rows; None when undefined.")
    low: float | None = Field(description="Lower bound of the interval; None when undefined.")
    high: float | None = Field(description="Upper bound of the interval; None when undefined.")
    n_rows: int = Field(description="Labelled rows measured.")
    confidence: float = Field(description="Confidence level of the interval, e.g. 0.95.")
    n_boot: int = Field(description="Bootstrap replicates (classifiers: resampled per class).")


def _check(n_boot: int, confidence: float) -> None:
    if n_boot < 1:
        raise ConfigError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")


def _bounds(values: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    values = values[~np.isnan(values)]
    if not len(values):
        return None, None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def interval(
    name: str,
    task: Task,
    y: Any,
    s: Any,
    *,
    n_boot: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
) -> MetricInterval:
    """Metric ``name`` with a percentile bootstrap interval (classes resampled separately,
    so every replicate of a classifier's interval keeps its classes and the interval exists
    even with a handful of positives). The binary ROC AUC, the most common case, takes the
    stratified fast path of ``_binary_auc_interval``: the same interval, about 5x faster on
    big batches.

    Labels are encoded (``encode_labels``): binary 0/1 (bools and floats accepted),
    multiclass class indices, regression the values.

    Raises:
        DataError: no rows, labels that do not fit the task, scores of the wrong shape or
            with NaN.
        ConfigError: a metric of another task, n_boot < 1, confidence outside (0, 1).
    """
    _check(n_boot, confidence)
    info = metric(name, task)
    y = checked_labels(y, task)
    if len(y) == 0:
        raise DataError("no labelled rows to measure")
    s = _scores(s, task, len(y))
    if task == "binary" and name == "roc_auc":
        return _binary_auc_interval(y, s, n_boot, confidence, seed)
    rng = np.random.default_rng(seed)
    strata = None if task == "regression" else y
    reps = np.concatenate(
        [
            weighted(name, task, y, s, bootstrap_weights(rng, len(y), b, strata))
            for b in _chunks(len(y), n_boot)
        ]
    )
    low, high = _bounds(reps, confidence)
    point = value(name, task, y, s)
    return MetricInterval(
        metric=name,
        task=task,
        higher_is_better=info.higher_is_better,
        value=point,
        low=low if point is not None else None,
        high=high if point is not None else None,
        n_rows=len(y),
        confidence=confidence,
        n_boot=n_boot,
    )


def checked_labels(y: Any, task: Task) -> np.ndarray:
    """Labels checked for the task: binary 0/1 (``encode_labels``), regression finite
    numbers, multiclass already class indices (-1: a class the model never saw)."""
    if task != "multiclass":
        return encode_labels(y, task)
    out = np.asarray(y.to_numpy() if isinstance(y, pl.Series) else y).ravel()
    if len(out) and not np.issubdtype(out.dtype, np.integer):
        raise DataError(
            f"multiclass labels must be class indices (encode_labels), got dtype {out.dtype}"
        )
    return out


def _binary_auc_interval(
    y: np.ndarray, s: np.ndarray, n_boot: int, confidence: float, seed: int
) -> MetricInterval:
    """Binary ROC AUC with a stratified bootstrap: each replicate draws ``n_positive``
    positives and ``n_rows - n_positive`` negatives with replacement from their own class
    (as ``bootstrap_weights`` with strata). Negatives are sorted once, each positive's rank
    among them is found once, and a replicate only needs the cumulative counts of its
    resampled negatives (vectorised over replicates). None for value and bounds when the
    labels hold a single class."""
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    point = low = high = None  # one class only: no ROC AUC to give
    if n_pos and n_neg:
        neg = np.sort(s[y == 0])
        pos = s[y == 1]
        below = np.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
        upto = np.searchsorted(neg, pos, side="right")  # ... plus those tied with it
        point = float((below + upto).sum() / (2.0 * n_pos * n_neg))
        aucs = _stratified_auc_boot(below, upto, n_neg, n_boot, np.random.default_rng(seed))
        low, high = _bounds(aucs, confidence)
    return MetricInterval(
        metric="roc_auc",
        task="binary",
        higher_is_better=True,
        value=point,
        low=low,
        high=high,
        n_rows=len(y),
        confidence=confidence,
        n_boot=n_boot,
    )


def _stratified_auc_boot(
    below: np.ndarray, upto: np.ndarray, n_neg: int, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """AUC per replicate; ``below``/``upto`` index the sorted negatives for each positive."""
    n_pos = len(below)
    chunk = max(1, min(n_boot, MAX_CELLS // max(n_neg, n_pos, 1)))  # bounds memory (~32 MB)
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        # multiplicity of each sorted negative in each replicate, then cumulative with a 0 column
        # (int32 is enough: b * n_neg <= MAX_CELLS, and is faster than int64 / float64)
        offset = (np.arange(b, dtype=np.int32) * n_neg)[:, None]
        draws = rng.integers(0, n_neg, (b, n_neg), dtype=np.int32) + offset
        counts = np.bincount(draws.ravel(), minlength=b * n_neg).reshape(b, n_neg)
        cum = np.zeros((b, n_neg + 1), dtype=np.int32)
        np.cumsum(counts, axis=1, out=cum[:, 1:])
        picks = rng.integers(0, n_pos, (b, n_pos), dtype=np.int32)  # resampled positives
        flat, row = cum.ravel(), (np.arange(b, dtype=np.int64) * (n_neg + 1))[:, None]
        wins = flat[below[picks] + row].sum(axis=1, dtype=np.int64)  # negatives below ...
        wins += flat[upto[picks] + row].sum(axis=1, dtype=np.int64)  # ... + (below + ties)
        out[start : start + b] = wins / (2.0 * n_pos * n_neg)
    return out


def paired_gains(
    name: str,
    task: Task,
    y: Any,
    s_before: Any,
    s_after: Any,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, np.ndarray]:
    """The gain of ``s_after`` over ``s_before`` (> 0 better; see ``Metric.gain``) and its
    paired bootstrap replicates: the same resampled rows score both, so the spread is that of
    the difference, not of each metric.

    Raises:
        DataError: no rows, or scores of the wrong shape.
    """
    info = metric(name, task)
    y = np.asarray(y)
    if len(y) == 0:
        raise DataError("no labelled rows to compare on")
    before, after = _scores(s_before, task, len(y)), _scores(s_after, task, len(y))
    one = np.ones((1, len(y)))
    point = float(
        np.asarray(
            info_gain(
                info, weighted(name, task, y, before, one), weighted(name, task, y, after, one)
            )
        )[0]
    )
    rng = np.random.default_rng(seed)
    reps: list[np.ndarray] = []
    for b in _chunks(len(y), n_boot):
        w = bootstrap_weights(rng, len(y), b)
        reps.append(
            info_gain(info, weighted(name, task, y, before, w), weighted(name, task, y, after, w))
        )
    gains = np.concatenate(reps)
    return point, gains[~np.isnan(gains)]


def info_gain(info: Metric, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``Metric.gain`` over arrays (NaN where either side is undefined)."""
    diff = after - before if info.higher_is_better else before - after
    if info.relative:  # as Metric.gain: from a perfect 0, an infinite share with its sign
        with np.errstate(invalid="ignore", divide="ignore"):
            share = diff / np.abs(before)
        from_zero = np.where(diff > 0, np.inf, np.where(diff < 0, -np.inf, 0.0))
        return np.where(before == 0, from_zero, share)
    return diff


def divergence(task: Task, s_a: Any, s_b: Any, spread: float | None = None) -> float:
    """How differently two models score the same rows (0 = identically).

    Binary: mean |p_a - p_b|. Multiclass: mean total-variation distance between the two class
    distributions (half the summed |differences|, in [0, 1]). Regression: mean |y_a - y_b|
    over ``spread``, the target's spread (its standard deviation on the holdout)."""
    a, b = np.asarray(s_a, dtype=float), np.asarray(s_b, dtype=float)
    if task == "multiclass":
        return float(np.mean(0.5 * np.abs(a - b).sum(axis=1)))
    mean_abs = float(np.mean(np.abs(a - b)))
    if task == "regression":
        if not spread or spread <= 0:
            raise DataError("a regression divergence needs the target's spread (> 0)")
        return mean_abs / spread
    return mean_abs
