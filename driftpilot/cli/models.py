"""Managed models: ``driftpilot model add``, ``driftpilot model list``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from typer._click.exceptions import UsageError

from driftpilot.cli.common import AsJson, _add_row, _batch_from, _plane, _print_json, _spec, console

model_app = typer.Typer(help="Managed models.", no_args_is_help=True)


@model_app.command("add")
def model_add(
    name: Annotated[
        str, typer.Argument(help="Name of the managed model (MLflow registered model).")
    ],
    dataset: Annotated[
        str | None, typer.Option(help="Built-in dataset: flights or creditcard.")
    ] = None,
    initial: Annotated[
        str | None, typer.Option(help="Initial batch of the dataset, e.g. 2013-01.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="CSV/Parquet with the initial training window.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Label column (0/1).")] = None,
    time_col: Annotated[str | None, typer.Option(help="Time column.")] = None,
    numeric: Annotated[str, typer.Option(help="Comma-separated numeric features.")] = "",
    categorical: Annotated[str, typer.Option(help="Comma-separated categorical features.")] = "",
    family: Annotated[str, typer.Option(help="lightgbm or catboost.")] = "lightgbm",
    by: Annotated[str | None, typer.Option("--by", help="Who adds it (audited).")] = None,
) -> None:
    """Register a managed model and train, register and promote its first champion."""
    from tools.data import load_table

    if dataset:
        if not initial:
            raise UsageError("give --initial with --dataset (e.g. 2013-01)")
        spec = _spec(dataset)
        frame, _ = _batch_from(None, f"{dataset}:{initial}")
        target, time_col = spec.target, spec.time_col
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
        source=dataset or str(data),
        principal=by,
    )
    console.print(
        f"Model [bold]{view.name}[/]: champion v{view.champion} ({view.family}), "
        f"baseline {view.metric} {view.baseline:.4f}."
    )


@model_app.command("list")
def model_list(as_json: AsJson = False) -> None:
    """List managed models with their champion."""
    models = _plane().list_models()
    if as_json:
        _print_json([m.model_dump(mode="json") for m in models])
        return
    table = Table("model", "target", "family", "champion", "baseline", "features")
    for m in models:
        _add_row(
            table,
            m.name,
            m.target,
            m.family,
            f"v{m.champion}",
            f"{m.baseline or 0:.4f}",
            str(len(m.features)),
        )
    console.print(table)
