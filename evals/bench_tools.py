"""Benchmark of the deterministic tool layer on real flights.

Measures: the drift tool vs a raw Evidently call on the same 10k and 100k rows; a 20-trial
Optuna study; LightGBM and CatBoost training runs; an MLflow register + load-by-alias round
trip. Prints a table and writes ``evals/results/bench_tools.json``.

    python -m evals.bench_tools [--repeats 3] [--trials 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from evals.common import machine, write_json

RESULTS = Path(__file__).parent / "results"


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "repeats": repeats,
    }


def bench_drift(frame: pl.DataFrame, n: int, repeats: int, report_dir: Path) -> dict[str, Any]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from tools.datasets import FLIGHTS
    from tools.drift import data_drift

    reference = frame.head(n)
    current = frame.tail(n)
    numeric, categorical = FLIGHTS.numeric, FLIGHTS.categorical

    def raw() -> None:
        definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
        cols = [*numeric, *categorical]
        snapshot = Report([DataDriftPreset()]).run(
            Dataset.from_pandas(current.select(cols).to_pandas(), data_definition=definition),
            Dataset.from_pandas(reference.select(cols).to_pandas(), data_definition=definition),
        )
        snapshot.dict()

    def tool() -> None:
        data_drift(reference, current, numeric=numeric, categorical=categorical)

    def tool_html() -> None:
        data_drift(
            reference,
            current,
            numeric=numeric,
            categorical=categorical,
            report_path=report_dir / f"bench_{n}.html",
        )

    raw()  # warm-up: Evidently imports parts of itself on first use
    runs: dict[str, list[float]] = {
        "raw_evidently": [],
        "drift_tool": [],
        "drift_tool_with_html": [],
    }
    for _ in range(repeats):  # interleaved, so drift of the machine hits all three alike
        for name, fn in (
            ("raw_evidently", raw),
            ("drift_tool", tool),
            ("drift_tool_with_html", tool_html),
        ):
            runs[name].append(timed(fn, 1)["median_s"])
    return {
        "rows_each_side": n,
        **{
            name: {
                "median_s": round(statistics.median(t), 4),
                "min_s": round(min(t), 4),
                "repeats": repeats,
            }
            for name, t in runs.items()
        },
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args(argv)
    console = Console()

    from evals.harness import eval_settings
    from tools import registry
    from tools.datasets import FLIGHTS, flights
    from tools.train import TrainSpec, train_model
    from tools.tune import TuneBudget, tune

    home = Path(tempfile.mkdtemp(prefix="driftpilot-bench-"))
    settings = eval_settings(home).ensure_dirs()
    assert settings.reports_dir is not None
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "threads": settings.threads,
    }
    start = time.perf_counter()
    import evidently  # noqa: F401

    results["import_evidently_s"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    import mlflow  # noqa: F401

    results["import_mlflow_s"] = round(time.perf_counter() - start, 3)
    frame = flights(settings)
    # Sorted by time: the first rows are winter, the last summer/autumn — real drift.
    with console.status("drift: 10k and 100k rows per side..."):
        results["drift"] = [
            bench_drift(frame, n, args.repeats, settings.reports_dir) for n in (10_000, 100_000)
        ]

    jan = frame.filter(pl.col("month") == 1)
    jan_feb = frame.filter(pl.col("month") <= 2)
    spec = TrainSpec(
        target=FLIGHTS.target,
        numeric=FLIGHTS.numeric,
        categorical=FLIGHTS.categorical,
        time_col=FLIGHTS.time_col,
        threads=settings.threads,
    )
    with console.status(f"Optuna: {args.trials}-trial LightGBM study on January..."):
        start = time.perf_counter()
        study = tune(
            jan,
            spec,
            study_name="bench",
            storage=settings.optuna_storage,
            budget=TuneBudget(n_trials=args.trials),
        )
        results["study"] = {
            "trials": args.trials,
            "rows": jan.height,
            "wall_s": round(time.perf_counter() - start, 2),
            "complete": study.n_complete,
            "pruned": study.n_pruned,
            "best_valid_log_loss": round(study.best_value, 4),
        }
    results["training"] = {}
    models = {}
    for family in ("lightgbm", "catboost"):
        with console.status(f"training {family} on Jan-Feb..."):
            start = time.perf_counter()
            model = train_model(jan_feb, spec.model_copy(update={"family": family}))
            assert model.report is not None
            models[family] = model
            results["training"][family] = {
                "rows": jan_feb.height,
                "wall_s": round(time.perf_counter() - start, 2),
                "best_iteration": model.report.best_iteration,
                "valid_roc_auc": round(model.report.valid.get("roc_auc") or 0, 4),
            }
    with console.status("MLflow: register + load by alias..."):
        registry.list_versions("warmup", settings)  # creates the tracking DB outside the timing
        rounds = []
        for i in range(args.repeats):
            start = time.perf_counter()
            version = registry.register_model(
                models["lightgbm"], registry.RegisterRequest(name="bench", key=f"k{i}"), settings
            )
            registered = time.perf_counter()
            registry.set_alias("bench", registry.CHALLENGER, version.version, settings)
            registry.load_by_alias("bench", registry.CHALLENGER, settings)
            rounds.append((registered - start, time.perf_counter() - registered))
        start = time.perf_counter()
        registry.register_model(
            models["lightgbm"], registry.RegisterRequest(name="bench", key="k0"), settings
        )
        results["registry"] = {
            "register_median_s": round(statistics.median(r[0] for r in rounds), 3),
            "alias_and_load_median_s": round(statistics.median(r[1] for r in rounds), 3),
            "idempotent_reregister_s": round(time.perf_counter() - start, 3),
        }
    out = write_json(RESULTS / "bench_tools.json", results)
    console.print(render(results))
    console.print(f"written: {out}")
    return results


def render(results: dict[str, Any]) -> Table:
    table = Table(title="DriftPilot tool benchmark (median wall time)")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    table.add_row(
        "import evidently / mlflow",
        f"{results['import_evidently_s']:.2f} s / {results['import_mlflow_s']:.2f} s",
    )
    for d in results["drift"]:
        n = f"{d['rows_each_side'] // 1000}k"
        table.add_row(f"drift {n}: raw Evidently", f"{d['raw_evidently']['median_s']:.2f} s")
        table.add_row(f"drift {n}: drift tool", f"{d['drift_tool']['median_s']:.2f} s")
        table.add_row(
            f"drift {n}: drift tool + HTML", f"{d['drift_tool_with_html']['median_s']:.2f} s"
        )
    s = results["study"]
    table.add_row(
        f"Optuna study, {s['trials']} trials, {s['rows']:,} rows",
        f"{s['wall_s']:.1f} s ({s['complete']} complete, {s['pruned']} pruned)",
    )
    for family, t in results["training"].items():
        table.add_row(
            f"train {family}, {t['rows']:,} rows",
            f"{t['wall_s']:.2f} s ({t['best_iteration']} rounds)",
        )
    r = results["registry"]
    table.add_row("MLflow register (log run + model + version)", f"{r['register_median_s']:.2f} s")
    table.add_row("set alias + load by alias", f"{r['alias_and_load_median_s']:.2f} s")
    table.add_row("re-register same key (idempotent)", f"{r['idempotent_reregister_s']:.3f} s")
    return table


if __name__ == "__main__":
    main()
