"""Windows of the inference log: a model's window setting, its closed windows, and labels
that come later, joined by row id.

Operators set a model's window (``PUT``/``DELETE /models/{name}/window``) and post labels
(``POST /models/{name}/inferences/labels``); viewers read the windows. The app's runtime
closes due windows into runs (trigger ``window``): ``driftpilot.inference.windows``. Labels:
``driftpilot.inference.labels``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from api.bodies import conflict, json_rows, kind_of, ndjson_rows, refused
from api.deps import Operator, Plane, Viewer
from api.problems import Problem
from api.routes.inferences import poke_windower
from driftpilot.inference.labels import LabelConflict, LabelsPosted, post_labels
from driftpilot.inference.plans import WindowSetting, WindowsView
from driftpilot.inference.rows import RowsRefused
from driftpilot.inference.windows import Windows
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import ManagedModel

router = APIRouter(prefix="/models", tags=["inferences"])
Name = Annotated[str, Path(max_length=200, description="The managed model.")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown model"}}
_LABELS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown model"},
    409: {"description": "A row has another label already (named)"},
    413: {"description": "More labels than one request may carry"},
    415: {"description": "Neither JSON nor NDJSON"},
    422: {"description": "A bad label or an unknown row id: errors [{row, column, reason}]"},
}


@router.put("/{name}/window", response_model=WindowsView, responses=_NOT_FOUND)
def set_window(
    name: Name, body: WindowSetting, cp: Plane, key: Operator, request: Request
) -> WindowsView:
    """Close the model's logged rows into windows: after ``rows`` rows (at least 10), after
    ``minutes`` from a window's first row, or whichever comes first. Each closed window
    becomes a batch and a run (trigger ``window``), in order. Rows logged before stay open
    and close under the new setting."""
    view = Windows(cp).set_window(name, body, key.principal)
    poke_windower(request)  # a new setting may make a window due
    return view


@router.delete("/{name}/window", response_model=WindowsView, responses=_NOT_FOUND)
def remove_window(name: Name, cp: Plane, key: Operator) -> WindowsView:
    """Stop closing windows (logged rows stay open, and are still logged)."""
    return Windows(cp).set_window(name, None, key.principal)


@router.get("/{name}/windows", response_model=WindowsView, responses=_NOT_FOUND)
def list_windows(
    name: Name,
    cp: Plane,
    _: Viewer,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> WindowsView:
    """The model's window setting, its closed windows newest first (rows, reason, times, run
    id) and how many logged rows are still open."""
    return Windows(cp).windows(name, limit=limit)


@router.post("/{name}/inferences/labels", response_model=LabelsPosted, responses=_LABELS)
async def post_inference_labels(
    name: Name, request: Request, cp: Plane, key: Operator
) -> LabelsPosted:
    """Labels of logged rows, joined by row id: a JSON list (or ``{"rows": [...]}``) or NDJSON
    of ``{"row_id": ..., <target>: label}``. All or nothing: an unknown row id or a bad label
    refuses the request (422), a label other than a row's own (409). Stored first, then
    attached to each closed window's batch (its champion scored again on them); labels of
    open rows go in with their window."""
    kind = kind_of(request.headers.get("content-type", ""))
    body = await request.body()
    return await run_in_threadpool(_post, cp, name, kind, body, key.principal)


def _post(cp: ControlPlane, name: str, kind: str, body: bytes, actor: str) -> LabelsPosted:
    cp.store.get(ManagedModel, name)  # 404 before the body is parsed
    items = json_rows(body) if kind == "json" else ndjson_rows(body)
    limit = cp.settings.inference.max_request_rows
    if len(items) > limit:
        raise Problem(
            413, f"the request has {len(items)} labels; the limit is {limit}", limit=limit
        )
    try:
        return post_labels(cp, name, items, actor)
    except RowsRefused as exc:
        raise refused(str(exc), exc.errors, exc.count) from exc
    except LabelConflict as exc:
        title = "Row labelled already with another label"
        raise conflict(exc, exc.row_ids, "label-conflict", title) from exc
