"""The LangGraph Platform API subset that the official ``langgraph_sdk`` client drives:
assistants, threads, runs on a thread (create, stream, join, get, list, resume) and crons.

Map (details in ``api.lg_shapes`` and ``api.lg_threads``):

- ``assistants.search/get``: the managed models (``assistant_id`` = model name, ``graph_id``
  ``control``) and the ``control`` graph itself (the model goes in the run's input).
- ``threads.create``: a placeholder thread; the first run on it creates a control run and
  binds the thread to it. A control run's own id is a thread too. One thread, one run.
- ``assistants.get_graph/get_schemas``: the control graph's nodes and edges, and the JSON
  schemas of a run's input, output, state, config and context (one graph: the same for
  every assistant).
- ``threads.get/get_state/search``: the run's status, values (the run summary) and its
  interrupt (the Agent Inbox ``HumanInterrupt``); ``status="interrupted"`` lists the runs
  waiting for approval. ``threads.update_state`` and ``threads.update`` are refused (422):
  only the agents write a run's state.
- ``runs.create/stream`` with ``input={"model": ..., "batch": {"dataset": ...} | {"path":
  ...}}`` (the batch of ``POST /runs``) start a control run on the thread (operator role);
  with ``command={"resume": ...}`` they decide its approval (approver role, never the
  requester): ``{"decision": "approve" | "reject", "comment": ...}`` or an Agent Inbox
  ``HumanResponse``: ``accept`` approves, ``ignore`` rejects, ``response`` rejects with
  its text as the comment (``edit`` is not offered).
- ``runs.join`` waits until the run ends or waits for a person and answers its values. A
  run reads back with the ``multitask_strategy`` it was created with.
- ``crons.create/search/delete``: schedules, with ``input={"source": ...}`` (a schedule's
  batch source: ``{"dataset": "flights", "start": "2013-10"}``, ``{"glob": ...}``,
  ``{"gdelt": {}}``).

Errors are problem+json like the rest of the API. Options this API cannot honour
(``interrupt_before``, ``webhook``, ``after_seconds``, checkpoints, the ``interrupt`` and
``rollback`` multitask strategies, ``command.goto``/``update``) are refused with 422 rather
than ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NoReturn

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api import lg_shapes, lg_threads
from api.deps import Conf, Executor, Operator, Plane, Viewer, caller, require
from api.lg_threads import ThreadRef
from api.problems import Problem
from api.routes.runs import frame_of, strategy_of
from api.routes.schedules import Sched
from api.schemas import ControlInput, Resume
from api.stream import run_rows
from driftpilot.core.identity import same_person
from driftpilot.execution.inprocess import RunExecutor
from driftpilot.runs.plane import ApiKeyView, ControlPlane, RunView
from driftpilot.scheduling.scheduler import ScheduleSpec, ScheduleView
from driftpilot.store.models import ManagedModel

router = APIRouter(tags=["langgraph"])
Caller = Annotated[ApiKeyView, Depends(caller)]
Id = Annotated[str, Path(min_length=1, max_length=200)]
SortOrder = Literal["asc", "desc"]
_THREAD_404: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown thread"}}
_RUN_PROBLEMS: dict[int | str, dict[str, Any]] = {
    403: {"description": "Role too low, or the approver requested the run"},
    404: {"description": "Unknown thread, model, dataset or batch"},
    409: {"description": "The thread has its run, the model is busy, or nothing to resume"},
    422: {"description": "Invalid input, resume value or unsupported option"},
}


class _Body(BaseModel):
    """A LangGraph request body: the fields used here are typed, others are ignored (the
    SDK sends options such as ``stream_subgraphs`` or ``durability`` that mean nothing here)."""

    model_config = ConfigDict(extra="allow")


# -- assistants ---------------------------------------------------------------------------------


class AssistantSearch(_Body):
    metadata: dict[str, Any] | None = None
    graph_id: str | None = Field(None, max_length=200)
    name: str | None = Field(None, max_length=200)
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0)
    sort_by: Literal["assistant_id", "graph_id", "name", "created_at", "updated_at"] | None = None
    sort_order: SortOrder | None = None
    select: list[str] | None = Field(None, max_length=20)


def _model_created_at(cp: ControlPlane, name: str) -> str:
    """Façade gap: ``ModelView.created_at``."""
    return cp.store.get(ManagedModel, name).created_at


def _assistants(cp: ControlPlane) -> list[dict[str, Any]]:
    models = [lg_shapes.assistant(m, _model_created_at(cp, m.name)) for m in cp.list_models()]
    first = min((a["created_at"] for a in models), default="1970-01-01T00:00:00+00:00")
    return [lg_shapes.control_assistant(first), *models]


def _matches(found: dict[str, Any], wanted: dict[str, Any] | None) -> bool:
    return all(found.get(k) == v for k, v in (wanted or {}).items())


def _page(
    items: list[dict[str, Any]],
    sort_by: str | None,
    sort_order: str | None,
    default: str,
    offset: int,
    limit: int,
    select: list[str] | None,
) -> tuple[list[dict[str, Any]], bool]:
    key = sort_by or default
    items = sorted(items, key=lambda i: str(i.get(key) or ""), reverse=sort_order != "asc")
    page = items[offset : offset + limit]
    if select:
        page = [{k: i.get(k) for k in select} for i in page]
    return page, offset + limit < len(items)


@router.post("/assistants/search", response_model=list[dict[str, Any]])
def search_assistants(body: AssistantSearch, cp: Plane, _: Viewer, response: Response) -> Any:
    """The ``control`` graph and every managed model as LangGraph assistants (newest first
    unless sorted otherwise); ``X-Pagination-Next`` is the next offset when there is more."""
    found = [
        a
        for a in _assistants(cp)
        if (body.graph_id is None or a["graph_id"] == body.graph_id)
        and (body.name is None or body.name.casefold() in a["name"].casefold())
        and _matches(a["metadata"], body.metadata)
    ]
    page, more = _page(
        found, body.sort_by, body.sort_order, "created_at", body.offset, body.limit, body.select
    )
    if more:
        response.headers["X-Pagination-Next"] = str(body.offset + body.limit)
    return page


@router.get(
    "/assistants/{assistant_id}",
    response_model=dict[str, Any],
    responses={404: {"description": "Unknown assistant (model)"}},
)
def get_assistant(assistant_id: Id, cp: Plane, _: Viewer) -> Any:
    """A managed model as an assistant, or the ``control`` graph."""
    if assistant_id == lg_shapes.GRAPH_ID:
        return _assistants(cp)[0]
    model = cp.model_view(assistant_id)
    return lg_shapes.assistant(model, _model_created_at(cp, model.name))


def _known_assistant(cp: ControlPlane, assistant_id: str) -> None:
    """404 unless ``assistant_id`` is the ``control`` graph or a managed model."""
    if assistant_id != lg_shapes.GRAPH_ID:
        cp.model_view(assistant_id)


def parse_xray(value: str | None) -> bool | int:
    """``xray`` as LangGraph's server reads it: ``true``/``false`` or a depth above 0.

    Raises:
        Problem: 422 for anything else.
    """
    if value in (None, "", "false", "False"):
        return False
    if value in ("true", "True"):
        return True
    assert value is not None
    if value.isdecimal() and int(value) > 0:  # isdecimal: what int() reads, never a sign
        return int(value)
    raise Problem(422, f"invalid xray value {value!r}: true, false or a depth above 0")


@router.get(
    "/assistants/{assistant_id}/graph",
    response_model=dict[str, list[dict[str, Any]]],
    responses={404: {"description": "Unknown assistant"}, 422: {"description": "Bad xray"}},
)
def get_assistant_graph(
    assistant_id: Id,
    cp: Plane,
    _: Viewer,
    xray: Annotated[
        str | None,
        Query(max_length=10, description="true, false or a depth: subgraphs to draw (none here)"),
    ] = None,
) -> Any:
    """The control graph every assistant runs: ``{"nodes": [{"id", "type", "data"}],
    "edges": [{"source", "target", "conditional"?}]}`` (``__start__`` and ``__end__``
    included), as LangGraph's server draws a compiled graph."""
    depth = parse_xray(xray)
    _known_assistant(cp, assistant_id)
    return lg_shapes.graph_json(cp.graph, depth)


