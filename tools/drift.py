"""Drift tools: has the data (or the model's behaviour on it) moved since the reference?

The decision's numbers are computed natively (``tools.drift_stats``: Polars value counts,
NumPy, SciPy's distributions), with Evidently 0.7's default methods and thresholds: below
1,000 (cleaned) reference values K-S (numeric) and chi-square / Z (categorical or few values)
p-values, drifted when p < 0.05; above, normed Wasserstein (numeric) and Jensen-Shannon
(categorical or few values) distances, drifted when >= 0.1. A batch under 1,000 rows is
tested with the p-values whatever the reference size. ``tests/unit/test_drift_parity.py``
checks every column of every shipped dataset against Evidently's own report.

Evidently (imported lazily: it takes seconds) only renders the HTML report, for people:
``render_report``, after the decision; ``data_drift(report_path=...)`` still writes one for
old callers, with the same native numbers.

A column with too few values on either side (an all-null sparse column in a small batch, a
batch of three rows) is not tested: Evidently refuses empty columns, and a test over a couple
of values says nothing. It is listed in ``skipped_columns`` with the reason, and the drift
share counts only the columns that were tested.

Reports: a path ending in ``.gz`` gets the HTML gzip-compressed (measured on the flights
report, 9,000 x 16,000 rows: 4.6 MB of HTML, 1.3 MB at level 6 in 0.3 s, read back in 0.06 s;
level 9 gains nothing); the result carries the sha256 of the HTML itself (Evidently's HTML
differs run to run, so it is this file's hash), so the audit can check a kept report.
``report_html`` reads either form back, ``readable_report`` gives a plain copy to attach,
``prune_reports`` applies the retention.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
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


def render_report(
    reference: Frame,
    current: Frame,
    *,
    numeric: list[str],
    categorical: list[str] | None = None,
    config: DriftConfig | None = None,
    path: Path,
    seed: int = 0,
) -> str | None:
    """Render Evidently's interactive data-drift report of a comparison to ``path`` (gzip when
    the name ends in ``.gz``), with the same columns, methods and sampling as ``data_drift``,
    and return the sha256 of its HTML; None (nothing written) when no column can be tested.

    The report is for people: no decision waits for it, so callers render it after the
    decision (``driftpilot.runs.reports``).

    Raises:
        SchemaError: a requested column is missing on either side.
        DataError: either side is empty, or Evidently cannot compare the data.
    """
    cfg = config or DriftConfig()
    categorical = categorical or []
    columns = [*numeric, *categorical]
    n_ref = require_columns(reference, columns, "reference")
    n_cur = require_columns(current, columns, "current")
    ref_pd = _to_pandas(reference, columns, cfg.max_rows, seed, n_ref)
    cur_pd = _to_pandas(current, columns, cfg.max_rows, seed, n_cur)
    cfg = _methods_for_size(cfg, len(cur_pd))
    skipped = _untestable(ref_pd, cur_pd, columns, cfg.min_values)
    tested_num = [c for c in numeric if c not in skipped]
    tested_cat = [c for c in categorical if c not in skipped]
    if not (tested_num or tested_cat):
        return None
    with _one_blas_thread():
        html = _report_html(ref_pd, cur_pd, tested_num, tested_cat, cfg)
    return _write_report(html, path)


def _write_report(text: str, path: Path) -> str:
    """Write a standalone HTML report (gzip when ``path`` ends in .gz) and return the
    sha256 of the HTML. Written to a temporary name and renamed: a reader (the chat, the
    retention) never sees half a report."""
    html = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if path.suffix == ".gz":
        # mtime 0: the same report compresses to the same bytes (no timestamp in the header).
        partial.write_bytes(gzip.compress(html, compresslevel=6, mtime=0))
    else:
        partial.write_bytes(html)
    os.replace(partial, path)
    return hashlib.sha256(html).hexdigest()


def report_html(path: Path | str) -> bytes:
    """The HTML of a report written by ``data_drift``, decompressed if it was stored gzip.

    Raises:
        DataError: the file is missing or is not valid gzip.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix == ".gz" else data
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read report {path}: {exc}") from exc


def readable_report(path: Path | str, into: Path) -> Path:
    """A path to the report as plain HTML, for whatever attaches or serves the file as is:
    ``path`` itself when it is not compressed, else a decompressed copy in ``into`` (made once
    per report, replaced if the report is newer).

    Raises:
        DataError: the report cannot be read.
    """
    path = Path(path)
    if path.suffix != ".gz":
        return path
    plain = into / path.with_suffix("").name
    if not plain.is_file() or plain.stat().st_mtime < path.stat().st_mtime:
        into.mkdir(parents=True, exist_ok=True)
        partial = plain.with_name(f".{plain.name}.partial")
        partial.write_bytes(report_html(path))
        os.replace(partial, plain)
    return plain


