"""LangGraph runs on a thread: create, stream, wait, join, get and list; a run's input
starts the thread's control run, ``command.resume`` decides its approval."""

from __future__ import annotations

from typing import Any, Literal

import anyio
from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api.deps import Conf, Executor, Operator, Plane, Viewer, require
from api.langgraph import shapes
from api.langgraph import stream as lg_stream
from api.langgraph import threads as lg_threads
from api.langgraph.common import TAGS, THREAD_404, Id, _Body, unsupported
from api.problems import Problem
from api.routes.runs import frame_of, strategy_of
from api.schemas import ControlInput, Resume
from api.stream import run_rows
from driftpilot.execution.inprocess import RunExecutor
from driftpilot.runs import threads as runs_threads
from driftpilot.runs.approvals import is_own_run
from driftpilot.runs.lifecycle import REASON_MAX_CHARS
from driftpilot.runs.plane import ApiKeyView, ControlPlane, RunView
from driftpilot.runs.threads import ThreadRef

router = APIRouter(tags=TAGS)
_RUN_PROBLEMS: dict[int | str, dict[str, Any]] = {
    403: {"description": "Role too low, or the approver requested the run"},
    404: {"description": "Unknown thread, model, dataset or batch"},
    409: {"description": "The thread has its run, the model is busy, or nothing to resume"},
    422: {"description": "Invalid input, resume value or unsupported option"},
}


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


def model_of(body: LgRunCreate) -> str:
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
    if body.assistant_id != shapes.GRAPH_ID:
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
    unsupported(
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
        unsupported(**{"command.goto": body.command.goto, "command.update": body.command.update})
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


def retrain_reason_of(run_input: dict[str, Any]) -> str | None:
    """``input.retrain_reason``: the caller asks for a retrain and says why, as
    ``POST /runs``'s ``retrain_reason`` (None: not asked).

    Raises:
        Problem: 422 when it is not a string, or longer than ``REASON_MAX_CHARS``.
    """
    reason = run_input.get("retrain_reason")
    if reason is None:
        return None
    if not isinstance(reason, str) or len(reason) > REASON_MAX_CHARS:
        raise Problem(
            422,
            f"input.retrain_reason must be a string of at most {REASON_MAX_CHARS} characters "
            "(why the model should retrain)",
        )
    return reason


def _batch(cp: ControlPlane, conf: Any, body: LgRunCreate) -> tuple[str, Any, str]:
    """The model, the batch's frame and its id, from the request (nothing is written)."""
    model = model_of(body)
    fields = {k: v for k, v in (body.input or {}).items() if k != "retrain_reason"}
    try:
        run_input = ControlInput.model_validate(fields)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise Problem(
            422,
            "input must be {'model': ..., 'batch': {'dataset': 'NAME:BATCH', 'max_rows'?: N} "
            f"or {{'path': 'file.parquet'}}, 'retrain_reason'?: TEXT}}: {where}",
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
    ref = runs_threads.find_thread(cp, thread_id) if thread_id is not None else None
    if ref is None and thread_id is not None and body.if_not_exists != "create":
        raise Problem(404, f"no thread {thread_id!r} (create it with threads.create)")
    if ref is not None and ref.run_id is not None:
        raise _has_run(ref)
    reason = retrain_reason_of(body.input or {})
    model, frame, batch_id = _batch(cp, conf, body)
    if ref is None:
        ref = lg_threads.new_thread(cp, {}, key.principal, thread_id, "do_nothing")
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
        retrain_reason=reason,
    )
    metadata = body.metadata or {}
    if not runs_threads.bind_thread(cp, ref.thread_id, view, body.assistant_id, metadata, strategy):
        cp.cancel_run(view.run_id, key.principal, f"thread {ref.thread_id} was taken meanwhile")
        raise Problem(
            409,
            f"thread {ref.thread_id} was bound to another run at the same moment",
            slug="thread-has-run",
            title="Thread has its run",
        )
    ex.execute(view.run_id)
    bound = lg_threads.thread_or_404(cp, ref.thread_id)
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
    if is_own_run(key.principal, run):
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
    ref = lg_threads.thread_or_404(cp, thread_id)
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
    thread_id: Id, body: LgRunCreate, cp: Plane, ex: Executor, conf: Conf, key: Operator
) -> Any:
    """Start the thread's control run (``input``: model and batch, and ``retrain_reason`` to
    ask for a retrain as ``POST /runs`` does; operator role), or resume
    it (``command.resume``: the approval decision; approver role, not the requester). The
    run executes in a background worker; ``runs.join`` waits for it."""
    ref, view, _ = _create(thread_id, body, cp, ex, conf, key)
    found = shapes.run(
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
    events = lg_stream.events(
        cp, ref.thread_id, view.run_id, wanted, poll_s=conf.sse_poll_s, skip=seen
    )
    return EventSourceResponse(events, ping=conf.sse_ping_s, headers=_run_location(ref, view))


@router.post("/threads/{thread_id}/runs/stream", response_class=EventSourceResponse, responses=_SSE)
def stream_run(
    thread_id: Id, body: LgRunCreate, cp: Plane, ex: Executor, conf: Conf, key: Operator
) -> EventSourceResponse:
    """Like ``create_run``, then stream the run in LangGraph's event format (``metadata``,
    ``values``/``updates`` per agent step, ``end``) until it ends or waits for a person."""
    return _stream(thread_id, body, cp, ex, conf, key)


@router.post("/runs/stream", response_class=EventSourceResponse, responses=_SSE)
def stream_stateless_run(
    body: LgRunCreate, cp: Plane, ex: Executor, conf: Conf, key: Operator
) -> EventSourceResponse:
    """``runs.stream(None, ...)``: a new thread for a new control run, streamed (the thread
    is kept: a control run is never deleted)."""
    return _stream(None, body, cp, ex, conf, key)


async def _settled(request: Request, cp: ControlPlane, conf: Any, run_id: str) -> Any:
    """The run's final values once it ends or waits for a person (a recorded decision is
    waited on until it is applied), with ``__interrupt__`` while it waits."""
    while True:
        view, rows = await run_in_threadpool(shapes.read, cp, run_id)
        if shapes.settled(view):
            return shapes.final_values(view, rows)
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
    key: Operator,
) -> Any:
    """Like ``create_run``, then wait like ``join`` and answer the thread's values."""
    ref, view, _ = await run_in_threadpool(_create, thread_id, body, cp, ex, conf, key)
    found = await _settled(request, cp, conf, view.run_id)
    headers = _run_location(ref, view)
    return JSONResponse(found, headers=headers) if isinstance(found, dict) else found