@router.get(
    "/assistants/{assistant_id}/subgraphs",
    response_model=dict[str, Any],
    responses={404: {"description": "Unknown assistant"}},
)
def get_assistant_subgraphs(assistant_id: Id, cp: Plane, _: Viewer) -> Any:
    """``assistants.get_subgraphs``: none (the control graph's nodes are plain functions)."""
    _known_assistant(cp, assistant_id)
    return {}


@router.get(
    "/assistants/{assistant_id}/schemas",
    response_model=dict[str, Any],
    responses={404: {"description": "Unknown assistant"}},
)
def get_assistant_schemas(assistant_id: Id, cp: Plane, _: Viewer) -> Any:
    """JSON schemas of the assistant's graph: ``input_schema`` (a run's input: the batch,
    and the model for the ``control`` assistant), ``output_schema`` (the thread values),
    ``state_schema`` (the graph's state), ``config_schema`` and ``context_schema`` (where
    the model may be named instead)."""
    _known_assistant(cp, assistant_id)
    return lg_shapes.schemas()


# -- threads ------------------------------------------------------------------------------------


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


def _unsupported(**options: Any) -> None:
    given = sorted(k for k, v in options.items() if v not in (None, [], {}, False, 0))
    if given:
        raise Problem(
            422,
            f"not supported by DriftPilot's LangGraph API: {', '.join(given)}",
            slug="unsupported-option",
            title="Unsupported option",
        )


