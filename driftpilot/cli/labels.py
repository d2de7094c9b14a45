"""Late labels: ``driftpilot labels``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from driftpilot.cli.common import _plane, console
from driftpilot.core import metric_text


def labels(
    model: Annotated[str, typer.Argument(help="Managed model name.")],
    batch: Annotated[str, typer.Argument(help="Batch id of an accepted batch without labels.")],
    file: Annotated[Path, typer.Option("--file", help="CSV/Parquet holding the target column.")],
    key: Annotated[
        str | None,
        typer.Option(help="Join on this column (in batch and file); default: row order."),
    ] = None,
    who: Annotated[str | None, typer.Option("--as", help="Who attaches them (audited).")] = None,
) -> None:
    """Attach labels that arrived late to an accepted batch; show the champion's realised
    score on them, in the model's metric (ROC AUC, RMSE, ...), against the estimate made
    without them."""
    plane = _plane()
    view = plane.attach_labels(model, batch, file, who or plane.settings.principal, key=key)

    def number(value: float | None, fmt: str = ".4f") -> str:
        return "-" if value is None else format(value, fmt)

    measure = f"{metric_text.label(view.metric)} ({metric_text.direction(view.metric)})"

    table = Table("labels", "", title=f"{view.model} batch {view.batch_id}")
    table.add_row("rows labelled", f"{view.rows_labelled:,} of {view.rows:,}")
    champion = "-" if view.champion_version is None else f"v{view.champion_version}"
    table.add_row("champion that scored it", champion)
    table.add_row("metric", measure)
    table.add_row("realised", metric_text.value(view.metric, view.realised_score))
    table.add_row("estimated", metric_text.value(view.metric, view.estimated_score))
    table.add_row("estimation error", number(view.estimation_error, "+.3f"))
    table.add_row("run", view.run_id)
    console.print(table)
    console.print(f"labelled batch: {view.path}")
