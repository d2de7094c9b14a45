"""Drift tools: has the data (or the model's behaviour on it) moved since the reference?

Wraps Evidently 0.7 (imported lazily: it takes seconds). Polars in, pandas only at the
Evidently boundary. Evidently picks a method per column: below 1,000 reference rows K-S
(numeric) and chi-square (categorical) p-values, drifted when p < 0.05; above, normed
Wasserstein (numeric) and Jensen-Shannon (categorical) distances, drifted when >= 0.1.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from driftpilot.errors import DataError, SchemaError


class DriftConfig(BaseModel):
    """Options of the data-drift check; unset values use Evidently's defaults."""

    drift_share: float = Field(0.5, description="Dataset drift when this share of columns drift.")
    num_method: str | None = Field(None, description="Stat test for numeric columns, e.g. 'psi'.")
    cat_method: str | None = Field(None, description="Stat test for categorical columns.")
    threshold: float | None = Field(None, description="Threshold for every column's test.")
    max_rows: int | None = Field(
        None, description="Uniformly subsample each side to this many rows (speed), if set."
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
    report_path: str | None = Field(None, description="Evidently HTML report, if written.")
    elapsed_s: float = Field(description="Wall time of the check.")

    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]


class PerformanceResult(BaseModel):
    """Quality of a binary classifier's scores on labelled rows."""

    n_rows: int
    positive_rate: float = Field(description="Share of label 1 in the rows.")
    roc_auc: float | None = Field(description="ROC AUC; None when only one class is present.")
    pr_auc: float | None = Field(description="Average precision; None with one class.")
    f1: float = Field(description="F1 at the decision threshold.")
    log_loss: float = Field(description="Binary cross-entropy of the scores.")
    threshold: float = Field(description="Score above which a row is predicted positive.")


class Scorer(Protocol):
    """Anything that returns P(label = 1) per row of a Polars frame."""

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray: ...


_METRIC_NAME = re.compile(r"ValueDrift\(column=(?P<column>.*),method=(?P<method>.*),threshold=")


def data_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    *,
    numeric: list[str],
    categorical: list[str] | None = None,
    config: DriftConfig | None = None,
    report_path: Path | None = None,
    seed: int = 0,
) -> DriftResult:
    """Run Evidently's data-drift preset on the given feature columns.

    Args:
        reference: the model's reference window (e.g. its training data).
        current: the new batch.
        numeric: numeric feature columns to compare.
        categorical: categorical feature columns to compare.
        config: drift share, methods, thresholds, optional subsampling.
        report_path: write Evidently's interactive HTML report there (None: no report).
        seed: subsampling seed.

    Returns:
        DriftResult with per-column method, score, threshold and verdict, the share of
        drifted columns, and the HTML report path.

    Raises:
        SchemaError: a requested column is missing on either side.
        DataError: either side is empty.
    """
    cfg = config or DriftConfig()
    categorical = categorical or []
    columns = [*numeric, *categorical]
    _require(reference, columns, "reference")
    _require(current, columns, "current")
    started = time.perf_counter()
    ref_pd = _to_pandas(reference, columns, cfg.max_rows, seed)
    cur_pd = _to_pandas(current, columns, cfg.max_rows, seed)
    snapshot = _run_preset(ref_pd, cur_pd, numeric, categorical, cfg)
    result = _parse_snapshot(snapshot.dict(), cfg.drift_share)
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(report_path))
    return result.model_copy(
        update={
            "n_reference": reference.height,
            "n_current": current.height,
            "report_path": str(report_path) if report_path else None,
            "elapsed_s": round(time.perf_counter() - started, 3),
        }
    )


