"""Drift tools: has the data (or the model's behaviour on it) moved since the reference?

The decision's numbers are computed natively (``tools.drift_stats``: Polars value counts,
NumPy, SciPy's distributions), with Evidently 0.7's default methods and thresholds: below
1,000 (cleaned) reference values K-S (numeric) and chi-square / Z (categorical or few values)
p-values, drifted when p < 0.05; above, normed Wasserstein (numeric) and Jensen-Shannon
(categorical or few values) distances, drifted when >= 0.1. A batch under 1,000 rows is
tested with the p-values whatever the reference size. ``tests/unit/test_drift_parity.py``
checks every column of every shipped dataset against Evidently's own report.

Evidently (imported lazily: it takes seconds) only renders the HTML report, for people:
``tools.drift_report.render_report``, after the decision; ``data_drift(report_path=...)``
still writes one for old callers, with the same native numbers.

A column with too few values on either side (an all-null sparse column in a small batch, a
batch of three rows) is not tested: Evidently refuses empty columns, and a test over a couple
of values says nothing. It is listed in ``skipped_columns`` with the reason, and the drift
share counts only the columns that were tested.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import DataError, SchemaError
from driftpilot.core.tasks import Task
from tools.drift_stats import Frame, Kind, drift_test, side_counts
from tools.metrics import all_values, encode_labels


class DriftConfig(BaseModel):
    """Options of the data-drift check; unset values use Evidently's defaults."""

    drift_share: float = Field(0.5, description="Dataset drift when this share of columns drift.")
    num_method: str | None = Field(None, description="Stat test for numeric columns, e.g. 'psi'.")
    cat_method: str | None = Field(None, description="Stat test for categorical columns.")
    threshold: float | None = Field(None, description="Threshold for every column's test.")
    max_rows: int | None = Field(
        None, description="Uniformly subsample each side to this many rows (speed), if set."
    )
    min_values: int = Field(
        5,
        ge=1,
        description="Columns with fewer non-null values on either side are skipped, not tested.",
    )
    small_batch_rows: int = Field(
        1000,
        description="Below this many batch rows, with no method or threshold set, test with "
        "p-values (K-S, chi-square): a distance over a few hundred values reads noise as drift.",
    )


class ColumnDrift(BaseModel):
    """Drift verdict for one column."""

    column: str
    method: str = Field(description="Statistical test or distance Evidently used.")
    score: float = Field(description="p-value (for tests) or distance (for distances).")
    threshold: float = Field(description="Drift threshold of the method.")
    drifted: bool = Field(description="p-value below, or distance at/above, the threshold.")


class DriftResult(BaseModel):
    """Data drift between a reference and a current batch."""

    n_reference: int
    n_current: int
    n_columns: int = Field(description="Columns compared.")
    n_drifted: int = Field(description="Columns whose drift test fired.")
    drift_share: float = Field(description="n_drifted / n_columns.")
    dataset_drift: bool = Field(description="drift_share reached the configured share.")
    columns: list[ColumnDrift] = Field(description="Per-column results, most drifted first.")
    skipped_columns: dict[str, str] = Field(
        default_factory=dict, description="Columns not tested, with the reason (too few values)."
    )
    report_path: str | None = Field(None, description="Evidently HTML report, if written.")
    report_sha256: str | None = Field(
        None, description="sha256 of the report's HTML (before compression), if written."
    )
    elapsed_s: float = Field(description="Wall time of the check.")

    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]


class PerformanceResult(BaseModel):
    """Quality of a model's scores on labelled rows: every metric of its task."""

    task: Task = Field("binary", description="binary, multiclass or regression.")
    n_rows: int
    metrics: dict[str, float | None] = Field(
        description="Every metric of the task (driftpilot.core.tasks); None when undefined, "
        "e.g. a ROC AUC with one class present."
    )
    positive_rate: float | None = Field(None, description="Binary: share of label 1 in the rows.")

    def get(self, metric: str) -> float | None:
        """One metric's value (None when undefined or not a metric of this task)."""
        return self.metrics.get(metric)


