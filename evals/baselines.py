"""The baseline retraining policies of ``evals.policies``, scored prequentially.

- ``never``: the first model (trained on the first ``Stream.initial`` batches) serves every batch.
- ``every batch``: after scoring each batch, retrain and deploy the new model.
- ``every k``: retrain and deploy after every ``k``-th batch.

Each later batch is scored with the model deployed before it (``prequential_score``: the
task's primary metric; ``None`` for a classifier's single-class batch) before anything trains
on it. The baselines use the loop's training tool (``tools.train.train_model``) with default
hyper-parameters on the window the loop's retraining uses (``training_window``). Also holds
the comparison's records: ``Stream``, ``PolicyRow``, ``PolicyRun``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from driftpilot.core.errors import ModelError
from driftpilot.core.policy import Policy
from driftpilot.core.settings import Settings
from driftpilot.core.tasks import METRICS, PRIMARY, Task
from tools.drift import Scorer, model_performance
from tools.train import Family, TrainedModel, TrainSpec, split_holdout, train_model

THREADS = 1  # 2 cores: one booster thread (ENVIRONMENT.md); the loop gets the same
Framing = str  # "month" (the dataset's calendar batching) or "equal" (equal-size batches)
CALENDAR, EQUAL = "month", "equal"
FRAMINGS = (CALENDAR, EQUAL)

Schedule = Callable[[int], bool]  # batch index -> retrain after scoring it?


@dataclass
class Stream:
    """A dataset cut into time-ordered batches, with its modelling columns."""

    dataset: str
    batching: str
    target: str
    time_col: str
    numeric: list[str]
    categorical: list[str]
    batches: list[tuple[str, pl.DataFrame]]
    family: Family = "lightgbm"
    task: Task = "binary"
    initial: int = 1  # batches that train the first model of every policy (never scored)
    framing: Framing = CALENDAR

    @property
    def metric(self) -> str:
        """The task's primary metric: what every policy is scored by."""
        return PRIMARY[self.task]


@dataclass
class PolicyRow:
    """One batch under one policy: the prequential score and what the policy did after it."""

    index: int
    batch_id: str
    n_rows: int
    positives: int  # binary: rows labelled 1 (0 for other tasks)
    score: float | None  # the deployed model's primary metric on this batch, before training on it
    retrained: bool = False  # a new model was trained (a recalibration is not a retrain)
    promoted: bool = False  # a new model serves from the next batch
    recalibrated: bool = False  # the loop only: the champion plus a calibration map instead
    train_s: float = 0.0
    score_s: float = 0.0
    note: str = ""
    action: str | None = None  # the loop only: its decision and outcome
    outcome: str | None = None
    drift_share: float | None = None
    seconds: float | None = None  # the loop only: wall time of the control run


@dataclass
class PolicyRun:
    """A policy over a whole stream."""

    policy: str
    rows: list[PolicyRow]
    compute_s: float
    meta: dict[str, Any] = field(default_factory=dict)
    metric: str = "roc_auc"  # the task's primary metric, what every score is in

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].higher_is_better

    def scores(self) -> list[float]:
        return [r.score for r in self.rows if r.score is not None]

    def totals(self) -> dict[str, Any]:
        """Mean and worst prequential score (over scored batches; worst = the lowest ROC AUC or
        the highest RMSE), retrains, recalibrations (a calibration map on the champion, a
        fraction of a retrain's cost: counted apart, as issue 21 tells them apart),
        promotions (either kind), and the yield of the retrains."""
        scores = self.scores()
        worst = min if self.higher_is_better else max
        retrains = sum(r.retrained for r in self.rows)
        promotions = sum(r.promoted for r in self.rows)
        paid_off = sum(r.promoted and r.retrained for r in self.rows)
        return {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "batches": len(self.rows),
            "scored": len(scores),
            "mean_score": round(statistics.fmean(scores), 4) if scores else None,
            "worst_score": round(worst(scores), 4) if scores else None,
            "retrains": retrains,
            "recalibrations": sum(r.recalibrated for r in self.rows),
            "promotions": promotions,
            # promoted retrains per retrain (a baseline deploys every model it trains: 1.0)
            "yield": round(paid_off / retrains, 4) if retrains else None,
            "compute_s": round(self.compute_s, 2),
            **self.meta,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "totals": self.totals(),
            "rows": list(map(asdict, self.rows)),
        }


# -- training window --------------------------------------------------------------------------


def train_spec(stream: Stream, settings: Settings) -> TrainSpec:
    """The TrainSpec the loop's retraining builds, with default hyper-parameters."""
    return TrainSpec(
        family=stream.family,
        target=stream.target,
        numeric=stream.numeric,
        categorical=stream.categorical,
        time_col=stream.time_col,
        task=stream.task,
        threads=settings.threads,
        seed=settings.seed,
    )


def training_window(
    batches: list[pl.DataFrame],
    index: int,
    window: int,
    holdout_fraction: float,
    time_col: str,
    *,
    initial: int = 1,
) -> pl.DataFrame:
    """Mirror of ``agents.optimizer.training_window`` for the baselines: the last ``window``
    batches up to ``index`` (the first ``initial``, the bootstrap's, are never among them),
    the current batch minus its latest ``holdout_fraction``."""
    current = batches[index].sort(time_col)
    n_hold = max(1, int(current.height * holdout_fraction))
    earlier = batches[max(initial, index - window + 1) : index]
    return pl.concat([*earlier, current.head(current.height - n_hold)], how="vertical_relaxed")


