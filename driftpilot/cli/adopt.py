"""``driftpilot model adopt``: make an existing MLflow model a managed model (its first
champion), as ``driftpilot.runs.adopt`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from driftpilot.cli.common import AsJson, _plane, _print_json, console


def _names(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


def model_adopt(
    name: Annotated[str, typer.Argument(help="Name of the managed model it becomes.")],
    model_uri: Annotated[
        str,
        typer.Option(
            help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH or a local MLflow "
            "model directory."
        ),
    ],
    reference: Annotated[
        Path, typer.Option(help="CSV/Parquet of labelled rows: the model's baseline and window.")
    ],
    target: Annotated[str, typer.Option(help="Label column (0/1, class labels or a number).")],
    time_col: Annotated[
        str | None, typer.Option(help="Time column: the baseline is then out of time.")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="binary, multiclass or regression (default: inferred from the target)."),
    ] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="The MLflow tracking server holding it (default: DriftPilot's own)."),
    ] = None,
    numeric: Annotated[
        str, typer.Option(help="Comma-separated numeric inputs (needed without a signature).")
    ] = "",
    categorical: Annotated[str, typer.Option(help="Comma-separated categorical inputs.")] = "",
    trainer: Annotated[
        str | None,
        typer.Option(help="package.module:fit that fits its challengers (default: built-in)."),
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who adopts it (audited).")] = None,
    as_json: AsJson = False,
) -> None:
    """Adopt an existing MLflow model: check it against a labelled reference, measure its
    baseline, and register it as champion v1 with its lineage."""
    import polars as pl

    from driftpilot.runs.adopt import Adoptions, AdoptRequest
    from tools.data import load_table

    if not reference.is_file():
        raise typer.BadParameter(f"{reference} is not a file", param_hint="'--reference'")
    frame = load_table(reference)
    assert isinstance(frame, pl.DataFrame)  # read now, not lazily
    request = AdoptRequest(
        name=name,
        model_uri=model_uri,
        reference=frame,
        target=target,
        time_col=time_col,
        task=task,
        tracking_uri=tracking_uri,
        numeric=_names(numeric),
        categorical=_names(categorical),
        source=str(reference),
        trainer=trainer,
    )
    plane = _plane()
    try:
        view = Adoptions(plane.models).adopt(request, principal=by)
    finally:
        plane.close()
    if as_json:
        _print_json([view.model_dump(mode="json")])
        return
    console.print(
        f"Model [bold]{view.model.name}[/]: champion v{view.model.champion} "
        f"({view.model.family}), {view.task}, baseline {view.metric} "
        f"{view.baseline if view.baseline is None else round(view.baseline, 4)}."
    )
    console.print(view.note)
