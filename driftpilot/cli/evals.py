"""The built-in data and what runs over it: ``demo``, ``eval``, ``tour``, ``data``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from driftpilot.cli.common import AsJson, _print_json, _spec, console


def demo(
    dataset: Annotated[
        str,
        typer.Option(
            help="A built-in dataset: flights, flights_delay (regression), "
            "flights_delay_class (multiclass), creditcard, ..."
        ),
    ] = "flights",
    approve_as: Annotated[
        str | None, typer.Option(help="Approve high-risk promotions as NAME.")
    ] = None,
) -> None:
    """The main job: a champion on the first batch, then every later batch through the loop."""
    from driftpilot.demo import run_demo

    _spec(dataset)
    run_demo(console, dataset=dataset, approve_as=approve_as, interactive=sys.stdin.isatty())


def eval_(
    data: Annotated[
        Path | None, typer.Option(help="A labelled CSV or Parquet table.", dir_okay=False)
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Or a built-in dataset: flights (binary), flights_delay (regression), "
            "flights_delay_class (multiclass), creditcard, ..."
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="The label column: 0/1 (binary), a few labels (multiclass) or a number "
            "(regression); the task is inferred from it."
        ),
    ] = None,
    positive: Annotated[
        str | None, typer.Option(help="The target value that counts as 1 (if not 0/1).")
    ] = None,
    time_col: Annotated[
        str | None, typer.Option("--time", help="The column that orders rows in time.")
    ] = None,
    order_by: Annotated[
        str | None, typer.Option(help="'row': no time column, the row order is time.")
    ] = None,
    batch: Annotated[
        str | None,
        typer.Option(help="Batch size: month, week, day, hour, <N>h or <N> rows."),
    ] = None,
    numeric: Annotated[str, typer.Option(help="Comma-separated numeric features.")] = "",
    categorical: Annotated[str, typer.Option(help="Comma-separated categorical features.")] = "",
    initial: Annotated[int, typer.Option(min=1, help="Batches that train the first champion.")] = 1,
    approvals: Annotated[
        str, typer.Option(help="High-risk promotions: approve, reject or wait.")
    ] = "approve",
    escalations: Annotated[
        str,
        typer.Option(
            help="'Accept this quarantined batch as the new normal?': approve, reject or wait."
        ),
    ] = "reject",
    approver: Annotated[
        str, typer.Option(help="The evaluator principal who answers them.")
    ] = "evaluator",
    llm: Annotated[
        str | None,
        typer.Option(help="builtin, openai:M, ollama:M or scripted:FILE (default: configured)."),
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: shipped).")] = None,
    family: Annotated[str, typer.Option(help="lightgbm or catboost.")] = "lightgbm",
    max_batches: Annotated[
        int | None, typer.Option(min=2, help="Stop after this many batches.")
    ] = None,
    home: Annotated[
        Path | None, typer.Option(help="The eval's own home (default: <home>/evals/NAME-TIME).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Results JSON (default: in the home).")] = None,
    name: Annotated[str | None, typer.Option(help="Model name (default: the file's stem).")] = None,
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines/--no-baselines",
            help="Also score never / every batch / every K batches on the same batches.",
        ),
    ] = True,
    k: Annotated[int, typer.Option("--k", min=1, help="The every-K baseline's period.")] = 3,
) -> None:
    """Run the control loop over a labelled table, batch by batch, in a home of its own.

    The first batch (or --initial K) trains the first champion; every later batch is one
    control run. Ends with a per-batch table (drift share, champion metric, action, outcome,
    risk tier, seconds), then the same batches under simple retraining schedules (never,
    every batch, every K batches), scored prequentially beside DriftPilot: a table, a plot
    (PNG beside the results) and the JSON file."""
    from evals.byo import EvalRequest, run_eval

    if order_by is not None and order_by.lower() != "row":
        raise typer.BadParameter("only 'row' is understood", param_hint="--order-by")
    for hint, answer in (("--approvals", approvals), ("--escalations", escalations)):
        if answer not in ("approve", "reject", "wait"):
            raise typer.BadParameter("approve, reject or wait", param_hint=hint)
    if family not in ("lightgbm", "catboost"):
        raise typer.BadParameter("lightgbm or catboost", param_hint="--family")
    request = EvalRequest(
        data=data,
        dataset=dataset,
        target=target,
        positive=positive,
        time_col=time_col,
        order_by_row=order_by is not None,
        batch=batch,
        numeric=[c for c in numeric.split(",") if c] or None,
        categorical=[c for c in categorical.split(",") if c] or None,
        initial=initial,
        approvals=approvals,
        escalations=escalations,
        approver=approver,
        llm=llm,
        policy=policy,
        family=family,
        max_batches=max_batches,
        home=home,
        out=out,
        name=name,
        baselines=baselines,
        k=k,
    )
    run_eval(request, console)


def tour(
    trials: Annotated[int, typer.Option(min=1, help="Optuna trials for the challenger.")] = 12,
) -> None:
    """Walk through the deterministic tools on the real 2013 flights (no agents)."""
    from driftpilot.tour import run_tool_tour

    run_tool_tour(console, trials=trials)


def data(
    dataset: Annotated[
        str,
        typer.Argument(
            help="Built-in dataset: flights, flights_delay, flights_delay_class, creditcard, ..."
        ),
    ] = "flights",
    every: Annotated[str | None, typer.Option(help="Batch period: hour, day, week, month.")] = None,
    as_json: AsJson = False,
) -> None:
    """Load a built-in real dataset and list its batches."""
    from tools.data import split_batches
    from tools.datasets import load_dataset

    spec = _spec(dataset)
    frame = load_dataset(dataset)  # type: ignore[arg-type]
    batches = split_batches(frame, spec.time_col, every=every or spec.batch_every)  # type: ignore[arg-type]
    rates = [float(b.frame[spec.target].mean() or 0) for b in batches]  # type: ignore[arg-type]
    if as_json:
        _print_json(
            [
                {**b.info.model_dump(mode="json"), "target_rate": r}
                for b, r in zip(batches, rates, strict=True)
            ]
        )
        return
    table = Table(title=f"{dataset}: {frame.height:,} rows, label {spec.target!r}")
    for col in ("batch", "rows", f"{spec.target} rate", "hash"):
        table.add_column(col)
    for batch, rate in zip(batches, rates, strict=True):
        table.add_row(
            batch.info.batch_id,
            f"{batch.info.n_rows:,}",
            f"{rate:.3f}",
            batch.info.content_hash[:12],
        )
    console.print(table)
