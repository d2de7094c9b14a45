"""Context notes: ``driftpilot note`` (write one) and ``driftpilot notes`` (list them beside
the runs they fall in). Both open the audit store alone, not the plane: no agent, tool or data
library is imported."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from driftpilot.cli.common import AsJson, _add_row, _print_json, console

if TYPE_CHECKING:
    from driftpilot.store import AuditStore


def _store() -> AuditStore:
    from driftpilot.core.settings import get_settings
    from driftpilot.store import AuditStore

    return AuditStore(get_settings().db_url)


def parse_at(value: str | None) -> datetime | None:
    """``--at``: an ISO 8601 date or time (a naive one is UTC); None when not given.

    Raises:
        typer.BadParameter: not an ISO 8601 date or time.
    """
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 date or time (e.g. 2026-03-02 or "
            "2026-03-02T14:30:00+01:00)",
            param_hint="'--at'",
        ) from None


def note(
    model: Annotated[str, typer.Argument(help="Managed model name.")],
    text: Annotated[str, typer.Argument(help="The note (at most 500 characters).")],
    who: Annotated[str, typer.Option("--as", help="Who writes it (audited).")],
    at: Annotated[
        str | None,
        typer.Option(help="When the noted thing happened, ISO 8601 (naive: UTC); default: now."),
    ] = None,
) -> None:
    """Write a context note on a model: a deploy, an ETL change, a promotion campaign, a
    sensor replaced. The drift analyst reads the notes of a batch's window as data (never as
    instructions) when it names the cause of a drift. Notes are audited and cannot be edited
    or deleted."""
    from driftpilot.store.notes import add_note

    moment = parse_at(at)
    store = _store()
    try:
        view = add_note(store, model, text, moment, who)
    finally:
        store.engine.dispose()
    console.print(f"note {view.id} on {view.model} at {view.at:%Y-%m-%d %H:%M:%S}Z by {view.by}")


def notes(
    model: Annotated[str, typer.Argument(help="Managed model name.")],
    as_json: AsJson = False,
) -> None:
    """A model's notes, oldest first, each beside the run it falls in: the run whose batch
    covers the note's time, else the next run created after it."""
    from driftpilot.store.notes import model_notes, runs_for_notes

    store = _store()
    try:
        views = model_notes(store, model)
        places = runs_for_notes(store, model, views)
    finally:
        store.engine.dispose()
    if as_json:
        _print_json(
            [
                {
                    **v.model_dump(mode="json"),
                    "run_id": places[v.id].run_id if v.id in places else None,
                    "run_how": places[v.id].how if v.id in places else None,
                }
                for v in views
            ]
        )
        return
    if not views:
        console.print(f"{model} has no notes")
        return
    table = Table("note", "at (UTC)", "by", "run", "text")
    for view in views:
        place = places.get(view.id)
        run = "-"
        if place is not None:
            how = "batch" if place.how == "batch" else "next run"
            run = f"{place.run_id[:12]} ({how}, {place.outcome or 'not finished'})"
        # One line per note: its line breaks shown as a visible mark.
        _add_row(
            table,
            str(view.id),
            f"{view.at:%Y-%m-%d %H:%M}",
            view.by,
            run,
            view.text.replace("\n", " / "),
        )
    console.print(table)
