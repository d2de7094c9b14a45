"""Managed models: create (initial training as a background job), list, get, versions with
metrics, champion history, rollback, and which version was champion at a time."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl
from fastapi import APIRouter, Depends, File, Form, Header, Query, UploadFile, status

from api import batches, gaps
from api.deps import Conf, Executor, Operator, Plane, Viewer
from api.problems import Problem
from api.routes.runs import frame_of
from api.schemas import (
    MODEL_NAME,
    ChampionAt,
    DatasetBatch,
    LabelsView,
    ModelCreate,
    ModelView,
    Rollback,
    RollbackIn,
)
from driftpilot.core.errors import NotFound
from driftpilot.core.identity import has_role
from driftpilot.execution.inprocess import Job, RunExecutor
from driftpilot.runs.models import choose_task
from driftpilot.runs.plane import ApiKeyView, ControlPlane

router = APIRouter(prefix="/models", tags=["models"])
_CREATE_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown dataset or batch"},
    409: {"description": "The model exists, or is being created"},
    413: {"description": "Body, file or batch too large"},
    422: {"description": "Invalid request, path, batch or columns"},
}


def _start_training(
    cp: ControlPlane,
    ex: RunExecutor,
    key: ApiKeyView,
    name: str,
    frame: pl.DataFrame,
    *,
    target: str,
    time_col: str,
    numeric: list[str],
    categorical: list[str],
    family: str,
    source: str,
    task: str | None = None,
    metric: str | None = None,
) -> Job:
    try:
        existing = cp.model_view(name)
    except NotFound:
        existing = None
    # A model without a champion is one whose first training died mid-way: adding it again
    # finishes it (the façade keeps what was done). Any other existing model is a conflict.
    if existing is not None and existing.champion is not None:
        raise Problem(409, f"model {name!r} already exists", slug="model-exists")
    if ex.job_in_flight(name) is not None:
        raise Problem(409, f"model {name!r} is being created", slug="model-exists")
    missing = [c for c in (target, time_col, *numeric, *categorical) if c not in frame.columns]
    if missing:
        raise Problem(422, f"the batch has no column(s) {missing[:10]}", slug="invalid-data")
    # A wrong task or metric is the caller's mistake: a 422 now, not a failed job later.
    choose_task(frame, target, task, metric)

    def work() -> dict[str, Any]:
        view = cp.add_model(
            name,
            frame,
            target=target,
            time_col=time_col,
            numeric=numeric,
            categorical=categorical,
            family=family,
            task=task,
            metric=metric,
            source=source,
            principal=key.principal,
        )
        return view.model_dump()

    return ex.submit_job("create_model", name, key.principal, work)


@router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=Job, responses=_CREATE_PROBLEMS
)
def create_model(body: ModelCreate, cp: Plane, ex: Executor, conf: Conf, key: Operator) -> Job:
    """Add a managed model and train, register and promote its first champion on one batch
    (a built-in dataset batch, or a file under a batch root with its columns named), as a
    background job: 202 with the job; poll ``GET /jobs/{job_id}``. The key's principal is
    the one who promoted the first champion (audited)."""
    batch = body.input.batch
    frame, _, source = frame_of(cp, conf, batch)
    if isinstance(batch, DatasetBatch):
        from tools.datasets import BUILTIN_SPECS

        spec = BUILTIN_SPECS[batch.dataset.split(":", 1)[0]]
        if body.task is not None and body.task != spec.task:
            raise Problem(422, f"{spec.name} is a {spec.task} dataset, not {body.task}")
        columns: dict[str, Any] = {
            "target": spec.target,
            "time_col": spec.time_col,
            "numeric": spec.numeric,
            "categorical": spec.categorical,
            "task": spec.task,
        }
    else:
        columns = {
            "target": body.target,
            "time_col": body.time_col,
            "numeric": body.numeric,
            "categorical": body.categorical,
            "task": body.task,
        }
    return _start_training(
        cp,
        ex,
        key,
        body.name,
        frame,
        family=body.family,
        metric=body.metric,
        source=json.dumps(source),
        **columns,
    )


def _columns(text: str, field: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if len(names) > 1000 or any(len(c) > 200 for c in names):
        raise Problem(422, f"{field}: at most 1000 column names of at most 200 characters")
    return names


@router.post(
    "/upload", status_code=status.HTTP_202_ACCEPTED, response_model=Job, responses=_CREATE_PROBLEMS
)
def upload_model(
    cp: Plane,
    ex: Executor,
    conf: Conf,
    key: Operator,
    name: Annotated[str, Form(pattern=MODEL_NAME, description="The managed model.")],
    file: Annotated[UploadFile, File(description="The initial window: .csv or .parquet.")],
    target: Annotated[str, Form(min_length=1, max_length=200, description="Label (0/1).")],
    time_col: Annotated[str, Form(min_length=1, max_length=200, description="Time column.")],
    numeric: Annotated[str, Form(min_length=1, max_length=200_000, description="a,b,c")],
    categorical: Annotated[str, Form(max_length=200_000, description="a,b,c")] = "",
    family: Annotated[Literal["lightgbm", "catboost"], Form()] = "lightgbm",
) -> Job:
    """Add a managed model trained on an uploaded CSV/Parquet window (multipart/form-data),
    as a background job: 202 with the job; poll ``GET /jobs/{job_id}``."""
    # A plain def: FastAPI runs it in its thread pool, so parsing never stalls the loop.
    data = file.file.read()
    frame = batches.read_upload(data, file.filename or "", batches.limits_of(conf))
    return _start_training(
        cp,
        ex,
        key,
        name,
        frame,
        target=target,
        time_col=time_col,
        numeric=_columns(numeric, "numeric"),
        categorical=_columns(categorical, "categorical"),
        family=family,
        source=json.dumps({"upload": Path(file.filename or "upload").name}),
    )


@router.get("", response_model=list[ModelView])
def list_models(cp: Plane, _: Viewer) -> list[ModelView]:
    """Every managed model with its current champion version."""
    return cp.list_models()


@router.get("/{name}", response_model=ModelView, responses={404: {"description": "Unknown"}})
def get_model(name: str, cp: Plane, _: Viewer) -> ModelView:
    """One managed model (404 if unknown)."""
    return cp.model_view(name)


@router.get("/{name}/versions", responses={404: {"description": "Unknown model"}})
def versions(name: str, cp: Plane, _: Viewer) -> list[dict[str, Any]]:
    """Every registered version, newest first: the run that trained it, whether it is (or
    was) the champion, validation metrics of its training and its evaluation scores."""
    cp.model_view(name)
    return gaps.model_versions(cp, name)


@router.get("/{name}/champions", responses={404: {"description": "Unknown model"}})
def champions(name: str, cp: Plane, _: Viewer) -> list[dict[str, Any]]:
    """The champion history, oldest first: bootstrap, promotions and rollbacks, each with
    the version, the previous one, who moved it, the run and when."""
    cp.model_view(name)
    return [
        {k: row.get(k) for k in ("id", "version", "previous_version", "action", "run_id", "actor")}
        | {"at": row["created_at"]}
        for row in cp.champion_history(name)
    ]


def rollback_role(key: Viewer, cp: Plane) -> ApiKeyView:
    """The caller, when their role reaches the policy's ``people.rollback_role`` (403 else)."""
    needed = cp.policy.people.rollback_role
    if not has_role(key.role, needed):
        raise Problem(
            403,
            f"{key.principal!r} has the {key.role} role; this needs {needed} or higher "
            "(policy people.rollback_role)",
            slug="insufficient-role",
            title="Role too low",
        )
    return key


