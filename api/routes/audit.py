"""The audit trail: query with cursor pagination, verify, export as JSONL."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from api.deps import Plane, Viewer
from api.problems import Problem
from api.schemas import Page, Verify

router = APIRouter(prefix="/audit", tags=["audit"])
Table = Literal["decisions", "tool_calls", "approvals", "champion_history", "mutations"]


def encode_cursor(row: dict[str, Any]) -> str:
    raw = json.dumps([row["table"], row["id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    """The (table, row id) a page ended at.

    Raises:
        Problem: 422 for a cursor this API did not hand out.
    """
    try:
        table, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(table, str) and isinstance(row_id, int):
            return table, row_id
    except (ValueError, TypeError, binascii.Error):
        pass
    raise Problem(422, "invalid cursor: pass the next_cursor of the previous page unchanged")


@router.get("", response_model=Page[dict[str, Any]])
def query(
    cp: Plane,
    _: Viewer,
    run_id: Annotated[str | None, Query(max_length=80)] = None,
    model: Annotated[
        str | None,
        Query(max_length=200, description="Rows of the model's runs, bootstrap and rollbacks."),
    ] = None,
    table: Table | None = None,
    agent: Annotated[str | None, Query(max_length=50)] = None,
    since: Annotated[datetime | None, Query(description="Rows created at or after.")] = None,
    until: Annotated[datetime | None, Query(description="Rows created before.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> Response:
    """Audit rows (decisions, tool calls, approvals, champion changes, ...), table by table in
    chain order, filtered by run, model, table, agent and time; ``next_cursor`` pages on."""
    for moment in (since, until):
        if moment is not None and moment.tzinfo is None:
            raise Problem(422, "give 'since' and 'until' with a UTC offset")
    page, more = cp.audit_rows(
        run_id=run_id,
        model=model,
        table=table,
        agent=agent,
        since=since,
        until=until,
        after=decode_cursor(cursor) if cursor is not None else None,
        limit=limit,
    )
    body = Page[dict[str, Any]](
        items=page, next_cursor=encode_cursor(page[-1]) if more and page else None
    )
    # Serialized here, by pydantic: FastAPI would validate the page again against the
    # response model and walk it with jsonable_encoder (~0.5 ms of CPU for 100 rows).
    return Response(body.model_dump_json(), media_type="application/json")


@router.post("/verify", response_model=Verify)
def verify(cp: Plane, _: Viewer) -> Verify:
    """Walk every hash chain, compare with the newest signed checkpoint, and check the
    invariants across tables and against MLflow. ``ok`` false names what is wrong."""
    return Verify.model_validate(cp.verify().model_dump())


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "JSON lines"}},
)
def export(
    cp: Plane, _: Viewer, run_id: Annotated[str | None, Query(max_length=80)] = None
) -> StreamingResponse:
    """Every audit row (optionally of one run) as JSON lines, streamed."""
    lines = (json.dumps(row, default=str) + "\n" for row in cp.audit(run_id))
    return StreamingResponse(lines, media_type="application/x-ndjson")
