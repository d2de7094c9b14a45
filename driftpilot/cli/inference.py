"""Windows of the inference log: ``driftpilot model window`` and ``driftpilot model windows``."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from driftpilot.cli.common import AsJson, _add_row, _plane, _print_json, console


def model_window(
    name: Annotated[str, typer.Argument(help="Managed model name.")],
    rows: Annotated[
        int | None, typer.Option(help="Close a window after this many logged rows (>= 10).")
    ] = None,
    minutes: Annotated[
        float | None, typer.Option(help="Close a window this long after its first row.")
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="Stop closing windows.")] = False,
    who: Annotated[str | None, typer.Option("--as", help="Who sets it (audited).")] = None,
) -> None:
    """Set how the model's inference log closes windows (rows, minutes, or whichever comes
    first); each window becomes a batch and a run (trigger ``window``) of the server that
    runs ``driftpilot serve``."""
    from driftpilot.inference.plans import WindowSetting
    from driftpilot.inference.windows import Windows

    if off and (rows is not None or minutes is not None):
        raise typer.BadParameter("--off takes no --rows or --minutes", param_hint="'--off'")
    if not off and rows is None and minutes is None:
        raise typer.BadParameter("give --rows, --minutes (or both), or --off")
    setting = None
    if not off:
        try:
            setting = WindowSetting(rows=rows, minutes=minutes)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "window"
            raise typer.BadParameter(f"{where}: {first['msg']}") from None
    plane = _plane()
    view = Windows(plane).set_window(name, setting, who or plane.settings.principal)
    if view.setting is None:
        console.print(f"{name}: no windows ({view.open_rows:,} rows open)")
        return
    console.print(f"{name}: windows close {_describe(view.setting)}")


def _describe(setting: object) -> str:
    rows = getattr(setting, "rows", None)
    minutes = getattr(setting, "minutes", None)
    parts = [f"after {rows:,} rows" if rows else "", f"after {minutes:g} min" if minutes else ""]
    return " or ".join(p for p in parts if p) + (
        ", whichever comes first" if rows and minutes else ""
    )


def model_windows(
    name: Annotated[str, typer.Argument(help="Managed model name.")],
    limit: Annotated[int, typer.Option(min=1, max=500, help="Most windows shown.")] = 20,
    as_json: AsJson = False,
) -> None:
    """The model's closed windows, newest first, with their runs, and its open rows."""
    from driftpilot.inference.windows import Windows

    view = Windows(_plane()).windows(name, limit=limit)
    if as_json:
        _print_json([view.model_dump(mode="json")])
        return
    setting = _describe(view.setting) if view.setting else "off"
    table = Table("window", "rows", "reason", "opened", "closed", "run", title=f"{name} windows")
    for w in view.windows:
        _add_row(
            table,
            str(w.number),
            f"{w.n_rows:,}",
            w.reason,
            w.opened_at[:19],
            w.closed_at[:19],
            w.run_id[:12] if w.run_id else "(being made)",
        )
    console.print(table)
    console.print(f"setting: {setting}; open rows: {view.open_rows:,}")
