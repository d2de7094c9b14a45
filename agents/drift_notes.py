"""What the drift analyst reads beside the numbers: the notes people wrote about the batch's
window (``driftpilot.store.notes``: untrusted data, delimited and sanitised there), and the
model's past runs cut to what its episode and seasonality read.

The notes window: from ``drift.notes_lookback_days`` before the batch's first time
(``ingestion.time_range.start``) to its last (``end``; a date alone covers its whole day).
A batch without a calendar time range reads the notes since the model's previous run (the
latest created before this one) was created (all of them for its first run)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from agents.context import RunContext
from driftpilot.store.models import Run
from driftpilot.store.notes import BLOCK_MAX_NOTES, NoteView, as_utc, notes_between

# What compact_past keeps of each slice: what driftpilot.core.episodes and the seasonality
# read (every key optional: older summaries miss some).
_KEPT: dict[str, tuple[str, ...]] = {
    "drift": (
        "action",
        "material",
        "significant_drop",
        "stale",
        "drifted_columns",
        "metric",
        "metric_drop",
        "metric_drop_low",
        "metric_drop_high",
        "cause",
        "episode",
    ),
    "retraining": ("kind", "family", "failed", "reason", "error"),
    "evaluation": ("action", "metric", "judged_on", "gain", "ci_low", "training_defect"),
    "promotion": ("status",),
}
PAST_MAX = 120  # summaries kept (a seasonal period of up to 52 weekly batches, twice, fits)


def compact_past(past: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The latest ``PAST_MAX`` summaries, oldest first, each cut to the keys the episode and
    the seasonality read (the decision's audit record keeps them, so a replay reads the same
    history the run did). A slice the run never wrote stays absent."""
    out = []
    for summary in past[-PAST_MAX:]:
        kept: dict[str, Any] = {}
        if summary.get("run_id"):
            kept["run_id"] = summary["run_id"]
        for name, keys in _KEPT.items():
            piece = summary.get(name)
            if isinstance(piece, Mapping) and piece:
                kept[name] = {k: piece[k] for k in keys if k in piece}
        out.append(kept)
    return out


def gather_notes(state: Mapping[str, Any], ctx: RunContext) -> list[NoteView]:
    """The notes of the batch's window (module docstring), oldest first."""
    model = state["model"]
    span = _span((state.get("ingestion") or {}).get("time_range"))
    if span is not None:
        lookback = timedelta(days=ctx.policy.drift.notes_lookback_days)
        return notes_between(ctx.store, model, span[0] - lookback, span[1])
    previous = _previous_run(ctx, model, str(state.get("run_id") or ""))
    since = as_utc(datetime.fromisoformat(previous.created_at)) if previous else None
    return notes_between(ctx.store, model, since, None)


def _previous_run(ctx: RunContext, model: str, run_id: str) -> Run | None:
    """The latest run of ``model`` created before run ``run_id`` (a run created after it, a
    queued or concurrent one, is no previous run: taking it would hide the notes between the
    two); the latest other run when ``run_id`` is not stored."""
    mine = ctx.store.list_rows(Run, Run.id == run_id, limit=1)
    where = [Run.model == model, Run.id != run_id]
    if mine:
        where.append(Run.created_at < mine[0].created_at)
    found = ctx.store.list_rows(Run, *where, order=Run.created_at.desc(), limit=1)
    return found[0] if found else None


def note_ids_shown(notes: list[NoteView]) -> list[int]:
    """The ids ``notes_block`` shows (the newest ``BLOCK_MAX_NOTES``): what a verdict may
    cite."""
    shown = sorted(notes, key=lambda n: (as_utc(n.at), n.id))[-BLOCK_MAX_NOTES:]
    return [n.id for n in shown]


def _span(time_range: Any) -> tuple[datetime, datetime] | None:
    """A batch's time range as UTC datetimes (None: none, or not a calendar time)."""
    if not isinstance(time_range, Mapping):
        return None
    start, end = _moment(time_range.get("start"), False), _moment(time_range.get("end"), True)
    return (start, end) if start is not None and end is not None else None


def _moment(value: Any, end: bool) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        if len(value) <= 10:  # a date alone: its whole day
            day = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
            return day + timedelta(days=1) - timedelta(microseconds=1) if end else day
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        return None
