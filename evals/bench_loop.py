"""Loop benchmark: whole control runs through ``ControlPlane`` on real flights, in one process.

Measured (each ratio is printed beside its parts; issue 23's targets are printed as met or
missed, with the machine's facts):

- (a) overhead: a monitor-only control run on a labelled 20k x 16 batch (ingestion, drift
  analyst on native statistics, audit, checkpoints; no report: it is rendered after the
  decision) against the raw Evidently drift report on the same batch and the same reference
  (``Report([DataDriftPreset()]).run`` + ``dict()`` + ``save_html``: what a user of Evidently
  writes to get a report). Target: ratio <= 0.25.
- (a') the same run plus its report rendered afterwards (``ControlPlane.run_report``: the
  service the worker, the API and the chat use, with its audit record). Target: <= 1.1.
- (b) a drifted (summer) batch to a promoted challenger with a 20-trial Optuna study (the
  policy's optimizer budget), at 10k and 100k batch rows. Target: <= 60 s on 2 cores. The
  shipped risk rules apply; a promotion that waits for a person is approved by another
  principal (``plane.decide``) and the machine time of both calls is counted.
- (c) runs per hour per core on the monitor path: 3600 / CPU seconds of one run (user + sys
  of this process, every thread), beside the wall-clock rate of one process. Target: at least
  4 x 1,360 (the rate measured at a1f87a4, before issue 23).
- (d) growth: the monitor run (and the raw report, for the ratio) at 10k, 100k and 1M batch
  rows (target at 1M: <= 4 s); the monitor run of one model in a home managing 1, 10 and 100
  models. The 10M-row Parquet run is ``evals/bench_big.py``'s.

Every setup gets a fresh temporary home (``evals.harness.eval_settings``) and its own policy file;
imports, the first MLflow database and the first run are warmed up before timing. A batch
already ingested is quarantined as a duplicate, so repeat *i* runs the batch without its
row *i* (the raw report gets the very same rows). Prints a table and writes
``evals/results/bench_loop.json`` with the machine it ran on.

    python -m evals.bench_loop [--quick] [--repeats 3] [--sizes 10000,1000000]
        [--skip retrain,models]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import yaml
from rich.console import Console
from rich.table import Table

from evals.common import machine, write_json

RESULTS = Path(__file__).parent / "results"
TARGET_OVERHEAD = 0.25  # (a): the decision on native statistics, a quarter of Evidently's report
TARGET_WITH_REPORT = 1.1  # (a'): the decision and the report rendered after it
BASELINE_RUNS_PER_HOUR = 1360  # (c): measured at a1f87a4 (issue 23)
TARGET_RUNS_PER_HOUR = 4 * BASELINE_RUNS_PER_HOUR
TARGET_1M_S = 4.0  # (d): a 1M-row monitor run
TARGET_RETRAIN_S = 60.0  # (b): drifted batch to promoted challenger, 2 cores
REFERENCE_ROWS = 20_000
OVERHEAD_ROWS = 20_000
APPROVER = "bench-approver"
REQUESTER = "bench-operator"
# Monitor only: every batch is watched (monitor_share 0), none can retrain.
MONITOR_POLICY: dict[str, Any] = {"drift": {"monitor_share": 0.0, "retrain": "never"}}
# Retrain whatever the drift (as tests/integration/test_control_graph.py FORCE_RETRAIN), with
# a 20-trial study; the shipped risk rules stay.
RETRAIN_POLICY: dict[str, Any] = {
    "drift": {"retrain": "always"},
    "optimizer": {"default_trials": 20},
}


# -- helpers (pure, tested in tests/unit/test_bench_loop.py) -------------------------------------


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


# -- setups --------------------------------------------------------------------------------------


class Setup:
    """A fresh temporary home with its policy file and a ControlPlane over it."""

    llm: ClassVar[str] = "builtin"  # the agents' backend in every setup (--llm)

    def __init__(self, root: Path, name: str, policy: dict[str, Any], threads: int) -> None:
        from evals.harness import plane_for

        home = root / name
        home.mkdir(parents=True)
        policy_path = home / "policy.yaml"
        policy_path.write_text(yaml.safe_dump(policy))
        self.plane = plane_for(
            home, llm=self.llm, policy=policy_path, threads=threads, principal=REQUESTER
        )
        self.settings = self.plane.settings.ensure_dirs()

    def add(self, name: str, initial: pl.DataFrame) -> None:
        from driftpilot.stream import add_builtin_model

        add_builtin_model(self.plane, name, initial, "flights", principal=REQUESTER, source=True)

    def run(self, model: str, batch: pl.DataFrame, batch_id: str) -> dict[str, Any]:
        """One control run (its questions approved by another principal if it waits); wall
        and CPU seconds, outcome and the seconds of each audited tool call."""
        from driftpilot.store.models import ToolCall
        from driftpilot.stream import run_batch

        cpu, start = cpu_seconds(), time.perf_counter()
        run = run_batch(
            self.plane,
            model,
            batch,
            batch_id,
            trigger="bench",
            requester=REQUESTER,
            answer=lambda wait: ("approve", APPROVER, "bench_loop"),
        )
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        view, approved = run.view, bool(run.waits)
        calls = self.plane.store.list_rows(ToolCall, ToolCall.run_id == view.run_id)
        return {
            "wall_s": round(wall, 4),
            "cpu_s": round(cpu, 4),
            "status": view.status,
            "outcome": view.outcome,
            "approved_by_person": approved,
            "tools_s": tool_seconds(calls),
            "run_id": view.run_id,
            "summary": view.summary,
        }

    def report(self, run_id: str) -> dict[str, Any]:
        """Render a finished run's report now (``ControlPlane.run_report``: the service's
        render, cache and audit record); wall and CPU seconds."""
        cpu, start = cpu_seconds(), time.perf_counter()
        view = self.plane.run_report(run_id)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        assert view.status == "ready", view
        return {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4)}

    def close(self) -> None:
        self.plane.close()


def raw_report(reference: pl.DataFrame, batch: pl.DataFrame, html: Path | None) -> dict[str, float]:
    """The raw Evidently drift report on the features: pandas conversion, run, dict, HTML.

    Evidently is imported here, outside tools/, on purpose: this is the baseline the drift
    tool is measured against. It runs under the tool's BLAS limit (one thread), so the ratio
    compares the same work: what the loop adds, not a spinning BLAS thread it no longer has.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset
    from threadpoolctl import threadpool_limits

    from tools.datasets import FLIGHTS

    numeric, categorical = FLIGHTS.numeric, FLIGHTS.categorical
    cols = [*numeric, *categorical]
    cpu, t0 = cpu_seconds(), time.perf_counter()
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    cur = Dataset.from_pandas(batch.select(cols).to_pandas(), data_definition=definition)
    ref = Dataset.from_pandas(reference.select(cols).to_pandas(), data_definition=definition)
    t1 = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        snapshot = Report([DataDriftPreset()]).run(cur, ref)
        t2 = time.perf_counter()
        snapshot.dict()
        t3 = time.perf_counter()
        if html is not None:
            snapshot.save_html(str(html))
        t4 = time.perf_counter()
    return {
        "total_s": round(t4 - t0, 4),
        "cpu_s": round(cpu_seconds() - cpu, 4),
        "to_pandas_s": round(t1 - t0, 4),
        "run_s": round(t2 - t1, 4),
        "dict_s": round(t3 - t2, 4),
        "html_s": round(t4 - t3, 4),
    }


