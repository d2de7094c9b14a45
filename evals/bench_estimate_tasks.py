"""Benchmark: performance estimation without labels per task, on real flights.

Issue 19's targets: on batches without concept drift, multiclass CBPE within 0.02 of the
realised macro ROC AUC on average, and regression DLE within 10 % of the realised RMSE on
average (``tools.estimate``).

Batches without concept drift, on real data: the champion (LightGBM) is fitted on 60,000
random flights of the whole year with the calendar month among its features, the estimator
on 30,000 others (the reference), and 8,000 of each calendar month's remaining flights are a
batch. P(label | features)
is then the same for every batch (the month is a feature the model saw), while the batches'
features move with the seasons (real covariate shift: winter storms, summer thunderstorms,
holiday traffic), which is what CBPE and DLE claim to follow. For contrast, the same
estimators are run forward in time (fitted on January-April, batches May-December), where
the flights' relation to their features changes too (concept drift): not a target, shown so
the limits of estimation without labels are measured rather than assumed.

Prints a table per task and writes ``evals/results/bench_estimate_tasks.json``.

    python -m evals.bench_estimate_tasks [--n-boot 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from driftpilot.core.tasks import PRIMARY, Task

RESULTS = Path(__file__).parent / "results"


# ----------------------------------------------------------------------------- the benchmark

TARGETS: dict[Task, str] = {
    "binary": "delayed",
    "multiclass": "delay_class",
    "regression": "arr_delay",
}


class Sizes(NamedTuple):
    train: int = 60_000  # champion's rows (a random sample of its period)
    reference: int = 30_000  # the estimator's labelled reference rows
    batch: int = 8_000  # rows per monthly batch (a sample of the month's remaining rows)


BENCH_SIZES = Sizes()


def _spec(task: Task, numeric: list[str]) -> Any:
    from tools.datasets import FLIGHTS
    from tools.train import TrainSpec

    return TrainSpec(
        task=task,
        target=TARGETS[task],
        numeric=numeric,
        categorical=FLIGHTS.categorical,
        max_rounds=400,
    )


def _split(pool: pl.DataFrame, sizes: Sizes, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Random train and reference rows of ``pool``."""
    shuffled = pool.sample(fraction=1.0, shuffle=True, seed=seed)
    return shuffled.head(sizes.train), shuffled.slice(sizes.train, sizes.reference)


def run_setting(
    task: Task,
    fit_pool: pl.DataFrame,
    batches: dict[int, pl.DataFrame],
    numeric: list[str],
    n_boot: int,
    seed: int,
    sizes: Sizes,
) -> dict[str, Any]:
    """Fit a champion and its estimator on ``fit_pool``; estimate and realise its primary
    metric on every batch."""
    from tools.estimate import estimate, fit_estimator
    from tools.metrics import value
    from tools.train import train_model

    metric = PRIMARY[task]
    spec = _spec(task, numeric)
    train, reference = _split(fit_pool, sizes, seed)
    started = time.perf_counter()
    model = train_model(train, spec)
    trained_s = time.perf_counter() - started
    started = time.perf_counter()
    estimator = fit_estimator(
        task,
        metric,
        model.encode(reference[spec.target]),
        model.predict_scores(reference),
        reference,
        spec.features,
        seed=seed,
    )
    fitted_s = time.perf_counter() - started
    rows = []
    for month, batch in batches.items():
        scores = model.predict_scores(batch)
        started = time.perf_counter()
        est = estimate(estimator, scores, batch, n_boot=n_boot, seed=seed)
        realised = value(metric, task, model.encode(batch[spec.target]), scores)
        assert realised is not None
        rows.append(
            {
                "month": month,
                "rows": batch.height,
                "realised": round(realised, 4),
                "estimated": round(est.value, 4),
                "low": round(est.low, 4),
                "high": round(est.high, 4),
                "error": round(est.value - realised, 4),
                "relative_error": round((est.value - realised) / realised, 4),
                "covered": est.low <= realised <= est.high,
                "estimate_s": round(time.perf_counter() - started, 3),
            }
        )
    errors = np.array([r["error"] for r in rows])
    relative = np.array([r["relative_error"] for r in rows])
    assert estimator.reference is not None
    return {
        "task": task,
        "metric": metric,
        "method": estimator.method,
        "train_rows": train.height,
        "reference_rows": reference.height,
        "train_s": round(trained_s, 2),
        "fit_estimator_s": round(fitted_s, 2),
        "reference_estimate": round(estimator.reference.value, 4),
        "batches": rows,
        "mean_abs_error": round(float(np.abs(errors).mean()), 4),
        "mean_error": round(float(errors.mean()), 4),
        "mean_abs_relative_error": round(float(np.abs(relative).mean()), 4),
        "coverage": round(float(np.mean([r["covered"] for r in rows])), 3),
    }


