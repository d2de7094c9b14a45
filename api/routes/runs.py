"""Control runs: create (202, executed in the background), get, list, stream, cancel."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, cast

import polars as pl
from fastapi import APIRouter, Depends, File, Form, Header, Query, UploadFile, status
from pydantic import Field
from sse_starlette import EventSourceResponse

from api import batches, cursors, stream
from api.deps import Conf, Executor, Operator, Plane, Viewer
from api.problems import Problem
from api.schemas import (
    INTERNAL_STATUS,
    CancelIn,
    DatasetBatch,
    MultitaskStrategy,
    Page,
    Run,
    RunCreate,
    RunStatus,
)
from driftpilot.core.identity import has_role, same_person
from driftpilot.core.settings import ApiSettings
from driftpilot.execution.inprocess import RunExecutor
from driftpilot.runs.lifecycle import REASON_MAX_CHARS
from driftpilot.runs.plane import ApiKeyView, ControlPlane, RunView
from driftpilot.runs.strategies import run_strategies

router = APIRouter(prefix="/runs", tags=["runs"])
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown model, dataset or batch"},
    409: {"description": "The model is busy (multitask_strategy 'reject')"},
    413: {"description": "Body, file or batch too large (bytes, rows, columns, line length)"},
    422: {"description": "Invalid request, path or batch"},
}


class RunCreateIn(RunCreate):
    """Start a control run of a managed model on one batch; optionally, ask for a retrain."""

    retrain_reason: str | None = Field(
        None,
        max_length=REASON_MAX_CHARS,
        description=(
            "Ask for a retrain, and say why (the API key's principal is the one asking). The "
            "run's drift analyst weighs the request; the policy still decides."
        ),
    )


def batch_roots(cp: ControlPlane, conf: ApiSettings) -> list[Path]:
    """Where a batch 'path' may point: the configured roots, else '<home>/inbox'."""
    return conf.batch_roots or [cp.settings.home / "inbox"]


def frame_of(
    cp: ControlPlane, conf: ApiSettings, batch: Any
) -> tuple[pl.DataFrame, str, dict[str, Any]]:
    """The frame, batch id and provenance of a JSON batch (a dataset batch or a path)."""
    if isinstance(batch, DatasetBatch):
        frame, batch_id = batches.dataset_batch(
            batch.dataset, cp.settings, batch.max_rows, batch.seed
        )
        return frame, batch_id, {"dataset": batch.dataset, "rows": frame.height}
    path = batches.resolve_under(batch_roots(cp, conf), batch.path)
    frame = batches.read_file(path, batches.limits_of(conf))
    return frame, path.stem, {"path": batch.path, "rows": frame.height}


def strategies(cp: ControlPlane, run_ids: list[str]) -> dict[str, MultitaskStrategy]:
    """The multitask strategy each run was submitted with (one query for a page of runs).
    A run submitted before strategies were recorded has none."""
    return cast(dict[str, MultitaskStrategy], run_strategies(cp, run_ids))


def strategy_of(cp: ControlPlane, run_id: str) -> MultitaskStrategy | None:
    return strategies(cp, [run_id]).get(run_id)


def run_of(cp: ControlPlane, view: RunView) -> Run:
    """The run as the API shows it, with the strategy it was submitted with."""
    return Run.of(view, multitask_strategy=strategy_of(cp, view.run_id))


def _submit(
    cp: ControlPlane,
    ex: RunExecutor,
    key: ApiKeyView,
    model: str,
    frame: pl.DataFrame,
    batch_id: str,
    metadata: dict[str, Any],
    strategy: MultitaskStrategy,
    retrain_reason: str | None = None,
) -> Run:
    view = cp.submit_run(
        model,
        frame,
        batch_id,
        trigger="api",
        requested_by=key.principal,
        multitask_strategy=strategy,
        metadata=metadata,
        retrain_reason=retrain_reason,
    )
    ex.execute(view.run_id)
    return Run.of(view, metadata=metadata, multitask_strategy=strategy)


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=Run, responses=_PROBLEMS)
def create_run(body: RunCreateIn, cp: Plane, ex: Executor, conf: Conf, key: Operator) -> Run:
    """Start a control run of a model on one batch: a built-in dataset batch
    (``{"dataset": "flights:2013-07"}``, optionally ``max_rows``) or a CSV/Parquet file under
    an allowed batch root (``{"path": "2013-07.csv"}``). Answers 202 with the pending run at
    once; it executes in a background worker. The requester is the API key's principal.
    ``multitask_strategy``: ``reject`` answers 409 while the model has another run pending or
    running; ``enqueue`` lets it wait for its turn. ``retrain_reason``: the key's principal
    asks for a retrain (audited as their request; the policy still decides).

    It only records and enqueues: the batch is filed, the run row written ``pending``, and
    the executor runs the graph after the answer (in its own thread, or a worker's job on
    PostgreSQL)."""
    cp.model_view(body.model_name)  # 404 before any file is read
    frame, batch_id, _ = frame_of(cp, conf, body.input.batch)
    return _submit(
        cp,
        ex,
        key,
        body.model_name,
        frame,
        batch_id,
        body.metadata,
        body.multitask_strategy,
        body.retrain_reason,
    )


@router.post(
    "/upload", status_code=status.HTTP_202_ACCEPTED, response_model=Run, responses=_PROBLEMS
)
def upload_run(
    cp: Plane,
    ex: Executor,
    conf: Conf,
    key: Operator,
    model: Annotated[str, Form(max_length=200, description="The managed model.")],
    file: Annotated[UploadFile, File(description="The batch: a .csv or .parquet file.")],
    metadata: Annotated[str, Form(max_length=20_000, description="A JSON object.")] = "{}",
    multitask_strategy: Annotated[MultitaskStrategy, Form()] = "reject",
) -> Run:
    """Start a control run on an uploaded CSV/Parquet batch (multipart/form-data). Answers
    202 with the pending run; it executes in a background worker."""
    try:
        meta = json.loads(metadata)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise Problem(422, "metadata must be a JSON object")
    cp.model_view(model)
    # A plain def: FastAPI runs it in its thread pool, so parsing never stalls the loop.
    data = file.file.read()
    frame = batches.read_upload(data, file.filename or "", batches.limits_of(conf))
    stem = Path(file.filename or "upload").name.rsplit(".", 1)[0] or "upload"
    return _submit(cp, ex, key, model, frame, stem, meta, multitask_strategy)


@router.get("/{run_id}", response_model=Run, responses={404: {"description": "Unknown run"}})
def get_run(run_id: str, cp: Plane, _: Viewer) -> Run:
    """One run with its status, outcome, summary and the interrupt it waits on."""
    return run_of(cp, cp.get_run(run_id))


def encode_cursor(run: Run) -> str:
    return cursors.encode(run.created_at, run.run_id)


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The (created_at, run_id) the previous page ended at (422 if it is not one)."""
    created, run_id = cursors.decode(cursor, str, str)
    return created, run_id


