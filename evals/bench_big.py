"""Big-batch benchmark (issue 23, part 4): one monitor run of a Parquet batch bigger than the
in-memory path handles, through the plane a user's ``driftpilot run --batch FILE`` reaches.

The batch is real flights resampled (with replacement, fixed seeds) to N rows of 20 columns:
the model's 16 features, its label and time column, and two derived columns outside the
schema (ignored by the model, counted by the quality checks). It is written once, 1M rows at a
time, by a streaming sink into the user's cache (``<cache_dir>/bench_big/``), never the repo.

Each size runs in its own child process (so its peak RSS is its own): a fresh home with a
flights model (champion on 20k January rows, monitor-only policy: as ``bench_loop``), one
warm-up run on a small batch, then the peak RSS mark is reset (``/proc/self/clear_refs``) and
ONE monitor run of the file is timed: wall and CPU seconds, the peak RSS of the run
(``VmHWM``, and the process's ``ru_maxrss``), the outcome and the seconds of each audited tool.
Target: 10M rows x 20 columns in <= 60 s with peak RSS <= 4 GB on 2 cores.

    python -m evals.bench_big [--rows 1000000 3000000 10000000] [--intake path|frame]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from evals.bench_helpers import distinct
from evals.common import machine, write_json

RESULTS = Path(__file__).parent / "results"
TARGET_S = 60.0
TARGET_RSS_GB = 4.0
CHUNK_ROWS = 1_000_000
DERIVED = {
    "temp_spread": pl.col("temp") - pl.col("dewp"),  # outside the schema: an extra column
    "dep_minute": (pl.col("sched_dep_time") % 100).cast(pl.Int32),
}


def batch_columns() -> list[str]:
    """The 20 columns of the big batch: time, the flights model's features, label, derived."""
    from tools.datasets import FLIGHTS

    spec = FLIGHTS
    return [spec.time_col, *spec.numeric, *spec.categorical, spec.target, *DERIVED]


def big_file(settings: Any, rows: int) -> Path:
    """``rows`` resampled flights rows as Parquet in the cache (made once, then reused), each
    row distinct (``evals.bench_helpers.distinct``)."""
    assert settings.cache_dir is not None
    folder = Path(settings.cache_dir) / "bench_big"
    # -distinct: files made before the duplicate-rows defect check repeated rows (quarantined)
    target = folder / f"flights-{rows}-distinct.parquet"
    if target.exists():
        return target
    from tools.datasets import flights

    folder.mkdir(parents=True, exist_ok=True)
    source = flights(settings).with_columns(**DERIVED).select(batch_columns())
    parts = []
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for k, start in enumerate(range(0, rows, CHUNK_ROWS)):
            n = min(CHUNK_ROWS, rows - start)
            part = Path(tmp) / f"part-{k:04d}.parquet"
            rows_k = source.sample(n=n, with_replacement=True, seed=1000 + k)
            distinct(rows_k, offset=start).write_parquet(part)
            parts.append(str(part))
        partial = target.with_suffix(".parquet.tmp")
        pl.scan_parquet(parts).sink_parquet(partial)
        partial.replace(target)
    return target


