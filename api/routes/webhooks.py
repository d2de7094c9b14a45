"""Webhooks: where a model's alerts are posted (generic JSON or Slack), on an approval
waiting, a promotion, a rollback, a quarantine streak or a failed run.

Operators (and above) configure and read them: a URL can carry a secret, so it is shown
redacted. The alert dispatcher starts with the app (``lifespan``); see
``driftpilot.alerts.webhooks`` for retries, backoff and the audit of every delivery attempt.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Response, status
from starlette.concurrency import run_in_threadpool

from api.deps import Operator, Plane
from driftpilot.alerts.webhooks import AlertDispatcher, Webhooks, WebhookSpec, WebhookView

router = APIRouter(prefix="/models", tags=["webhooks"])
Name = Annotated[str, Path(max_length=200, description="The managed model.")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown model or webhook"}}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the alert dispatcher (subscribed to the plane's events); stop it at shutdown."""
    dispatcher = AlertDispatcher(app.state.plane)
    dispatcher.start()
    app.state.alerts = dispatcher
    try:
        yield
    finally:
        app.state.alerts = None
        await run_in_threadpool(dispatcher.stop)


@router.post(
    "/{name}/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookView,
    responses={**_NOT_FOUND, 422: {"description": "Invalid URL or events; URL already used"}},
)
def add_webhook(name: Name, body: WebhookSpec, cp: Plane, key: Operator) -> WebhookView:
    """Post this model's alerts to ``url``: ``format`` ``json`` (generic) or ``slack``
    (``{"text", "blocks"}``), for the ``events`` listed (default: all). The URL is stored as
    given and shown redacted from now on."""
    return Webhooks(cp.store).add(name, body, key.principal)


@router.get("/{name}/webhooks", response_model=list[WebhookView], responses=_NOT_FOUND)
def list_webhooks(name: Name, cp: Plane, _: Operator) -> list[WebhookView]:
    """The model's webhooks, URLs redacted."""
    return Webhooks(cp.store).of_model(name)


@router.delete(
    "/{name}/webhooks/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_NOT_FOUND,
)
def delete_webhook(
    name: Name,
    webhook_id: Annotated[str, Path(max_length=40)],
    cp: Plane,
    key: Operator,
) -> Response:
    """Stop posting to one webhook."""
    Webhooks(cp.store).remove(name, webhook_id, key.principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