def _view(cp: ControlPlane, ref: ThreadRef) -> tuple[RunView | None, list[dict[str, Any]]]:
    if ref.run_id is None:
        return None, []
    return lg_shapes.read(cp, ref.run_id)


@router.post("/threads", response_model=dict[str, Any], responses={409: {"description": "Exists"}})
def create_thread(body: ThreadCreate, cp: Plane, key: Operator) -> Any:
    """A new thread: a placeholder that the first run on it binds to a new control run
    (``thread_id``: a UUID, or leave it out; ``if_exists``: ``raise`` (409) or
    ``do_nothing``)."""
    _unsupported(supersteps=body.supersteps, ttl=body.ttl)
    ref = lg_threads.create_thread(cp, body.metadata, key.principal, body.thread_id, body.if_exists)
    return lg_shapes.thread(ref, *_view(cp, ref))


_INTERNAL = {
    "idle": ("completed",),
    "busy": ("pending", "running", "waiting_approval"),
    "error": ("failed",),
}


@router.post("/threads/search", response_model=list[dict[str, Any]])
def search_threads(body: ThreadSearch, cp: Plane, _: Viewer) -> Any:
    """Threads (control runs and placeholders), newest first unless sorted otherwise;
    ``status="interrupted"`` lists the runs waiting for a person, with their interrupt."""
    _unsupported(extract=body.extract)
    refs: dict[str, tuple[ThreadRef, RunView | None]] = {}
    if body.status in (None, "idle"):
        refs |= {r.thread_id: (r, None) for r in lg_threads.unbound_threads(cp)}
    if body.status == "interrupted":
        views = cp.pending_approvals()
    elif body.status is None:
        views = cp.list_runs(limit=1_000_000)
    else:  # the run states a thread status can come from, filtered in SQL
        views = [
            v
            for internal in _INTERNAL[body.status]
            for v in cp.list_runs(limit=1_000_000, status=internal)
        ]
    for view in views:
        if body.status is not None and lg_shapes.thread_status(view) != body.status:
            continue
        ref = lg_threads.thread_of(cp, view.run_id, view)
        refs[ref.thread_id] = (ref, view)
    found = []
    for ref, shown in refs.values():
        if body.ids is not None and ref.thread_id not in body.ids:
            continue
        rows = run_rows(cp, shown.run_id) if shown is not None else []
        item = lg_shapes.thread(ref, shown, rows)
        if _matches(item["metadata"], body.metadata) and _matches(item["values"], body.values):
            found.append(item)
    page, _more = _page(
        found, body.sort_by, body.sort_order, "created_at", body.offset, body.limit, body.select
    )
    return page


