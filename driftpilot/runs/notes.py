"""Context notes, the service's name for them: see ``driftpilot.store.notes`` (the store layer
holds them so that the agents, below this layer, may read them too)."""

from __future__ import annotations

from driftpilot.store.notes import (
    BLOCK_MAX_NOTES,
    NOTE_MAX_CHARS,
    NotePlace,
    NoteView,
    add_note,
    clean_text,
    model_notes,
    notes_between,
    notes_block,
    require_model,
    runs_for_notes,
)

__all__ = [
    "BLOCK_MAX_NOTES",
    "NOTE_MAX_CHARS",
    "NotePlace",
    "NoteView",
    "add_note",
    "clean_text",
    "model_notes",
    "notes_between",
    "notes_block",
    "require_model",
    "runs_for_notes",
]
