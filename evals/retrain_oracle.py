"""With hindsight: the best retraining schedule a retrain budget allows on a built-in stream.

    python -m evals.retrain_oracle --dataset flights_delay [--budget-share 0.3333] [--out-dir D]

Issue 19's target asks the loop for a prequential score at least that of retraining after every
batch, with at most a third of its retrains. This eval asks whether *any* schedule within that
budget gets there on the stream, so a missed target can be read as the policy's fault or the
stream's:

- one model is trained after each batch on the window the loop and the baselines use
  (``baselines.training_window``, default hyper-parameters, ``tools.train.train_model``), and
  each is scored on every later batch: an ``n x n`` table of prequential scores;
- a schedule is a set of batches after which to retrain and deploy; its score for batch ``i``
  is that of the model trained after the latest scheduled batch before ``i`` (or the first
  model). Every schedule of at most ``budget`` retrains is scored from the table, no training;
- it prints and writes (``retrain_oracle_<dataset>.json``) every batch's, never's, the best
  schedules', and how many schedules within the budget reach every batch's score.

The oracle picks its schedule knowing every later batch's labels, which no policy can: its best
schedule is an upper bound for any policy with default hyper-parameters, and the share of
schedules that reach the target says how much luck a rule would need.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from driftpilot.core.policy import Policy
from driftpilot.core.settings import Settings
from driftpilot.core.tasks import METRICS
from evals.baselines import (
    THREADS,
    Stream,
    _warm_up,
    prequential_score,
    train_spec,
    training_window,
)
from evals.common import machine, write_json
from evals.policies import BATCHING, RESULTS, stream_for
from tools.datasets import SPECS
from tools.train import TrainedModel, split_holdout, train_model

MAX_SHARE = 1 / 3  # issue 19: at most a third of every batch's retrains
TOP = 5  # best schedules reported


@dataclass
class ScoreTable:
    """``scores[m][i]``: model ``m`` (0 = the first model, ``m`` = trained after batch ``m``)
    on batch ``i``; only ``i > m`` is filled (prequential)."""

    batch_ids: list[str]
    scores: dict[int, dict[int, float | None]]
    first: int  # the first scored batch (= the stream's initial batches)
    metric: str
    # holdout[m][c]: model c (m itself, the first model, the one before m) on the latest
    # holdout_fraction of batch m, where the loop's evaluator judges a challenger trained on m
    holdout: dict[int, dict[int, float | None]] = field(default_factory=dict)

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].higher_is_better

    @property
    def last(self) -> int:
        return len(self.batch_ids) - 1

    def schedule_scores(self, retrain_after: tuple[int, ...]) -> list[float]:
        """The prequential scores of deploying the model trained after each batch in
        ``retrain_after`` (sorted) from the next batch on; single-class batches are left out."""
        deployed, out = 0, []
        pending = list(retrain_after)
        for i in range(self.first, self.last + 1):
            while pending and pending[0] < i:
                deployed = pending.pop(0)
            score = self.scores[deployed][i]
            if score is not None:
                out.append(score)
        return out

    def mean(self, retrain_after: tuple[int, ...]) -> float:
        return statistics.fmean(self.schedule_scores(retrain_after))

    def better_or_equal(self, a: float, b: float) -> bool:
        return a >= b if self.higher_is_better else a <= b


def score_table(stream: Stream, policy: Policy, console: Console | None) -> ScoreTable:
    """Train the first model and one model after each scored batch but the last, and score each
    on every later batch."""
    frames = [frame for _, frame in stream.batches]
    window = policy.retraining.default_window
    holdout = policy.retraining.holdout_fraction
    with tempfile.TemporaryDirectory(prefix="driftpilot-oracle-") as home:
        spec = train_spec(stream, Settings(home=Path(home), threads=THREADS))
        first = pl.concat(frames[: stream.initial], how="vertical_relaxed")
        models: dict[int, TrainedModel] = {
            0: train_model(split_holdout(first, stream.time_col, holdout)[0], spec)
        }
        for index in range(stream.initial, len(frames) - 1):
            rows = training_window(
                frames, index, window, holdout, stream.time_col, initial=stream.initial
            )
            models[index] = train_model(rows, spec)
            if console is not None:
                console.print(f"[dim]trained after {stream.batches[index][0]}[/dim]")

    def score(model: TrainedModel, frame: pl.DataFrame) -> float | None:
        return prequential_score(model, frame, stream.target, task=stream.task)

    scores = {
        m: {i: score(model, frames[i]) for i in range(max(m + 1, stream.initial), len(frames))}
        for m, model in models.items()
    }
    held: dict[int, dict[int, float | None]] = {}
    for m in range(stream.initial, len(frames) - 1):
        tail = split_holdout(frames[m], stream.time_col, holdout)[1]
        held[m] = {c: score(models[c], tail) for c in {m, 0, m - 1} if c in models}
    return ScoreTable(
        batch_ids=[batch_id for batch_id, _ in stream.batches],
        scores=scores,
        first=stream.initial,
        metric=stream.metric,
        holdout=held,
    )


def carry(table: ScoreTable) -> dict[str, Any]:
    """Does a challenger's gain on its batch's holdout (what the evaluator judges) foretell its
    gain on the next batch (what serving it earns)? Per model, against the first model and
    against the one trained a batch before; the correlation and how often the signs agree."""
    gain = METRICS[table.metric].gain  # points of ROC AUC, a share of the RMSE: better > 0
    rows: list[dict[str, Any]] = []
    for m, held in table.holdout.items():
        for champion, name in ((0, "first"), (m - 1, "previous")):
            if champion not in held or (name == "previous" and champion == 0):
                continue  # the first retrain: its previous model is the first one
            h_ch, h_m = held[champion], held[m]
            n_ch, n_m = table.scores[champion][m + 1], table.scores[m][m + 1]
            if None in (h_ch, h_m, n_ch, n_m):
                continue
            rows.append(
                {
                    "trained_after": table.batch_ids[m],
                    "against": name,
                    "holdout_gain": round(gain(h_ch, h_m), 4),  # type: ignore[arg-type]
                    "next_gain": round(gain(n_ch, n_m), 4),  # type: ignore[arg-type]
                }
            )
    summary: dict[str, Any] = {"rows": rows}
    for name in ("first", "previous"):
        pairs = [(r["holdout_gain"], r["next_gain"]) for r in rows if r["against"] == name]
        if len(pairs) < 3:
            continue
        hold, nxt = zip(*pairs, strict=True)
        summary[name] = {
            "models": len(pairs),
            "correlation": round(statistics.correlation(hold, nxt), 3),
            "sign_agreement": sum((a > 0) == (b > 0) for a, b in pairs),
        }
    return summary


def schedules(table: ScoreTable, budget: int) -> list[tuple[int, ...]]:
    """Every set of at most ``budget`` batches to retrain after; the last batch is left out
    (a model trained after it is never scored)."""
    candidates = range(table.first, table.last)
    return [
        combo for size in range(budget + 1) for combo in itertools.combinations(candidates, size)
    ]


def budget_for(table: ScoreTable, share: float) -> int:
    """The most retrains ``share`` of every batch's allows (every batch retrains after each
    scored batch, the last included)."""
    return int((table.last - table.first + 1) * share + 1e-9)


def oracle(table: ScoreTable, budget: int) -> dict[str, Any]:
    """Score every schedule within ``budget`` and compare with every batch and never."""
    every = tuple(range(table.first, table.last))
    every_mean = table.mean(every)
    never_mean = table.mean(())
    scored = [(table.mean(s), s) for s in schedules(table, budget)]
    scored.sort(key=lambda pair: pair[0], reverse=table.higher_is_better)
    reaching = [s for mean, s in scored if table.better_or_equal(mean, every_mean)]

    def named(schedule: tuple[int, ...]) -> list[str]:
        return [table.batch_ids[i] for i in schedule]

    return {
        "budget": budget,
        "schedules": len(scored),
        "every_batch_mean": round(every_mean, 4),
        # the baseline also retrains after the last batch, a model never scored
        "every_batch_retrains": len(every) + 1,
        "never_mean": round(never_mean, 4),
        "best": [{"retrain_after": named(s), "mean": round(m, 4)} for m, s in scored[:TOP]],
        "reaching_every_batch": len(reaching),
        "reaching_share": round(len(reaching) / len(scored), 4),
        "reaching": [named(s) for s in reaching],
        "scores": {
            table.batch_ids[m] if m else "first": {
                table.batch_ids[i]: None if v is None else round(v, 4) for i, v in row.items()
            }
            for m, row in table.scores.items()
        },
    }


def oracle_table(dataset: str, result: dict[str, Any], metric: str) -> Table:
    table = Table(title=f"{dataset}: the best schedules of at most {result['budget']} retrains")
    table.add_column("schedule")
    table.add_column(f"mean {metric}", justify="right")
    table.add_row(
        f"every batch ({result['every_batch_retrains']} retrains)", f"{result['every_batch_mean']}"
    )
    table.add_row("never", f"{result['never_mean']}")
    for best in result["best"]:
        after = best["retrain_after"]
        table.add_row("after " + ", ".join(after) if after else "no retrain", f"{best['mean']}")
    return table


def run(dataset: str, *, share: float, out_dir: Path, console: Console | None) -> dict[str, Any]:
    started = time.perf_counter()
    _warm_up()
    stream = stream_for(dataset)
    table = score_table(stream, Policy.load(None), console)
    result = oracle(table, budget_for(table, share))
    result["carry"] = carry(table)
    payload = {
        "dataset": dataset,
        "batching": stream.batching,
        "task": stream.task,
        "metric": stream.metric,
        "higher_is_better": table.higher_is_better,
        "budget_share": round(share, 4),
        **result,
        "machine": machine(),
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    write_json(out_dir / f"retrain_oracle_{dataset}.json", payload)
    if console is not None:
        console.print(oracle_table(dataset, result, stream.metric))
        console.print(
            f"{result['reaching_every_batch']} of {result['schedules']} schedules of at most "
            f"{result['budget']} retrains reach every batch's {result['every_batch_mean']}",
            markup=False,
        )
        for name in ("first", "previous"):
            if name in result["carry"]:
                c = result["carry"][name]
                console.print(
                    f"holdout gain vs next batch's gain, against the {name} model: correlation "
                    f"{c['correlation']}, signs agree {c['sign_agreement']} of {c['models']}",
                    markup=False,
                )
    return payload


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    choices = [name for name in SPECS if name in BATCHING and name != "creditcard"]
    parser.add_argument("--dataset", choices=[*choices, "all"], default="all")
    parser.add_argument("--budget-share", type=float, default=MAX_SHARE)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = Console()
    names = choices if args.dataset == "all" else [args.dataset]
    return [
        run(name, share=args.budget_share, out_dir=args.out_dir, console=console) for name in names
    ]


if __name__ == "__main__":
    main()
