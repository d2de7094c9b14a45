"""Smoke test of the inference load test's pure parts (no timing is asserted: the load is
measured by ``python -m evals.inference_load``, never held by a test)."""

from __future__ import annotations

from typing import Any

import pytest

from evals.inference_load import acknowledged_ids, run_decisions, window_delays, window_table
from evals.inference_load_client import request_rows, row_id
from evals.inference_load_stats import (
    StoredRow,
    StoredWindow,
    decision_delays,
    exactly_once,
    latency_summary,
    memory_summary,
    percentile,
    rate_series,
    slope_per_minute,
)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled order does not matter
    assert percentile(values[::-1], 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_latency_summary_names_the_tail() -> None:
    s = latency_summary([10.0] * 98 + [60.0, 300.0])
    assert (s["n"], s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"]) == (
        100,
        10.0,
        10.0,
        60.0,
        300.0,
    )
    assert latency_summary([])["p99_ms"] is None


def test_memory_slope_is_flat_or_growing() -> None:
    flat = [(float(t), 300.0 + (t % 2)) for t in range(0, 600, 5)]
    growing = [(float(t), 300.0 + t / 60 * 4) for t in range(0, 600, 5)]  # 4 MB per minute
    assert abs(slope_per_minute(flat) or 0.0) < 0.1
    assert slope_per_minute(growing) == pytest.approx(4.0)
    assert slope_per_minute([(1.0, 5.0)]) is None
    # A warm-up jump in the first minute is left out of the slope, not out of max/start.
    warm = [(0.0, 100.0), (30.0, 250.0), *[(float(t), 300.0) for t in range(60, 600, 5)]]
    s = memory_summary(warm, skip_s=60)
    assert s["start_mb"] == 100.0 and s["max_mb"] == 300.0 and s["slope_mb_per_min"] == 0.0
    # Growth that levels off is flat over the second half; a leak is not.
    levels = [(float(t), 200.0 + min(t, 200) / 10) for t in range(0, 600, 5)]
    assert memory_summary(levels)["slope_second_half_mb_per_min"] == 0.0
    assert memory_summary(growing)["slope_second_half_mb_per_min"] == pytest.approx(4.0)


def rows_and_windows() -> tuple[list[StoredRow], list[StoredWindow]]:
    rows = [StoredRow(i, f"r{i}") for i in range(1, 7)]
    return rows, [StoredWindow(1, 1, 3, 3), StoredWindow(2, 4, 6, 3)]


def test_exactly_once_passes_a_clean_log() -> None:
    rows, windows = rows_and_windows()
    check = exactly_once([f"r{i}" for i in range(1, 6)], rows, windows)
    assert check["ok"] and check["stored_not_acknowledged"] == 1 and check["lost"] == 0


def test_exactly_once_finds_lost_doubled_and_misplaced_rows() -> None:
    rows, windows = rows_and_windows()
    lost = exactly_once(["r1", "r9"], rows, windows)
    assert not lost["ok"] and lost["lost"] == 1 and lost["lost_examples"] == ["r9"]
    doubled = exactly_once(["r1"], [*rows, StoredRow(7, "r2")], windows)
    assert doubled["doubled_examples"] == ["r2"]
    assert doubled["unwindowed"] == 1  # id 7 > last_id 6: open
    still_open = exactly_once(["r1"], [*rows, StoredRow(7, "r7")], windows)
    assert still_open["unwindowed_examples"] == ["r7"] and not still_open["ok"]
    late = exactly_once(["r1"], [*rows, StoredRow(5, "r5b")], windows)  # inside window 2
    assert late["count_mismatch_examples"] == [2] and not late["ok"]
    missing = exactly_once(["r1"], rows[:5], windows)
    assert missing["count_mismatch_examples"] == [2]
    gap = exactly_once(["r1"], rows, [StoredWindow(1, 1, 2, 2), StoredWindow(2, 4, 6, 3)])
    assert gap["unwindowed_examples"] == ["r3"]
    overlap = exactly_once(["r1"], rows, [StoredWindow(1, 1, 4, 3), StoredWindow(2, 4, 6, 3)])
    assert overlap["overlapping_examples"] == [2]


def test_acknowledged_ids_are_the_ranges_of_acknowledged_requests() -> None:
    requests: list[dict[str, Any]] = [
        {"client": 0, "first": 0, "n": 2, "ack": 1.0},
        {"client": 1, "first": 4, "n": 1, "ack": 1.0},
        {"client": 1, "first": 5, "n": 3, "error": "RuntimeError: not acknowledged"},
    ]
    assert acknowledged_ids(requests) == [row_id(0, 0), row_id(0, 1), row_id(1, 4)]
    pool = [{"x": 1}, {"x": 2}, {"x": 3}]
    sent = request_rows(pool, 1, offset=2, first=4, n=2)
    assert sent == [{"x": 1, "row_id": row_id(1, 4)}, {"x": 2, "row_id": row_id(1, 5)}]


class R:
    """A result row read from the store (attribute access, as SQLAlchemy's)."""

    def __init__(self, **kw: object) -> None:
        self.__dict__.update(kw)


def test_decision_delay_runs_from_the_windows_last_row() -> None:
    t = "2026-12-07T06:00:{:02d}.000000+00:00".format
    store: dict[str, Any] = {
        "rows": [R(id=1, received_at=t(0)), R(id=2, received_at=t(1))],
        "windows": [R(number=1, first_id=1, last_id=2, run_id="a", reason="rows")],
        "runs": [R(id="a", status="completed", updated_at=t(9))],
        "started": {"a": t(2)},
        "decisions": [
            ("a", "ingestion", "accept", t(2)),
            ("a", "drift_analyst", "monitor", t(4)),
            ("a", "cicd", "none", t(8)),
        ],
    }
    assert run_decisions(store["decisions"]) == {"a": ("monitor", t(4))}
    delays = decision_delays(window_delays(store))
    assert delays["to_decision"]["p95_s"] == 3.0 and delays["to_run_end"]["max_s"] == 8.0
    assert delays["to_run_start"]["p50_s"] == 1.0
    assert delays["run_start_to_decision"]["p50_s"] == 2.0
    assert window_table(window_delays(store), store) == [[1, "rows", "monitor", 1.0, 3.0, 2.0]]
    undecided = decision_delays([{"last_received_at": t(0), "decided_at": None}])
    assert undecided["to_decision"]["missing"] == 1 and undecided["to_decision"]["p95_s"] is None


def test_rate_series_counts_full_buckets() -> None:
    acks = [(0.5, 100), (9.9, 100), (10.1, 300), (25.0, 50)]
    assert rate_series(acks, bucket_s=10) == [20.0, 30.0]
