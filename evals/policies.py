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
each framing's retrain yield (promoted retrains / retrains) at least 50 %. A recalibration
(the champion plus a calibration map, for a label shift) is not a retrain: it is counted
apart, in ``recalibrations``, as the issue tells the two apart.

Prints a table per dataset and the issue-19 target (DriftPilot's mean prequential metric at
least that of retraining every batch, in the metric's direction, with at most a third of its
retrains) and whether it is met; writes ``policies_<dataset>[_equal][_quick].json`` and
``.png`` to the output directory (and ``framings_<dataset>[_quick].json`` with ``both``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from driftpilot.core import metric_text
from driftpilot.core.errors import ModelError
from driftpilot.core.policy import Policy
from driftpilot.core.tasks import METRICS
from driftpilot.runs.plane import ControlPlane
from evals.baselines import (
    CALENDAR,
    EQUAL,
    FRAMINGS,
    THREADS,
    Framing,
    PolicyRow,
    PolicyRun,
    Stream,
    _join,
    _positives,
    prequential_score,
    run_baselines,
)
from evals.common import machine, write_json
from evals.harness import (
    BatchRow,
    StreamResult,
    StreamSpec,
    cut,
    plane_for,
    run_stream,
)
from evals.policy_report import (
    LOOP,
    framing_check,
    framing_line,
    plot_policies,
    policy_table,
    target_check,
    target_line,
)
from tools.datasets import SPECS, load_dataset
from tools.train import TrainedModel

RESULTS = Path(__file__).parent / "results"
# The datasets of tools.datasets.SPECS whose batching fits a year-long comparison (seattle
# weather and gapminder have too few rows per batch or too few batches), and their batches.
BATCHING = {
    "flights": "month",
    "flights_delay": "month",
    "flights_delay_class": "month",
    "creditcard": "4h",
}
QUICK_BATCHES = 8  # --quick: flights January to August (7 scored months, about 2 minutes)
TRAINING_TOOLS = ("tune.tune", "train.train_model")  # the loop's training share
SCORING_TOOLS = ("drift.model_performance",)
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
        retrained=row.retrained and row.retrain_kind != "recalibrate",
        recalibrated=row.retrain_kind == "recalibrate",
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