def _require(frame: pl.DataFrame, columns: list[str], side: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(f"{side} data lacks columns {missing}")
    if frame.height == 0:
        raise DataError(f"{side} data is empty")
    if not columns:
        raise SchemaError("no columns to compare: pass numeric and/or categorical columns")


def _to_pandas(frame: pl.DataFrame, columns: list[str], max_rows: int | None, seed: int) -> Any:
    picked = frame.select(columns)
    if max_rows is not None and picked.height > max_rows:
        picked = picked.sample(n=max_rows, seed=seed)
    return picked.to_pandas()


def _run_preset(
    ref_pd: Any, cur_pd: Any, numeric: list[str], categorical: list[str], cfg: DriftConfig
) -> Any:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    preset = DataDriftPreset(
        drift_share=cfg.drift_share,
        num_method=cfg.num_method,
        cat_method=cfg.cat_method,
        threshold=cfg.threshold,
    )
    return Report([preset]).run(
        Dataset.from_pandas(cur_pd, data_definition=definition),
        Dataset.from_pandas(ref_pd, data_definition=definition),
    )


def _is_p_value(method: str) -> bool:
    return "p_value" in method.lower().replace("-", "_")


def _parse_snapshot(snapshot: dict[str, Any], drift_share: float) -> DriftResult:
    columns: list[ColumnDrift] = []
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if not config["type"].endswith(":ValueDrift"):
            continue
        method, threshold, score = (
            config["method"],
            float(config["threshold"]),
            float(metric["value"]),
        )
        drifted = score < threshold if _is_p_value(method) else score >= threshold
        columns.append(
            ColumnDrift(
                column=config["column"],
                method=method,
                score=score,
                threshold=threshold,
                drifted=drifted,
            )
        )
    if not columns:
        raise DataError("Evidently returned no per-column drift results")
    columns.sort(key=lambda c: (not c.drifted, c.score if _is_p_value(c.method) else -c.score))
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


def prediction_drift(
    reference_scores: np.ndarray, current_scores: np.ndarray, *, method: str | None = None
) -> ColumnDrift:
    """Drift of a model's predicted probabilities between reference and current rows.

    Uses Evidently's value-drift test on the score column (default method chosen by
    Evidently for a numeric column of that size).
    """
    ref = pl.DataFrame({"prediction": np.asarray(reference_scores, dtype=float)})
    cur = pl.DataFrame({"prediction": np.asarray(current_scores, dtype=float)})
    result = data_drift(ref, cur, numeric=["prediction"], config=DriftConfig(num_method=method))
    return result.columns[0]


def model_performance(
    model: Scorer, frame: pl.DataFrame, target: str, *, threshold: float = 0.5
) -> PerformanceResult:
    """Score a model on labelled rows: ROC AUC, PR AUC, F1 and log loss.

    Raises:
        SchemaError: the target column is missing.
        DataError: no rows, or labels other than 0/1.
    """
    if target not in frame.columns:
        raise SchemaError(f"target column {target!r} missing; columns: {frame.columns}")
    labelled = frame.filter(pl.col(target).is_not_null())
    if labelled.height == 0:
        raise DataError("no labelled rows to score")
    return score_predictions(labelled[target].to_numpy(), model.predict_proba(labelled), threshold)


def score_predictions(
    y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> PerformanceResult:
    """Metrics of probability scores against 0/1 labels (see ``model_performance``)."""
    from sklearn.metrics import average_precision_score, f1_score, log_loss, roc_auc_score

    y = np.asarray(y_true).astype(int)
    if not set(np.unique(y)) <= {0, 1}:
        raise DataError(f"labels must be 0/1, got values {sorted(set(np.unique(y)))[:5]}")
    p = np.clip(np.asarray(scores, dtype=float), 1e-7, 1 - 1e-7)
    both = len(np.unique(y)) == 2
    return PerformanceResult(
        n_rows=len(y),
        positive_rate=float(y.mean()),
        roc_auc=float(roc_auc_score(y, p)) if both else None,
        pr_auc=float(average_precision_score(y, p)) if both else None,
        f1=float(f1_score(y, p >= threshold, zero_division=0)),
        log_loss=float(log_loss(y, p, labels=[0, 1])),
        threshold=threshold,
    )
