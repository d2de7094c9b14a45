"""Evaluation tools: is the challenger really better than the champion?

Both models are scored on the *same* held-out recent rows; the difference of the metric is
given with a paired bootstrap confidence interval (the same resampled rows score both
models), so a gain whose interval includes zero can be told apart from a real one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import DataError, SchemaError
from tools.drift import Scorer

Metric = Literal["roc_auc", "pr_auc", "log_loss"]


class Comparison(BaseModel):
    """Champion vs challenger on one holdout. ``gain`` is signed so that > 0 is better."""

    metric: Metric
    n_rows: int
    champion: float = Field(description="Champion's metric on the holdout.")
    challenger: float = Field(description="Challenger's metric on the holdout.")
    gain: float = Field(description="Improvement of challenger over champion (higher is better).")
    ci_low: float = Field(description="Lower bound of the gain's confidence interval.")
    ci_high: float = Field(description="Upper bound of the gain's confidence interval.")
    confidence: float = Field(description="Confidence level of the interval.")
    n_boot: int
    significant: bool = Field(description="The interval excludes zero on the better side.")
    prediction_divergence: float = Field(
        description="Mean absolute difference of the two models' scores (0 = identical)."
    )


def rank_roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC of scores ``s`` for 0/1 labels ``y`` (NaN with one class).

    Rank formula (Mann-Whitney U); ties get average ranks. Fast enough for 1,000 resamples."""
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    sorted_s = s[order]
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _pr_auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def _neg_log_loss(y: np.ndarray, s: np.ndarray) -> float:
    p = np.clip(s, 1e-7, 1 - 1e-7)
    return float(np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


_METRICS: dict[Metric, Callable[[np.ndarray, np.ndarray], float]] = {
    "roc_auc": rank_roc_auc,
    "pr_auc": _pr_auc,
    "log_loss": _neg_log_loss,
}


def _bootstrap_weights(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Row multiplicities of ``size`` bootstrap resamples (one row per resample)."""
    idx = rng.integers(0, n, (size, n)) + (np.arange(size) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=size * n).reshape(size, n).astype(float)


def _weighted_auc(y: np.ndarray, s: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``s`` under each row of ``weights``: one sort, no per-resample sorting."""
    order = np.argsort(s, kind="mergesort")
    sorted_s, y_sorted, w = s[order], y[order], weights[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])  # tie groups
    pos = np.add.reduceat(w * y_sorted, starts, axis=1)
    neg = np.add.reduceat(w * (1 - y_sorted), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)


def _paired_bootstrap(
    y: np.ndarray,
    s_champ: np.ndarray,
    s_chall: np.ndarray,
    metric: Metric,
    n_boot: int,
    seed: int,
    chunk: int = 100,
) -> np.ndarray:
    """Metric(challenger) - metric(champion) on the same resampled rows, per resample."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for start in range(0, n_boot, chunk):
        w = _bootstrap_weights(rng, len(y), min(chunk, n_boot - start))
        if metric == "roc_auc":
            out.append(_weighted_auc(y, s_chall, w) - _weighted_auc(y, s_champ, w))
        elif metric == "log_loss":
            ll = [np.log(np.clip(np.where(y == 1, s, 1 - s), 1e-7, 1)) for s in (s_champ, s_chall)]
            out.append((w @ (ll[1] - ll[0])) / len(y))
        else:  # pr_auc: no closed weighted form here; resample rows explicitly
            for row in w:
                idx = np.repeat(np.arange(len(y)), row.astype(int))
                out.append(
                    np.array([_pr_auc(y[idx], s_chall[idx]) - _pr_auc(y[idx], s_champ[idx])])
                )
    return np.concatenate(out)


def compare_models(
    champion: Scorer,
    challenger: Scorer,
    holdout: pl.DataFrame,
    target: str,
    *,
    metric: Metric = "roc_auc",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Score champion and challenger on the same holdout with a paired bootstrap CI.

    Args:
        champion: the serving model.
        challenger: the candidate.
        holdout: labelled recent rows neither model was trained on.
        target: label column (0/1).
        metric: 'roc_auc', 'pr_auc' or 'log_loss' (log loss is reported negated, so that for
            every metric a positive gain means the challenger is better).
        n_boot: bootstrap resamples.
        confidence: interval level, e.g. 0.95.

    Raises:
        SchemaError: the target is missing.
        DataError: the holdout is empty or holds a single class.
    """
    if target not in holdout.columns:
        raise SchemaError(f"holdout lacks target column {target!r}")
    rows = holdout.filter(pl.col(target).is_not_null())
    y = rows[target].to_numpy().astype(int)
    if len(y) == 0 or y.min() == y.max():
        raise DataError(f"holdout needs both classes; got {len(y)} rows, {int(y.sum())} positive")
    s_champ, s_chall = champion.predict_scores(rows), challenger.predict_scores(rows)
    return compare_scores(
        y, s_champ, s_chall, metric=metric, n_boot=n_boot, confidence=confidence, seed=seed
    )


def compare_scores(
    y: np.ndarray,
    s_champ: np.ndarray,
    s_chall: np.ndarray,
    *,
    metric: Metric = "roc_auc",
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """``compare_models`` on precomputed scores (same rows, same order)."""
    fn = _METRICS[metric]
    champ, chall = fn(y, s_champ), fn(y, s_chall)
    diffs = _paired_bootstrap(y, s_champ, s_chall, metric, n_boot, seed)
    diffs = diffs[~np.isnan(diffs)]
    alpha = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(diffs, [alpha, 1 - alpha]))
    return Comparison(
        metric=metric,
        n_rows=len(y),
        champion=champ,
        challenger=chall,
        gain=chall - champ,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        n_boot=len(diffs),
        significant=low > 0,
        prediction_divergence=float(np.mean(np.abs(s_chall - s_champ))),
    )
