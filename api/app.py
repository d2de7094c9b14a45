"""The FastAPI application: ``create_app()`` wires the façade, the run executor, the body
limit, problem+json errors and the routers.

Routers: the core resources below, then every other module of ``api.routes`` that defines a
``router`` (in name order). Such a module may also define ``lifespan(app)``, an async context
manager entered after the executor started and left before it stops. ``/docs`` (Swagger UI) and
``/redoc`` (ReDoc) are served from local assets (``fastapi-offline``), so they work offline.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import ModuleType

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import api.routes
from api import problems
from api.limits import BodyLimit
from api.routes import approvals, audit, health, jobs, models, runs
from driftpilot.core.settings import ApiSettings
from driftpilot.execution.inprocess import RunExecutor
from driftpilot.runs.plane import ControlPlane

log = logging.getLogger(__name__)
CORE = (runs, approvals, audit, models, jobs, health)

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


def route_modules() -> Iterator[ModuleType]:
    """The core route modules, then every other ``api.routes`` module with a ``router``."""
    yield from CORE
    core = {m.__name__ for m in CORE}
    for info in sorted(pkgutil.iter_modules(api.routes.__path__), key=lambda i: i.name):
        name = f"api.routes.{info.name}"
        if name in core:
            continue
        module = importlib.import_module(name)
        if hasattr(module, "router"):
            yield module


def create_app(
    plane: ControlPlane | None = None,
    conf: ApiSettings | None = None,
    *,
    own_plane: bool | None = None,
) -> FastAPI:
    """The API over ``plane`` (default: a ControlPlane from the environment's settings).

    The app owns its background executor, and the plane when it made it (or ``own_plane``):
    both are shut down with the app. At start-up the executor recovers, in the background,
    what a dead process left (``ControlPlane.recover``) and picks up pending runs.
    """
    owned = plane is None if own_plane is None else own_plane
    cp = plane or ControlPlane()
    conf = conf or cp.settings.api
    modules = list(route_modules())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor: RunExecutor = app.state.executor
        executor.start(recover=conf.recover_on_start)
        try:
            async with AsyncExitStack() as stack:
                for module in modules:
                    hook = getattr(module, "lifespan", None)
                    if hook is not None:
                        await stack.enter_async_context(hook(app))
                yield
        finally:
            executor.shutdown()
            if owned:
                cp.close()

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
    app.state.plane = cp
    app.state.api_settings = conf
    app.state.executor = RunExecutor(cp, conf.workers)
    app.add_middleware(BodyLimit, max_bytes=conf.max_body_bytes)
    app.add_middleware(DocsPolicy, paths={DOCS_URL, REDOC_URL})
    problems.install(app)
    for module in modules:
        app.include_router(module.router)
    return app
