"""The ``driftpilot`` command line.

Heavy libraries are imported inside the commands, so ``driftpilot --help`` is instant.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from driftpilot.errors import DriftPilotError

app = typer.Typer(help="DriftPilot: keep production tabular models healthy.", no_args_is_help=True)
console = Console()


@app.callback()
def main(log_level: Annotated[str, typer.Option(help="Logging level.")] = "WARNING") -> None:
    from driftpilot.logs import setup_logging

    setup_logging(log_level)


@app.command()
def demo(
    trials: Annotated[int, typer.Option(help="Optuna trials for the challenger.")] = 12,
) -> None:
    """Walk through the tools on the real 2013 flights: drift, train, tune, register."""
    from driftpilot.demo import run_tool_tour

    try:
        run_tool_tour(console, trials=trials)
    except DriftPilotError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def data(
    dataset: Annotated[
        str, typer.Argument(help="Built-in dataset: flights or creditcard.")
    ] = "flights",
    every: Annotated[str | None, typer.Option(help="Batch period: hour, day, week, month.")] = None,
) -> None:
    """Load a built-in real dataset and list its batches."""
    from rich.table import Table

    from tools.data import split_batches
    from tools.datasets import SPECS, load_dataset

    try:
        spec = SPECS[dataset]
        frame = load_dataset(dataset)  # type: ignore[arg-type]
        batches = split_batches(frame, spec.time_col, every=every or spec.batch_every)  # type: ignore[arg-type]
    except KeyError:
        console.print(f"[red]error:[/red] unknown dataset {dataset!r}; choose from {sorted(SPECS)}")
        raise typer.Exit(2) from None
    except DriftPilotError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    table = Table(title=f"{dataset}: {frame.height:,} rows, label {spec.target!r}")
    for col in ("batch", "rows", f"{spec.target} rate", "hash"):
        table.add_column(col)
    for batch in batches:
        rate = batch.frame[spec.target].mean()
        table.add_row(
            batch.info.batch_id,
            f"{batch.info.n_rows:,}",
            f"{float(rate or 0):.3f}",  # type: ignore[arg-type]
            batch.info.content_hash[:12],
        )
    console.print(table)


if __name__ == "__main__":
    app()
