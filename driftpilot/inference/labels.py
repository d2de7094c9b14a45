"""Late labels of logged rows, joined by row id.

``post_labels`` takes ``[{"row_id": ..., <target>: label}, ...]`` for one model:

1. every item is validated (a row id, a label the task takes: binary 0/1/true/false, a class,
   a number) before anything is written; a bad one refuses the request (``RowsRefused``:
   its 0-based number and reason).
2. the labels are stored on the rows in ONE write transaction (durable before anything
   else): a row id the log does not hold refuses the request (``RowsRefused`` naming them);
   a label other than the one a row has already refuses it too (``LabelConflict``); the same
   label again counts as a duplicate. A label is set once.
3. then each closed window that holds a labelled row of the request and whose run filed an
   accepted batch gets every label its rows have so far attached to that batch through
   ``ControlPlane.attach_labels`` (key ``row_id``): the batch's labels grow, its champion is
   scored again on them and the attachment is audited. Labels of rows still open go into
   their window's batch when it closes. A window whose run is still making its batch, or a
   model busy with a run, is reported ``waiting``/``busy``: the labels are stored, the
   window is marked, and the windower attaches them once the run has ended (``catch_up``;
   after a restart, its first tick looks at the newest windows); posting them again (as
   duplicates) attaches them too. A request attaches at most ``INLINE_WINDOWS`` windows
   itself (each a scoring, maybe a wait for a busy model): the others are reported
   ``queued`` and marked for the windower the same way.

Class labels are compared as the model's classes are typed (``rows._outcome``): 3 and "3"
are one class, binary 1 and true one label.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, cast

import polars as pl
from pydantic import BaseModel, Field
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from driftpilot.core.errors import DriftPilotError, ModelBusy, NotFound
from driftpilot.inference.log import lock_log, windows_of
from driftpilot.inference.rows import (
    MAX_ERRORS,
    RowError,
    RowsRefused,
    Schema,
    _Bad,
    _outcome,
    _row_id,
    named,
    schema_of,
)
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.engine import Clock, stamp
from driftpilot.store.models import BatchRecord, InferenceRow, InferenceWindow, ManagedModel, Run

log = logging.getLogger(__name__)

CHUNK = 500  # row ids per IN (...) (SQLite's bound variables)
AGENT = "inference"  # who attaches labels the log caught up with (not a person's request)
CATCH_UP_STEP = "inference:labels"
# A request waits this long for a model another attachment holds (a scoring: a moment); a
# run holds it longer, and the windower attaches the stored labels once the run has ended.
BUSY_PATIENCE_S = 3.0
BUSY_POLL_S = 0.1
# Windows one request attaches itself (oldest first); the rest are the windower's, so a
# request touching many windows answers in bounded time.
INLINE_WINDOWS = 3
# Windows whose labels a request of this process stored but could not attach (the windower
# attaches them; after a restart its first look covers the newest windows).
_UNATTACHED: set[tuple[str, int]] = set()
_UNATTACHED_LOCK = threading.Lock()
Outcome = Literal["attached", "waiting", "busy", "queued", "not-accepted", "error"]


class LabelConflict(DriftPilotError):
    """Row ids whose stored label differs from the one posted: nothing is written."""

    def __init__(self, model: str, row_ids: list[str]) -> None:
        super().__init__(
            f"row {named(row_ids)} of model {model!r} has another label already; a label is set "
            "once (the same label again is counted as a duplicate)"
        )
        self.model, self.row_ids = model, row_ids


class WindowLabels(BaseModel):
    """What the labels did to one closed window's batch."""

    number: int
    run_id: str | None
    outcome: Outcome = Field(
        description="attached (the batch holds every label of its rows, its champion scored "
        "on them), waiting (its run has not filed its batch yet), busy (a run holds the model), "
        "queued (more windows than a request attaches: the windower attaches them), "
        "not-accepted (the run did not accept the batch), error (detail)"
    )
    rows_labelled: int | None = None
    metric: str | None = None
    realised_score: float | None = None
    estimated_score: float | None = None
    detail: str = ""


class LabelsPosted(BaseModel):
    """A labels request's answer: stored (durable) when it is sent."""

    model: str
    accepted: int = Field(description="Labels newly stored.")
    duplicates: int = Field(description="Labels the rows had already (the same).")
    rows: int = Field(description="Labels in the request (a repeat counted once).")
    open_rows: int = Field(description="Labelled rows not in a window yet (they go in with it).")
    windows: list[WindowLabels] = Field(description="The closed windows the labels touched.")


def validate_labels(schema: Schema, items: list[Any]) -> dict[str, str]:
    """row id -> the label as JSON text, every item validated.

    Raises:
        RowsRefused: an item is no object, lacks its row id or label, has a label the task
            does not take, or repeats a row id with another label.
    """
    errors: list[RowError] = []
    count = 0
    labels: dict[str, str] = {}
    for i, item in enumerate(items):
        try:
            row_id, label = _one(schema, item)
            if labels.get(row_id, label) != label:
                raise _Bad("row_id", f"row id {row_id!r} comes twice with other labels")
        except _Bad as bad:
            count += 1
            if len(errors) < MAX_ERRORS:
                errors.append(RowError(i, bad.column, bad.reason))
            continue
        labels[row_id] = label
    if count:
        raise RowsRefused(errors, count)
    if not labels:
        raise RowsRefused([RowError(0, None, "no labels: send [{row_id, <target>}, ...]")], 1)
    return labels


