"""Webhooks: where a model's alerts are posted (generic JSON or Slack), on an approval
waiting, a promotion, a rollback, a quarantine streak or a failed run.

Operators (and above) configure and read them: a URL can carry a secret, so it is shown
redacted. A URL whose host resolves to a loopback, private, link-local, multicast or reserved
address is refused (422) unless the host is in ``DRIFTPILOT_ALERTS_ALLOW_HOSTS``. Creating a
webhook answers its signing secret, the only time it is shown. The alert dispatcher is the
app's runtime's (``driftpilot.runtime``); see ``driftpilot.alerts.webhooks`` for retries,
backoff, signatures and the audit of every delivery attempt.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response, status

from api.deps import Operator
from driftpilot.alerts.webhooks import (
    AlertDispatcher,
    WebhookCreated,
    Webhooks,
    WebhookSpec,
    WebhookView,
)

router = APIRouter(prefix="/models", tags=["webhooks"])
Name = Annotated[str, Path(max_length=200, description="The managed model.")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown model or webhook"}}


async def _webhooks(request: Request) -> Webhooks:
    """The webhooks of the app's alert dispatcher."""
    dispatcher: AlertDispatcher = request.app.state.alerts
    return dispatcher.webhooks


Hooks = Annotated[Webhooks, Depends(_webhooks)]


@router.post(
    "/{name}/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    responses={
        **_NOT_FOUND,
        422: {
            "description": "Invalid URL or events; URL already used; the host does not "
            "resolve or resolves to an internal address (the detail names its class)"
        },
    },
)
def add_webhook(name: Name, body: WebhookSpec, hooks: Hooks, key: Operator) -> WebhookCreated:
    """Post this model's alerts to ``url``: ``format`` ``json`` (generic) or ``slack``
    (``{"text", "blocks"}``), for the ``events`` listed (default: all). The URL is stored as
    given and shown redacted from now on. The answer's ``secret`` signs every delivery
    (``X-DriftPilot-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">``); it is shown
    this once."""
    return hooks.add(name, body, key.principal)


@router.get("/{name}/webhooks", response_model=list[WebhookView], responses=_NOT_FOUND)
def list_webhooks(name: Name, hooks: Hooks, _: Operator) -> list[WebhookView]:
    """The model's webhooks, URLs redacted."""
    return hooks.of_model(name)


@router.post(
    "/{name}/webhooks/{webhook_id}/secret",
    response_model=WebhookCreated,
    responses=_NOT_FOUND,
)
def rotate_webhook_secret(
    name: Name,
    webhook_id: Annotated[str, Path(max_length=40)],
    hooks: Hooks,
    key: Operator,
) -> WebhookCreated:
    """Give one webhook a new signing secret, shown this once; the old one stops signing at
    once (audited). A webhook made before signing existed needs this to be verified."""
    return hooks.rotate_secret(name, webhook_id, key.principal)


@router.delete(
    "/{name}/webhooks/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_NOT_FOUND,
)
def delete_webhook(
    name: Name,
    webhook_id: Annotated[str, Path(max_length=40)],
    hooks: Hooks,
    key: Operator,
) -> Response:
    """Stop posting to one webhook."""
    hooks.remove(name, webhook_id, key.principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
