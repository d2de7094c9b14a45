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

Placeholders are rows of the ``threads`` table (``driftpilot.store.threads``), shared by
every API process on the same database; binding is first-writer-wins (a concurrent second
binding finds the thread bound and backs off). These functions take the plane as their first
argument; they are meant to become ``ControlPlane`` methods (``create_thread``,
``find_thread``, ``bind_thread``, ``thread_of``, ``search_threads``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from driftpilot.core.errors import NotFound
from driftpilot.core.identity import normalize_principal
from driftpilot.store import threads as table

if TYPE_CHECKING:
    from driftpilot.runs.plane import ControlPlane, RunView


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


def _placeholder(row: table.Thread | table.ThreadRow) -> ThreadRef:
    return ThreadRef(
        thread_id=row.thread_id,
        run_id=row.run_id,
        created_at=row.created_at,
        metadata=dict(json.loads(row.meta or "{}")),
        created_by=row.created_by,
        run_metadata=dict(json.loads(row.run_meta or "{}")),
        multitask_strategy=row.multitask_strategy,
        assistant_id=row.assistant_id,
        placeholder=True,
    )


def _bare(run_id: str, created_at: str, requested_by: str | None) -> ThreadRef:
    """A control run's own thread (no placeholder)."""
    return ThreadRef(
        thread_id=run_id, run_id=run_id, created_at=created_at, created_by=requested_by
    )


def create_thread(
    cp: ControlPlane, thread_id: str, metadata: dict[str, Any], principal: str
) -> ThreadRef | None:
    """A new placeholder ``thread_id``, or None when that id was taken (by a placeholder)."""
    try:
        row = table.add(cp.store, thread_id, metadata, normalize_principal(principal))
    except IntegrityError:
        return None
    return _placeholder(row)


def find_thread(cp: ControlPlane, thread_id: str) -> ThreadRef | None:
    """The thread ``thread_id``: a placeholder (bound or not) or a control run's id."""
    if len(thread_id) > 40:  # the tables' key width; no run id is longer either
        return None
    row = table.get(cp.store, thread_id)
    if row is not None:
        return _placeholder(row)
    try:
        view = cp.get_run(thread_id)
    except NotFound:
        return None
    return _bare(view.run_id, view.created_at, view.requested_by)


def bind_thread(
    cp: ControlPlane,
    thread_id: str,
    view: RunView,
    assistant_id: str,
    metadata: dict[str, Any],
    multitask_strategy: str,
) -> bool:
    """Bind the placeholder ``thread_id`` to the new run ``view``; False when another run
    bound it first (the caller then withdraws its run)."""
    return table.bind(
        cp.store,
        thread_id,
        view.run_id,
        assistant_id,
        metadata,
        multitask_strategy,
        view.created_at,
    )


def thread_of(cp: ControlPlane, run_id: str, view: RunView | None = None) -> ThreadRef:
    """The thread a run (``view``, if read already) is shown under: its placeholder if it
    has one, else its own id.

    Raises:
        NotFound: unknown run.
    """
    row = table.of_run(cp.store, run_id)
    if row is not None:
        return _placeholder(row)
    view = view or cp.get_run(run_id)
    return _bare(run_id, view.created_at, view.requested_by)


def search_threads(
    cp: ControlPlane,
    *,
    ids: list[str] | None = None,
    status: str | None = None,
    metadata: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    sort_by: str | None = None,
    sort_order: str | None = None,
    limit: int = 10,
    offset: int = 0,
) -> list[ThreadRef]:
    """One page of threads, filtered, sorted and paged in SQL (``driftpilot.store.threads.
    search``: what ``metadata`` and ``values`` match).

    Raises:
        ValueError: a ``values`` key that cannot be searched (``steps``).
    """
    waiting = {a.run_id for a in cp.store.pending_approvals()}
    rows = table.search(
        cp.store,
        waiting=waiting,
        ids=ids,
        status=status,
        metadata=metadata,
        values=values,
        sort_by=sort_by,
        sort_order=sort_order,
        limit=limit,
        offset=offset,
    )
    return [
        _placeholder(r) if r.placeholder else _bare(r.thread_id, r.created_at, r.created_by)
        for r in rows
    ]