def prune_reports(folder: Path, keep: int, protected: Collection[Path | str]) -> list[Path]:
    """Apply the report retention to one model's report folder: the ``keep`` newest reports
    stay, and so does every ``protected`` one (e.g. the reports of runs that moved the
    champion); the others are deleted. ``keep`` 0 keeps everything.

    Returns:
        The deleted files, oldest first.
    """
    if keep <= 0 or not folder.is_dir():
        return []
    reports = [p for p in folder.iterdir() if p.name.endswith((".html", ".gz"))]
    reports.sort(key=lambda p: (_mtime(p), p.name), reverse=True)
    spared = {Path(p).resolve() for p in protected}
    doomed = [p for p in reports[keep:] if p.resolve() not in spared]
    for report in doomed:
        report.unlink(missing_ok=True)  # a concurrent prune of the same folder removed it
    return doomed[::-1]


def _mtime(path: Path) -> float:
    """A report's age for the retention; one a concurrent prune just removed sorts oldest."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _one_blas_thread() -> AbstractContextManager[Any]:
    """BLAS (OpenBLAS under numpy and scipy) limited to one thread while Evidently works.

    Evidently makes many small BLAS calls (correlations, distances, plot data); after each
    one OpenBLAS's worker threads busy-wait. Profiled on a 2-core machine: a second thread
    spun ~1.5 CPU s during a 2.2 s report on 20k x 16 rows (40 % of the CPU of a monitor
    run), with no gain in wall time. One thread also makes the scores independent of the
    core count (a multi-threaded dot product sums in another order: last-digit changes)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


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


def _untestable(ref_pd: Any, cur_pd: Any, columns: list[str], min_values: int) -> dict[str, str]:
    """Columns with fewer than ``min_values`` non-null values on a side, with the reason.

    Counted on the pandas frames Evidently will see (nulls and NaN both count as missing)."""
    skipped = {}
    for column in columns:
        for side, frame in (("batch", cur_pd), ("reference", ref_pd)):
            n = int(frame[column].notna().sum())
            if n < min_values:
                what = "every value is null" if n == 0 else f"only {n} non-null value(s)"
                skipped[column] = f"{what} in the {side} (a drift test needs {min_values})"
                break
    return skipped


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


def _to_pandas(
    frame: Frame, columns: list[str], max_rows: int | None, seed: int, height: int
) -> Any:
    """The rows Evidently sees, as pandas: ``_sampled``'s (a scan collects only those)."""
    return (
        _sampled(frame, columns, max_rows, seed, height)
        .lazy()
        .select(columns)
        .collect()
        .to_pandas()
    )


def _report_html(
    ref_pd: Any, cur_pd: Any, numeric: list[str], categorical: list[str], cfg: DriftConfig
) -> str:
    """Evidently's data-drift report as standalone HTML.

    Rendered from the two metrics whose widgets the 0.7 ``DataDriftPreset`` shows (its
    ``render`` returns ``DatasetDriftMetric`` + ``DataDriftTable``, Evidently's own "legacy"
    metrics): the preset itself also computes and draws a ``ValueDrift`` metric per column
    and then discards those widgets, and computes every column's test a third time. The same
    drift widgets, with the same methods and thresholds, in about half the time (measured on
    20k x 16 flights: 3.7-4.2 s against 7.3-8.0 s on a loaded 2-core machine); the report
    lacks only the preset's list of per-column test results, which its table repeats.

    Raises:
        DataError: Evidently cannot compare the data.
    """
    from evidently.legacy.metric_preset import DataDriftPreset
    from evidently.legacy.pipeline.column_mapping import ColumnMapping
    from evidently.legacy.report import Report

    # No column is a target, a prediction or a time: every one given is a feature (a column
    # named 'prediction', as prediction_drift's, would otherwise be read as the prediction).
    mapping = ColumnMapping(
        target=None,
        prediction=None,
        datetime=None,
        numerical_features=numeric,
        categorical_features=categorical,
    )
    preset = DataDriftPreset(
        drift_share=cfg.drift_share,
        num_stattest=cfg.num_method,
        cat_stattest=cfg.cat_method,
        stattest_threshold=cfg.threshold,
    )
    picked = [*numeric, *categorical]
    report = Report(metrics=[preset])
    try:
        report.run(
            reference_data=ref_pd[picked], current_data=cur_pd[picked], column_mapping=mapping
        )
        return str(report.get_html())
    except ValueError as exc:  # Evidently's refusals are plain ValueErrors
        raise DataError(f"Evidently cannot compare the batch: {exc}") from exc


# Evidently names a column's method as it was given ('ks') or, when it chose the method, by
# its display name ('K-S p_value'). The score of these tests is a p-value (smaller is more
# drifted); every other method's score is a distance (larger is more drifted).
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
