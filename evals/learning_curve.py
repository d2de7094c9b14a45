"""The scenario suite's learning curve: how much a challenger wins on clean rows alone (offline).

    python -m evals.learning_curve [--dataset flights_delay|all] [--repeats 3] [--out-dir D]

A scenario's batches before the onset carry no drift, so the right action there is ``none``.
That holds only if a challenger cannot win a gain the policy counts (``drift.max_metric_drop``,
0.02) from clean rows alone. The champion trains on 70 % of the reference (two batches); a
challenger, and the drift analyst's quick retrain, on the last two batches but the current
one's holdout (30 %): 1.7 batches' rows against 1.4. On the steep part of the learning curve
those extra rows alone win, and clean batches retrain for a real gain no drift caused. This
eval measures the curve on the suite's own rows (the cached CTGAN of ``evals.scenarios``,
labels drawn by its teacher):

- a model of the suite's recipe (``tools.train.train_model``, default parameters) is fitted
  on ``n`` clean rows, ``repeats`` times on different samples of a pool of
  ``POOL_SHARE x max(SIZES)`` rows, for each ``n`` of ``SIZES``;
- each is scored on ``TEST_ROWS`` other clean rows in the task's primary metric;
- ``champion_vs_challenger`` is what a challenger's rows win over a champion's, in
  ``Metric.gain`` units (points of ROC AUC; a share of the RMSE), at a tier's batch size.

It prints the curve and writes ``learning_curve_<dataset>.json``. What it showed (2 cores,
seed 0, 3 samples a size), champion 1,400 vs challenger 1,700 rows (batches of 1,000, the
quick tier before) and 4,200 vs 5,100 (batches of 3,000, now): see ``evals/README.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from driftpilot.core.errors import ModelError
from driftpilot.core.settings import Settings
from driftpilot.core.tasks import PRIMARY, metric
from evals.common import machine, write_json
from evals.scenario_specs import QUICK
from evals.scenarios import RESULTS, reference_window
from tools.datasets import SPECS
from tools.drift import score_predictions
from tools.synth import ScenarioSpec, fit_synthesizer, make_scenario, teacher_labeller
from tools.train import TrainSpec, train_model

# The champion's and a challenger's training rows at 1,000 and 3,000 rows a batch, and beyond.
SIZES = (1400, 1700, 2000, 3000, 4200, 5100, 6000, 8000, 12000)
BATCHES = (1000, 3000)  # the quick tier's batch size before and now
TEST_ROWS = 10_000
POOL_SHARE = 1.5  # the pool the samples are drawn from, over the largest size
SUITE = ("flights", "flights_delay", "flights_delay_class", "creditcard")  # the suite's data
THREADS = 2


def clean_rows(dataset: str, n: int, *, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``n`` clean training rows and ``TEST_ROWS`` clean test rows, made as the suite makes
    its reference (its cached CTGAN, its teacher's labels): one reference, split."""
    spec = SPECS[dataset]
    reference = reference_window(dataset)
    synthesizer, _ = fit_synthesizer(reference, spec, epochs=QUICK[3], settings=Settings(), seed=0)
    labeller = teacher_labeller(reference, spec, threads=THREADS)
    rows = n + TEST_ROWS
    made = ScenarioSpec(n_batches=2, onset=1, batch_rows=10, reference_rows=rows, seed=seed)
    frame = make_scenario(synthesizer, reference, spec, made, labeller).reference.frame
    frame = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    return frame.head(n), frame.tail(TEST_ROWS)


def champion_vs_challenger(
    points: list[dict[str, Any]], gain: Callable[[float, float], float]
) -> dict[str, float]:
    """What a challenger's rows win over the champion's, per batch size of ``BATCHES``: the
    champion trains on 70 % of two batches, a challenger on 1.7 batches."""
    mean = {p["rows"]: p["mean"] for p in points}
    return {
        f"batch_{rows}": round(gain(mean[rows * 14 // 10], mean[rows * 17 // 10]), 4)
        for rows in BATCHES
    }


def curve(dataset: str, repeats: int, console: Console | None) -> dict[str, Any]:
    """The primary metric at each of ``SIZES`` (mean and spread over ``repeats`` samples)."""
    spec = SPECS[dataset]
    name = PRIMARY[spec.task]
    pool, test = clean_rows(dataset, int(POOL_SHARE * max(SIZES)), seed=7)
    train_spec = TrainSpec(
        target=spec.target,
        numeric=spec.numeric,
        categorical=spec.categorical,
        threads=THREADS,
        seed=0,
        task=spec.task,
    )
    points: list[dict[str, Any]] = []
    for n in SIZES:
        scores = []
        for repeat in range(repeats):
            rows = pool.sample(n=n, seed=repeat)
            model = train_model(rows, train_spec)
            truth = model.encode(test[spec.target])
            found = score_predictions(truth, model.predict_scores(test), task=spec.task)
            value = found.metrics[name]
            if value is None:
                raise ModelError(f"{name} is undefined on the {dataset} test rows")
            scores.append(float(value))
        points.append(
            {
                "rows": n,
                "mean": round(statistics.fmean(scores), 4),
                "stdev": round(statistics.stdev(scores), 4) if len(scores) > 1 else None,
            }
        )
        if console:
            console.print(f"{dataset}: {n:>6,} rows  {name} {points[-1]['mean']}")
    gain = metric(name, spec.task).gain
    return {
        "dataset": dataset,
        "task": spec.task,
        "metric": name,
        "points": points,
        "champion_vs_challenger": champion_vs_challenger(points, gain),
    }


def table(result: dict[str, Any]) -> Table:
    wins = ", ".join(
        f"{k.removeprefix('batch_')} rows a batch {v:+.4f}"
        for k, v in result["champion_vs_challenger"].items()
    )
    out = Table(
        title=f"{result['dataset']}: {result['metric']} by training rows",
        caption=f"a challenger's rows win over the champion's: {wins}",
    )
    for column in ("rows", result["metric"], "stdev"):
        out.add_column(column, justify="right")
    for p in result["points"]:
        spread = "-" if p["stdev"] is None else f"{p['stdev']:.4f}"
        out.add_row(f"{p['rows']:,}", f"{p['mean']:.4f}", spread)
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=[*SUITE, "all"], default="flights_delay")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = Console()
    datasets = list(SUITE) if args.dataset == "all" else [args.dataset]
    results = []
    for dataset in datasets:
        started = time.perf_counter()
        result = curve(dataset, args.repeats, console)
        result.update(
            repeats=args.repeats,
            machine=machine(),
            elapsed_s=round(time.perf_counter() - started, 1),
        )
        console.print(table(result))
        write_json(args.out_dir / f"learning_curve_{dataset}.json", result)
        results.append(result)
    return results


if __name__ == "__main__":
    main()
