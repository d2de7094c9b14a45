"""LangGraph threads over control runs: a thread is one control run.

A LangGraph client makes a thread first (``threads.create``) and runs on it afterwards; a
control run only exists once it has a model and a batch. So there are two kinds of thread id:

- **A control run's own id** (what ``POST /runs``, ``/runs/upload`` and schedules create):
  the thread *is* the run, ``thread_id == run_id`` (as ``Run.thread_id`` already says).
- **A placeholder** made by ``threads.create``: a UUID (``str(uuid4())``, with dashes, so it
  never equals a run id, which is 32 hex digits). It has metadata and no run; the first
  ``runs.create``/``runs.stream`` on it submits a control run and *binds* the placeholder
  to it, once and for all. Afterwards the thread shows that run (its status, values,
  interrupt), under the placeholder's id; the run's own id names the same thread too.

A thread holds one control run: a second input on a bound thread is refused (409), because
a new batch is a new control run (create a new thread for it). Resuming (``command.resume``)
is how a thread's run continues.

Where the records live (façade gap): in the audit database's idempotency ledger
(``step_effects``, unique per ``(run_id, step)``, first record kept), keyed by the thread id:

    (thread_id, "langgraph.thread")      {"metadata", "created_at", "created_by"}
    (thread_id, "langgraph.thread.run")  {"run_id", "assistant_id", "metadata",
                                          "multitask_strategy", "created_at"}
    (run_id,    "langgraph.run.thread")  {"thread_id"}

so threads survive a restart and are shared by every API process on the same database, and
binding is first-writer-wins (a concurrent second binding finds the first and backs off).
The façade should own this: ``ControlPlane.create_thread(metadata, principal, thread_id=None)
-> ThreadView``, ``get_thread(thread_id)``, ``list_threads(...)``, and
``submit_run(..., thread_id=None, metadata=None)`` binding the thread in the same transaction
as the run (then the back-off below is not needed). These functions have those signatures.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError

from api.problems import Problem
from driftpilot.core.errors import NotFound
from driftpilot.core.identity import normalize_principal
from driftpilot.runs.plane import ControlPlane, RunView
from driftpilot.store.audit import now
from driftpilot.store.models import StepEffect

THREAD = "langgraph.thread"
BIND = "langgraph.thread.run"
RUN_THREAD = "langgraph.run.thread"


@dataclass
class ThreadRef:
    """A thread: a placeholder (maybe bound to a run) or a run's own id."""

    thread_id: str
    run_id: str | None
    created_at: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created_by: str | None = None
    run_metadata: dict[str, Any] = field(default_factory=dict)
    multitask_strategy: str | None = None
    assistant_id: str | None = None
    placeholder: bool = False


def canonical_uuid(value: str) -> str | None:
    """``value`` if it is a UUID in its canonical text form (lower case, dashes), else None."""
    try:
        canonical = str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None
    return canonical if canonical == value.lower() and len(value) == 36 else None


def create_thread(
    cp: ControlPlane,
    metadata: dict[str, Any],
    principal: str,
    thread_id: str | None = None,
    if_exists: str = "raise",
) -> ThreadRef:
    """A new placeholder thread (or, with ``if_exists="do_nothing"``, the existing one).

    Raises:
        Problem: 422 for a thread id that is not a canonical UUID; 409 when it exists.
    """
    if thread_id is None:
        thread_id = str(uuid.uuid4())
    elif canonical_uuid(thread_id) is None:
        raise Problem(
            422,
            f"thread_id {thread_id!r} must be a UUID in canonical form "
            "(e.g. 'b1c2…-…'); leave it out to get a new one",
        )
    existing = find_thread(cp, thread_id)
    if existing is not None:
        if if_exists == "do_nothing":
            return existing
        raise Problem(409, f"thread {thread_id} already exists", slug="thread-exists")
    record = {
        "metadata": metadata,
        "created_at": now(),
        "created_by": normalize_principal(principal),
    }
    try:
        cp.store.record_effect(thread_id, THREAD, record)
    except IntegrityError as exc:  # created at the same moment by another request
        raise Problem(409, f"thread {thread_id} already exists", slug="thread-exists") from exc
    made = find_thread(cp, thread_id)
    assert made is not None
    return made


