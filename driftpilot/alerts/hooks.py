"""A model's webhooks: where its alerts go, stored in the audit database.

A webhook has a URL, a format (``json`` or ``slack``), the event kinds it wants and a signing
secret. Creating one checks the URL's host (``destinations.resolve``: no internal address
unless the host is allowed) and answers the secret, once: listings, the audit and the logs
never show it, nor the URL in full (``redact_url``). ``rotate_secret`` replaces the secret
and answers the new one, once.
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import TYPE_CHECKING, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, update

from driftpilot.alerts.destinations import Resolver, resolve, system_resolver
from driftpilot.core.errors import ConfigError, NotFound
from driftpilot.core.identity import normalize_principal
from driftpilot.core.settings import AlertSettings
from driftpilot.runs.views import EventKind
from driftpilot.store.audit import now
from driftpilot.store.models import ManagedModel, Webhook

if TYPE_CHECKING:
    from driftpilot.store.audit import AuditStore

# One vocabulary of events: the plane announces them, webhooks subscribe to them.
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)
WebhookFormat = Literal["json", "slack"]
AGENT = "alerts"


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def redact_url(url: str) -> str:
    """The URL without anything that may be secret: scheme, host and port only (a path
    segment can be the secret itself: ``/botTOKEN``, a private ntfy topic)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(unparseable URL)"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    hidden = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{netloc}{hidden}"


def check_url(url: str) -> str:
    """An http(s) URL with a host and no whitespace (its addresses are checked later, by
    ``destinations.resolve``).

    Raises:
        ConfigError: anything else.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError as exc:
        raise ConfigError(f"invalid webhook URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("a webhook URL must be http:// or https:// with a host")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ConfigError("a webhook URL must not contain whitespace or control characters")
    return url


class WebhookSpec(BaseModel):
    """A new webhook of a model."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=8,
        max_length=2000,
        description="Where to POST (http or https; its host must resolve to public addresses "
        "unless listed in DRIFTPILOT_ALERTS_ALLOW_HOSTS). Never shown again in full.",
        examples=["https://hooks.slack.com/services/T000/B000/XXXX"],
    )
    format: WebhookFormat = Field("json", description="'json' (generic) or 'slack'.")
    events: list[EventKind] = Field(
        default_factory=lambda: list(EVENT_KINDS),
        min_length=1,
        max_length=len(EVENT_KINDS),
        description="Event kinds to post (default: all).",
    )
    description: str = Field("", max_length=500)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            return check_url(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("events")
    @classmethod
    def _unique(cls, value: list[EventKind]) -> list[EventKind]:
        return [k for k in EVENT_KINDS if k in value]


class WebhookView(BaseModel):
    """A webhook as shown to people: its URL redacted, its secret never."""

    webhook_id: str
    model: str
    url: str = Field(description="Redacted: scheme, host, port and first path segment.")
    format: WebhookFormat
    events: list[EventKind]
    description: str
    created_by: str
    created_at: str


class WebhookCreated(WebhookView):
    """A webhook just created (or its secret just rotated): the one time its secret shows."""

    secret: str = Field(
        description="The key of X-DriftPilot-Signature (HMAC-SHA256 of '<t>.<body>'). Shown "
        "this once: store it in the receiver."
    )


def _view(row: Webhook) -> WebhookView:
    return WebhookView(
        webhook_id=row.id,
        model=row.model,
        url=redact_url(row.url),
        format=row.format,
        events=json.loads(row.events),
        description=row.description,
        created_by=row.created_by,
        created_at=row.created_at,
    )


class Webhooks:
    """Configure a model's webhooks (stored in the audit database)."""

    def __init__(
        self,
        store: AuditStore,
        conf: AlertSettings | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        """``conf`` gives the allowed internal hosts (default: none); ``resolver`` looks
        host names up (the system's by default)."""
        self.store = store
        self.conf = conf or AlertSettings()
        self.resolver = resolver

    def add(self, model: str, spec: WebhookSpec, principal: str) -> WebhookCreated:
        """Add a webhook to ``model``; the answer carries its secret, shown this once.

        Raises:
            NotFound: unknown model.
            UnsafeURL: the host resolves to an internal address and is not allowed.
            ConfigError: the host does not resolve, or the model already posts to this URL.
        """
        actor = normalize_principal(principal)
        self._model(model)
        resolve(spec.url, self.conf, self.resolver)
        for row in self.store.list_rows(Webhook, Webhook.model == model):
            if row.url == spec.url:
                raise ConfigError(f"{model} already posts to this URL (webhook {row.id})")
        row = Webhook(
            id=uuid.uuid4().hex,
            model=model,
            url=spec.url,
            format=spec.format,
            events=json.dumps(list(spec.events)),
            description=spec.description,
            created_by=actor,
            created_at=now(),
            secret=new_secret(),
        )
        self.store.add(row)
        view = _view(row)
        self._audit(model, "webhook.add", actor, view)
        return WebhookCreated(**view.model_dump(), secret=row.secret)

    def rotate_secret(self, model: str, webhook_id: str, principal: str) -> WebhookCreated:
        """Give one webhook of ``model`` a new secret (the old one stops signing at once);
        the answer carries it, shown this once.

        Raises:
            NotFound: unknown model or webhook.
        """
        actor = normalize_principal(principal)
        self._model(model)
        row = self._row(model, webhook_id)
        secret = new_secret()
        with self.store.session() as session:
            session.execute(update(Webhook).where(Webhook.id == row.id).values(secret=secret))
        view = _view(row)
        self._audit(model, "webhook.rotate_secret", actor, view)
        return WebhookCreated(**view.model_dump(), secret=secret)

    def of_model(self, model: str) -> list[WebhookView]:
        """The webhooks of ``model``, oldest first.

        Raises:
            NotFound: unknown model.
        """
        self._model(model)
        rows = self.store.list_rows(Webhook, Webhook.model == model, order=Webhook.created_at)
        return [_view(r) for r in rows]

    def remove(self, model: str, webhook_id: str, principal: str) -> None:
        """Delete one webhook of ``model``.

        Raises:
            NotFound: unknown model or webhook.
        """
        actor = normalize_principal(principal)
        self._model(model)
        row = self._row(model, webhook_id)
        with self.store.session() as session:
            session.execute(delete(Webhook).where(Webhook.id == row.id))
        self._audit(model, "webhook.remove", actor, _view(row))

    def for_event(self, model: str, kind: str) -> list[Webhook]:
        """The webhooks of ``model`` that want ``kind`` (rows: with their secrets)."""
        rows = self.store.list_rows(Webhook, Webhook.model == model, order=Webhook.created_at)
        return [r for r in rows if kind in json.loads(r.events)]

    def _row(self, model: str, webhook_id: str) -> Webhook:
        try:
            row = self.store.get(Webhook, webhook_id)
        except NotFound:
            row = None
        if row is None or row.model != model:
            raise NotFound(f"{model} has no webhook {webhook_id!r}")
        return row

    def _model(self, model: str) -> None:
        try:
            self.store.get(ManagedModel, model)
        except NotFound:
            raise NotFound(f"no model {model!r}") from None

    def _audit(self, model: str, tool: str, actor: str, view: WebhookView) -> None:
        self.store.record_tool_call(
            f"webhook-{view.webhook_id}"[:40],
            AGENT,
            tool,
            {"model": model, "webhook_id": view.webhook_id, "by": actor},
            {"url": view.url, "format": view.format, "events": view.events},
            ok=True,
            latency_ms=0.0,
        )
