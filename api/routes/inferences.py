"""The inference log: POST /models/{name}/inferences (JSON, NDJSON) and its upload.

A model's service logs its predictions here, row by row or in small requests (the client,
``driftpilot.client``, batches them). Operators (and above) log. A request is all or nothing
and is acknowledged only once its rows are committed; a retried request writes nothing twice
(rows are idempotent by row id). Refusals are problem+json and write nothing: 404 an unknown
model, 413 too many rows or too large a body, 415 another content type, 422 a bad row (its
0-based number, column and reason), 409 a row id logged already with other content.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Path, Request, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api import batches
from api.bodies import conflict, json_rows, kind_of, ndjson_rows, refused
from api.deps import Conf, Operator, Plane
from api.problems import Problem
from driftpilot.inference.log import (
    Appended,
    RowConflict,
    TooManyRows,
    append_to,
    model_schema,
)
from driftpilot.inference.rows import RowsRefused, Schema, rows_of_table
from driftpilot.runs.plane import ControlPlane

router = APIRouter(prefix="/models", tags=["inferences"])
Name = Annotated[str, Path(max_length=200, description="The managed model.")]
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown model"},
    409: {"description": "A row id logged already with other content (named)"},
    413: {"description": "More rows than one request may carry, or too large a body"},
    415: {"description": "Neither JSON nor NDJSON (an upload: neither .csv nor .parquet)"},
    422: {"description": "A bad row: errors [{row (0-based), column, reason}], the first 20"},
}


class Logged(BaseModel):
    """What a request logged: committed (durable) when this answer is sent."""

    model: str = Field(description="The managed model.")
    accepted: int = Field(description="New rows written.")
    duplicates: int = Field(description="Rows logged already with the same content (a retry).")
    rows: int = Field(description="Rows in the request (a row repeated in it counted once).")

    @classmethod
    def of(cls, done: Appended) -> Logged:
        return cls(
            model=done.model, accepted=done.accepted, duplicates=done.duplicates, rows=done.rows
        )


_ROWS_SCHEMA = {"type": "array", "items": {"type": "object"}, "description": "Logged rows."}
# The body is read raw (JSON or NDJSON, validated row by row): the schema only documents it.
_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _ROWS_SCHEMA,
                        {
                            "type": "object",
                            "properties": {"rows": _ROWS_SCHEMA},
                            "required": ["rows"],
                        },
                    ]
                },
                "example": [
                    {
                        "row_id": "req-1",
                        "event_time": "2026-03-01T10:00:00Z",
                        "distance": 1000.0,
                        "origin": "JFK",
                        "prediction": 1,
                        "probabilities": 0.83,
                    }
                ],
            },
            "application/x-ndjson": {"schema": {"type": "string", "description": "A row a line."}},
        },
    }
}


@router.post("/{name}/inferences", response_model=Logged, responses=_PROBLEMS, openapi_extra=_BODY)
async def log_inferences(name: Name, request: Request, cp: Plane, _: Operator) -> Logged:
    """Log predictions of the model: a JSON list of rows (or ``{"rows": [...]}``), or NDJSON
    (``Content-Type: application/x-ndjson``, one row per line). A row: ``row_id``, the event
    time (the model's time column, alias ``event_time``), every feature, ``prediction``,
    optionally ``probabilities`` and the target (a label known already). All or nothing;
    answered once the rows are durable. A row logged already with the same content counts as
    a duplicate, so a request may be retried safely."""
    kind = kind_of(request.headers.get("content-type", ""))
    body = await request.body()
    # Off the loop: the lookup, the validation and the write transaction block.
    done = await run_in_threadpool(_log_body, cp, name, kind, body)
    poke_windower(request, done)
    return done


@router.post("/{name}/inferences/upload", response_model=Logged, responses=_PROBLEMS)
def upload_inferences(
    name: Name,
    cp: Plane,
    conf: Conf,
    _: Operator,
    request: Request,
    file: Annotated[UploadFile, File(description="The rows: a .csv or .parquet file.")],
) -> Logged:
    """Log predictions from an uploaded CSV or Parquet table (multipart ``file``): the same
    columns as a JSON row, probabilities as ``proba_<class>`` columns (binary: ``proba_1`` or
    ``proba``). The batch upload's limits apply (bytes, columns, line length, rows)."""
    schema = model_schema(cp.store, name)  # 404 before the file is read
    data = file.file.read()
    frame = batches.read_upload(data, file.filename or "", batches.limits_of(conf))
    done = _appended(cp, schema, rows_of_table(frame), conf.max_batch_rows)
    poke_windower(request, done)
    return done


def poke_windower(request: Request, done: Logged | None = None) -> None:
    """Have the app's windower tick at once (an event set: cheap), so a window the request
    filled closes now, not at the next tick; nothing when the request wrote no row or the
    app runs no windower (``Runtime.windower`` None)."""
    if done is not None and not done.accepted:
        return
    runtime = getattr(request.app.state, "runtime", None)
    windower = getattr(runtime, "windower", None)
    if windower is not None:
        windower.poke()


def _log_body(cp: ControlPlane, name: str, kind: str, body: bytes) -> Logged:
    schema = model_schema(cp.store, name)  # 404 before the body is parsed
    rows = json_rows(body) if kind == "json" else ndjson_rows(body)
    return _appended(cp, schema, rows, cp.settings.inference.max_request_rows)


def _appended(cp: ControlPlane, schema: Schema, rows: list[Any], max_rows: int) -> Logged:
    """Log ``rows``, the service's refusals turned into their problems."""
    try:
        return Logged.of(append_to(cp.store, schema, rows, max_rows=max_rows))
    except RowsRefused as exc:
        raise refused(str(exc), exc.errors, exc.count) from exc
    except TooManyRows as exc:
        raise Problem(413, str(exc), limit=exc.limit, rows=exc.n) from exc
    except RowConflict as exc:
        raise conflict(
            exc, exc.row_ids, "row-conflict", "Row id logged with other content"
        ) from exc
