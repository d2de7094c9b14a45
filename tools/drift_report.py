"""Evidently's HTML drift report, for people, and the report files' life: rendered after the
decision (``tools.drift.data_drift`` computes the decision's numbers natively) with the same
columns, methods and sampling, stored, read back and pruned.

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
from collections.abc import Collection
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from driftpilot.core.errors import DataError
from tools.drift import DriftConfig, _methods_for_size, _sampled, require_columns
from tools.drift_stats import Frame


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