def _one(schema: Schema, item: Any) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise _Bad(None, f"a label must be an object, not {type(item).__name__}")
    unknown = [k for k in item if k not in ("row_id", schema.target)]
    if unknown:
        raise _Bad(str(unknown[0])[:200], f"unknown column (send row_id and {schema.target!r})")
    if item.get(schema.target) is None:
        raise _Bad(schema.target, f"missing label ({schema.target!r}, the model's target)")
    value = _outcome(schema, schema.target, item[schema.target])
    return _row_id(item.get("row_id")), json.dumps(value)


def post_labels(cp: ControlPlane, model: str, items: list[Any], actor: str) -> LabelsPosted:
    """Store the labels on the rows, then attach them to the closed windows' batches (module
    docstring).

    Raises:
        NotFound: unknown model.
        RowsRefused: a bad item, or row ids the log does not hold (nothing written).
        LabelConflict: a row has another label already (nothing written).
    """
    with cp.store.reading() as session:
        row = session.get(ManagedModel, model)
    if row is None:
        raise NotFound(f"no model {model!r}")
    schema = schema_of(row)
    labels = validate_labels(schema, items)
    with cp.store.session() as session:
        accepted, windows, open_rows = _store(session, schema, labels, cp.store.clock)
    ordered = sorted(windows)
    touched = [
        _attach(cp, model, number, actor, patience_s=BUSY_PATIENCE_S)
        for number in ordered[:INLINE_WINDOWS]
    ]
    touched += [_queued(number) for number in ordered[INLINE_WINDOWS:]]
    for done in touched:
        if done.outcome in ("waiting", "busy", "queued"):
            mark_unattached(model, done.number)
    return LabelsPosted(
        model=model,
        accepted=accepted,
        duplicates=len(labels) - accepted,
        rows=len(labels),
        open_rows=open_rows,
        windows=touched,
    )


def _queued(number: int) -> WindowLabels:
    return WindowLabels(
        number=number,
        run_id=None,
        outcome="queued",
        detail=f"more than {INLINE_WINDOWS} windows in one request: the windower attaches "
        "this one's labels once its run has ended",
    )


def _store(
    session: Session, schema: Schema, labels: dict[str, str], clock: Clock
) -> tuple[int, set[int], int]:
    """In the caller's transaction: the new labels set; (how many, the windows of the
    request's rows, how many of them are open). Raises before writing anything.

    The model's log is locked shared (``log.lock_log``: a window's close waits; SQLite's
    write lock at BEGIN serialises every writer) and the rows read locked (PostgreSQL:
    ``SELECT ... FOR UPDATE``, in row id order, against another labels request): a window
    closing over them either committed first, and its range is read here (the window is
    touched: attached or marked), or waits for this transaction, and its batch is built with
    the labels. The labelled time is taken after the locks, from the store's clock, so it is
    later than the ``closed_at`` of any window read here (``_late`` counts the label for a
    batch built before it committed)."""
    model = schema.model
    lock_log(session, model)
    stored: dict[str, tuple[str | None, int]] = {}
    for chunk in _chunks(sorted(labels), CHUNK):
        found = session.execute(
            select(InferenceRow.row_id, InferenceRow.label, InferenceRow.id)
            .where(InferenceRow.model == model, InferenceRow.row_id.in_(chunk))
            .order_by(InferenceRow.row_id)
            .with_for_update()
        ).all()
        stored.update({r: (label, int(i)) for r, label, i in found})
    unknown = [r for r in labels if r not in stored]
    if unknown:
        order = {r: i for i, r in enumerate(labels)}
        errors = [RowError(order[r], "row_id", f"unknown row id {r!r}") for r in unknown]
        raise RowsRefused(errors[:MAX_ERRORS], len(unknown))
    conflicts = [
        r
        for r, value in labels.items()
        if stored[r][0] is not None and not _same(schema, stored[r][0], value)
    ]
    if conflicts:
        raise LabelConflict(model, conflicts)
    new = [r for r in labels if stored[r][0] is None]
    if new:
        at = stamp(clock())
        table = cast(Table, InferenceRow.__table__)  # Core: an executemany, no ORM rows
        session.execute(
            update(table)
            .where(table.c.model == model, table.c.row_id == bindparam("rid"))
            .values(label=bindparam("value"), labelled_at=at),
            [{"rid": r, "value": labels[r]} for r in new],
        )
    numbers = windows_of(session, model, [i for _, i in stored.values()])
    windows = {n for n in numbers if n is not None}
    return len(new), windows, numbers.count(None)