@router.get("/threads/{thread_id}", response_model=dict[str, Any], responses=_THREAD_404)
def get_thread(thread_id: Id, cp: Plane, _: Viewer) -> Any:
    """A thread: its status, values (the run summary) and interrupts."""
    ref = lg_threads.get_thread(cp, thread_id)
    return lg_shapes.thread(ref, *_view(cp, ref))


@router.get("/threads/{thread_id}/state", response_model=dict[str, Any], responses=_THREAD_404)
def get_thread_state(thread_id: Id, cp: Plane, _: Viewer) -> Any:
    """The thread's state: values, ``next`` (``["approval"]`` while it waits), tasks and
    interrupts."""
    ref = lg_threads.get_thread(cp, thread_id)
    return lg_shapes.thread_state(ref, *_view(cp, ref))


_NO_UPDATES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown thread"},
    422: {"description": "Always, for a known thread: only its agents change a run"},
}


def _refuse_update(cp: ControlPlane, thread_id: str, what: str) -> NoReturn:
    """A known thread's state or metadata cannot be changed from outside (422); the one
    way to change what a waiting run does is to answer its approval."""
    lg_threads.get_thread(cp, thread_id)
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


# -- runs ---------------------------------------------------------------------------------------


class LgCommand(_Body):
    resume: Any = None
    goto: Any = None
    update: Any = None


class LgRunCreate(_Body):
    assistant_id: str = Field(min_length=1, max_length=200)
    input: dict[str, Any] | None = None
    command: LgCommand | None = None
    metadata: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    stream_mode: str | list[str] | None = None
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] | None = None
    if_not_exists: Literal["reject", "create"] | None = None
    interrupt_before: Any = None
    interrupt_after: Any = None
    webhook: str | None = None
    after_seconds: float | None = None
    checkpoint: Any = None
    checkpoint_id: str | None = None


class HumanResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["accept", "ignore", "response", "edit"]
    args: Any = None


def resume_decision(value: Any) -> Resume:
    """The decision a resume value carries: ``{"decision", "comment"}``, or an Agent Inbox
    ``HumanResponse`` (alone or as a one-item list): ``accept`` approves, ``ignore``
    rejects, ``response`` rejects with its text as the comment.

    Raises:
        Problem: 422 for anything else (``edit`` included: the interrupt does not allow it).
    """
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict):
        raise Problem(
            422,
            "command.resume must be {'decision': 'approve'|'reject', 'comment': ...} or an "
            "Agent Inbox HumanResponse {'type': 'accept'|'ignore'|'response', 'args': ...}",
        )
    try:
        if "type" in value:
            answer = HumanResponse.model_validate(value)
            if answer.type == "edit":
                raise Problem(422, "this interrupt does not allow 'edit' (allow_edit is false)")
            text = answer.args if isinstance(answer.args, str) else ""
            if answer.type == "response" and not text.strip():
                raise Problem(422, "a 'response' needs its text in 'args'")
            decision = "approve" if answer.type == "accept" else "reject"
            return Resume(decision=decision, comment=text)
        return Resume.model_validate(value)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise Problem(422, f"invalid command.resume: {where}") from exc


def _model_of(body: LgRunCreate) -> str:
    """The managed model: the assistant, or (assistant ``control``) the input or config."""
    named = {
        where: value
        for where, value in (
            ("input.model", (body.input or {}).get("model")),
            (
                "config.configurable.model",
                ((body.config or {}).get("configurable") or {}).get("model"),
            ),
            ("context.model", (body.context or {}).get("model")),
        )
        if value is not None
    }
    if body.assistant_id != lg_shapes.GRAPH_ID:
        named["assistant_id"] = body.assistant_id
    models = set(named.values())
    if not models:
        raise Problem(
            422,
            "the 'control' assistant needs the model: give input.model (or "
            "config.configurable.model), or use the model's name as assistant_id",
        )
    if len(models) > 1 or not all(isinstance(m, str) for m in models):
        shown = ", ".join(f"{k}={v!r}" for k, v in named.items())
        raise Problem(422, f"the request names different models: {shown}")
    return str(models.pop())


