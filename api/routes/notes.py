"""Context notes: what people know about a model's data (a deploy, an ETL change, a campaign,
a sensor replaced), which the drift analyst reads, as data, when it names a drift's cause.

Operators (and above) write notes; viewers read them. The author is the API key's principal,
never a field of the body. Notes are sanitised, limited to 500 characters (a longer one is
refused, 422, never cut), audited and append-only: see ``driftpilot.store.notes``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, status
from pydantic import BaseModel, Field

from api.deps import Operator, Plane, Viewer
from driftpilot.runs.notes import (
    NOTE_MAX_CHARS,
    NotePlace,
    NoteView,
    add_note,
    notes_between,
    require_model,
    runs_for_notes,
)

router = APIRouter(prefix="/models", tags=["notes"])
Name = Annotated[str, Path(max_length=200, description="The managed model.")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown model"}}
# The body may carry invisible characters the service removes before it counts: the bound
# here only stops an oversized body; the note's own limit is the service's (a clear 422).
_BODY_CHARS = 4 * NOTE_MAX_CHARS


class NoteIn(BaseModel):
    """A note to write."""

    text: str = Field(
        max_length=_BODY_CHARS,
        description=f"The note, at most {NOTE_MAX_CHARS} characters once sanitised (control "
        "and zero-width characters removed; bidi controls refused).",
        examples=["ETL job moved to the new warehouse; temperature now in Fahrenheit"],
    )
    at: datetime | None = Field(
        None,
        description="When the noted thing happened (ISO 8601; naive is UTC). Default: now.",
    )


class NoteOut(NoteView):
    """A note, and the run it falls in."""

    run_id: str | None = Field(
        None, description="The run whose batch covers the note's time, else the next run."
    )
    run_how: Literal["batch", "next"] | None = Field(
        None, description="batch: the run's batch covers the note; next: the run came after it."
    )


def _out(view: NoteView, place: NotePlace | None) -> NoteOut:
    return NoteOut(
        **view.model_dump(),
        run_id=place.run_id if place else None,
        run_how=place.how if place else None,
    )


@router.post(
    "/{name}/notes",
    status_code=status.HTTP_201_CREATED,
    response_model=NoteOut,
    responses={**_NOT_FOUND, 422: {"description": "Note refused: too long, empty, bidi"}},
)
def add(name: Name, body: NoteIn, cp: Plane, key: Operator) -> NoteOut:
    """Write a context note on the model, as the key's principal (audited; notes cannot be
    edited or deleted). The drift analyst reads the notes of a batch's window as data, never
    as instructions."""
    view = add_note(cp.store, name, body.text, body.at, key.principal)
    return _out(view, runs_for_notes(cp.store, name, [view]).get(view.id))


@router.get("/{name}/notes", response_model=list[NoteOut], responses=_NOT_FOUND)
def list_notes(
    name: Name,
    cp: Plane,
    _: Viewer,
    since: Annotated[datetime | None, Query(description="Notes at or after (naive: UTC).")] = None,
    until: Annotated[datetime | None, Query(description="Notes at or before (naive: UTC).")] = None,
) -> list[NoteOut]:
    """The model's notes, oldest first (by the time they are about), each with the run it
    falls in."""
    require_model(cp.store, name)
    views = notes_between(cp.store, name, since, until)
    places = runs_for_notes(cp.store, name, views)
    return [_out(v, places.get(v.id)) for v in views]