def peak_rss_gb() -> float:
    """The process's resident peak since the last ``reset_peak`` (VmHWM), in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024**2, 3)
    return float("nan")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux); False if the kernel refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def timed(owner: Any, name: str, spent: dict[str, float], label: str) -> None:
    """Replace ``owner.name`` by a wrapper adding its wall seconds to ``spent[label]``: the
    stages of a run outside its audited tool calls (profiling only; the work is unchanged)."""
    inner = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent[label] = round(spent.get(label, 0.0) + time.perf_counter() - start, 3)

    setattr(owner, name, wrapper)


def profile_stages(spent: dict[str, float]) -> None:
    """Time the intake (store the file, count and hash its rows), the filing, and every
    whole-file read of a Parquet batch (the drift analyst's, among others)."""
    import agents.ingestion
    import driftpilot.runs.lifecycle as lifecycle

    timed(lifecycle, "intake", spent, "intake_store")
    timed(lifecycle, "n_rows", spent, "intake_count")
    timed(lifecycle, "content_hash", spent, "intake_hash")
    timed(agents.ingestion, "_file_batch", spent, "ingestion_file")
    timed(agents.ingestion, "time_range", spent, "ingestion_time_range")
    timed(agents.ingestion, "with_label_column", spent, "ingestion_label_column")
    timed(pl, "read_parquet", spent, "read_parquet_whole")


def child(rows: int, path: Path, intake: str) -> dict[str, Any]:
    """One size, in this process: set up, warm up, then one timed monitor run of ``path``."""
    from driftpilot.store.models import ToolCall
    from evals.bench_loop import MONITOR_POLICY, Data, Setup, tool_seconds
    from tools.data import load_table

    with tempfile.TemporaryDirectory(prefix="bench_big-") as tmp:
        setup = Setup(Path(tmp), "big", MONITOR_POLICY, threads=2)
        try:
            data = Data(setup.settings)
            setup.add("flights", data.reference)
            warm = data.batch(20_000, seed=90, source=data.july).with_columns(**DERIVED)
            setup.plane.start_run("flights", warm.select(batch_columns()), "warmup")
            spent: dict[str, float] = {}
            profile_stages(spent)
            reset = reset_peak()
            rss_before = peak_rss_gb()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            cpu0, t0 = usage.ru_utime + usage.ru_stime, time.perf_counter()
            # The path: the plane streams the file; the frame: what the CLI did before.
            batch: Any = path if intake == "path" else load_table(path)
            view = setup.plane.start_run("flights", batch, path.stem, requested_by="bench")
            wall = time.perf_counter() - t0
            usage = resource.getrusage(resource.RUSAGE_SELF)
            calls = setup.plane.store.list_rows(ToolCall, ToolCall.run_id == view.run_id)
            return {
                "rows": rows,
                "columns": len(batch_columns()),
                "file_mb": round(path.stat().st_size / 1024**2, 1),
                "intake": intake,
                "wall_s": round(wall, 2),
                "cpu_s": round(usage.ru_utime + usage.ru_stime - cpu0, 2),
                "peak_rss_gb": peak_rss_gb() if reset else None,
                "rss_before_gb": rss_before,
                "ru_maxrss_gb": round(usage.ru_maxrss / 1024**2, 3),
                "status": view.status,
                "outcome": view.outcome,
                "error": (view.summary or {}).get("error"),
                "tools_s": tool_seconds(calls),
                "stages_s": spent,
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            }
        finally:
            setup.close()


def run_size(rows: int, intake: str) -> dict[str, Any]:
    """Make (or reuse) the file, then measure it in a child process."""
    from driftpilot.core.settings import get_settings

    path = big_file(get_settings(), rows)
    load = [round(x, 2) for x in os.getloadavg()]
    cmd = [sys.executable, "-m", "evals.bench_big", "--child", str(rows), str(path), intake]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"rows": rows, "intake": intake, "failed": done.stderr[-2000:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["loadavg_before"] = load
    return result


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    """Whether one size met the time and memory targets (None: not measured)."""
    wall, rss = result.get("wall_s"), result.get("peak_rss_gb")
    return {
        "time_met": None if wall is None else wall <= TARGET_S,
        "rss_met": None if rss is None else rss <= TARGET_RSS_GB,
    }


def _commit() -> str:
    """The checked-out commit (the tree may hold others' uncommitted edits too)."""
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--intake", choices=("path", "frame"), default="path")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_big.json")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        rows, path, intake = args.child
        print(json.dumps(child(int(rows), Path(path), intake), default=str))
        return {}
    sizes = []
    for rows in args.rows:
        result = run_size(rows, args.intake)
        result.update(verdict(result))
        print(json.dumps(result, default=str), flush=True)
        sizes.append(result)
    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "target": {"rows": 10_000_000, "columns": 20, "wall_s": TARGET_S, "rss_gb": TARGET_RSS_GB},
        "machine": machine(),
        "commit": _commit(),
        "sizes": sizes,
    }
    write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