def _check_options(body: LgRunCreate) -> None:
    _unsupported(
        interrupt_before=body.interrupt_before,
        interrupt_after=body.interrupt_after,
        webhook=body.webhook,
        after_seconds=body.after_seconds,
        checkpoint=body.checkpoint,
        checkpoint_id=body.checkpoint_id,
    )
    if body.multitask_strategy in ("interrupt", "rollback"):
        raise Problem(
            422,
            f"multitask_strategy {body.multitask_strategy!r} is not supported: a control run "
            "is never interrupted or rolled back by another; use 'reject' or 'enqueue'",
            slug="unsupported-option",
            title="Unsupported option",
        )
    if (body.input is None) == (body.command is None):
        raise Problem(422, "give either 'input' (a new control run) or 'command' (resume)")
    if body.command is not None:
        _unsupported(**{"command.goto": body.command.goto, "command.update": body.command.update})
        if body.command.resume is None:
            raise Problem(422, "command needs 'resume' (the approval decision)")


def _has_run(ref: ThreadRef) -> Problem:
    return Problem(
        409,
        f"thread {ref.thread_id} already holds control run {ref.run_id}: a thread is one "
        "control run; create a new thread for a new batch (or resume this one with "
        "command.resume)",
        slug="thread-has-run",
        title="Thread has its run",
    )


def _batch(cp: ControlPlane, conf: Any, body: LgRunCreate) -> tuple[str, Any, str]:
    """The model, the batch's frame and its id, from the request (nothing is written)."""
    model = _model_of(body)
    try:
        run_input = ControlInput.model_validate(body.input or {})
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise Problem(
            422,
            "input must be {'model': ..., 'batch': {'dataset': 'NAME:BATCH', 'max_rows'?: N} "
            f"or {{'path': 'file.parquet'}}}}: {where}",
        ) from exc
    cp.model_view(model)  # 404 before any file is read
    frame, batch_id, _ = frame_of(cp, conf, run_input.batch)
    return model, frame, batch_id


def _start(
    cp: ControlPlane,
    ex: RunExecutor,
    conf: Any,
    thread_id: str | None,
    body: LgRunCreate,
    key: ApiKeyView,
) -> tuple[ThreadRef, RunView]:
    """Submit a control run on the placeholder ``thread_id`` and bind it. A missing thread
    is a 404, unless ``if_not_exists="create"`` (or no thread was named: a stateless run),
    in which case it is made once the input is known to be good."""
    ref = lg_threads.find_thread(cp, thread_id) if thread_id is not None else None
    if ref is None and thread_id is not None and body.if_not_exists != "create":
        raise Problem(404, f"no thread {thread_id!r} (create it with threads.create)")
    if ref is not None and ref.run_id is not None:
        raise _has_run(ref)
    model, frame, batch_id = _batch(cp, conf, body)
    if ref is None:
        ref = lg_threads.create_thread(cp, {}, key.principal, thread_id, "do_nothing")
        if ref.run_id is not None:
            raise _has_run(ref)
    strategy = body.multitask_strategy or "reject"
    view = cp.submit_run(
        model,
        frame,
        batch_id,
        trigger="api",
        requested_by=key.principal,
        multitask_strategy=strategy,
    )
    metadata = body.metadata or {}
    if not lg_threads.bind(cp, ref, view, body.assistant_id, metadata, strategy):
        cp.cancel_run(view.run_id, key.principal, f"thread {ref.thread_id} was taken meanwhile")
        raise Problem(
            409,
            f"thread {ref.thread_id} was bound to another run at the same moment",
            slug="thread-has-run",
            title="Thread has its run",
        )
    ex.execute(view.run_id)
    bound = lg_threads.get_thread(cp, ref.thread_id)
    return bound, cp.get_run(view.run_id)


def _resume(
    cp: ControlPlane, ex: RunExecutor, ref: ThreadRef, body: LgRunCreate, key: ApiKeyView
) -> RunView:
    """Record the approval decision of the thread's run and queue its resume (never by its
    requester)."""
    assert body.command is not None
    resume = resume_decision(body.command.resume)
    if ref.run_id is None:
        raise Problem(409, f"thread {ref.thread_id} has no run to resume yet")
    run = cp.get_run(ref.run_id)
    if same_person(key.principal, run.requested_by):
        raise Problem(
            403,
            f"{key.principal!r} requested run {run.run_id} and cannot decide its approval",
            slug="self-approval",
            title="Self-approval refused",
        )
    view = cp.record_decision(
        run.run_id, resume.decision, key.principal, resume.comment, step=resume.step
    )
    ex.resume(run.run_id)
    return view