@router.post("/runs/wait", response_model=dict[str, Any], responses=_RUN_PROBLEMS)
async def wait_stateless_run(
    body: LgRunCreate, request: Request, cp: Plane, ex: Executor, conf: Conf, key: Operator
) -> Any:
    """``runs.wait(None, ...)``: a new thread for a new control run; answers its values
    once it ends or waits for a person."""
    ref, view, _ = await run_in_threadpool(_create, None, body, cp, ex, conf, key)
    found = await _settled(request, cp, conf, view.run_id)
    headers = _run_location(ref, view)
    return JSONResponse(found, headers=headers) if isinstance(found, dict) else found


def _thread_run(cp: ControlPlane, thread_id: str, run_id: str) -> ThreadRef:
    ref = lg_threads.thread_or_404(cp, thread_id)
    if ref.run_id != run_id:
        raise Problem(404, f"thread {thread_id} has no run {run_id!r}")
    return ref


@router.get("/threads/{thread_id}/runs", response_model=list[dict[str, Any]], responses=THREAD_404)
def list_thread_runs(thread_id: Id, cp: Plane, _: Viewer) -> Any:
    """The thread's runs: its control run, once it has one."""
    ref = lg_threads.thread_or_404(cp, thread_id)
    if ref.run_id is None:
        return []
    view = cp.get_run(ref.run_id)
    return [shapes.run(ref, view, multitask_strategy=strategy_of(cp, view.run_id))]


@router.get(
    "/threads/{thread_id}/runs/{run_id}", response_model=dict[str, Any], responses=THREAD_404
)
def get_thread_run(thread_id: Id, run_id: Id, cp: Plane, _: Viewer) -> Any:
    """The thread's control run."""
    ref = _thread_run(cp, thread_id, run_id)
    return shapes.run(ref, cp.get_run(run_id), multitask_strategy=strategy_of(cp, run_id))


@router.get(
    "/threads/{thread_id}/runs/{run_id}/join",
    response_model=dict[str, Any],
    responses=THREAD_404,
)
async def join_run(
    thread_id: Id, run_id: Id, request: Request, cp: Plane, conf: Conf, _: Viewer
) -> Any:
    """Wait until the run ends or waits for a person (a recorded decision is waited on until
    it is applied), then answer the thread's values (with ``__interrupt__`` while it
    waits)."""
    await run_in_threadpool(_thread_run, cp, thread_id, run_id)
    return await _settled(request, cp, conf, run_id)
