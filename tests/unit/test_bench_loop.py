"""Smoke test of the loop benchmark's helpers (no timing is asserted: timings are measured by
``python -m evals.bench_loop``, never held by tests)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl

from evals import bench_helpers, bench_loop
from tools.data import content_hash


def frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({"t": list(range(n)), "distance": [i * 0.5 for i in range(n)]})


def test_resample_is_seeded_and_reaches_any_size() -> None:
    base = frame(100).sample(fraction=1.0, shuffle=True, seed=3)
    small = bench_helpers.resample(base, 30, seed=1, time_col="t")
    assert small.height == 30 and small["t"].is_sorted()
    assert small.equals(bench_helpers.resample(base, 30, seed=1, time_col="t"))
    big = bench_helpers.resample(base, 250, seed=1)
    assert big.height == 250
    assert big["t"].value_counts()["count"].max() == 3  # two whole copies and a sample
    # ... whose rows stay distinct (a batch repeating rows is a join bug's: quarantined)
    assert not big.is_duplicated().any()
    assert (big["distance"] - big["t"] * 0.5).abs().max() < 1e-4


def test_without_row_changes_the_hash_and_nothing_else() -> None:
    base = frame(10)
    assert bench_helpers.without_row(base, 3)["t"].to_list() == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert bench_helpers.without_row(base, 12).height == 9  # wraps around
    hashes = {content_hash(bench_helpers.without_row(base, i)) for i in range(10)}
    assert len(hashes) == 10 and content_hash(base) not in hashes


def test_ratio_summary_and_rates() -> None:
    assert bench_helpers.ratio(3.0, 2.0) == 1.5
    assert bench_helpers.ratio(1.0, 0.0) is None
    s = bench_helpers.summarize([3.0, 1.0, 2.0])
    assert (s["median_s"], s["min_s"], s["max_s"], s["repeats"]) == (2.0, 1.0, 3.0, 3)
    assert bench_helpers.runs_per_hour(2.0) == 1800.0
    assert bench_helpers.runs_per_hour(0.0) is None
    assert bench_helpers.cpu_seconds() > 0


def test_policies_merge_key_by_key() -> None:
    merged = bench_helpers.merge(bench_loop.RETRAIN_POLICY, {"drift": {"monitor_share": 0.1}})
    assert merged["drift"] == {"retrain": "always", "monitor_share": 0.1}
    assert merged["optimizer"]["default_trials"] == 20
    assert bench_loop.MONITOR_POLICY["drift"]["retrain"] == "never"


def test_tool_seconds_sums_per_tool_and_skips_llm_calls() -> None:
    rows = [
        SimpleNamespace(tool="drift.data_drift", latency_ms=1500.0),
        SimpleNamespace(tool="drift.data_drift", latency_ms=500.0),
        SimpleNamespace(tool="llm:get_column_drift", latency_ms=0.0),
        SimpleNamespace(tool="quality.check_batch", latency_ms=12.0),
    ]
    assert bench_helpers.tool_seconds(rows) == {
        "drift.data_drift": 2.0,
        "quality.check_batch": 0.012,
    }


def test_machine_facts_and_results_files(tmp_path: Path) -> None:
    from evals.common import machine, write_json

    facts = machine()
    assert facts["cores"] and facts["usable_cores"] >= 1 and facts["python"].startswith("3.")
    assert facts["versions"]["polars"] == pl.__version__
    assert machine(["polars", "no-such-package"])["versions"] == {
        "polars": pl.__version__,
        "no-such-package": None,
    }
    out = write_json(tmp_path / "deep" / "r.json", {"facts": facts, "at": tmp_path})
    assert json.loads(out.read_text())["at"] == str(tmp_path)  # paths written as text
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temporary file left


def test_targets_say_met_missed_or_not_measured() -> None:
    results: dict[str, Any] = {
        "overhead": {"ratio": 0.2, "ratio_with_report": 1.3, "runs_per_hour_per_core": 6000.0},
        "rows": [{"batch_rows": 10_000, "loop": {"median_s": 0.5}}],
        "retrain": [],
    }
    goals = bench_helpers.targets(results)
    assert goals["a_monitor_run_over_raw_report"]["met"] is True
    assert goals["a_prime_with_report_over_raw_report"]["met"] is False
    assert goals["c_runs_per_hour_per_core"]["met"] is True  # 6000 >= 4 x 1360
    assert goals["d_1m_rows_s"] == {"value": None, "target": "<= 4.0", "met": None}
    results["rows"].append({"batch_rows": 1_000_000, "loop": {"median_s": 4.5}})
    assert bench_helpers.targets(results)["d_1m_rows_s"]["met"] is False
    line = bench_helpers.machine_line({"processor": "x86_64", "usable_cores": 2, "cores": 2})
    assert "2 of 2 cores" in line