def _create(
    thread_id: str | None,
    body: LgRunCreate,
    cp: ControlPlane,
    ex: RunExecutor,
    conf: Any,
    key: ApiKeyView,
) -> tuple[ThreadRef, RunView, int]:
    """Start or resume the thread's run; also how many audit rows it had before (a stream
    of a resume starts after them)."""
    require("approver" if body.command is not None else "operator")(key)
    _check_options(body)
    if body.command is None:
        return (*_start(cp, ex, conf, thread_id, body, key), 0)
    if thread_id is None:
        raise Problem(422, "a resume names its thread: POST /threads/{thread_id}/runs")
    ref = lg_threads.get_thread(cp, thread_id)
    seen = len(run_rows(cp, ref.run_id)) if ref.run_id else 0
    return ref, _resume(cp, ex, ref, body, key), seen


def _run_location(ref: ThreadRef, view: RunView) -> dict[str, str]:
    return {"Content-Location": f"/threads/{ref.thread_id}/runs/{view.run_id}"}


def _kwargs(body: LgRunCreate) -> dict[str, Any]:
    return {
        "input": body.input,
        "command": body.command.model_dump() if body.command else None,
        "config": body.config,
    }


@router.post("/threads/{thread_id}/runs", response_model=dict[str, Any], responses=_RUN_PROBLEMS)
def create_run(
    thread_id: Id, body: LgRunCreate, cp: Plane, ex: Executor, conf: Conf, key: Caller
) -> Any:
    """Start the thread's control run (``input``: model and batch; operator role), or resume
    it (``command.resume``: the approval decision; approver role, not the requester). The
    run executes in a background worker; ``runs.join`` waits for it."""
    ref, view, _ = _create(thread_id, body, cp, ex, conf, key)
    found = lg_shapes.run(
        ref,
        view,
        metadata=body.metadata if body.input else None,
        multitask_strategy=strategy_of(cp, view.run_id),
        kwargs=_kwargs(body),
    )
    return JSONResponse(found, headers=_run_location(ref, view))


_SSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"},
    **_RUN_PROBLEMS,
}


def _stream(
    thread_id: str | None,
    body: LgRunCreate,
    cp: ControlPlane,
    ex: RunExecutor,
    conf: Any,
    key: ApiKeyView,
) -> EventSourceResponse:
    ref, view, seen = _create(thread_id, body, cp, ex, conf, key)
    modes = body.stream_mode or "values"
    wanted = {modes} if isinstance(modes, str) else set(modes)
    events = lg_shapes.events(
        cp, ref.thread_id, view.run_id, wanted, poll_s=conf.sse_poll_s, skip=seen
    )
    return EventSourceResponse(events, ping=conf.sse_ping_s, headers=_run_location(ref, view))


@router.post("/threads/{thread_id}/runs/stream", response_class=EventSourceResponse, responses=_SSE)
def stream_run(
    thread_id: Id, body: LgRunCreate, cp: Plane, ex: Executor, conf: Conf, key: Caller
) -> EventSourceResponse:
    """Like ``create_run``, then stream the run in LangGraph's event format (``metadata``,
    ``values``/``updates`` per agent step, ``end``) until it ends or waits for a person."""
    return _stream(thread_id, body, cp, ex, conf, key)


@router.post("/runs/stream", response_class=EventSourceResponse, responses=_SSE)
def stream_stateless_run(
    body: LgRunCreate, cp: Plane, ex: Executor, conf: Conf, key: Caller
) -> EventSourceResponse:
    """``runs.stream(None, ...)``: a new thread for a new control run, streamed (the thread
    is kept: a control run is never deleted)."""
    return _stream(None, body, cp, ex, conf, key)