# -- scoring ----------------------------------------------------------------------------------


def prequential_score(
    model: Scorer,
    frame: pl.DataFrame,
    target: str,
    *,
    task: Task = "binary",
    metric: str | None = None,
) -> float | None:
    """``metric`` (default: the task's primary: ROC AUC for a classifier, RMSE for a
    regression) of ``model`` on ``frame``, in the model's own class order; None when a
    classifier's batch holds a single class (no ROC AUC)."""
    if task != "regression" and frame[target].drop_nulls().n_unique() < 2:
        return None
    classes = getattr(model, "classes", None)
    scored = model_performance(model, frame, target, task=task, classes=classes)
    return scored.get(metric or PRIMARY[task])


def _positives(frame: pl.DataFrame, target: str, task: Task) -> int:
    return int(frame[target].fill_null(0).sum()) if task == "binary" else 0


def _scored_row(
    model: Scorer, index: int, batch_id: str, frame: pl.DataFrame, stream: Stream
) -> PolicyRow:
    """Score the deployed model on one batch (before anything trains on it)."""
    started = time.perf_counter()
    target = stream.target
    score = prequential_score(model, frame, target, task=stream.task)
    return PolicyRow(
        index=index,
        batch_id=batch_id,
        n_rows=frame.height,
        positives=_positives(frame, target, stream.task),
        score=score,
        score_s=round(time.perf_counter() - started, 3),
        note="" if score is not None else "single class: no ROC AUC",
    )


# -- baselines --------------------------------------------------------------------------------


def schedules(k: int) -> dict[str, Schedule]:
    """The baseline policies: never, every batch, every ``k``-th batch."""
    return {
        "never": lambda index: False,
        "every batch": lambda index: True,
        f"every {k}": lambda index: index % k == 0,
    }


def run_baseline(
    policy: str,
    stream: Stream,
    schedule: Schedule,
    spec: TrainSpec,
    *,
    window: int,
    holdout_fraction: float,
    step: Callable[[], None] | None = None,
) -> PolicyRun:
    """Train the first model on the first ``stream.initial`` batches (minus their latest
    ``holdout_fraction``, as the loop's bootstrap holds them out for its out-of-time
    baseline); for each later batch, score the deployed model on it, then retrain (and
    deploy) on the window ending at it when ``schedule`` says so. ``step`` is called after
    each batch (a progress bar)."""
    frames = [frame for _, frame in stream.batches]
    first = pl.concat(frames[: stream.initial], how="vertical_relaxed")
    started = time.perf_counter()
    model = train_model(split_holdout(first, stream.time_col, holdout_fraction)[0], spec)
    bootstrap_s = time.perf_counter() - started
    rows = []
    for index in range(stream.initial, len(frames)):
        batch_id, frame = stream.batches[index]
        row = _scored_row(model, index, batch_id, frame, stream)
        if schedule(index):
            window_rows = training_window(
                frames, index, window, holdout_fraction, stream.time_col, initial=stream.initial
            )
            model = _retrain(model, window_rows, spec, row)
        rows.append(row)
        if step is not None:
            step()
    training_s = bootstrap_s + sum(r.train_s for r in rows)
    compute_s = training_s + sum(r.score_s for r in rows)
    meta = {"training_s": round(training_s, 2), "bootstrap_train_s": round(bootstrap_s, 2)}
    return PolicyRun(policy, rows, compute_s, meta, metric=stream.metric)


def _retrain(
    model: TrainedModel, window: pl.DataFrame, spec: TrainSpec, row: PolicyRow
) -> TrainedModel:
    """Fit on ``window`` and deploy it; a window that cannot train (a single class, too few
    rows) keeps the deployed model, and the row says why."""
    started = time.perf_counter()
    try:
        fitted = train_model(window, spec)
    except ModelError as exc:
        row.train_s = round(time.perf_counter() - started, 3)
        row.note = _join(row.note, f"retrain failed, model kept: {exc}")
        return model
    row.train_s = round(time.perf_counter() - started, 3)
    row.retrained = row.promoted = True
    return fitted


def _join(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


def _warm_up() -> None:
    """Import the booster and the metrics before any timing: the first policy must not pay
    for the imports."""
    import lightgbm  # noqa: F401
    import sklearn.metrics  # noqa: F401


def run_baselines(
    stream: Stream, *, k: int, console: Console | None = None, policy: Policy | None = None
) -> list[PolicyRun]:
    """Never / every batch / every ``k``: the loop's training tool with default parameters,
    on the retraining window and holdout of ``policy`` (default: the shipped one), with a
    progress bar per baseline on ``console``."""
    from driftpilot.stream import progress_bar

    policy = policy or Policy.load(None)
    _warm_up()
    scored = len(stream.batches) - stream.initial
    with (
        tempfile.TemporaryDirectory(prefix="driftpilot-policies-") as home,
        progress_bar(console) as progress,
    ):
        settings = Settings(home=Path(home), threads=THREADS)
        spec = train_spec(stream, settings)
        runs = []
        for name, schedule in schedules(k).items():
            bar = progress.add_task(f"{stream.dataset}: baseline {name!r}", total=scored)
            runs.append(
                run_baseline(
                    name,
                    stream,
                    schedule,
                    spec,
                    window=policy.retraining.default_window,
                    holdout_fraction=policy.retraining.holdout_fraction,
                    step=partial(progress.advance, bar),
                )
            )
    return runs