def _median_parts(items: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for item in items for k in item}
    return {k: round(statistics.median(i.get(k, 0.0) for i in items), 4) for k in sorted(keys)}


def monitor_series(
    setup: Setup,
    model: str,
    reference: pl.DataFrame,
    batch: pl.DataFrame,
    repeats: int,
    label: str,
    *,
    with_raw: bool = True,
    with_report: bool = False,
) -> dict[str, Any]:
    """``repeats`` monitor runs of ``batch`` (row i left out in repeat i), each interleaved with
    the raw report on the same rows (and, ``with_report``, followed by the rendering of the
    run's own report); medians, parts and the ratios."""
    assert setup.settings.reports_dir is not None
    loops, raws, reports = [], [], []
    for i in range(repeats):
        rows = without_row(batch, i)
        if with_raw:
            raws.append(raw_report(reference, rows, setup.settings.reports_dir / f"raw-{i}.html"))
        loops.append(setup.run(model, rows, f"{label}-{i}"))
        assert loops[-1]["outcome"] == "no_retrain:monitor", loops[-1]["outcome"]
        if with_report:
            reports.append(setup.report(loops[-1]["run_id"]))
    walls = [r["wall_s"] for r in loops]
    out: dict[str, Any] = {
        "batch_rows": batch.height - 1,
        "reference_rows": reference.height,
        "features": len(_features()),
        "loop": summarize(walls),
        "loop_cpu": summarize([r["cpu_s"] for r in loops]),
        "loop_tools_s": _median_parts([r["tools_s"] for r in loops]),
    }
    tools_total = sum(out["loop_tools_s"].values())
    out["loop_outside_tools_s"] = round(out["loop"]["median_s"] - tools_total, 4)
    if reports:
        out["report"] = summarize([r["wall_s"] for r in reports])
        out["loop_with_report"] = summarize(
            [loop["wall_s"] + r["wall_s"] for loop, r in zip(loops, reports, strict=True)]
        )
        out["loop_with_report_cpu"] = summarize(
            [loop["cpu_s"] + r["cpu_s"] for loop, r in zip(loops, reports, strict=True)]
        )
    if with_raw:
        out["raw"] = summarize([r["total_s"] for r in raws])
        out["raw_cpu"] = summarize([r["cpu_s"] for r in raws])
        out["raw_parts_s"] = _median_parts(
            [{k: v for k, v in r.items() if k != "cpu_s"} for r in raws]
        )
        out["ratio"] = ratio(out["loop"]["median_s"], out["raw"]["median_s"])
        # the same, against the report without its HTML file (the run writes one)
        out["ratio_raw_without_html"] = ratio(
            out["loop"]["median_s"], out["raw"]["median_s"] - out["raw_parts_s"]["html_s"]
        )
        # CPU seconds are less sensitive to other work on a shared machine than wall time.
        out["ratio_cpu"] = ratio(out["loop_cpu"]["median_s"], out["raw_cpu"]["median_s"])
        if reports:
            out["ratio_with_report"] = ratio(
                out["loop_with_report"]["median_s"], out["raw"]["median_s"]
            )
            out["ratio_with_report_cpu"] = ratio(
                out["loop_with_report_cpu"]["median_s"], out["raw_cpu"]["median_s"]
            )
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


