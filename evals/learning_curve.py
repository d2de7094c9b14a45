"""How many reference rows the scenario suite's champion needs: its learning curve (offline).

    python -m evals.learning_curve [--dataset flights_delay|all] [--repeats 3] [--out-dir D]

A scenario's batches before the onset carry no drift, so the right action there is ``none``.
That holds only if one more clean batch cannot win a retrain a gain the policy counts
(``drift.max_metric_drop``): a champion trained far below its learning curve's plateau is
beaten by a retrain on more rows of the same distribution, and its clean batches retrain for a
real gain that no drift caused. This eval measures the curve on the suite's own rows (the
cached CTGAN of ``evals.scenarios``, labels drawn by its teacher):

- a model of the suite's recipe (``tools.train.train_model``, default parameters) is fitted
  on ``n`` clean rows, ``repeats`` times on different samples, for each ``n`` of ``SIZES``;
- each is scored on 10,000 other clean rows in the task's primary metric;
- ``gain_per_batch`` is what one more batch of the quick tier (1,000 rows) wins at each
  size, in ``Metric.gain`` units (points of ROC AUC; a share of the RMSE), interpolated
  between the measured sizes.

It prints the curve and writes ``learning_curve_<dataset>.json``. What it showed (2 cores,
seed 0, 3 samples a size; the gain of one more batch between a size and the next): from
2,000 rows (the quick tier's old reference) a batch won 0.017 ROC AUC (binary), 0.022
(multiclass), 0.004 (credit cards) and 3.8 % of the RMSE (regression); from 8,000 rows 0.002,
0.003, 0.001 and 0.7 %, all under ``max_metric_drop`` (0.02): ``evals.scenario_specs.QUICK``
now trains its champion on 8,000 rows.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
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

SIZES = (2000, 3000, 4000, 6000, 8000, 12000, 16000)
TEST_ROWS = 10_000
THREADS = 2


def clean_rows(dataset: str, n: int, *, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``n`` clean training rows and ``TEST_ROWS`` clean test rows, made as the suite makes
    its batches (its cached CTGAN, its teacher's labels)."""
    spec = SPECS[dataset]
    reference = reference_window(dataset)
    settings = Settings()
    epochs = QUICK[3]
    synthesizer, _ = fit_synthesizer(reference, spec, epochs=epochs, settings=settings, seed=0)
    labeller = teacher_labeller(reference, spec, threads=THREADS)
    stream = make_scenario(
        synthesizer,
        reference,
        spec,
        ScenarioSpec(n_batches=2, onset=1, batch_rows=TEST_ROWS, reference_rows=n, seed=seed),
        labeller,
    )
    return stream.reference.frame, stream.batches[0].frame


def curve(dataset: str, repeats: int, console: Console | None) -> dict[str, Any]:
    """The primary metric at each of ``SIZES`` (mean and spread over ``repeats`` samples)."""
    spec = SPECS[dataset]
    name = PRIMARY[spec.task]
    pool, test = clean_rows(dataset, max(SIZES), seed=7)
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
            rows = pool if n >= pool.height else pool.sample(n=n, seed=repeat)
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
    batch = QUICK[2]
    for before, after in itertools.pairwise(points):
        step = (after["rows"] - before["rows"]) / batch
        before["gain_per_batch"] = round(gain(before["mean"], after["mean"]) / step, 4)
    return {"dataset": dataset, "task": spec.task, "metric": name, "points": points}


def table(result: dict[str, Any]) -> Table:
    out = Table(title=f"{result['dataset']}: {result['metric']} by training rows")
    for column in ("rows", result["metric"], "stdev", "gain of one more batch"):
        out.add_column(column, justify="right")
    for p in result["points"]:
        per = p.get("gain_per_batch")
        out.add_row(
            f"{p['rows']:,}",
            f"{p['mean']:.4f}",
            "-" if p["stdev"] is None else f"{p['stdev']:.4f}",
            "-" if per is None else f"{per:+.4f}",
        )
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=[*SPECS, "all"], default="flights_delay")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = Console()
    suite = ("flights", "flights_delay", "flights_delay_class", "creditcard")
    datasets = list(suite) if args.dataset == "all" else [args.dataset]
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
