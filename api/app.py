"""The FastAPI application: ``create_app()`` wires the façade, the run executor, the body
limit, problem+json errors and the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import problems
from api.config import ApiSettings
from api.executor import RunExecutor
from api.limits import BodyLimit
from api.routes import approvals, audit, health, models, runs
from driftpilot.service import ControlPlane

DESCRIPTION = """\
DriftPilot's agent-task API: create control runs of managed models on new batches, watch
them, answer approvals, read and verify the audit trail, manage models.

Authenticate with an API key (`driftpilot keys create --name NAME --role ROLE`) as
`X-Api-Key: <secret>` or `Authorization: Bearer <secret>`. Roles include the ones below
them: viewer < operator < approver < admin. Errors are `application/problem+json`
(RFC 9457). Run statuses follow LangGraph Platform: pending, running, interrupted (waiting
for a person), success, error; what a run decided is its `outcome`.
"""


def create_app(plane: ControlPlane | None = None, conf: ApiSettings | None = None) -> FastAPI:
    """The API over ``plane`` (default: a ControlPlane from the environment's settings).

    The app owns the background executor (shut down with the app) but not a given plane.
    """
    conf = conf or ApiSettings()
    owned = plane is None
    cp = plane or ControlPlane()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.executor.shutdown(wait=True)
        if owned:
            cp.close()

    app = FastAPI(
        title="DriftPilot",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.plane = cp
    app.state.api_settings = conf
    app.state.executor = RunExecutor(cp, conf.workers)
    app.add_middleware(BodyLimit, max_bytes=conf.max_body_bytes)
    problems.install(app)
    for router in (runs.router, approvals.router, audit.router, models.router, health.router):
        app.include_router(router)
    return app
