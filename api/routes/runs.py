"""Control runs: create (202, executed in the background), get, list."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile, status

from api import batches
from api.config import ApiSettings
from api.deps import Conf, Executor, Operator, Plane, Viewer
from api.problems import Problem
from api.schemas import (
    INTERNAL_STATUS,
    DatasetBatch,
    MultitaskStrategy,
    Page,
    Run,
    RunCreate,
    RunStatus,
)
from driftpilot.service import ApiKeyView, ControlPlane

router = APIRouter(prefix="/runs", tags=["runs"])
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown model"},
    409: {"description": "The model is busy (multitask_strategy 'reject')"},
    413: {"description": "Body too large"},
    422: {"description": "Invalid request or batch"},
}


def _default_roots(cp: ControlPlane, conf: ApiSettings) -> list[Any]:
    return conf.batch_roots or [cp.settings.home / "inbox"]


def _submit(
    cp: ControlPlane,
    ex: Any,
    key: ApiKeyView,
    model: str,
    frame: Any,
    batch_id: str,
    metadata: dict[str, Any],
    strategy: MultitaskStrategy,
) -> Run:
    view = cp.submit_run(
        model,
        frame,
        batch_id,
        trigger="api",
        requested_by=key.principal,
        multitask_strategy=strategy,
    )
    ex.execute(view.run_id)
    return Run.of(view, metadata=metadata, multitask_strategy=strategy)


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=Run, responses=_PROBLEMS)
def create_run(body: RunCreate, cp: Plane, ex: Executor, conf: Conf, key: Operator) -> Run:
    """Start a control run of a model on one batch: a CSV/Parquet file under an allowed batch
    root (``{"path": ...}``). Answers 202 with the pending run at once; it executes in a
    background worker. The requester is the API key's principal."""
    cp.model_view(body.model_name)  # 404 before any file is read
    batch = body.input.batch
    if isinstance(batch, DatasetBatch):
        raise Problem(
            501,
            "built-in dataset batches are not served by the API yet: upload the batch "
            "(POST /runs/upload) or give a path under an allowed batch root",
        )
    path = batches.resolve_under(_default_roots(cp, conf), batch.path)
    frame = batches.read_file(path, conf.max_batch_rows)
    return _submit(
        cp, ex, key, body.model_name, frame, path.stem, body.metadata, body.multitask_strategy
    )


@router.post(
    "/upload", status_code=status.HTTP_202_ACCEPTED, response_model=Run, responses=_PROBLEMS
)
async def upload_run(
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
    frame = batches.read_upload(await file.read(), file.filename or "", conf.max_batch_rows)
    stem = (file.filename or "upload").rsplit(".", 1)[0]
    return _submit(cp, ex, key, model, frame, stem, meta, multitask_strategy)


@router.get("/{run_id}", response_model=Run, responses={404: {"description": "Unknown run"}})
def get_run(run_id: str, cp: Plane, _: Viewer) -> Run:
    """One run with its status, outcome, summary and the interrupt it waits on."""
    return Run.of(cp.get_run(run_id))


@router.get("", response_model=Page[Run])
def list_runs(
    cp: Plane,
    _: Viewer,
    model: Annotated[str | None, Query(max_length=200)] = None,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=80)] = None,
) -> Page[Run]:
    """Runs, newest first, filtered by model and status; ``next_cursor`` pages on."""
    offset = _offset(cursor)
    wanted = INTERNAL_STATUS.get(status) if status else None
    # The façade lists newest first up to a limit; ask for enough to fill this page.
    views = cp.list_runs(model, limit=offset + limit + 1 if not wanted else 10_000)
    if wanted:
        views = [v for v in views if v.status == wanted]
    page = views[offset : offset + limit]
    more = len(views) > offset + limit
    return Page[Run](
        items=[Run.of(v) for v in page], next_cursor=str(offset + limit) if more else None
    )


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit():
        raise Problem(422, "invalid cursor: pass the next_cursor of the previous page unchanged")
    return int(cursor)