# -- the measurements ----------------------------------------------------------------------------


class Data:
    """Real flights cut the ways the benchmark needs (all with fixed seeds)."""

    def __init__(self, settings: Any) -> None:
        from tools.datasets import FLIGHTS, flights

        self.time_col = FLIGHTS.time_col
        self.all = flights(settings)
        jan = self.all.filter(pl.col("month") == 1)
        self.summer = self.all.filter(pl.col("month").is_between(6, 9))
        self.reference = resample(jan, REFERENCE_ROWS, seed=1, time_col=self.time_col)
        self.small = resample(jan, 2_000, seed=2, time_col=self.time_col)
        self.july = self.all.filter(pl.col("month") == 7)

    def batch(self, n: int, seed: int, source: pl.DataFrame | None = None) -> pl.DataFrame:
        return resample(
            self.all if source is None else source, n, seed=seed, time_col=self.time_col
        )


def bench_overhead(root: Path, data: Data, repeats: int, threads: int) -> dict[str, Any]:
    """(a) and (c): monitor runs of a 20k-row July batch vs the raw report."""
    setup = Setup(root, "overhead", MONITOR_POLICY, threads)
    try:
        setup.add("flights", data.reference)
        warm = data.batch(OVERHEAD_ROWS, seed=90, source=data.july)
        # first run in the process and home: champion load, checkpointer tables (not timed
        # in the ratio; reported beside it)
        first = setup.run("flights", warm, "warmup")
        assert setup.settings.reports_dir is not None
        raw_report(data.reference, warm, setup.settings.reports_dir / "raw-warm.html")
        batch = data.batch(OVERHEAD_ROWS + 1, seed=7, source=data.july)
        out = monitor_series(
            setup, "flights", data.reference, batch, repeats, "july", with_report=True
        )
    finally:
        setup.close()
    out["first_run"] = {k: first[k] for k in ("wall_s", "cpu_s", "tools_s")}
    out["first_run_ratio"] = ratio(first["wall_s"], out["raw"]["median_s"])
    cpu = out["loop_cpu"]["median_s"]
    out["runs_per_hour_per_core"] = runs_per_hour(cpu)
    out["runs_per_hour_one_process"] = runs_per_hour(out["loop"]["median_s"])
    out["cores_busy_during_run"] = round(cpu / out["loop"]["median_s"], 2)
    return out