@router.get("", response_model=Page[Run])
def list_runs(
    cp: Plane,
    _: Viewer,
    model: Annotated[str | None, Query(max_length=200)] = None,
    status: RunStatus | None = None,
    outcome: Annotated[str | None, Query(max_length=80)] = None,
    requested_by: Annotated[
        str | None, Query(max_length=200, description="Same person, under the identity rule.")
    ] = None,
    since: Annotated[datetime | None, Query(description="Created at or after.")] = None,
    until: Annotated[datetime | None, Query(description="Created before.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> Page[Run]:
    """Runs, newest first, filtered by model, status, outcome, requester and creation time;
    pass ``next_cursor`` as ``cursor`` for the next page (stable while runs are added)."""
    views = cp.list_runs(
        model,
        limit + 1,
        status=INTERNAL_STATUS.get(status) if status else None,
        outcome=outcome,
        requested_by=requested_by,
        since=since,
        until=until,
        before=decode_cursor(cursor) if cursor is not None else None,
    )
    shown = views[:limit]
    strategy = strategies(cp, [v.run_id for v in shown])
    page = [Run.of(v, multitask_strategy=strategy.get(v.run_id)) for v in shown]
    return Page[Run](
        items=page, next_cursor=encode_cursor(page[-1]) if len(views) > limit else None
    )


@router.get(
    "/{run_id}/stream",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"},
        404: {"description": "Unknown run"},
    },
)
def stream_run(
    run_id: str,
    cp: Plane,
    conf: Conf,
    _: Viewer,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> EventSourceResponse:
    """The run's events as server-sent events: ``metadata``, then each agent ``step`` with
    its decision and rationale, ``approval`` rows, ``champion`` changes, ``status`` changes,
    the ``interrupt`` (an Agent Inbox HumanInterrupt) or the ``outcome``, and ``end``. The
    stream ends when the run ends or waits for a person. Reconnect with ``Last-Event-ID`` to
    get only what follows."""
    cp.get_run(run_id)  # 404 before the stream starts
    start = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    events = stream.run_events(cp, run_id, poll_s=conf.sse_poll_s, last_event_id=start)
    return EventSourceResponse(events, ping=conf.sse_ping_s)


def may_cancel(run_id: str, cp: Plane, key: Operator) -> ApiKeyView:
    """The caller, when they requested run ``run_id`` or have the approver role: an operator
    must not silently drop what another person asked for (a retrain request, a schedule's
    run); a supervisor (approver) may. A dependency, so it answers before the body is read.

    Raises:
        Problem: 404 unknown run; 403 another principal's run below the approver role.
    """
    run = cp.get_run(run_id)
    if has_role(key.role, "approver") or same_person(key.principal, run.requested_by):
        return key
    raise Problem(
        403,
        f"{key.principal!r} did not request run {run.run_id}: cancelling another "
        "principal's run needs the approver role",
        slug="not-your-run",
        title="Not your run",
    )


@router.post(
    "/{run_id}/cancel",
    response_model=Run,
    responses={
        403: {"description": "Role too low, or another principal's run below approver"},
        404: {"description": "Unknown run"},
        409: {"description": "The run is not pending (running, waiting or ended)"},
    },
)
def cancel_run(
    run_id: str,
    cp: Plane,
    key: Annotated[ApiKeyView, Depends(may_cancel)],
    body: CancelIn | None = None,
) -> Run:
    """Cancel a run that has not started (``pending``): it ends with status ``error`` and
    outcome ``cancelled``, audited with the key's principal. An operator cancels the runs
    they requested; another principal's run needs the approver role (403). A running run
    cannot be stopped between its steps (409); a run waiting for approval is rejected
    through ``POST /approvals/{run_id}`` instead (409)."""
    return run_of(cp, cp.cancel_run(run_id, key.principal, body.reason if body else ""))
