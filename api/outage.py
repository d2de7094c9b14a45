"""A store outage answers 503 problem+json with Retry-After, never a raw 500.

An outage is a dependency the API cannot reach or write, not a bug: the audit database down or
restarting (SQLAlchemy's ``OperationalError``/``InterfaceError``/pool ``TimeoutError``,
psycopg's ``OperationalError``/``InterfaceError``, which procrastinate's connector errors and
psycopg_pool's ``PoolTimeout`` carry or are), SQLite's "database is locked" or "database or
disk is full", and a full disk or quota (``OSError`` ``ENOSPC``/``EDQUOT``) under the home.
It is found anywhere in the exception's chain (``__cause__``/``__context__``), so a
DriftPilot error raised from one (``AuditWriteError`` from ``OperationalError``) is an outage
too.

``install(app)`` wraps the app's problem handlers (``api.problems.install`` must run first):
an outage becomes ``503 service-unavailable`` with ``Retry-After``; anything else goes to the
handler that was there. ``RetryAfter`` (ASGI middleware) adds ``Retry-After`` to any 503 that
lacks one (a route's own ``Problem(503, ...)``), so a client always knows when to come back.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import FastAPI, Request
from sqlalchemy import exc as sa_exc
from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import Problem, problem_response
from driftpilot.core.errors import DriftPilotError

log = logging.getLogger(__name__)
Handler = Callable[[Request, Exception], Awaitable[Response]]
AnyHandler = Callable[[Request, Any], Response | Awaitable[Response]]
Outage = Literal["database", "disk"]
# Seconds a client should wait: a database restart takes a few seconds; freeing disk space
# needs a person, so a client retrying a full disk every 5 s would only add load.
RETRY_AFTER_S: dict[Outage, int] = {"database": 5, "disk": 30}
DEFAULT_RETRY_AFTER_S = 5
_FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
_FULL_DISK_MESSAGES = tuple(os.strerror(code) for code in _FULL_DISK)
_SQLITE_OUTAGE = ("disk is full", "database is locked", "unable to open database")
_MAX_CHAIN = 16  # a chain longer than this is a loop the id set did not catch; stop anyway


def _database_errors() -> tuple[type[Exception], ...]:
    """The driver errors that mean the database cannot be reached or used right now. psycopg
    counts only when loaded: none of its exceptions can exist before it is imported (SQLite
    homes never import it)."""
    found: tuple[type[Exception], ...] = (
        sa_exc.OperationalError,
        sa_exc.InterfaceError,
        sa_exc.TimeoutError,
    )
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        found += (psycopg.OperationalError, psycopg.InterfaceError)
    return found


def _one(exc: BaseException) -> Outage | None:
    if isinstance(exc, OSError) and exc.errno in _FULL_DISK:
        return "disk"
    if not isinstance(exc, OSError) and any(m in str(exc) for m in _FULL_DISK_MESSAGES):
        return "disk"  # Polars (Rust) and Arrow put the OS error in their message only
    if isinstance(exc, sqlite3.OperationalError | sa_exc.OperationalError):
        text = str(exc).lower()
        if "disk is full" in text:
            return "disk"
        if isinstance(exc, sqlite3.OperationalError):
            return "database" if any(s in text for s in _SQLITE_OUTAGE) else None
    return "database" if isinstance(exc, _database_errors()) else None


def outage_of(exc: BaseException) -> Outage | None:
    """What ``exc`` or an exception in its chain says is unavailable: ``"disk"`` (full),
    ``"database"`` (unreachable, restarting, locked), or None (not an outage)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(current))
        found = _one(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def unavailable(outage: Outage) -> Problem:
    """The 503 problem of an outage. The driver's message is left out: it can name hosts,
    ports, users and paths."""
    what = {
        "database": "the audit database is unavailable (down, restarting or busy)",
        "disk": "the home's disk is full",
    }[outage]
    wait = RETRY_AFTER_S[outage]
    return Problem(
        503,
        f"{what}; nothing was changed by this request unless its answer said so: try again "
        f"in {wait} s",
        slug="service-unavailable",
        title="Service unavailable",
        headers={"Retry-After": str(wait)},
        outage=outage,
    )


def _outage_aware(fallback: AnyHandler) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        outage = outage_of(exc)
        if outage is None:
            answer = fallback(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        log.warning(
            "%s %s: %s outage (%s)", request.method, request.url.path, outage, type(exc).__name__
        )
        return problem_response(request, unavailable(outage))

    return handle


def _handler_for(app: FastAPI, cls: type[Exception]) -> AnyHandler:
    """The handler ``app`` would pick for ``cls`` now (Starlette's rule: the nearest class in
    its MRO with a handler)."""
    handlers = app.exception_handlers
    for base in cls.__mro__:
        if base in handlers:
            handler: AnyHandler = handlers[base]
            return handler
    raise RuntimeError("api.problems.install must run before api.outage.install")


def install(app: FastAPI) -> None:
    """Make every outage in ``app`` a 503 with Retry-After (module docstring); other errors
    keep their handlers. The driver classes get handlers of their own so Starlette answers them
    in its exception middleware (a handler on ``Exception`` only runs at the outermost layer,
    which re-raises to the server after answering)."""
    classes: tuple[type[Exception], ...] = (
        Exception,
        DriftPilotError,
        OSError,
        sqlite3.OperationalError,
        *_database_errors(),
    )
    for cls in classes:
        app.add_exception_handler(cls, _outage_aware(_handler_for(app, cls)))


class RetryAfter:
    """ASGI middleware: a 503 answer without ``Retry-After`` gets one
    (``DEFAULT_RETRY_AFTER_S``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_retry(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 503:
                headers = MutableHeaders(scope=message)
                if "retry-after" not in headers:
                    headers["Retry-After"] = str(DEFAULT_RETRY_AFTER_S)
            await send(message)

        await self.app(scope, receive, send_with_retry)