class Scorer(Protocol):
    """Anything that scores the rows of a Polars frame (see ``tools.metrics``: binary
    P(label = 1), multiclass class probabilities, regression predictions)."""

    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray: ...


def data_drift(
    reference: Frame,
    current: Frame,
    *,
    numeric: list[str],
    categorical: list[str] | None = None,
    config: DriftConfig | None = None,
    report_path: Path | None = None,
    seed: int = 0,
) -> DriftResult:
    """Per-column drift tests and the drift share of Evidently's data-drift preset, computed
    natively (no Evidently import unless a report is asked for).

    Args:
        reference: the model's reference window (e.g. its training data); a LazyFrame is
            read a column at a time.
        current: the new batch (DataFrame or LazyFrame).
        numeric: numeric feature columns to compare.
        categorical: categorical feature columns to compare.
        config: drift share, methods, thresholds, optional subsampling.
        report_path: also render Evidently's interactive HTML report there (``render_report``;
            the numbers stay the native ones), gzip-compressed when the name ends in ``.gz``.
        seed: subsampling seed.

    Returns:
        DriftResult with per-column method, score, threshold and verdict, the share of
        drifted columns, the columns skipped for too few values (with the reason), and the
        HTML report's path and sha256 when one was rendered. When no column can be tested the
        result has no columns, a drift share of 0 and no report.

    Raises:
        SchemaError: a requested column is missing on either side.
        DataError: either side is empty, a column cannot be tested (no value left once
            inf is dropped, text in a numeric column) or a method does not fit its column.
    """
    cfg = config or DriftConfig()
    categorical = categorical or []
    columns = [*numeric, *categorical]
    n_reference = require_columns(reference, columns, "reference")
    n_current = require_columns(current, columns, "current")
    started = time.perf_counter()
    ref = _sampled(reference, columns, cfg.max_rows, seed, n_reference)
    cur = _sampled(current, columns, cfg.max_rows, seed, n_current)
    cfg = _methods_for_size(cfg, min(n_current, cfg.max_rows or n_current))
    kinds = _kinds(numeric, categorical)
    tested, skipped = _test_columns(ref, cur, kinds, cfg)
    result = _summarise(tested, cfg.drift_share) if tested else _nothing_tested()
    digest = None
    if report_path is not None and tested:
        from tools.drift_report import render_report

        digest = render_report(
            reference,
            current,
            numeric=numeric,
            categorical=categorical,
            config=config,
            path=report_path,
            seed=seed,
        )
    return result.model_copy(
        update={
            "n_reference": n_reference,
            "n_current": n_current,
            "skipped_columns": skipped,
            "report_path": str(report_path) if digest is not None else None,
            "report_sha256": digest,
            "elapsed_s": round(time.perf_counter() - started, 3),
        }
    )


def _kinds(numeric: list[str], categorical: list[str]) -> dict[str, Kind]:
    """Each column's kind, numeric ones first (Evidently's order, which ties keep)."""
    kinds: dict[str, Kind] = {}
    for column in numeric:
        kinds[column] = "numeric"
    for column in categorical:
        kinds[column] = "categorical"
    return kinds


def _test_columns(
    ref: Frame, cur: Frame, kinds: dict[str, Kind], cfg: DriftConfig
) -> tuple[list[ColumnDrift], dict[str, str]]:
    """Each column's native test, one column at a time, or the reason it was not tested."""
    tested: list[ColumnDrift] = []
    skipped: dict[str, str] = {}
    for column, kind in kinds.items():
        sides = (side_counts(ref, column, kind), side_counts(cur, column, kind))
        reason = _too_few(sides[1].present, sides[0].present, cfg.min_values)
        if reason:
            skipped[column] = reason
            continue
        method = cfg.num_method if kind == "numeric" else cfg.cat_method
        test = drift_test(
            ref, cur, column, kind, method=method, threshold=cfg.threshold, sides=sides
        )
        tested.append(
            ColumnDrift(
                column=column,
                method=test.method,
                score=test.score,
                threshold=test.threshold,
                drifted=test.drifted,
            )
        )
    return tested, skipped