def _months(frame: pl.DataFrame, months: range, rows: int, seed: int) -> dict[int, pl.DataFrame]:
    out = {}
    for m in months:
        month = frame.filter(pl.col("month") == m)
        out[m] = month.sample(n=min(rows, month.height), seed=seed)
    return out


def covariate_shift(
    frame: pl.DataFrame,
    task: Task,
    n_boot: int,
    seed: int,
    sizes: Sizes = BENCH_SIZES,
    months: range = range(1, 13),
) -> dict[str, Any]:
    """No concept drift: the champion is fitted on random rows of the whole year with the
    month among its features, so P(label | features) is the same for every monthly batch."""
    from tools.datasets import FLIGHTS

    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    n_fit = sizes.train + sizes.reference
    fit_pool, rest = shuffled.head(n_fit), shuffled.slice(n_fit)
    batches = _months(rest, months, sizes.batch, seed)
    numeric = [*FLIGHTS.numeric, "month"]
    return run_setting(task, fit_pool, batches, numeric, n_boot, seed, sizes)


def forward(
    frame: pl.DataFrame,
    task: Task,
    n_boot: int,
    seed: int,
    sizes: Sizes = BENCH_SIZES,
    months: range = range(5, 13),
) -> dict[str, Any]:
    """Forward in time (concept drift possible): fitted on January-April, batches May-December."""
    from tools.datasets import FLIGHTS

    early = frame.filter(pl.col("month") <= 4)
    batches = _months(frame, months, sizes.batch, seed)
    return run_setting(task, early, batches, FLIGHTS.numeric, n_boot, seed, sizes)


TARGET_LIMITS = {
    "multiclass": ("mean_abs_error", 0.02),
    "regression": ("mean_abs_relative_error", 0.10),
}


def _table(console: Any, title: str, result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"{title}: {result['task']} {result['metric']} ({result['method']})")
    for col in ("month", "realised", "estimated", "interval", "error", "covered"):
        table.add_column(col, justify="right")
    for r in result["batches"]:
        table.add_row(
            str(r["month"]),
            f"{r['realised']:.4f}",
            f"{r['estimated']:.4f}",
            f"[{r['low']:.4f}, {r['high']:.4f}]",
            f"{r['error']:+.4f} ({r['relative_error']:+.1%})",
            "yes" if r["covered"] else "no",
        )
    console.print(table)
    console.print(
        f"mean |error| {result['mean_abs_error']:.4f}, mean error {result['mean_error']:+.4f}, "
        f"mean |relative error| {result['mean_abs_relative_error']:.1%}, "
        f"coverage {result['coverage']:.0%}"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tasks", default="binary,multiclass,regression", help="comma-separated tasks"
    )
    args = parser.parse_args(argv)
    from rich.console import Console

    from evals.common import git_commit, machine, write_json
    from evals.harness import eval_settings
    from tools.datasets import flights

    console = Console()
    settings = eval_settings(Path(tempfile.mkdtemp(prefix="driftpilot-bench-"))).ensure_dirs()
    frame = flights(settings)  # delayed, arr_delay and delay_class: one target per task
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "commit": git_commit(),
        "machine": machine(),
        "seed": args.seed,
        "n_boot": args.n_boot,
        "rows": BENCH_SIZES._asdict(),
        "covariate_shift": {},
        "forward": {},
        "targets": {},
    }
    tasks: list[Task] = [t for t in TARGETS if t in args.tasks.split(",")]
    for task in tasks:
        for setting, run in (("covariate_shift", covariate_shift), ("forward", forward)):
            with console.status(f"{task}: {setting}..."):
                found = run(frame, task, args.n_boot, args.seed)
            results[setting][task] = found
            _table(console, setting, found)
        if task in TARGET_LIMITS:
            key, limit = TARGET_LIMITS[task]
            measured = results["covariate_shift"][task][key]
            results["targets"][task] = {
                "measure": key,
                "limit": limit,
                "measured": measured,
                "met": measured <= limit,
            }
    console.print(results["targets"])
    out = write_json(RESULTS / "bench_estimate_tasks.json", results)
    console.print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
