"""The FastAPI application: ``create_app()`` wires the façade's runtime (run executor,
scheduler, alert dispatcher: ``driftpilot.runtime``), the body limit, problem+json errors,
503 with Retry-After for a store outage (database down, disk full: ``api.outage``) and the
routers.

Routers (``ROUTERS``, in this order): runs, approvals, audit, models, jobs, health, the
LangGraph-compatible ones (``api.langgraph``: assistants, threads, runs, crons), schedules,
webhooks, notes, and the inference log's (``inferences``, ``windows``). One lifespan starts
the runtime and closes it. ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) are served from local
assets (``fastapi-offline``), so they work offline.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import outage, problems
from api.langgraph import assistants as lg_assistants
from api.langgraph import crons as lg_crons
from api.langgraph import runs as lg_runs
from api.langgraph import threads as lg_threads
from api.limits import BodyLimit
from api.routes import (
    adopt,
    approvals,
    audit,
    health,
    inferences,
    jobs,
    models,
    notes,
    reports,
    runs,
    schedules,
    webhooks,
    windows,
)
from api.routes.runs import batch_roots
from driftpilot.core.settings import ApiSettings
from driftpilot.runs.plane import ControlPlane
from driftpilot.runtime import build_runtime

log = logging.getLogger(__name__)
# The core resources' route modules.
CORE = (runs, reports, approvals, audit, models, adopt, jobs, health)
ROUTERS: tuple[APIRouter, ...] = (
    *(module.router for module in CORE),
    lg_assistants.router,
    lg_threads.router,
    lg_runs.router,
    lg_crons.router,
    schedules.router,
    webhooks.router,
    notes.router,
    inferences.router,
    windows.router,
)

DESCRIPTION = """\
DriftPilot's agent-task API: create control runs of managed models on new batches, watch
them, answer approvals, read and verify the audit trail, manage models.

Authenticate with an API key (`driftpilot keys create --name NAME --role ROLE`) as
`X-Api-Key: <secret>` or `Authorization: Bearer <secret>`. Roles include the ones below
them: viewer < operator < approver < admin. Errors are `application/problem+json`
(RFC 9457). Run statuses follow LangGraph Platform: pending, running, interrupted (waiting
for a person), success, error; what a run decided is its `outcome`.
"""


DOCS_URL, REDOC_URL = "/docs", "/redoc"
# The documentation pages may load only what this server serves: ReDoc's bundle still points
# its sidebar logo at cdn.redoc.ly, and a page that reaches out is neither offline nor private.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


class DocsPolicy:
    """ASGI middleware: the documentation pages get ``DOCS_CSP`` as their
    Content-Security-Policy (every other answer is left as it is)."""

    def __init__(self, app: ASGIApp, paths: set[str]) -> None:
        self.app, self.paths = app, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Content-Security-Policy"] = DOCS_CSP
            await send(message)

        await self.app(scope, receive, send_with_policy)


def create_app(
    plane: ControlPlane | None = None,
    conf: ApiSettings | None = None,
    *,
    own_plane: bool | None = None,
) -> FastAPI:
    """The API over ``plane`` (default: a ControlPlane from the environment's settings).

    The app owns its runtime (``driftpilot.runtime``: the background run executor, the
    scheduler, the alert dispatcher), started when the app starts and closed with it, and the
    plane when it made it (or ``own_plane``). At start-up the executor recovers, in the
    background, what a dead process left (``ControlPlane.recover``) and picks up pending runs
    (``conf.recover_on_start``).
    """
    owned = plane is None if own_plane is None else own_plane
    cp = plane or ControlPlane()
    conf = conf or cp.settings.api
    runtime = build_runtime(
        cp.settings,
        plane=cp,
        own_plane=owned,
        recover=conf.recover_on_start,
        roots=batch_roots(cp, conf),
        workers=conf.workers,
        processes=conf.run_processes,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(runtime.start)  # a failed start closes what it started
        try:
            yield
        finally:
            await run_in_threadpool(runtime.close)

    # /docs and /redoc load Swagger UI and ReDoc from the package's bundled files, served
    # under /static-offline-docs, not from a CDN: they work on a network without internet.
    app = FastAPIOffline(
        docs_url=DOCS_URL,
        redoc_url=REDOC_URL,
        title="DriftPilot",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.plane = cp
    app.state.api_settings = conf
    app.state.executor = runtime.executor
    app.state.scheduler = runtime.scheduler
    app.state.alerts = runtime.alerts
    app.add_middleware(BodyLimit, max_bytes=conf.max_body_bytes)
    app.add_middleware(DocsPolicy, paths={DOCS_URL, REDOC_URL})
    app.add_middleware(outage.RetryAfter)
    problems.install(app)
    outage.install(app)  # after problems: it wraps their handlers
    for router in ROUTERS:
        app.include_router(router)
    return app