def _too_few(n_batch: int, n_reference: int, min_values: int) -> str | None:
    """Why a column with these counts of present values (null and NaN missing) is not tested."""
    for side, n in (("batch", n_batch), ("reference", n_reference)):
        if n < min_values:
            what = "every value is null" if n == 0 else f"only {n} non-null value(s)"
            return f"{what} in the {side} (a drift test needs {min_values})"
    return None


def _summarise(columns: list[ColumnDrift], drift_share: float) -> DriftResult:
    """Most drifted first (verdict, then p-value up or distance down; ties keep the given
    order, numeric columns before categorical as Evidently lists them); the share of drifted
    tested columns."""
    columns = sorted(
        columns, key=lambda c: (not c.drifted, c.score if _is_p_value(c.method) else -c.score)
    )
    n_drifted = sum(c.drifted for c in columns)
    share = n_drifted / len(columns)
    return DriftResult(
        n_reference=0,
        n_current=0,
        n_columns=len(columns),
        n_drifted=n_drifted,
        drift_share=round(share, 4),
        dataset_drift=share >= drift_share,
        columns=columns,
        elapsed_s=0.0,
    )


def _methods_for_size(cfg: DriftConfig, n_current: int) -> DriftConfig:
    """Evidently picks its method by the reference size alone: above 1,000 rows a distance
    with a fixed threshold, which ignores how few values the batch has. Measured on real
    flights (same January, 9,000 reference rows): 120-row samples drifted on 25-56 % of the
    columns with distances and on 0-6 % with K-S / chi-square p-values."""
    if n_current >= cfg.small_batch_rows or cfg.threshold is not None:
        return cfg
    return cfg.model_copy(
        update={"num_method": cfg.num_method or "ks", "cat_method": cfg.cat_method or "chisquare"}
    )


def _nothing_tested() -> DriftResult:
    return DriftResult(
        n_reference=0,
        n_current=0,
        n_columns=0,
        n_drifted=0,
        drift_share=0.0,
        dataset_drift=False,
        columns=[],
        elapsed_s=0.0,
    )


def require_columns(frame: Frame, columns: list[str], side: str) -> int:
    """Both sides of a comparison hold every column, and rows; there are columns to compare.

    Returns:
        The frame's row count (a LazyFrame's is counted by a query).
    """
    names = frame.collect_schema().names() if isinstance(frame, pl.LazyFrame) else frame.columns
    missing = [c for c in columns if c not in names]
    if missing:
        raise SchemaError(f"{side} data lacks columns {missing}")
    height = (
        int(frame.select(pl.len()).collect().item())
        if isinstance(frame, pl.LazyFrame)
        else frame.height
    )
    if height == 0:
        raise DataError(f"{side} data is empty")
    if not columns:
        raise SchemaError("no columns to compare: pass numeric and/or categorical columns")
    return height


def _sampled(
    frame: Frame, columns: list[str], max_rows: int | None, seed: int, height: int
) -> Frame:
    """The rows the tests see: all of them, or ``max_rows`` drawn with ``seed`` by row index,
    the same rows whether the frame is in memory or a scan (and so the same rows as
    ``render_report``'s: the decision and its report read one sample)."""
    if max_rows is None or height <= max_rows:
        return frame
    rows = np.sort(np.random.default_rng(seed).choice(height, size=max_rows, replace=False))
    picked = (
        frame.lazy()
        .select(columns)
        .with_row_index("_row")
        .filter(pl.col("_row").is_in(pl.Series(rows, dtype=pl.UInt32)))
        .drop("_row")
    )
    return picked.collect() if isinstance(frame, pl.DataFrame) else picked