def _same(schema: Schema, stored: str | None, value: str) -> bool:
    """Whether a stored label (JSON text, maybe written before labels were normalised) is
    the label ``value`` (normalised JSON text)."""
    if stored == value:
        return True
    try:
        again = json.dumps(_outcome(schema, schema.target, json.loads(stored or "null")))
    except (_Bad, ValueError):
        return False
    return again == value


def _attach(
    cp: ControlPlane, model: str, number: int, actor: str, *, patience_s: float = 0.0
) -> WindowLabels:
    """Attach every label the window's rows have to its filed batch, waiting up to
    ``patience_s`` for a model that is busy (another attachment holds it for a moment).
    Attached: recorded under the run as the window's catch-up of its late labels."""
    with cp.store.reading() as session:
        window = session.get(InferenceWindow, (model, number))
    assert window is not None  # its rows name it; windows are never deleted
    out = WindowLabels(number=number, run_id=window.run_id, outcome="waiting")
    if window.run_id is None:
        out.detail = "the window's run is being made: its batch takes the stored labels"
        return out
    records = cp.store.list_rows(BatchRecord, BatchRecord.run_id == window.run_id)
    if not records:
        out.detail = "the window's run has not filed its batch yet: post the labels again later"
        return out
    record = records[-1]
    if record.status != "accepted":
        out.outcome, out.detail = "not-accepted", f"the window's batch was {record.status}"
        return out
    late = _late(cp, window)
    labels = window_labels(cp, model, number)
    deadline = time.monotonic() + patience_s
    while True:
        try:
            view = cp.attach_labels(model, Path(record.path).stem, labels, actor, key="row_id")
            break
        except ModelBusy as exc:
            if time.monotonic() >= deadline:
                out.outcome, out.detail = "busy", str(exc)
                return out
            time.sleep(BUSY_POLL_S)
        except DriftPilotError as exc:  # stored already; the answer says why it is not attached
            log.warning("%s: labels of window %d not attached: %s", model, number, exc)
            out.outcome, out.detail = "error", f"{type(exc).__name__}: {exc}"[:500]
            return out
    out.outcome = "attached"
    out.rows_labelled, out.metric = view.rows_labelled, view.metric
    out.realised_score, out.estimated_score = view.realised_score, view.estimated_score
    cp.store.record_effect(window.run_id, f"{CATCH_UP_STEP}:{late}", out.model_dump())
    return out


def _late(cp: ControlPlane, window: InferenceWindow) -> int:
    """How many of the window's rows were labelled after it closed."""
    with cp.store.reading() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(InferenceRow)
                .where(
                    InferenceRow.model == window.model,
                    InferenceRow.id.between(window.first_id, window.last_id),
                    InferenceRow.labelled_at > window.closed_at,
                )
            )
            or 0
        )


def catch_up(cp: ControlPlane, model: str, number: int) -> bool:
    """Attach labels a window's rows received after it closed, once its run has ended (its
    batch may have been built without them, or a labels request met the run in flight).
    Whether the window is settled: False while its run is being made or goes on, or the
    model is busy (look again later). Recorded under the run as step
    ``inference:labels:<count>`` (whatever the outcome but ``busy``): each count once."""
    with cp.store.reading() as session:
        window = session.get(InferenceWindow, (model, number))
        if window is None:
            return True
        if window.run_id is None:
            return False
        status = session.scalar(select(Run.status).where(Run.id == window.run_id))
    if status in ("pending", "running"):
        return False
    late = _late(cp, window)
    step = f"{CATCH_UP_STEP}:{late}"
    if not late or cp.store.effect(window.run_id, step) is not None:
        return True
    done = _attach(cp, model, number, AGENT)
    if done.outcome == "busy":
        return False
    cp.store.record_effect(window.run_id, step, done.model_dump())
    return True


def mark_unattached(model: str, number: int) -> None:
    """A window whose stored labels are not attached yet: the windower looks at it."""
    with _UNATTACHED_LOCK:
        _UNATTACHED.add((model, number))


def unattached() -> set[tuple[str, int]]:
    """The windows marked since the last call (the marks are taken)."""
    with _UNATTACHED_LOCK:
        marked = set(_UNATTACHED)
        _UNATTACHED.clear()
    return marked


def window_labels(cp: ControlPlane, model: str, number: int) -> pl.DataFrame:
    """The labels the window's rows have: ``row_id`` and the target, one row each."""
    target = cp.store.get(ManagedModel, model).target
    window = cp.store.get(InferenceWindow, (model, number))
    with cp.store.reading() as session:
        found = session.execute(
            select(InferenceRow.row_id, InferenceRow.label).where(
                InferenceRow.model == model,
                InferenceRow.id.between(window.first_id, window.last_id),
                InferenceRow.label.is_not(None),
            )
        ).all()
    values = [json.loads(label or "null") for _, label in found]
    return pl.DataFrame(
        {"row_id": [r for r, _ in found], target: values}, schema_overrides={"row_id": pl.String}
    )


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