async def _settled(request: Request, cp: ControlPlane, conf: Any, run_id: str) -> Any:
    """The run's final values once it ends or waits for a person (a recorded decision is
    waited on until it is applied), with ``__interrupt__`` while it waits."""
    while True:
        view, rows = await run_in_threadpool(lg_shapes.read, cp, run_id)
        if lg_shapes.settled(view):
            return lg_shapes.final_values(view, rows)
        if await request.is_disconnected():
            return Response(status_code=status.HTTP_204_NO_CONTENT)
        await anyio.sleep(conf.sse_poll_s)


@router.post(
    "/threads/{thread_id}/runs/wait", response_model=dict[str, Any], responses=_RUN_PROBLEMS
)
async def wait_run(
    thread_id: Id,
    body: LgRunCreate,
    request: Request,
    cp: Plane,
    ex: Executor,
    conf: Conf,
    key: Caller,
) -> Any:
    """Like ``create_run``, then wait like ``join`` and answer the thread's values."""
    ref, view, _ = await run_in_threadpool(_create, thread_id, body, cp, ex, conf, key)
    found = await _settled(request, cp, conf, view.run_id)
    headers = _run_location(ref, view)
    return JSONResponse(found, headers=headers) if isinstance(found, dict) else found


@router.post("/runs/wait", response_model=dict[str, Any], responses=_RUN_PROBLEMS)
async def wait_stateless_run(
    body: LgRunCreate, request: Request, cp: Plane, ex: Executor, conf: Conf, key: Caller
) -> Any:
    """``runs.wait(None, ...)``: a new thread for a new control run; answers its values
    once it ends or waits for a person."""
    ref, view, _ = await run_in_threadpool(_create, None, body, cp, ex, conf, key)
    found = await _settled(request, cp, conf, view.run_id)
    headers = _run_location(ref, view)
    return JSONResponse(found, headers=headers) if isinstance(found, dict) else found


def _thread_run(cp: ControlPlane, thread_id: str, run_id: str) -> ThreadRef:
    ref = lg_threads.get_thread(cp, thread_id)
    if ref.run_id != run_id:
        raise Problem(404, f"thread {thread_id} has no run {run_id!r}")
    return ref


@router.get("/threads/{thread_id}/runs", response_model=list[dict[str, Any]], responses=_THREAD_404)
def list_thread_runs(thread_id: Id, cp: Plane, _: Viewer) -> Any:
    """The thread's runs: its control run, once it has one."""
    ref = lg_threads.get_thread(cp, thread_id)
    if ref.run_id is None:
        return []
    view = cp.get_run(ref.run_id)
    return [lg_shapes.run(ref, view, multitask_strategy=strategy_of(cp, view.run_id))]


@router.get(
    "/threads/{thread_id}/runs/{run_id}", response_model=dict[str, Any], responses=_THREAD_404
)
def get_thread_run(thread_id: Id, run_id: Id, cp: Plane, _: Viewer) -> Any:
    """The thread's control run."""
    ref = _thread_run(cp, thread_id, run_id)
    return lg_shapes.run(ref, cp.get_run(run_id), multitask_strategy=strategy_of(cp, run_id))


@router.get(
    "/threads/{thread_id}/runs/{run_id}/join",
    response_model=dict[str, Any],
    responses=_THREAD_404,
)
async def join_run(
    thread_id: Id, run_id: Id, request: Request, cp: Plane, conf: Conf, _: Viewer
) -> Any:
    """Wait until the run ends or waits for a person (a recorded decision is waited on until
    it is applied), then answer the thread's values (with ``__interrupt__`` while it
    waits)."""
    await run_in_threadpool(_thread_run, cp, thread_id, run_id)
    return await _settled(request, cp, conf, run_id)


# -- crons --------------------------------------------------------------------------------------


class CronCreate(_Body):
    assistant_id: str = Field(min_length=1, max_length=200)
    schedule: str = Field(max_length=200)
    input: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    timezone: str | None = Field(None, max_length=100)
    enabled: bool | None = None
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] | None = None
    end_time: str | None = None
    webhook: str | None = None
    interrupt_before: Any = None
    interrupt_after: Any = None
    on_run_completed: Literal["delete", "keep"] | None = None