def find_thread(cp: ControlPlane, thread_id: str) -> ThreadRef | None:
    """The thread ``thread_id``: a placeholder (bound or not) or a control run's id."""
    if len(thread_id) > 40:  # the ledger's key width; no run id is longer either
        return None
    record = cp.store.effect(thread_id, THREAD)
    if record is not None:
        bound = cp.store.effect(thread_id, BIND) or {}
        return ThreadRef(
            thread_id=thread_id,
            run_id=bound.get("run_id"),
            created_at=str(record.get("created_at", "")),
            metadata=dict(record.get("metadata") or {}),
            created_by=record.get("created_by"),
            run_metadata=dict(bound.get("metadata") or {}),
            multitask_strategy=bound.get("multitask_strategy"),
            assistant_id=bound.get("assistant_id"),
            placeholder=True,
        )
    try:
        view = cp.get_run(thread_id)
    except NotFound:
        return None
    return ThreadRef(
        thread_id=view.run_id,
        run_id=view.run_id,
        created_at=view.created_at,
        created_by=view.requested_by,
    )


def get_thread(cp: ControlPlane, thread_id: str) -> ThreadRef:
    """Like ``find_thread``.

    Raises:
        Problem: 404 for an unknown thread.
    """
    ref = find_thread(cp, thread_id)
    if ref is None:
        raise Problem(404, f"no thread {thread_id!r}")
    return ref


def bind(
    cp: ControlPlane,
    ref: ThreadRef,
    view: RunView,
    assistant_id: str,
    metadata: dict[str, Any],
    multitask_strategy: str,
) -> bool:
    """Bind the placeholder ``ref`` to the new run ``view``; False when another run bound
    it first (the caller then withdraws its run)."""
    record = {
        "run_id": view.run_id,
        "assistant_id": assistant_id,
        "metadata": metadata,
        "multitask_strategy": multitask_strategy,
        "created_at": view.created_at,
    }
    try:
        cp.store.record_effect(ref.thread_id, BIND, record)
    except IntegrityError:
        return False
    bound = cp.store.effect(ref.thread_id, BIND) or {}
    if bound.get("run_id") != view.run_id:
        return False
    cp.store.record_effect(view.run_id, RUN_THREAD, {"thread_id": ref.thread_id})
    return True


def thread_of(cp: ControlPlane, run_id: str, view: RunView | None = None) -> ThreadRef:
    """The thread a run (``view``, if read already) is shown under: its placeholder if it
    has one, else its own id."""
    back = cp.store.effect(run_id, RUN_THREAD)
    if back is not None:
        ref = find_thread(cp, str(back["thread_id"]))
        if ref is not None:
            return ref
    view = view or cp.get_run(run_id)
    return ThreadRef(
        thread_id=run_id, run_id=run_id, created_at=view.created_at, created_by=view.requested_by
    )


def unbound_threads(cp: ControlPlane) -> list[ThreadRef]:
    """Placeholders no run was created on yet."""
    rows = cp.store.list_rows(StepEffect, StepEffect.step == THREAD)
    bound = {r.run_id for r in cp.store.list_rows(StepEffect, StepEffect.step == BIND)}
    refs = []
    for row in rows:
        if row.run_id in bound:
            continue
        record = json.loads(row.result)
        refs.append(
            ThreadRef(
                thread_id=row.run_id,
                run_id=None,
                created_at=str(record.get("created_at", row.created_at)),
                metadata=dict(record.get("metadata") or {}),
                created_by=record.get("created_by"),
                placeholder=True,
            )
        )
    return refs
