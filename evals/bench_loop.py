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

from evals.bench_helpers import (
    TARGET_RETRAIN_S,
    _median_parts,
    _parts,
    _s,
    _verdict,
    cpu_seconds,
    machine_line,
    ratio,
    resample,
    runs_per_hour,
    summarize,
    targets,
    tool_seconds,
    without_row,
)
from evals.common import machine, write_json

RESULTS = Path(__file__).parent / "results"
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
