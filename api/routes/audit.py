"""The audit trail: query with cursor pagination, verify, export as JSONL."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from api import cursors
from api.deps import Plane, ReadingViewer, Viewer, read_store
from api.schemas import Page, Verify

router = APIRouter(prefix="/audit", tags=["audit"])
Table = Literal["decisions", "tool_calls", "approvals", "champion_history", "mutations"]


def encode_cursor(row: dict[str, Any]) -> str:
    return cursors.encode(row["table"], row["id"])


def decode_cursor(cursor: str) -> tuple[str, int]:
    """The (table, row id) a page ended at (422 if it is not one)."""
    table, row_id = cursors.decode(cursor, str, int)
    return table, row_id


@router.get("", response_model=Page[dict[str, Any]])
async def query(
    cp: Plane,
    _: ReadingViewer,
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
    chain order, filtered by run, model, table, agent and time; ``next_cursor`` pages on.

    Every filter is answered by a keyset page over an index ending in the row id: a page
    costs its own rows, and a cursor stays put while rows are appended (no row twice, none
    skipped)."""
    after = decode_cursor(cursor) if cursor is not None else None
    page, more = await read_store(
        cp,
        lambda: cp.audit_rows(
            run_id=run_id,
            model=model,
            table=table,
            agent=agent,
            since=since,
            until=until,
            after=after,
            limit=limit,
        ),
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
