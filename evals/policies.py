"""Policy comparison on real streams: when should a model be retrained?

Four policies see the same batches (flights by month over 2013, credit-card fraud by 4-hour
windows) and are scored *prequentially*: the model deployed before batch ``i`` is scored on
batch ``i`` before anything trains on it, in the task's primary metric
(``driftpilot.core.tasks.PRIMARY``: ROC AUC for binary, macro one-vs-rest ROC AUC for
multiclass, RMSE for regression; lower is better for RMSE, and every comparison honours it).
The flights stream comes with three targets: ``flights`` (binary: delayed), ``flights_delay``
(regression: arrival delay in minutes) and ``flights_delay_class`` (multiclass: delay class).

- ``never``: the first champion (trained on the first batch) serves every batch.
- ``every batch``: after scoring each batch, retrain and deploy the new model.
- ``every k``: retrain and deploy after every ``k``-th batch.
- ``driftpilot``: the control loop (``evals.harness.run_stream``): drift report, the champion's
  performance, Optuna-tuned challenger, champion-vs-challenger gate, risk policy; high-risk
  promotions are approved by an evaluator principal.

The baselines use the loop's training tool (``tools.train.train_model``, same family, threads
and seed) with *default hyper-parameters*, without Optuna and without MLflow, on the window
the loop's retraining uses by default (the last ``retraining.default_window`` accepted batches,
minus the latest ``holdout_fraction`` of the current batch; the first batch, which trains the
first champion, is not one of the loop's accepted batches). A classifier's batch with a
single class has no ROC AUC: its score is ``None`` and it is left out of means. The baselines
have no quality gate: a batch the loop quarantines still trains them (the results count the loop's
quarantines; the loop's champion is scored on such a batch here, as the loop records no
metric for it).

    python -m evals.policies [--dataset flights|flights_delay|flights_delay_class|creditcard|all]
                             [--k 3] [--llm builtin] [--quick] [--out-dir evals/results]
                             [--framing month|equal|both]

Framings (issue 21): ``month`` cuts a stream by its calendar batching (months for flights,
4-hour windows for credit cards); ``equal`` cuts the *same rows*, in the same time order, into
the same number of batches of equal size (sizes differ by at most one row). ``both`` runs the
two and checks issue 21's criterion: DriftPilot's retrain counts within one of each other, and
each framing's retrain yield (promotions / retrains) at least 50 %.

Prints a table per dataset and the issue-19 target (DriftPilot's mean prequential metric at
least that of retraining every batch, in the metric's direction, with at most a third of its
retrains) and whether it is met; writes ``policies_<dataset>[_equal][_quick].json`` and
``.png`` to the output directory (and ``framings_<dataset>[_quick].json`` with ``both``).
"""

from __future__ import annotations

import argparse
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
from rich.table import Table

from driftpilot.core import metric_text
from driftpilot.core.errors import ModelError
from driftpilot.core.policy import Policy
from driftpilot.core.settings import Settings
from driftpilot.core.tasks import METRICS, PRIMARY, Task
from driftpilot.runs.plane import ControlPlane
from evals.common import machine, write_json
from evals.harness import (
    BatchRow,
    StreamResult,
    StreamSpec,
    cut,
    plane_for,
    run_stream,
)
from tools.datasets import SPECS, load_dataset
from tools.drift import Scorer, model_performance
from tools.train import Family, TrainedModel, TrainSpec, split_holdout, train_model

