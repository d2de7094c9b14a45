"""The loop benchmark's pure helpers (split from ``evals.bench_loop``, tested in
tests/unit/test_bench_loop.py): resampling a table to a batch size with distinct rows, the
ratios and summaries of measured seconds, policy merging, and issue 23's targets with the
one-line machine facts the report prints.
"""

from __future__ import annotations

import resource
import statistics
from typing import Any

import polars as pl

TARGET_OVERHEAD = 0.25  # (a): the decision on native statistics, a quarter of Evidently's report
TARGET_WITH_REPORT = 1.1  # (a'): the decision and the report rendered after it
BASELINE_RUNS_PER_HOUR = 1360  # (c): measured at a1f87a4 (issue 23)
TARGET_RUNS_PER_HOUR = 4 * BASELINE_RUNS_PER_HOUR
TARGET_1M_S = 4.0  # (d): a 1M-row monitor run
TARGET_RETRAIN_S = 60.0  # (b): drifted batch to promoted challenger, 2 cores


def ratio(whole: float, part: float) -> float | None:
    """whole / part rounded to 3 places; None when the part is not positive."""
    return round(whole / part, 3) if part > 0 else None


def summarize(times: list[float]) -> dict[str, Any]:
    """Median, min and max of a list of seconds, and how many there were."""
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "repeats": len(times),
    }


def resample(
    frame: pl.DataFrame, n: int, *, seed: int, time_col: str | None = None
) -> pl.DataFrame:
    """``n`` rows of ``frame`` drawn with a fixed seed: without replacement when the frame is
    big enough, else whole copies of the frame plus a sample of the rest (1M rows from 336k
    flights, made distinct by ``distinct``); sorted by ``time_col`` if given."""
    if n <= frame.height:
        out = frame.sample(n=n, seed=seed)
    else:
        copies, rest = divmod(n, frame.height)
        out = distinct(pl.concat([frame] * copies + [frame.sample(n=rest, seed=seed)]))
    return out.sort(time_col) if time_col else out


def distinct(frame: pl.DataFrame, offset: int = 0) -> pl.DataFrame:
    """``frame`` with every row made unique: row i's ``distance`` moves by (i + offset) x 1e-7
    miles (at most 1 mile in 10M rows, against a spread of ~700). A batch resampled from fewer
    real rows repeats each one, and a batch that repeats rows is quarantined as a join bug
    (tools.defects ``duplicate_rows``); real batches do not repeat their rows."""
    row = pl.int_range(pl.len(), dtype=pl.Int64) + offset
    return frame.with_columns(pl.col("distance") + row.cast(pl.Float64) * 1e-7)


def without_row(frame: pl.DataFrame, i: int) -> pl.DataFrame:
    """The frame without its row ``i``: the same batch with another content hash (a batch
    seen before is quarantined as a duplicate)."""
    i %= frame.height
    return pl.concat([frame.head(i), frame.slice(i + 1)])


def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    """Policy sections merged key by key (later parts win)."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = {**out.get(key, {}), **value}
    return out


def runs_per_hour(seconds: float) -> float | None:
    return round(3600 / seconds, 1) if seconds > 0 else None


def cpu_seconds() -> float:
    """User + system CPU of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def tool_seconds(rows: list[Any]) -> dict[str, float]:
    """Seconds per tool of a run's audited tool calls (LLM tool calls, latency 0, left out)."""
    out: dict[str, float] = {}
    for row in rows:
        if row.tool.startswith("llm:"):
            continue
        out[row.tool] = out.get(row.tool, 0.0) + row.latency_ms / 1000
    return {k: round(v, 4) for k, v in out.items()}


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 23's targets from the measurements: value, target, met (None: not measured)."""
    over = results["overhead"]

    def at_most(value: float | None, limit: float) -> dict[str, Any]:
        return {
            "value": value,
            "target": f"<= {limit}",
            "met": None if value is None else value <= limit,
        }

    million = next((r for r in results.get("rows", []) if r["batch_rows"] >= 1_000_000), None)
    rate = over.get("runs_per_hour_per_core")
    out = {
        "a_monitor_run_over_raw_report": at_most(over.get("ratio"), TARGET_OVERHEAD),
        "a_prime_with_report_over_raw_report": at_most(
            over.get("ratio_with_report"), TARGET_WITH_REPORT
        ),
        "c_runs_per_hour_per_core": {
            "value": rate,
            "target": f">= {TARGET_RUNS_PER_HOUR} (4 x {BASELINE_RUNS_PER_HOUR})",
            "met": None if rate is None else rate >= TARGET_RUNS_PER_HOUR,
        },
        "d_1m_rows_s": at_most(million["loop"]["median_s"] if million else None, TARGET_1M_S),
    }
    for r in results.get("retrain", []):
        out[f"b_retrain_{r['batch_rows']}_rows_s"] = {
            "value": r["loop"]["median_s"],
            "target": f"<= {TARGET_RETRAIN_S}",
            "met": r["met"],
        }
    return out


def _verdict(met: bool | None) -> str:
    return "not measured" if met is None else ("met" if met else "MISSED")


def machine_line(facts: dict[str, Any]) -> str:
    """The machine facts a reader needs beside the numbers, on one line."""
    load = ", ".join(f"{x:.2f}" for x in facts.get("loadavg", ()))
    return (
        f"{facts.get('processor')}, {facts.get('usable_cores')} of {facts.get('cores')} cores "
        f"usable, Polars threads {facts.get('polars_threads')}, Python {facts.get('python')}, "
        f"load {load} at start, {facts.get('measured_at')}"
    )


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _parts(parts: dict[str, float]) -> str:
    return ", ".join(f"{k.split('.')[-1]} {v:.2f}" for k, v in parts.items())


def _median_parts(items: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for item in items for k in item}
    return {k: round(statistics.median(i.get(k, 0.0) for i in items), 4) for k in sorted(keys)}