@router.post("/{name}/rollback", response_model=Rollback)
def rollback(
    name: str,
    body: RollbackIn,
    cp: Plane,
    key: Annotated[ApiKeyView, Depends(rollback_role)],
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=100,
            pattern=r"^[A-Za-z0-9_.:-]+$",
            description="Retrying with the same key returns the first answer, not a second "
            "rollback.",
        ),
    ] = None,
) -> Rollback:
    """Move ``champion`` back to the previous champion, as the key's principal (audited),
    with a reason. Needs the policy's ``people.rollback_role`` (default approver): 403 below
    it. 409 when a run holds the model or there is no previous champion. Send an
    ``Idempotency-Key`` header to make retries safe (scoped to your API key)."""
    op = None
    if idempotency_key is not None:
        scoped = f"{key.key_id}:{idempotency_key}".encode()
        op = "rb-" + hashlib.sha256(scoped).hexdigest()[:32]
    result = cp.rollback(name, key.principal, body.reason, key=op)
    return Rollback.model_validate(result)


@router.get("/{name}/champion-at", response_model=ChampionAt)
def champion_at(
    name: str,
    cp: Plane,
    _: Viewer,
    time: Annotated[datetime, Query(description="An ISO 8601 time, with its offset.")],
) -> ChampionAt:
    """Which version was the champion at ``time``, from the audit's champion history."""
    if time.tzinfo is None:
        raise Problem(422, "give 'time' with a UTC offset, e.g. 2026-01-01T00:00:00Z")
    cp.model_view(name)  # 404 for an unknown model
    return ChampionAt(model=name, time=time.isoformat(), version=cp.champion_at(name, time))


@router.post(
    "/{name}/batches/{batch_id}/labels",
    response_model=LabelsView,
    responses={
        404: {"description": "Unknown model, or no accepted batch by that id"},
        409: {"description": "The batch has other labels already, or a run holds the model"},
        413: {"description": "Body or file too large"},
        415: {"description": "Not a .csv or .parquet file"},
        422: {"description": "Unusable labels: no target column, not 0/1, wrong row count"},
    },
)
def attach_labels(
    name: str,
    batch_id: str,
    cp: Plane,
    conf: Conf,
    caller: Operator,
    file: Annotated[
        UploadFile, File(description="The labels: .csv or .parquet with the target column.")
    ],
    key: Annotated[
        str | None,
        Form(
            min_length=1,
            max_length=200,
            description="Join on this column (in the batch and the file); default: row order, "
            "and the file must have the batch's row count.",
        ),
    ] = None,
) -> LabelsView:
    """Attach labels that arrived late to an accepted batch filed without them (multipart:
    ``file``, optional ``key``), as the key's principal (audited), and score the champion
    that scored the batch on them: realised ROC AUC against the estimate made without labels.
    Attaching the same labels again returns the same answer; different ones are a 409."""
    cp.model_view(name)  # 404 before the upload is parsed
    frame = batches.read_upload(file.file.read(), file.filename or "", batches.limits_of(conf))
    return cp.attach_labels(name, batch_id, frame, caller.principal, key=key)