RESULTS = Path(__file__).parent / "results"
THREADS = 1  # 2 cores: one booster thread (ENVIRONMENT.md); the loop gets the same
# The datasets of tools.datasets.SPECS whose batching fits a year-long comparison (seattle
# weather and gapminder have too few rows per batch or too few batches), and their batches.
BATCHING = {
    "flights": "month",
    "flights_delay": "month",
    "flights_delay_class": "month",
    "creditcard": "4h",
}
QUICK_BATCHES = 8  # --quick: flights January to August (7 scored months, about 2 minutes)
Framing = str  # "month" (the dataset's calendar batching) or "equal" (equal-size batches)
CALENDAR, EQUAL = "month", "equal"
FRAMINGS = (CALENDAR, EQUAL)
# Issue 21's framing criterion: the loop's retrain counts under the two framings differ by at
# most this, and each framing's yield (promotions per retrain) is at least MIN_YIELD.
MAX_RETRAIN_GAP = 1
MIN_YIELD = 0.5
TRAINING_TOOLS = ("tune.tune", "train.train_model")  # the loop's training share
SCORING_TOOLS = ("drift.model_performance",)
LOOP = "driftpilot"
NOTES = [
    "prequential: the model deployed before batch i is scored on batch i before any training "
    "on it; the first batch trains the first champion of every policy and is not scored",
    "baselines use default hyper-parameters (no Optuna, no MLflow) and deploy every model they "
    "train; the DriftPilot loop tunes with Optuna and promotes only a challenger that beats "
    "the champion on a holdout",
    "baseline training window = the loop's default: the last retraining.default_window "
    "batches (the first batch excluded, as in the loop) minus the latest holdout_fraction "
    "of the current batch",
    "scores are the task's primary metric (binary and multiclass ROC AUC, higher is better; "
    "regression RMSE, lower is better); a classifier's batch with a single class has no ROC "
    "AUC: reported as null and left out of means",
    "compute seconds: baselines = training + scoring; the loop = wall time of bootstrap and "
    "every control run (drift reports, LLM or builtin decisions, tuning, MLflow, audit); "
    "training_s = time in training tools (the loop: Optuna + train_model from its audit)",
]

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
    retrained: bool = False
    promoted: bool = False  # a new model serves from the next batch
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
        the highest RMSE), retrains, promotions."""
        scores = self.scores()
        worst = min if self.higher_is_better else max
        retrains = sum(r.retrained for r in self.rows)
        promotions = sum(r.promoted for r in self.rows)
        return {
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "batches": len(self.rows),
            "scored": len(scores),
            "mean_score": round(statistics.fmean(scores), 4) if scores else None,
            "worst_score": round(worst(scores), 4) if scores else None,
            "retrains": retrains,
            "promotions": promotions,
            # promotions per retrain (a baseline deploys every model it trains: 1.0)
            "yield": round(promotions / retrains, 4) if retrains else None,
            "compute_s": round(self.compute_s, 2),
            **self.meta,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "totals": self.totals(),
            "rows": list(map(asdict, self.rows)),
        }


# -- streams ----------------------------------------------------------------------------------


def datasets_for(dataset: str, *, quick: bool) -> list[str]:
    """The datasets a run covers: ``all`` is every dataset of ``BATCHING`` (with ``--quick``,
    flights only); a named dataset is itself."""
    if dataset == "all":
        return ["flights"] if quick else [name for name in SPECS if name in BATCHING]
    return [dataset]


def stream_for(dataset: str, *, quick: bool = False, framing: Framing = CALENDAR) -> Stream:
    """The dataset's batches: flights by calendar month, credit card by 4-hour windows;
    ``quick`` keeps the first ``QUICK_BATCHES``. ``framing="equal"`` re-cuts the same rows
    (those of the kept calendar batches) into as many equal-size batches.

    The datasets come from the default home's dataset cache (read-only use); every policy
    run gets its own fresh home.
    """
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
    spec = SPECS[dataset]
    frame = load_dataset(spec.name)  # type: ignore[arg-type]
    batches = cut(frame, spec.time_col, BATCHING[dataset])
    if quick:
        batches = batches[:QUICK_BATCHES]
    batching = BATCHING[dataset]
    if framing == EQUAL:
        rows = pl.concat([part for _, part in batches], how="vertical_relaxed")
        batches = equal_batches(rows, spec.time_col, len(batches))
        batching = f"{len(batches)} equal-size batches of the {batching} batches' rows"
    return Stream(
        dataset=dataset,
        batching=batching,
        target=spec.target,
        time_col=spec.time_col,
        numeric=list(spec.numeric),
        categorical=list(spec.categorical),
        batches=batches,
        task=spec.task,
        framing=framing,
    )


def equal_batches(frame: pl.DataFrame, time_col: str, n: int) -> list[tuple[str, pl.DataFrame]]:
    """``frame`` in time order (ties keep their row order) cut into ``n`` consecutive batches
    whose sizes differ by at most one row (the first ``height % n`` get the extra row). Every
    row is in exactly one batch. Ids are ``eqNN-<first time>`` (``eqNN`` for a non-temporal
    time column).

    Raises:
        ValueError: ``n`` is below 1 or above the number of rows.
    """
    if not 1 <= n <= frame.height:
        raise ValueError(f"cannot cut {frame.height} rows into {n} non-empty batches")
    ordered = frame.sort(time_col, maintain_order=True)
    size, extra = divmod(ordered.height, n)
    temporal = ordered[time_col].dtype.is_temporal()
    out, offset = [], 0
    for index in range(n):
        length = size + (index < extra)
        part = ordered.slice(offset, length)
        batch_id = f"eq{index + 1:02d}"
        if temporal:
            batch_id += f"-{part[time_col][0]:%Y-%m-%dT%H}"
        out.append((batch_id, part))
        offset += length
    return out


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


# -- the DriftPilot loop ----------------------------------------------------------------------


def run_loop(
    stream: Stream, *, llm: str, console: Console | None = None
) -> tuple[PolicyRun, StreamResult]:
    """The control loop over the stream (``evals.harness.run_stream``) in a fresh home.

    Batches the loop left without a champion metric (quarantined) are scored here with the
    champion deployed at that batch, so every policy has a score on every batch.
    """
    with tempfile.TemporaryDirectory(prefix="driftpilot-policies-") as home:
        plane = plane_for(Path(home), llm=llm, threads=THREADS)
        try:
            spec = StreamSpec(
                name=stream.dataset,
                target=stream.target,
                time_col=stream.time_col,
                numeric=stream.numeric,
                categorical=stream.categorical,
                family=stream.family,
                task=stream.task,
                initial=stream.initial,
            )
            result = run_stream(plane, spec, stream.batches, console=console)
            run = loop_run(plane, stream, result)
        finally:
            plane.close()
    return run, result


def loop_run(plane: ControlPlane, stream: Stream, result: StreamResult) -> PolicyRun:
    """The loop's stream (run on ``plane``, the model named ``stream.dataset``) as a
    ``PolicyRun`` beside the baselines: its champion's prequential metric per batch (a batch
    left without one scored with the champion deployed then), retrains, promotions, and
    compute from the audit's tool calls. The plane must still be open."""
    tools = tool_seconds(plane)
    rows = [_loop_row(r, stream, tools.get(r.run_id, {})) for r in result.rows]
    fill_unscored(plane, stream, result, rows)
    totals = _sum_tools(tools)
    training_s = sum(totals.get(t, 0.0) for t in TRAINING_TOOLS)
    meta = {
        "training_s": round(training_s, 2),
        "bootstrap_s": round(result.bootstrap_s, 2),
        "tool_s": {name: round(s, 2) for name, s in sorted(totals.items())},
        **{  # the harness's own counts (quarantines, LLM decisions, tokens, fallbacks...)
            key: value
            for key, value in result.totals().items()
            if key not in ("batches", "retrains", "promotions", "wall_s")
        },
        "audit_verified": result.audit_verified,
    }
    return PolicyRun(LOOP, rows, result.wall_s, meta, metric=stream.metric)