_P_VALUE_TESTS = {
    *("ks", "chisquare", "z", "anderson", "cramer_von_mises", "es", "fisher_exact"),
    *("g_test", "mannw", "empirical_mmd", "t_test", "TVD"),
    *("K-S p_value", "chi-square p_value", "Z-test p_value", "Anderson-Darling"),
    *("Cramer-von Mises", "Epps-Singleton", "Fisher's Exact test", "Mann-Whitney U-rank test"),
}


def _is_p_value(method: str) -> bool:
    return method in _P_VALUE_TESTS


def prediction_drift(
    reference_scores: np.ndarray,
    current_scores: np.ndarray,
    *,
    task: Task = "binary",
    method: str | None = None,
) -> ColumnDrift | None:
    """Drift of a model's predictions between reference and current rows, per task:

    - binary: the distribution of the predicted probability (a numeric column);
    - multiclass: the distribution of the predicted class, the arg-max of each row's
      probabilities (a categorical column ``predicted_class`` holding the class's index);
    - regression: the distribution of the predicted value (a numeric column).

    Uses the value-drift test of ``data_drift`` on that column (``method``, else the one
    Evidently would pick for the column's kind and size). None when there are too few
    predictions to test.

    Raises:
        DataError: scores of the wrong shape for the task.
    """
    if task == "multiclass":
        ref, cur = (_predicted_class(s) for s in (reference_scores, current_scores))
        result = data_drift(
            pl.DataFrame({"predicted_class": ref}),
            pl.DataFrame({"predicted_class": cur}),
            numeric=[],
            categorical=["predicted_class"],
            config=DriftConfig(cat_method=method),
        )
    else:
        ref_col, cur_col = (_prediction(s, task) for s in (reference_scores, current_scores))
        result = data_drift(
            pl.DataFrame({"prediction": ref_col}),
            pl.DataFrame({"prediction": cur_col}),
            numeric=["prediction"],
            config=DriftConfig(num_method=method),
        )
    return result.columns[0] if result.columns else None


def _predicted_class(scores: np.ndarray) -> list[str]:
    """The arg-max class of each row of (n, k) probabilities, as text (a category)."""
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2:
        raise DataError(f"multiclass scores must have shape (n, k), got {s.shape}")
    return [str(c) for c in np.argmax(s, axis=1).tolist()]


def _prediction(scores: np.ndarray, task: Task) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1:
        raise DataError(f"{task} scores must have shape (n,), got {s.shape}")
    return s


def model_performance(
    model: Scorer,
    frame: pl.DataFrame,
    target: str,
    *,
    task: Task = "binary",
    classes: Sequence[Any] | None = None,
) -> PerformanceResult:
    """Score a model on labelled rows: every metric of its task (binary ROC AUC, PR AUC, F1,
    log loss; F1 at 0.5; multiclass macro ROC AUC, log loss, macro F1; regression RMSE, MAE, R²).

    ``classes`` defaults to the model's own (``TrainedModel.classes``).

    Raises:
        SchemaError: the target column is missing.
        DataError: no rows, or labels that do not fit the task.
    """
    if target not in frame.columns:
        raise SchemaError(f"target column {target!r} missing; columns: {frame.columns}")
    labelled = frame.filter(pl.col(target).is_not_null())
    if labelled.height == 0:
        raise DataError("no labelled rows to score")
    classes = classes if classes is not None else getattr(model, "classes", None)
    y = encode_labels(labelled[target], task, classes)
    return score_predictions(y, model.predict_scores(labelled), task=task)


def score_predictions(
    y_true: np.ndarray, scores: np.ndarray, *, task: Task = "binary"
) -> PerformanceResult:
    """Metrics of scores against encoded labels (see ``model_performance``)."""
    y = encode_labels(y_true, task) if task == "binary" else np.asarray(y_true)
    return PerformanceResult(
        task=task,
        n_rows=len(y),
        metrics=all_values(task, y, scores),
        positive_rate=float(y.mean()) if task == "binary" else None,
    )
