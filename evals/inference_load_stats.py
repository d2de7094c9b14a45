"""The inference load test's pure parts (``evals.inference_load``; tested in
tests/unit/test_inference_load.py): percentiles of acknowledgement latencies, the memory
series' slope, the exactly-once check of acknowledged rows against the store's rows and
windows, and the delay from a window's last row to its run's decision.

Nothing here reads a clock, a file or a server: the harness reads them and passes plain
values, so a test can hand in a tiny fake dataset.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by the nearest-rank method: the smallest value with at
    least q % of the values at or below it (a p99 of 100 values is the 99th smallest, a real
    observation, never interpolated). None for no values.

    Raises:
        ValueError: ``q`` is outside [0, 100].
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values_ms: Sequence[float]) -> dict[str, Any]:
    """Count, p50/p95/p99, max and mean of latencies in ms (rounded to 0.1 ms)."""

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 1)

    return {
        "n": len(values_ms),
        "p50_ms": r(percentile(values_ms, 50)),
        "p95_ms": r(percentile(values_ms, 95)),
        "p99_ms": r(percentile(values_ms, 99)),
        "max_ms": r(max(values_ms) if values_ms else None),
        "mean_ms": r(sum(values_ms) / len(values_ms) if values_ms else None),
    }


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float | None:
    """The least-squares slope of (seconds, value) points, per minute; None with fewer than
    two distinct times. "Memory flat" is a slope near 0 MB/min."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 60


def memory_summary(samples: Sequence[tuple[float, float]], skip_s: float = 0.0) -> dict[str, Any]:
    """Start, end, max (MB) and slopes (MB per minute) of one process's RSS samples (seconds
    since it started, MB): after its first ``skip_s`` seconds (imports and first requests warm
    it up), and over the second half of its samples (a process still filling its caches
    grows and then levels off; a leak keeps growing to the end)."""
    if not samples:
        return {"samples": 0}
    steady = [(t, v) for t, v in samples if t >= samples[0][0] + skip_s]
    slope = slope_per_minute(steady)
    late = slope_per_minute(samples[len(samples) // 2 :])
    return {
        "samples": len(samples),
        "seconds": round(samples[-1][0] - samples[0][0], 1),
        "start_mb": round(samples[0][1], 1),
        "end_mb": round(samples[-1][1], 1),
        "max_mb": round(max(v for _, v in samples), 1),
        "slope_mb_per_min": None if slope is None else round(slope, 2),
        "slope_from_s": skip_s,
        "slope_second_half_mb_per_min": None if late is None else round(late, 2),
    }


@dataclass(frozen=True)
class StoredRow:
    """One row of inference_rows as the check needs it."""

    id: int
    row_id: str


@dataclass(frozen=True)
class StoredWindow:
    """One row of inference_windows as the check needs it."""

    number: int
    first_id: int
    last_id: int
    n_rows: int


def exactly_once(
    acknowledged: Iterable[str],
    rows: Sequence[StoredRow],
    windows: Sequence[StoredWindow],
) -> dict[str, Any]:
    """Every acknowledged row id is stored once and sits in exactly one window.

    A window is an id range of the model's rows. Checks: each acknowledged row id is stored
    (else ``lost``); no row id is stored twice (``doubled``); every stored row's id is inside
    a window's range (``unwindowed``: still open, or in a gap between windows); a window's
    ``n_rows`` is the number of stored rows its range holds (``count_mismatch``: a row
    committed inside a closed range, or one missing); window id ranges do not overlap
    (``overlapping``). ``ok`` is all of them empty/zero. Examples (up to 5) name the
    offenders."""
    stored = Counter(r.row_id for r in rows)
    acked = set(acknowledged)
    lost = sorted(acked - stored.keys())
    doubled = sorted(k for k, n in stored.items() if n > 1)
    ordered = sorted(windows, key=lambda w: w.first_id)
    overlapping = [b.number for a, b in itertools.pairwise(ordered) if b.first_id <= a.last_id]
    firsts = [w.first_id for w in ordered]
    counts: Counter[int] = Counter()
    unwindowed = []
    for r in rows:
        at = bisect_right(firsts, r.id) - 1
        if at >= 0 and r.id <= ordered[at].last_id:
            counts[ordered[at].number] += 1
        else:
            unwindowed.append(r.row_id)
    mismatch = [w.number for w in windows if counts.get(w.number, 0) != w.n_rows]
    problems: dict[str, list[Any]] = {
        "lost": lost,
        "doubled": doubled,
        "unwindowed": unwindowed,
        "count_mismatch": mismatch,
        "overlapping": overlapping,
    }
    out: dict[str, Any] = {
        "acknowledged": len(acked),
        "stored": len(rows),
        "stored_not_acknowledged": len(stored.keys() - acked),
        "windows": len(windows),
        "ok": not any(problems.values()),
    }
    for name, found in problems.items():
        out[name] = len(found)
        if found:
            out[f"{name}_examples"] = found[:5]
    return out


def seconds_between(earlier: str, later: str) -> float:
    """Seconds from one store time (ISO 8601, as ``driftpilot.store.engine.stamp`` writes it)
    to another."""
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


DELAYS = {
    "to_decision": ("last_received_at", "decided_at"),
    "to_run_end": ("last_received_at", "ended_at"),
    "to_run_start": ("last_received_at", "started_at"),
    "run_start_to_decision": ("started_at", "decided_at"),
}


def decision_delays(windows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """From each window's last row to its run's decision (and to its run's start and end),
    and the run's own part: from its start to its decision.

    ``windows``: dicts with ``last_received_at`` (the window's last row's received_at) and,
    None while they have not happened, ``started_at`` (its run's first audited step),
    ``decided_at`` (its run's decision) and ``ended_at`` (its run's end). Returns p50/p95/max
    of each delay in seconds (``DELAYS``) and how many windows had none yet."""

    def summary(start: str, end: str) -> dict[str, Any]:
        delays = [
            seconds_between(w[start], w[end])
            for w in windows
            if w.get(start) is not None and w.get(end) is not None
        ]
        p50, p95 = percentile(delays, 50), percentile(delays, 95)
        return {
            "n": len(delays),
            "missing": len(windows) - len(delays),
            "p50_s": None if p50 is None else round(p50, 2),
            "p95_s": None if p95 is None else round(p95, 2),
            "max_s": round(max(delays), 2) if delays else None,
        }

    return {name: summary(*pair) for name, pair in DELAYS.items()}


def rate_series(acks: Sequence[tuple[float, int]], bucket_s: float = 10.0) -> list[float]:
    """Rows acknowledged per second in consecutive buckets of ``bucket_s`` (``acks``: (seconds
    since the load started, rows acknowledged then)); the last, partial bucket is left out."""
    if not acks:
        return []
    end = max(t for t, _ in acks)
    buckets = [0] * int(end // bucket_s)
    for t, n in acks:
        i = int(t // bucket_s)
        if i < len(buckets):
            buckets[i] += n
    return [round(b / bucket_s, 1) for b in buckets]
