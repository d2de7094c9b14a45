"""Managed models: ``driftpilot model add``, ``driftpilot model list``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from typer._click.exceptions import UsageError

from driftpilot.cli.common import AsJson, _add_row, _batch_from, _plane, _print_json, _spec, console
from driftpilot.core.tasks import Task

if TYPE_CHECKING:
    from driftpilot.runs.views import ModelView

model_app = typer.Typer(help="Managed models.", no_args_is_help=True)


@model_app.command("add")
def model_add(
    name: Annotated[
        str, typer.Argument(help="Name of the managed model (MLflow registered model).")
    ],
    dataset: Annotated[
        str | None,
        typer.Option(help="Built-in dataset, e.g. flights, flights_delay, flights_delay_class."),
    ] = None,
    initial: Annotated[
        str | None, typer.Option(help="Initial batch of the dataset, e.g. 2013-01.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="CSV/Parquet with the initial training window.")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="Target column: 0/1, class labels or a number.")
    ] = None,
    time_col: Annotated[str | None, typer.Option(help="Time column.")] = None,
    numeric: Annotated[str, typer.Option(help="Comma-separated numeric features.")] = "",
    categorical: Annotated[str, typer.Option(help="Comma-separated categorical features.")] = "",
    family: Annotated[str, typer.Option(help="lightgbm or catboost.")] = "lightgbm",
    task: Annotated[
        Task | None,
        typer.Option(help="binary, multiclass or regression (default: inferred from the target)."),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="Primary metric, one of the task's (default: the task's primary)."),
    ] = None,
    trainer: Annotated[
        str | None,
        typer.Option(
            help="Your training code, package.module:fit (fit(train, spec) returns an sklearn "
            "estimator or an MLflow PythonModel): it fits the challengers of retrains, in a "
            "process of its own (default: the built-in families)."
        ),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who adds it (audited).")] = None,
) -> None:
    """Register a managed model and train, register and promote its first champion."""
    from tools.data import load_table

    if dataset:
        if not initial:
            raise UsageError("give --initial with --dataset (e.g. 2013-01)")
        spec = _spec(dataset)
        if task and task != spec.task:
            raise UsageError(f"{dataset} is a {spec.task} dataset (its target {spec.target!r})")
        frame, _ = _batch_from(None, f"{dataset}:{initial}")
        target, time_col, task = spec.target, spec.time_col, spec.task
        num, cat = spec.numeric, spec.categorical
    else:
        if not (data and target and time_col and numeric):
            raise UsageError(
                "give --dataset and --initial, or --data, --target, --time-col, --numeric"
            )
        frame = load_table(data)
        num, cat = numeric.split(","), [c for c in categorical.split(",") if c]
    view = _plane().add_model(
        name,
        frame,
        target=target,
        time_col=time_col,
        numeric=num,
        categorical=cat,
        family=family,
        task=task,
        metric=metric,
        source=dataset or str(data),
        principal=by,
        trainer=trainer,
    )
    console.print(
        f"Model [bold]{view.name}[/]: champion v{view.champion} ({view.task}, {view.family}), "
        f"baseline {view.metric} {_num(view.baseline)} "
        f"({_num(view.baseline_low)} to {_num(view.baseline_high)}; {_direction(view)})."
    )
    console.print(f"[dim]{view.note}[/]")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _direction(view: ModelView) -> str:
    return "higher is better" if view.higher_is_better else "lower is better"


@model_app.command("list")
def model_list(as_json: AsJson = False) -> None:
    """List managed models with their champion."""
    models = _plane().list_models()
    if as_json:
        _print_json([m.model_dump(mode="json") for m in models])
        return
    table = Table("model", "task", "target", "family", "champion", "metric", "baseline", "features")
    for m in models:
        _add_row(
            table,
            m.name,
            m.task,
            m.target,
            m.family,
            f"v{m.champion}" if m.champion is not None else "none yet",
            f"{m.metric} ({'↑' if m.higher_is_better else '↓'} better)",
            _num(m.baseline),
            str(len(m.features)),
        )
    console.print(table)