def bench_retrain(root: Path, data: Data, rows: int, repeats: int, threads: int) -> dict[str, Any]:
    """(b): a fresh home per repeat (champion on January), then one drifted summer batch."""
    runs = []
    for i in range(repeats):
        setup = Setup(root, f"retrain-{rows}-{i}", RETRAIN_POLICY, threads)
        try:
            setup.add("flights", data.reference)
            batch = data.batch(rows, seed=100 + i, source=data.summer)
            runs.append(setup.run("flights", batch, f"summer-{i}"))
        finally:
            setup.close()
    walls = [r["wall_s"] for r in runs]
    last = runs[-1]["summary"]
    optimizer = last.get("optimizer") or {}
    return {
        "batch_rows": rows,
        "reference_rows": data.reference.height,
        "loop": summarize(walls),
        "loop_cpu": summarize([r["cpu_s"] for r in runs]),
        "loop_tools_s": _median_parts([r["tools_s"] for r in runs]),
        "outcomes": [r["outcome"] for r in runs],
        "approved_by_person": [r["approved_by_person"] for r in runs],
        "study": {k: optimizer.get(k) for k in ("family", "n_trials", "n_complete", "n_pruned")},
        "window_rows": [(r["summary"].get("retraining") or {}).get("rows") for r in runs],
        "target_s": TARGET_RETRAIN_S,
        "met": statistics.median(walls) <= TARGET_RETRAIN_S
        and all(r["outcome"] == "promoted" for r in runs),
    }


def bench_rows(
    root: Path, data: Data, sizes: list[int], repeats: int, threads: int
) -> list[dict[str, Any]]:
    """(d) rows: one home, one model; the monitor run and the raw report per batch size."""
    setup = Setup(root, "rows", MONITOR_POLICY, threads)
    out = []
    try:
        setup.add("flights", data.reference)
        setup.run("flights", data.batch(10_000, seed=91), "warmup")
        for n in sizes:
            batch = data.batch(n + 1, seed=n % 1000 + 11)
            out.append(
                monitor_series(
                    setup,
                    "flights",
                    data.reference,
                    batch,
                    1 if n >= 1_000_000 else repeats,
                    f"r{n}",
                )
            )
    finally:
        setup.close()
    return out