class CronSearch(_Body):
    assistant_id: str | None = Field(None, max_length=200)
    thread_id: str | None = Field(None, max_length=100)
    enabled: bool | None = None
    metadata: dict[str, Any] | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0)
    sort_by: (
        Literal[
            "cron_id",
            "assistant_id",
            "thread_id",
            "created_at",
            "updated_at",
            "next_run_date",
            "end_time",
        ]
        | None
    ) = None
    sort_order: SortOrder | None = None
    select: list[str] | None = Field(None, max_length=20)


def cron(view: ScheduleView) -> dict[str, Any]:
    """A schedule as a LangGraph cron (its payload is the run it makes at each firing)."""
    return {
        "cron_id": view.cron_id,
        "assistant_id": view.model,
        "thread_id": None,
        "on_run_completed": None,
        "end_time": None,
        "schedule": view.schedule,
        "timezone": view.timezone,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
        "payload": {
            "assistant_id": view.model,
            "input": view.payload,
            "multitask_strategy": view.multitask_strategy,
        },
        "user_id": view.created_by,
        "next_run_date": view.next_run_date,
        "metadata": view.metadata,
        "enabled": view.enabled,
        "last_firing": view.last_firing.model_dump() if view.last_firing else None,
    }


@router.post(
    "/runs/crons",
    response_model=dict[str, Any],
    responses={
        404: {"description": "Unknown model or dataset"},
        422: {"description": "Invalid cron, time zone, source or unsupported option"},
    },
)
def create_cron(body: CronCreate, sched: Sched, key: Operator) -> Any:
    """Schedule control runs of the assistant's model: ``input.source`` is a schedule's batch
    source (``{"dataset": "flights", "start": "2013-10"}``, ``{"glob": "dir/*.parquet"}``
    or ``{"gdelt": {}}``); ``schedule`` a five-field cron in ``timezone`` (default UTC)."""
    _unsupported(
        end_time=body.end_time,
        webhook=body.webhook,
        interrupt_before=body.interrupt_before,
        interrupt_after=body.interrupt_after,
    )
    if body.multitask_strategy in ("interrupt", "rollback"):
        raise Problem(422, "a cron's multitask_strategy is 'reject' or 'enqueue'")
    probe = LgRunCreate(
        assistant_id=body.assistant_id,
        input=body.input or {},
        config=body.config,
        context=body.context,
    )
    model = _model_of(probe)
    extra = sorted(set(body.input or {}) - {"model", "source"})
    if extra:
        raise Problem(422, f"a cron's input is {{'model'?, 'source'}}; unknown: {', '.join(extra)}")
    try:
        spec = ScheduleSpec.model_validate(
            {
                "schedule": body.schedule,
                "timezone": body.timezone or "UTC",
                "enabled": True if body.enabled is None else body.enabled,
                "payload": {"model": model, "source": (body.input or {}).get("source")},
                "multitask_strategy": body.multitask_strategy or "reject",
                "metadata": body.metadata or {},
            }
        )
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise Problem(422, f"invalid cron: {where}") from exc
    return cron(sched.create(spec, key.principal))


@router.post("/runs/crons/search", response_model=list[dict[str, Any]])
def search_crons(body: CronSearch, sched: Sched, _: Viewer) -> Any:
    """Schedules as crons, filtered by assistant (model), enabled and metadata."""
    if body.thread_id is not None:
        return []  # every firing starts a new control run: no cron belongs to a thread
    model = None if body.assistant_id in (None, lg_shapes.GRAPH_ID) else body.assistant_id
    found = [
        cron(v)
        for v in sched.list_schedules(model=model, enabled=body.enabled)
        if _matches(v.metadata, body.metadata)
    ]
    page, _more = _page(
        found, body.sort_by, body.sort_order, "created_at", body.offset, body.limit, body.select
    )
    return page


@router.delete(
    "/runs/crons/{cron_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "Unknown cron"}},
)
def delete_cron(
    cron_id: Annotated[str, Path(max_length=40)], sched: Sched, key: Operator
) -> Response:
    """Delete a schedule (its audited firings stay in the trail)."""
    sched.delete(cron_id, key.principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
