"""LangGraph assistants: the managed models (``assistant_id`` = model name, ``graph_id``
``control``) and the ``control`` graph itself, with its drawing and JSON schemas."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import Field

from api.deps import Plane, Viewer
from api.langgraph import shapes
from api.langgraph.common import TAGS, Id, SortOrder, _Body, matches, page
from api.problems import Problem
from driftpilot.runs.plane import ControlPlane

router = APIRouter(tags=TAGS)


class AssistantSearch(_Body):
    metadata: dict[str, Any] | None = None
    graph_id: str | None = Field(None, max_length=200)
    name: str | None = Field(None, max_length=200)
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0)
    sort_by: Literal["assistant_id", "graph_id", "name", "created_at", "updated_at"] | None = None
    sort_order: SortOrder | None = None
    select: list[str] | None = Field(None, max_length=20)


def _assistants(cp: ControlPlane) -> list[dict[str, Any]]:
    models = [shapes.assistant(m, m.created_at) for m in cp.list_models()]
    first = min((a["created_at"] for a in models), default="1970-01-01T00:00:00+00:00")
    return [shapes.control_assistant(first), *models]


@router.post("/assistants/search", response_model=list[dict[str, Any]])
def search_assistants(body: AssistantSearch, cp: Plane, _: Viewer, response: Response) -> Any:
    """The ``control`` graph and every managed model as LangGraph assistants (newest first
    unless sorted otherwise); ``X-Pagination-Next`` is the next offset when there is more."""
    found = [
        a
        for a in _assistants(cp)
        if (body.graph_id is None or a["graph_id"] == body.graph_id)
        and (body.name is None or body.name.casefold() in a["name"].casefold())
        and matches(a["metadata"], body.metadata)
    ]
    found_page, more = page(
        found, body.sort_by, body.sort_order, "created_at", body.offset, body.limit, body.select
    )
    if more:
        response.headers["X-Pagination-Next"] = str(body.offset + body.limit)
    return found_page


@router.get(
    "/assistants/{assistant_id}",
    response_model=dict[str, Any],
    responses={404: {"description": "Unknown assistant (model)"}},
)
def get_assistant(assistant_id: Id, cp: Plane, _: Viewer) -> Any:
    """A managed model as an assistant, or the ``control`` graph."""
    if assistant_id == shapes.GRAPH_ID:
        return _assistants(cp)[0]
    model = cp.model_view(assistant_id)
    return shapes.assistant(model, model.created_at)


def _known_assistant(cp: ControlPlane, assistant_id: str) -> None:
    """404 unless ``assistant_id`` is the ``control`` graph or a managed model."""
    if assistant_id != shapes.GRAPH_ID:
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
    return shapes.graph_json(cp.graph, depth)


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
    return shapes.schemas()
