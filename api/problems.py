"""RFC 9457 problem details: every 4xx and 5xx answer is ``application/problem+json``.

A route raises ``Problem`` (or lets a ``DriftPilotError`` rise); the handlers installed by
``install`` turn it, FastAPI's validation errors and Starlette's HTTP errors into one shape:
``{"type", "title", "status", "detail", "instance", ...extensions}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from driftpilot.core.errors import (
    ApprovalError,
    ConfigError,
    DataError,
    DriftPilotError,
    ModelBusy,
    NotFound,
    PolicyViolation,
    RegistryError,
    RunStateError,
)

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:driftpilot:problem:"

# (error class, status, type slug, title); the first match wins, so subclasses come first.
_ERRORS: list[tuple[type[DriftPilotError], int, str, str]] = [
    (NotFound, 404, "not-found", "Not found"),
    (ModelBusy, 409, "model-busy", "Model busy"),
    (ApprovalError, 409, "approval-conflict", "Approval not possible"),
    (RunStateError, 409, "run-state", "Not possible in the run's status"),
    (PolicyViolation, 403, "policy-violation", "Forbidden by policy"),
    (ConfigError, 422, "invalid-argument", "Invalid argument"),
    (DataError, 422, "invalid-data", "Unusable data"),
    (RegistryError, 409, "registry-conflict", "Model registry conflict"),
]
_SLUGS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Unauthenticated"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("content-too-large", "Content too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("invalid-request", "Invalid request"),
    429: ("too-many-requests", "Too many requests"),
    500: ("internal-error", "Internal server error"),
    501: ("not-implemented", "Not implemented"),
}


class Problem(Exception):
    """An HTTP problem a route raises on purpose."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        default_slug, default_title = _SLUGS.get(status, ("error", "Error"))
        self.status, self.detail = status, detail
        self.slug, self.title = slug or default_slug, title or default_title
        self.headers, self.extensions = headers, extensions


def problem_body(
    status: int, slug: str, title: str, detail: str, instance: str, **extensions: Any
) -> dict[str, Any]:
    """The problem document (RFC 9457 section 3)."""
    return {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extensions,
    }


def problem_response(
    request: Request, problem: Problem, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = problem_body(
        problem.status,
        problem.slug,
        problem.title,
        problem.detail,
        request.url.path,
        **problem.extensions,
    )
    return JSONResponse(
        body, status_code=problem.status, media_type=MEDIA_TYPE, headers=headers or problem.headers
    )


def from_error(exc: DriftPilotError) -> Problem:
    """The problem for one of DriftPilot's own errors (500 for an unmapped one)."""
    for cls, status, slug, title in _ERRORS:
        if isinstance(exc, cls):
            return Problem(status, str(exc) or cls.__name__, slug=slug, title=title)
    return Problem(500, f"{type(exc).__name__}: {exc}", slug="internal-error")


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(request, exc)


async def _on_driftpilot_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DriftPilotError)
    return problem_response(request, from_error(exc))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    problem = Problem(exc.status_code, str(exc.detail), headers=headers)
    return problem_response(request, problem)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    from api.deps import refusal  # deps builds on this module

    refused = await refusal(request)
    if refused is not None:
        return problem_response(request, refused)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
    return problem_response(request, Problem(422, where or "invalid request", errors=errors))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    detail = f"internal error ({type(exc).__name__}); the server log has the traceback"
    return problem_response(request, Problem(500, detail))


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem+json."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(DriftPilotError, _on_driftpilot_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