def tool_seconds(plane: ControlPlane) -> dict[str, dict[str, float]]:
    """Seconds spent per tool, per run id, from the audit's tool calls."""
    out: dict[str, dict[str, float]] = {}
    for record in plane.audit():
        if record.get("table") != "tool_calls":
            continue
        per_run = out.setdefault(str(record["run_id"]), {})
        tool = str(record["tool"])
        per_run[tool] = per_run.get(tool, 0.0) + float(record.get("latency_ms") or 0.0) / 1000
    return out


def _sum_tools(per_run: dict[str, dict[str, float]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for tools in per_run.values():
        for tool, seconds in tools.items():
            totals[tool] = totals.get(tool, 0.0) + seconds
    return totals


def _loop_row(row: BatchRow, stream: Stream, tools: dict[str, float]) -> PolicyRow:
    frame = stream.batches[row.index][1]
    return PolicyRow(
        index=row.index,
        batch_id=row.batch_id,
        n_rows=row.n_rows,
        positives=_positives(frame, stream.target, stream.task),
        score=row.champion_metric,
        retrained=row.retrained,
        promoted=row.promoted is not None,
        train_s=round(sum(tools.get(t, 0.0) for t in TRAINING_TOOLS), 3),
        score_s=round(sum(tools.get(t, 0.0) for t in SCORING_TOOLS), 3),
        note="" if row.champion_metric is not None else f"no champion metric ({row.action})",
        action=row.action,
        outcome=row.outcome,
        drift_share=row.drift_share,
        seconds=row.seconds,
    )


def fill_unscored(
    plane: ControlPlane, stream: Stream, result: StreamResult, rows: list[PolicyRow]
) -> None:
    """Score the champion deployed at each batch the loop left without a metric (a
    quarantined batch, say); a single-class batch stays None."""
    from tools import registry

    history = registry.champion_history(stream.dataset, plane.settings)
    if not history:
        raise ModelError(f"{stream.dataset!r} has no champion history after its stream")
    deployed = history[0]  # the bootstrap champion
    loaded: dict[int, TrainedModel] = {}
    for batch, row in zip(result.rows, rows, strict=True):
        frame = stream.batches[row.index][1]
        scorable = stream.task == "regression" or frame[stream.target].drop_nulls().n_unique() > 1
        if row.score is None and scorable:
            if batch.promoted is not None:  # scored after its promotion: not prequential
                row.note = f"unscored: no champion metric and v{batch.promoted} promoted"
            else:
                if deployed not in loaded:
                    loaded[deployed] = registry.load_version(
                        stream.dataset, deployed, plane.settings
                    )
                row.score = prequential_score(
                    loaded[deployed], frame, stream.target, task=stream.task
                )
                row.note = _join(row.note, f"scored by the eval with champion v{deployed}")
        elif row.score is None:
            row.note = "single class: no ROC AUC"
        if batch.promoted is not None:
            deployed = batch.promoted


# -- the target ------------------------------------------------------------------------------

BASELINE = "every batch"  # the issue-19 target's reference: retrain (and deploy) every month
MAX_RETRAIN_SHARE = 1 / 3  # the loop may retrain at most a third as often


def target_check(runs: list[PolicyRun]) -> dict[str, Any]:
    """Issue 19's target: the loop's mean prequential score is at least every batch's, in the
    metric's direction (RMSE: lower or equal), with at most a third of its retrains.

    The means are over the batches both policies scored, so a batch only one of them has a
    score for cannot tilt the comparison."""
    by_name = {run.policy: run for run in runs}
    loop, every = by_name[LOOP], by_name[BASELINE]
    measure = METRICS[loop.metric]
    ours = {r.index: r.score for r in loop.rows if r.score is not None}
    theirs = {r.index: r.score for r in every.rows if r.score is not None}
    both = sorted(ours.keys() & theirs.keys())
    loop_mean = statistics.fmean(ours[i] for i in both) if both else None
    every_mean = statistics.fmean(theirs[i] for i in both) if both else None
    gain = (
        measure.gain(every_mean, loop_mean)
        if loop_mean is not None and every_mean is not None
        else None
    )
    loop_retrains = sum(r.retrained for r in loop.rows)
    every_retrains = sum(r.retrained for r in every.rows)
    score_met = gain is not None and gain >= 0
    retrains_met = loop_retrains <= every_retrains * MAX_RETRAIN_SHARE
    return {
        "metric": loop.metric,
        "higher_is_better": measure.higher_is_better,
        "baseline": BASELINE,
        "batches_compared": len(both),
        "driftpilot_mean": None if loop_mean is None else round(loop_mean, 4),
        "baseline_mean": None if every_mean is None else round(every_mean, 4),
        # Metric.gain units: points for ROC AUC, a share of the baseline's RMSE for RMSE.
        "gain": None if gain is None else round(gain, 4),
        "score_met": score_met,
        "driftpilot_retrains": loop_retrains,
        "baseline_retrains": every_retrains,
        "max_retrains": round(every_retrains * MAX_RETRAIN_SHARE, 2),
        "retrains_met": retrains_met,
        "met": score_met and retrains_met,
    }


def target_line(check: dict[str, Any]) -> str:
    """One line: the target, the two measured sides, and whether each half is met."""
    label = metric_text.label(check["metric"])
    direction = "higher" if check["higher_is_better"] else "lower"
    relation = ">=" if check["higher_is_better"] else "<="
    gain = check["gain"]
    if gain is None:
        gain_text = "-"
    elif METRICS[check["metric"]].relative:  # Metric.gain is a share of the baseline's value
        gain_text = f"{gain:+.2%} of {check['baseline']}'s {label}"
    else:
        gain_text = f"{gain:+.4f} points"
    return (
        f"Target (issue 19): mean prequential {label} driftpilot {relation} {check['baseline']} "
        f"({direction} is better) and retrains <= 1/3 of {check['baseline']}'s. "
        f"Measured on {check['batches_compared']} batches: {label} "
        f"{_fmt(check['driftpilot_mean'])} vs {_fmt(check['baseline_mean'])} (gain {gain_text}): "
        f"{'met' if check['score_met'] else 'NOT met'}; retrains {check['driftpilot_retrains']} "
        f"vs {check['baseline_retrains']} (at most {check['max_retrains']}): "
        f"{'met' if check['retrains_met'] else 'NOT met'}. "
        f"Target {'MET' if check['met'] else 'NOT MET'}."
    )


# -- output -----------------------------------------------------------------------------------


def policy_table(runs: list[PolicyRun], title: str) -> Table:
    """Per policy: mean and worst prequential score (in the runs' metric), retrains,
    promotions, yield (promotions per retrain), compute seconds."""
    table = Table(title=title)
    table.add_column("policy", no_wrap=True)
    measure = metric_text.label(runs[0].metric) if runs else "score"
    columns = (f"mean {measure}", f"worst {measure}", "scored", "retrains", "promotions", "yield")
    for name in columns:
        table.add_column(name, justify="right")
    table.add_column("compute s", justify="right")
    table.add_column("of which training s", justify="right")
    for run in runs:
        t = run.totals()
        table.add_row(
            run.policy,
            _fmt(t["mean_score"]),
            _fmt(t["worst_score"]),
            f"{t['scored']}/{t['batches']}",
            str(t["retrains"]),
            str(t["promotions"]),
            "-" if t["yield"] is None else f"{t['yield']:.0%}",
            f"{t['compute_s']:.1f}",
            f"{t['training_s']:.1f}",
        )
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def plot_policies(
    runs: list[PolicyRun], path: Path, *, title: str, metric: str = "roc_auc"
) -> Path:
    """Prequential score per batch and policy (top) and when each policy retrained or
    promoted (bottom). Written as PNG with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curve, events) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    colors = [matplotlib.colormaps["tab10"](i) for i in range(10)]
    for lane, run in enumerate(runs):
        color = colors[lane % len(colors)]
        _plot_curve(curve, run, color)
        _plot_events(events, run, lane, color)
    _mark_unscored(curve, runs[0])
    labels = [(r.index, r.batch_id) for r in runs[0].rows]
    events.set_xticks([i for i, _ in labels], [b for _, b in labels], rotation=45, ha="right")
    events.set_yticks(range(len(runs)), [r.policy for r in runs])
    events.set_ylim(-0.6, len(runs) - 0.4)
    events.invert_yaxis()
    events.set_xlabel("batch (a model trained after a batch serves from the next one)")
    events.legend(handles=_event_legend(), loc="upper left", bbox_to_anchor=(1.01, 1.0))
    curve.set_ylabel(f"prequential {metric_text.label(metric)} ({metric_text.direction(metric)})")
    curve.set_title(title)
    curve.grid(alpha=0.3)
    curve.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_curve(ax: Any, run: PolicyRun, color: Any) -> None:
    xs = [r.index for r in run.rows]
    ys = [float("nan") if r.score is None else r.score for r in run.rows]
    mean = run.totals()["mean_score"]
    label = f"{run.policy} (mean {mean:.3f})" if mean is not None else run.policy
    ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.6, color=color, label=label)
    retrained = [(r.index, r.score) for r in run.rows if r.retrained and r.score is not None]
    if retrained:
        ax.scatter(
            *zip(*retrained, strict=True),
            marker="^",
            s=55,
            facecolors="none",
            edgecolors=[color],
            linewidths=1.3,
            zorder=3,
        )
    if run.policy == LOOP:
        promoted = [(r.index, r.score) for r in run.rows if r.promoted and r.score is not None]
        if promoted:
            ax.scatter(
                *zip(*promoted, strict=True),
                marker="*",
                s=170,
                color=color,
                edgecolors="black",
                linewidths=0.6,
                zorder=4,
            )


def _plot_events(ax: Any, run: PolicyRun, lane: int, color: Any) -> None:
    retrained = [r.index for r in run.rows if r.retrained]
    shift = -0.18 if run.policy == LOOP else 0.0  # the loop's stars sit just below
    ax.scatter(
        retrained,
        [lane + shift] * len(retrained),
        marker="^",
        s=60,
        facecolors="none",
        edgecolors=[color],
        linewidths=1.3,
    )
    if run.policy == LOOP:
        promoted = [r.index for r in run.rows if r.promoted]
        ax.scatter(
            promoted,
            [lane - shift] * len(promoted),
            marker="*",
            s=170,
            color=color,
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
        )
    ax.axhline(lane, color=color, alpha=0.15, linewidth=6)


def _mark_unscored(ax: Any, run: PolicyRun) -> None:
    """A dotted line where a classifier's batch has a single class (no ROC AUC for any
    policy)."""
    for row in run.rows:
        if row.score is None and row.note.startswith("single class"):
            ax.axvline(row.index, color="grey", linestyle=":", linewidth=1)
            ax.annotate(
                "one class: no ROC AUC",
                (row.index, 0.02),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=7,
                color="grey",
                ha="right",
            )


def _event_legend() -> list[Any]:
    from matplotlib.lines import Line2D

    return [
        Line2D(
            [],
            [],
            marker="^",
            linestyle="none",
            markerfacecolor="none",
            markeredgecolor="black",
            markersize=8,
            label="retrained after this batch",
        ),
        Line2D(
            [],
            [],
            marker="*",
            linestyle="none",
            color="black",
            markersize=11,
            label="DriftPilot promoted",
        ),
    ]


# -- entry points -----------------------------------------------------------------------------


def compare_policies(
    dataset: str,
    *,
    k: int,
    llm: str,
    quick: bool,
    console: Console | None,
    out_dir: Path = RESULTS,
    framing: Framing = CALENDAR,
) -> dict[str, Any]:
    """Run the four policies on one dataset's stream; print the table, write the JSON and the
    plot (``policies_<dataset>[_equal][_quick].json|png`` under ``out_dir``) and return the
    JSON. ``quick`` keeps the stream's first ``QUICK_BATCHES`` batches; ``framing`` is how
    the rows are cut (``stream_for``)."""
    started = time.perf_counter()
    stream = stream_for(dataset, quick=quick, framing=framing)
    runs = run_baselines(stream, k=k, console=console)
    loop, result = run_loop(stream, llm=llm, console=console)
    runs.append(loop)
    policy = Policy.load(None)
    stem = f"policies_{dataset}" + ("_equal" if framing == EQUAL else "")
    stem += "_quick" if quick else ""
    check = target_check(runs)
    title = f"{dataset}: batches by {stream.batching}, prequential {_measure(stream)} (LLM {llm})"
    payload = {
        "dataset": dataset,
        "framing": framing,
        "batching": stream.batching,
        "batches": [batch_id for batch_id, _ in stream.batches],
        "batch_rows": [part.height for _, part in stream.batches],
        "quick": quick,
        "k": k,
        "llm": llm,
        "backend": result.backend,
        "family": stream.family,
        "threads": THREADS,
        "window": policy.retraining.default_window,
        "holdout_fraction": policy.retraining.holdout_fraction,
        "notes": NOTES,
        "machine": machine(),
        "elapsed_s": round(time.perf_counter() - started, 2),
        "task": stream.task,
        "metric": stream.metric,
        "higher_is_better": METRICS[stream.metric].higher_is_better,
        "target": check,
        "totals": {run.policy: run.totals() for run in runs},
        "policies": {run.policy: run.to_json() for run in runs},
        "loop_stream": result.to_json(),
    }
    write_json(out_dir / f"{stem}.json", payload)
    plot_policies(runs, out_dir / f"{stem}.png", title=title, metric=stream.metric)
    if console is not None:
        console.print(policy_table(runs, title))
        console.print(target_line(check), markup=False)
        console.print(f"[dim]wrote {out_dir / stem}.json and .png[/dim]")
    return payload


def _measure(stream: Stream) -> str:
    measure = metric_text.label(stream.metric)
    return measure + " (macro one-vs-rest)" if stream.task == "multiclass" else measure


def framing_check(payloads: dict[Framing, dict[str, Any]]) -> dict[str, Any]:
    """Issue 21's framing criterion on one dataset's ``compare_policies`` payloads, one per
    framing: DriftPilot's retrain counts within ``MAX_RETRAIN_GAP`` of each other, and each
    framing's yield (promotions / retrains) at least ``MIN_YIELD``. A framing without a
    retrain has no yield and fails the yield half (nothing was shown to pay off)."""
    per = {
        framing: {key: payload["totals"][LOOP][key] for key in ("retrains", "promotions", "yield")}
        | {"batches": len(payload["batches"]), "mean_score": payload["totals"][LOOP]["mean_score"]}
        for framing, payload in payloads.items()
    }
    retrains = [p["retrains"] for p in per.values()]
    gap = max(retrains) - min(retrains)
    yields_met = all(p["yield"] is not None and p["yield"] >= MIN_YIELD for p in per.values())
    return {
        "framings": per,
        "retrain_gap": gap,
        "max_retrain_gap": MAX_RETRAIN_GAP,
        "retrains_met": gap <= MAX_RETRAIN_GAP,
        "min_yield": MIN_YIELD,
        "yields_met": yields_met,
        "met": gap <= MAX_RETRAIN_GAP and yields_met,
    }


def framing_line(dataset: str, check: dict[str, Any]) -> str:
    """One line: each framing's retrains, promotions and yield, and the criterion's verdict."""
    parts = [
        f"{framing}: {p['retrains']} retrains, {p['promotions']} promotions, yield "
        + ("-" if p["yield"] is None else f"{p['yield']:.0%}")
        for framing, p in check["framings"].items()
    ]
    return (
        f"Framings (issue 21) on {dataset}: {'; '.join(parts)}. Retrain counts within "
        f"{check['max_retrain_gap']} (gap {check['retrain_gap']}): "
        f"{'met' if check['retrains_met'] else 'NOT met'}; each yield >= {check['min_yield']:.0%}: "
        f"{'met' if check['yields_met'] else 'NOT met'}. Criterion "
        f"{'MET' if check['met'] else 'NOT MET'}."
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    choices = [name for name in SPECS if name in BATCHING]  # the built-ins whose batching fits
    parser.add_argument("--dataset", choices=[*choices, "all"], default="all")
    parser.add_argument("--k", type=int, default=3, help="the every-k baseline's period")
    parser.add_argument("--llm", default="builtin", help="builtin | openai:<m> | ollama:<m>")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"the first {QUICK_BATCHES} batches (with 'all': flights only; about 2 minutes)",
    )
    parser.add_argument(
        "--framing",
        choices=[*FRAMINGS, "both"],
        default=CALENDAR,
        help="month: the dataset's calendar batches; equal: the same rows in as many "
        "equal-size batches; both: the two, and issue 21's framing criterion",
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be at least 1")
    datasets = datasets_for(args.dataset, quick=args.quick)
    framings = list(FRAMINGS) if args.framing == "both" else [args.framing]
    console = Console()
    if not console.is_terminal:  # piped to a file: room for the table's columns
        console.width = max(console.width, 110)
    console.print("[dim]" + "\n".join(f"- {note}" for note in NOTES) + "[/dim]")
    payloads: list[dict[str, Any]] = []
    for name in datasets:
        framed = {
            framing: compare_policies(
                name,
                k=args.k,
                llm=args.llm,
                quick=args.quick,
                console=console,
                out_dir=args.out_dir,
                framing=framing,
            )
            for framing in framings
        }
        payloads += framed.values()
        if len(framed) > 1:
            check = framing_check(framed)
            stem = f"framings_{name}" + ("_quick" if args.quick else "")
            write_json(args.out_dir / f"{stem}.json", {"dataset": name, "llm": args.llm, **check})
            console.print(framing_line(name, check), markup=False)
    return payloads


if __name__ == "__main__":
    main()