def bench_models(
    root: Path, data: Data, counts: list[int], repeats: int, threads: int
) -> list[dict[str, Any]]:
    """(d) models: one home; models are added (2k-row January champions) up to each count,
    then the first model's monitor run (20k rows) is timed."""
    setup = Setup(root, "models", MONITOR_POLICY, threads)
    out = []
    try:
        setup.add("m000", data.reference)
        setup.run("m000", data.batch(OVERHEAD_ROWS, seed=92, source=data.july), "warmup")
        have = 1
        batch = data.batch(OVERHEAD_ROWS + 1, seed=8, source=data.july)
        for count in counts:
            start = time.perf_counter()
            while have < count:
                setup.add(f"m{have:03d}", data.small)
                have += 1
            added_s = time.perf_counter() - start
            item = monitor_series(
                setup, "m000", data.reference, batch, repeats, f"n{count}", with_raw=False
            )
            # the same rows again in the next count: leave out other rows than this time
            batch = without_row(batch, batch.height // 2 + count)
            out.append({"models": count, "seconds_to_add_models": round(added_s, 1), **item})
    finally:
        setup.close()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats; no 1M rows, 100 models"
    )
    parser.add_argument("--repeats", type=int, default=None, help="monitor-run repeats")
    parser.add_argument("--threads", type=int, default=1, help="Settings.threads")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_loop.json")
    parser.add_argument("--llm", default="builtin", help="builtin | openai:M | ollama:M | ...")
    parser.add_argument(
        "--sizes", default=None, help="(d) batch rows, comma-separated (default by --quick)"
    )
    parser.add_argument(
        "--skip", default="", help="sections left out, comma-separated: retrain, rows, models"
    )
    args = parser.parse_args(argv)
    Setup.llm = args.llm
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    repeats = args.repeats or (3 if args.quick else 5)
    retrain_repeats = 1 if args.quick else 2
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    if args.sizes:
        sizes = [int(n) for n in args.sizes.split(",")]
    counts = [1, 10] if args.quick else [1, 10, 100]
    # Written to a file or a pipe, the table keeps its columns readable (rich's default is 80).
    console = Console(width=None if sys.stdout.isatty() else 180)

    from driftpilot.core.settings import Settings

    root = Path(tempfile.mkdtemp(prefix="driftpilot-bench-loop-"))
    started = time.perf_counter()
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "quick": args.quick,
        "threads": args.threads,
        "llm": args.llm,
        "repeats": repeats,
        "skipped_sections": sorted(skip),
        "machine": machine(),
        "home_root": str(root),
    }
    with console.status("warm-up: imports, flights..."):
        t0 = time.perf_counter()
        import evidently  # noqa: F401
        import lightgbm  # noqa: F401
        import mlflow  # noqa: F401
        import optuna  # noqa: F401

        results["imports_s"] = round(time.perf_counter() - t0, 2)
        data = Data(Settings(home=root / "data").ensure_dirs())
    with console.status("(a)/(c) monitor runs vs the raw Evidently report, 20k rows..."):
        results["overhead"] = bench_overhead(root, data, repeats, args.threads)
    results["retrain"] = []
    for rows in () if "retrain" in skip else (10_000, 100_000):
        with console.status(f"(b) drifted batch to promoted challenger, {rows:,} rows..."):
            results["retrain"].append(
                bench_retrain(root, data, rows, retrain_repeats, args.threads)
            )
    results["rows"] = []
    if "rows" not in skip:
        with console.status(f"(d) monitor runs at {', '.join(f'{n:,}' for n in sizes)} rows..."):
            results["rows"] = bench_rows(root, data, sizes, max(2, repeats - 2), args.threads)
    results["models"] = []
    if "models" not in skip:
        with console.status(f"(d) monitor runs with {', '.join(map(str, counts))} models..."):
            results["models"] = bench_models(root, data, counts, max(2, repeats - 2), args.threads)
    results["targets"] = targets(results)
    results["machine"]["loadavg_after"] = os.getloadavg()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    write_json(args.out, results)
    console.print(render(results))
    console.print(f"written: {args.out}")
    return results


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


