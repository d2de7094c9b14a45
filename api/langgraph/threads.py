"""LangGraph threads: create, search, get, state; updates are refused (422).

A thread is one control run (``driftpilot.runs.threads``): a placeholder made by
``threads.create`` that the first run on it binds, or a control run's own id.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, NoReturn

from fastapi import APIRouter, status
from pydantic import Field

from api.deps import Operator, Plane, Viewer
from api.langgraph import shapes
from api.langgraph.common import TAGS, THREAD_404, Id, SortOrder, _Body, unsupported
from api.problems import Problem
from driftpilot.runs import threads as runs_threads
from driftpilot.runs.plane import ControlPlane, RunView
from driftpilot.runs.threads import ThreadRef

router = APIRouter(tags=TAGS)


class ThreadCreate(_Body):
    thread_id: str | None = Field(None, max_length=100)
    metadata: dict[str, Any] = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"
    supersteps: list[Any] | None = None
    ttl: Any = None


class ThreadSearch(_Body):
    metadata: dict[str, Any] | None = None
    values: dict[str, Any] | None = None
    ids: list[Annotated[str, Field(max_length=100)]] | None = Field(None, max_length=1000)
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at"] | None = None
    sort_order: SortOrder | None = None
    select: list[str] | None = Field(None, max_length=20)
    extract: dict[str, str] | None = None


def canonical_uuid(value: str) -> str | None:
    """``value`` if it is a UUID in its canonical text form (lower case, dashes), else None."""
    try:
        canonical = str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None
    return canonical if canonical == value.lower() and len(value) == 36 else None


def _exists(thread_id: str) -> Problem:
    return Problem(409, f"thread {thread_id} already exists", slug="thread-exists")


def new_thread(
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
    existing = runs_threads.find_thread(cp, thread_id)
    if existing is not None:
        if if_exists == "do_nothing":
            return existing
        raise _exists(thread_id)
    made = runs_threads.create_thread(cp, thread_id, metadata, principal)
    if made is None:  # created at the same moment by another request
        raise _exists(thread_id)
    return made


def thread_or_404(cp: ControlPlane, thread_id: str) -> ThreadRef:
    """The thread ``thread_id`` (``driftpilot.runs.threads.find_thread``).

    Raises:
        Problem: 404 for an unknown thread.
    """
    ref = runs_threads.find_thread(cp, thread_id)
    if ref is None:
        raise Problem(404, f"no thread {thread_id!r}")
    return ref


def _view(cp: ControlPlane, ref: ThreadRef) -> tuple[RunView | None, list[dict[str, Any]]]:
    if ref.run_id is None:
        return None, []
    return shapes.read(cp, ref.run_id)


@router.post("/threads", response_model=dict[str, Any], responses={409: {"description": "Exists"}})
def create_thread(body: ThreadCreate, cp: Plane, key: Operator) -> Any:
    """A new thread: a placeholder that the first run on it binds to a new control run
    (``thread_id``: a UUID, or leave it out; ``if_exists``: ``raise`` (409) or
    ``do_nothing``)."""
    unsupported(supersteps=body.supersteps, ttl=body.ttl)
    ref = new_thread(cp, body.metadata, key.principal, body.thread_id, body.if_exists)
    return shapes.thread(ref, *_view(cp, ref))


@router.post("/threads/search", response_model=list[dict[str, Any]])
def search_threads(body: ThreadSearch, cp: Plane, _: Viewer) -> Any:
    """Threads (control runs and placeholders), newest first unless sorted otherwise;
    ``status="interrupted"`` lists the runs waiting for a person, with their interrupt."""
    # Filtered, sorted and paged in SQL: ``values`` matches the run's columns, its status
    # and its summary's keys, not ``steps`` (422).
    unsupported(extract=body.extract)
    if body.values is not None and "steps" in body.values:
        raise Problem(
            422,
            "threads cannot be searched by values.steps (search by the run's columns, status "
            "or summary)",
            slug="unsupported-option",
            title="Unsupported option",
        )
    refs = runs_threads.search_threads(
        cp,
        ids=body.ids,
        status=body.status,
        metadata=body.metadata,
        values=body.values,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
        limit=body.limit,
        offset=body.offset,
    )
    found = [shapes.thread(ref, *_view(cp, ref)) for ref in refs]
    if body.select:
        found = [{k: item.get(k) for k in body.select} for item in found]
    return found


@router.get("/threads/{thread_id}", response_model=dict[str, Any], responses=THREAD_404)
def get_thread(thread_id: Id, cp: Plane, _: Viewer) -> Any:
    """A thread: its status, values (the run summary) and interrupts."""
    ref = thread_or_404(cp, thread_id)
    return shapes.thread(ref, *_view(cp, ref))


@router.get("/threads/{thread_id}/state", response_model=dict[str, Any], responses=THREAD_404)
def get_thread_state(thread_id: Id, cp: Plane, _: Viewer) -> Any:
    """The thread's state: values, ``next`` (``["approval"]`` while it waits), tasks and
    interrupts."""
    ref = thread_or_404(cp, thread_id)
    return shapes.thread_state(ref, *_view(cp, ref))


_NO_UPDATES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown thread"},
    422: {"description": "Always, for a known thread: only its agents change a run"},
}


def _refuse_update(cp: ControlPlane, thread_id: str, what: str) -> NoReturn:
    """A known thread's state or metadata cannot be changed from outside (422); the one
    way to change what a waiting run does is to answer its approval."""
    thread_or_404(cp, thread_id)
    raise Problem(
        422,
        f"{what} is not supported: a control run's state is written by its agents only "
        "(its audit trail is append-only); answer a waiting run with runs.create(thread_id, "
        "assistant_id, command={'resume': ...}) instead",
        slug="unsupported-option",
        title="Unsupported option",
    )


@router.post(
    "/threads/{thread_id}/state",
    status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    responses=_NO_UPDATES,
)
def update_thread_state(thread_id: Id, body: _Body, cp: Plane, _: Operator) -> Any:
    """``threads.update_state``: refused with a 422 problem (see ``_refuse_update``)."""
    _refuse_update(cp, thread_id, "threads.update_state (a thread state update)")


@router.patch(
    "/threads/{thread_id}",
    status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    responses=_NO_UPDATES,
)
def update_thread(thread_id: Id, body: _Body, cp: Plane, _: Operator) -> Any:
    """``threads.update``: refused with a 422 problem (a thread's metadata is fixed when it
    is created)."""
    _refuse_update(cp, thread_id, "threads.update (a thread metadata update)")
