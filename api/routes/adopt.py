"""``POST /models/adopt``: make an existing MLflow model a managed model, its first champion
(``driftpilot.runs.adopt``).

The adoption runs in the request (a plain def: FastAPI's thread pool): fetching, checking and
scoring the model take seconds, and a model that does not fit its reference is answered at
once, as a 422 naming every mismatched column, with nothing registered.

Adopting loads the owner's model, and so runs its code (a pickle, a trainer module), in this
process, from any tracking server the body names: it needs the admin role, since an operator key
would otherwise run code of its choosing on the server. A local model directory must lie under a
batch root.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, status
from pydantic import Field

from api.deps import Admin, Conf, Plane
from api.problems import Problem
from api.routes.runs import batch_roots, frame_of
from api.schemas import COLUMN, MODEL_NAME, RunInput, _Strict
from driftpilot.core.errors import ModelError, NotFound
from driftpilot.runs.adopt import Adoptions, AdoptionView, AdoptRequest
from driftpilot.runs.plane import ControlPlane

router = APIRouter(prefix="/models", tags=["models"])


class ModelAdopt(_Strict):
    """Adopt an existing MLflow model as a managed model (its champion v1)."""

    name: str = Field(description="The managed model it becomes.", pattern=MODEL_NAME)
    model_uri: str = Field(
        min_length=1,
        max_length=2000,
        description="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH, or a local "
        "MLflow model directory relative to a batch root.",
        examples=["models:/delay-minutes@prod"],
    )
    input: RunInput = Field(description="The labelled reference: a dataset batch or a file.")
    target: str = Field(min_length=1, max_length=200, description="Label column.")
    time_col: str | None = Field(
        None, max_length=200, description="Time column: the baseline is then out of time."
    )
    task: Literal["binary", "multiclass", "regression"] | None = Field(
        None, description="Default: inferred from the target."
    )
    tracking_uri: str | None = Field(
        None,
        max_length=2000,
        pattern=r"^https?://",
        # file:// or sqlite:// would read a store anywhere on the server's disk
        description="The MLflow tracking server holding the model, http(s) only (default: "
        "DriftPilot's own).",
    )
    numeric: list[Annotated[str, COLUMN]] = Field(
        default_factory=list, max_length=1000, description="Inputs, needed without a signature."
    )
    categorical: list[Annotated[str, COLUMN]] = Field(default_factory=list, max_length=1000)
    trainer: str | None = Field(
        None,
        max_length=300,
        description="package.module:fit that fits its challengers (default: the built-in "
        "families).",
    )


@router.post(
    "/adopt",
    status_code=status.HTTP_201_CREATED,
    response_model=AdoptionView,
    responses={
        404: {"description": "Unknown dataset or batch"},
        409: {"description": "The model exists, a run holds it, or a registry conflict"},
        422: {
            "description": "Bad URI, the model does not fit the reference (columns named), or "
            "it fails on it"
        },
    },
)
def adopt_model(body: ModelAdopt, cp: Plane, conf: Conf, key: Admin) -> AdoptionView:
    """Adopt an existing MLflow model: its signature is checked against the reference, its
    predictions on the reference give its baseline with an interval, and it becomes champion
    v1 in DriftPilot's registry with its lineage, promoted by the key's principal (audited)."""
    _check_new(cp, body.name)
    uri = body.model_uri
    if not uri.startswith(("models:/", "runs:/")):
        uri = str(_model_dir(batch_roots(cp, conf), uri))
    frame, _, source = frame_of(cp, conf, body.input.batch)
    request = AdoptRequest(
        name=body.name,
        model_uri=uri,
        reference=frame,
        target=body.target,
        time_col=body.time_col,
        task=body.task,
        tracking_uri=body.tracking_uri,
        numeric=tuple(body.numeric),
        categorical=tuple(body.categorical),
        source=json.dumps(source),
        trainer=body.trainer,
    )
    try:
        return Adoptions(cp.models).adopt(request, principal=key.principal)
    except ModelError as exc:  # the owner's model fails on its reference: the request's fault
        raise Problem(422, str(exc), slug="unusable-model", title="Unusable model") from exc


def _check_new(cp: ControlPlane, name: str) -> None:
    try:
        existing: Any = cp.model_view(name)
    except NotFound:
        return
    if existing.champion is not None:
        raise Problem(409, f"model {name!r} already exists", slug="model-exists")


def _model_dir(roots: list[Path], relative: str) -> Path:
    """The MLflow model directory ``relative`` names under one of ``roots`` (422 otherwise):
    the API never loads a model from anywhere else on the server's disk."""
    pure = PurePosixPath(relative)
    if "\\" in relative or "\x00" in relative or pure.is_absolute() or ".." in pure.parts:
        raise Problem(422, "a local model directory must be relative to a batch root, without '..'")
    for root in roots:
        base = root.expanduser().resolve()
        candidate = (base / pure).resolve()
        if candidate.is_relative_to(base) and (candidate / "MLmodel").is_file():
            return candidate
    raise Problem(422, f"no MLflow model directory {relative!r} under the batch roots")