def render(results: dict[str, Any]) -> Table:
    table = Table(
        title="DriftPilot loop benchmark (median wall time, one process)",
        caption=machine_line(results["machine"]),
    )
    table.add_column("measurement")
    table.add_column("value", justify="right")
    table.add_column("parts")
    table.add_column("target")
    goals = results["targets"]

    def goal(key: str) -> str:
        item = goals[key]
        return f"{item['target']} {_verdict(item['met'])}"

    o = results["overhead"]
    table.add_row(
        f"(a) monitor run / raw Evidently report, {o['batch_rows']:,} x {o['features']} labelled",
        f"{o['ratio']:.2f}x (CPU {o['ratio_cpu']:.2f}x)",
        f"run {_s(o['loop']['median_s'])} / raw {_s(o['raw']['median_s'])} "
        f"(raw: {_parts(o['raw_parts_s'])}; run tools: {_parts(o['loop_tools_s'])}; "
        f"outside tools {o['loop_outside_tools_s']:.2f})",
        goal("a_monitor_run_over_raw_report"),
    )
    table.add_row(
        "(a') the run + its report rendered afterwards / raw report",
        f"{o['ratio_with_report']:.2f}x (CPU {o['ratio_with_report_cpu']:.2f}x)",
        f"run + report {_s(o['loop_with_report']['median_s'])} "
        f"(report {_s(o['report']['median_s'])}) / raw {_s(o['raw']['median_s'])}",
        goal("a_prime_with_report_over_raw_report"),
    )
    table.add_row(
        "(a) same, first run of a fresh home (cold)",
        f"{o['first_run_ratio']:.2f}x",
        f"run {_s(o['first_run']['wall_s'])}; vs raw without HTML (warm): "
        f"{o['ratio_raw_without_html']:.2f}x",
        "",
    )
    for r in results["retrain"]:
        table.add_row(
            f"(b) drifted batch to promoted challenger, {r['batch_rows']:,} rows, "
            f"{r['study'].get('n_trials')} trials",
            _s(r["loop"]["median_s"]),
            f"{_parts(r['loop_tools_s'])}; outcomes {r['outcomes']}",
            f"<= {TARGET_RETRAIN_S:.0f} s " + ("met" if r["met"] else "MISSED"),
        )
    table.add_row(
        "(c) monitor runs per hour per core",
        f"{o['runs_per_hour_per_core']:.0f}",
        f"3600 / {o['loop_cpu']['median_s']:.2f} CPU s per run; one process "
        f"{o['runs_per_hour_one_process']:.0f}/h ({o['cores_busy_during_run']} cores busy)",
        goal("c_runs_per_hour_per_core"),
    )
    for r in results["rows"]:
        table.add_row(
            f"(d) monitor run, {r['batch_rows']:,} rows",
            f"{_s(r['loop']['median_s'])} (CPU {_s(r['loop_cpu']['median_s'])})",
            f"raw {_s(r['raw']['median_s'])}, ratio {r['ratio']:.2f}x "
            f"(CPU {r['ratio_cpu']:.2f}x); "
            f"tools: {_parts(r['loop_tools_s'])}",
            goal("d_1m_rows_s") if r["batch_rows"] >= 1_000_000 else "",
        )
    if not any(r["batch_rows"] >= 1_000_000 for r in results["rows"]):
        table.add_row("(d) monitor run, 1,000,000 rows", "-", "", goal("d_1m_rows_s"))
    for m in results["models"]:
        table.add_row(
            f"(d) monitor run with {m['models']} managed models",
            _s(m["loop"]["median_s"]),
            f"tools: {_parts(m['loop_tools_s'])}; outside tools {m['loop_outside_tools_s']:.2f}",
            "",
        )
    return table


def _features() -> list[str]:
    from tools.datasets import FLIGHTS

    return FLIGHTS.features


if __name__ == "__main__":
    main()
