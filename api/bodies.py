"""The rows of a request's body (JSON: a list or ``{"rows": [...]}``; NDJSON: one per line) and
the problems a body's rows are refused with, shared by the inference log's routes (rows,
labels)."""

from __future__ import annotations

import json
from typing import Any

from api.problems import Problem
from driftpilot.inference.rows import MAX_ERRORS, RowError

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


def kind_of(content_type: str) -> str:
    """``json`` or ``ndjson`` by the request's media type.

    Raises:
        Problem: 415 for any other.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media in JSON_TYPES or media.endswith("+json"):
        return "json"
    if media in NDJSON_TYPES:
        return "ndjson"
    raise Problem(
        415,
        f"unsupported content type {media or '(none)'!r}: send application/json (a list of rows "
        "or {'rows': [...]}) or application/x-ndjson (one row per line), or upload a file to "
        ".../inferences/upload",
    )


def refused(detail: str, errors: list[RowError], count: int) -> Problem:
    return Problem(
        422,
        detail,
        slug="invalid-rows",
        title="Invalid rows",
        errors=[e.as_dict() for e in errors],
        count=count,
    )


def json_rows(body: bytes) -> list[Any]:
    """A JSON body's rows: a list, or an object with ``rows``.

    Raises:
        Problem: 422 for a body that is not JSON or not one of the two.
    """
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
        raise Problem(422, f"the body is not JSON: {exc}") from exc
    if isinstance(value, dict) and set(value) == {"rows"}:
        value = value["rows"]
    if not isinstance(value, list):
        raise Problem(422, 'the body must be a JSON list of rows, or {"rows": [...]}')
    return value


def ndjson_rows(body: bytes) -> list[Any]:
    """An NDJSON body's rows, one per non-blank line.

    Raises:
        Problem: 422 naming the lines that are not JSON (row numbers count rows, not blanks).
    """
    rows: list[Any] = []
    errors: list[RowError] = []
    count = 0
    for line in body.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except (ValueError, RecursionError) as exc:
            count += 1
            if len(errors) < MAX_ERRORS:
                errors.append(RowError(len(rows) + count - 1, None, f"not JSON: {exc}"))
    if count:
        first = errors[0]
        raise refused(f"row {first.row}: {first.reason}", errors, count)
    return rows


def conflict(exc: Exception, row_ids: list[str], slug: str, title: str) -> Problem:
    """The 409 of rows a request may not change (logged, or labelled, with other content),
    naming the first ``MAX_ERRORS`` of them."""
    return Problem(409, str(exc), slug=slug, title=title, row_ids=row_ids[:MAX_ERRORS])
