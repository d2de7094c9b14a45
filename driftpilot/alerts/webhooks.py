"""Alerts: webhooks per model, posted when the control plane has something to tell.

A webhook has a URL, a format and the event kinds it wants (default: all of them):
``approval_waiting``, ``promotion``, ``rollback``, ``quarantine_streak``, ``run_failed``,
``episode_escalated`` (a drift episode's challengers kept losing: retrains are held until the
evidence changes; the detail carries the episode and its diagnosis).

- ``json``: ``{"event", "model", "run_id", "at", "detail", "text", "source": "driftpilot"}``.
- ``slack``: a Slack incoming-webhook message, ``{"text": ..., "blocks": [...]}``.

The ``AlertDispatcher`` subscribes to the façade's events. The listener only queues the event,
so a run is never held up; worker threads look up the model's webhooks and post with httpx
(a timeout per attempt, no redirects), retrying connection errors, timeouts, 429 and 5xx
answers with bounded exponential backoff (``DRIFTPILOT_ALERTS_*``). Every attempt is audited
as a tool call (agent ``alerts``, tool ``webhook.post``, under the event's run id) with its
status code or error. URLs can carry secrets (Slack's is one, in its path): the audit, the
logs and the API show only ``redact_url(url)`` (scheme, host, port, first path segment) and
the webhook's id. Deliveries live in memory: the ones queued when the process stops are lost
(and logged).
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete

from driftpilot.core.errors import ConfigError, DriftPilotError, NotFound
from driftpilot.core.identity import normalize_principal
from driftpilot.core.settings import AlertSettings
from driftpilot.store.audit import now
from driftpilot.store.models import ManagedModel, Webhook

if TYPE_CHECKING:
    import httpx

    from driftpilot.runs.plane import ControlPlane, PlaneEvent
    from driftpilot.store.audit import AuditStore

log = logging.getLogger(__name__)

EventKind = Literal[
    "approval_waiting",
    "promotion",
    "rollback",
    "quarantine_streak",
    "run_failed",
    "episode_escalated",
]
EVENT_KINDS: tuple[EventKind, ...] = (
    "approval_waiting",
    "promotion",
    "rollback",
    "quarantine_streak",
    "run_failed",
    "episode_escalated",
)
WebhookFormat = Literal["json", "slack"]
AGENT = "alerts"
TOOL = "webhook.post"
_STOP = object()


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
    """An http(s) URL with a host and no whitespace.

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
        description="Where to POST (http or https). Never shown again in full.",
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
    """A webhook as shown to people: its URL redacted."""

    webhook_id: str
    model: str
    url: str = Field(description="Redacted: scheme, host, port and first path segment.")
    format: WebhookFormat
    events: list[EventKind]
    description: str
    created_by: str
    created_at: str


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

    def __init__(self, store: AuditStore) -> None:
        self.store = store

    def add(self, model: str, spec: WebhookSpec, principal: str) -> WebhookView:
        """Add a webhook to ``model``.

        Raises:
            NotFound: unknown model.
            ConfigError: the model already posts to this URL.
        """
        actor = normalize_principal(principal)
        self._model(model)
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
            secret=secrets.token_urlsafe(32),
        )
        self.store.add(row)
        view = _view(row)
        self._audit(model, "webhook.add", actor, view)
        return view

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
        """The webhooks of ``model`` that want ``kind``."""
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


# -- message bodies ------------------------------------------------------------------------------

_TITLES = {
    "approval_waiting": "waits for approval",
    "promotion": "promoted a new champion",
    "rollback": "was rolled back",
    "quarantine_streak": "quarantined several batches in a row",
    "run_failed": "run failed",
    "episode_escalated": "escalated a drift episode: retrains held",
}


def summary(event: PlaneEvent) -> str:
    """One line saying what happened."""
    detail = event.detail
    run = f" (run {event.run_id[:12]})" if event.run_id else ""
    text = f"DriftPilot: {event.model} {_TITLES.get(event.kind, event.kind)}{run}"
    if event.kind == "approval_waiting":
        request = detail.get("request") or {}
        described = request.get("description") if isinstance(request, dict) else None
        if described:
            text += f": {str(described)[:300]}"
    elif event.kind == "promotion" and detail.get("version") is not None:
        text += f": champion is now v{detail['version']}"
    elif event.kind == "rollback" and detail.get("to") is not None:
        text += f": v{detail.get('from')} -> v{detail['to']} by {detail.get('by')}"
    elif event.kind == "quarantine_streak":
        text += f": {detail.get('streak')} quarantined batches"
    elif event.kind == "run_failed" and detail.get("error"):
        text += f": {str(detail['error'])[:200]}"
    elif event.kind == "episode_escalated" and detail.get("diagnosis"):
        text += f": {str(detail['diagnosis'])[:600]}"
    return text


def json_body(event: PlaneEvent) -> dict[str, Any]:
    """The generic JSON alert."""
    return {
        "source": "driftpilot",
        "event": event.kind,
        "model": event.model,
        "run_id": event.run_id,
        "at": event.at,
        "text": summary(event),
        "detail": json.loads(json.dumps(event.detail, default=str)),
    }


def slack_body(event: PlaneEvent) -> dict[str, Any]:
    """A Slack incoming-webhook message: a fallback ``text`` and Block Kit ``blocks``."""
    text = summary(event)
    fields = [
        {"type": "mrkdwn", "text": f"*Model*\n{event.model}"},
        {"type": "mrkdwn", "text": f"*Event*\n{event.kind}"},
    ]
    if event.run_id:
        fields.append({"type": "mrkdwn", "text": f"*Run*\n`{event.run_id}`"})
    fields.append({"type": "mrkdwn", "text": f"*At*\n{event.at}"})
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "section", "fields": fields},
        ],
    }


def body_of(event: PlaneEvent, fmt: str) -> dict[str, Any]:
    return slack_body(event) if fmt == "slack" else json_body(event)


# -- delivery -------------------------------------------------------------------------------------


def backoff(attempt: int, conf: AlertSettings) -> float:
    """The wait after failed attempt number ``attempt`` (1-based): doubling, capped."""
    return float(min(conf.max_backoff_s, conf.backoff_s * 2 ** (attempt - 1)))


class AlertDispatcher:
    """Post plane events to the webhooks that want them, in background threads."""

    def __init__(self, plane: ControlPlane, conf: AlertSettings | None = None) -> None:
        self.plane = plane
        self.store = plane.store
        self.webhooks = Webhooks(plane.store)
        self.conf = conf or plane.settings.alerts
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self.conf.max_queue)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._client: httpx.Client | None = None
        self._subscribed = False
        self._active = 0
        self._idle = threading.Condition()

    def __enter__(self) -> AlertDispatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> AlertDispatcher:
        """Subscribe to the plane's events and start the delivery threads."""
        import httpx

        if self._threads:
            return self
        self._stop.clear()
        self._client = httpx.Client(timeout=self.conf.timeout_s, follow_redirects=False)
        for i in range(self.conf.workers):
            thread = threading.Thread(target=self._work, name=f"dp-alerts-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._subscribed:  # the façade has no unsubscribe: a stopped dispatcher ignores
            self.plane.subscribe(self.on_event)
            self._subscribed = True
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop delivering: attempts in progress end (backoff waits are cut short); queued
        deliveries are dropped and counted in the log."""
        if not self._threads:
            return
        self._stop.set()
        dropped = 0
        while True:
            try:
                self._queue.get_nowait()
                dropped += 1
            except queue.Empty:
                break
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads.clear()
        if self._client is not None:
            self._client.close()
            self._client = None
        if dropped:
            log.warning("alerts stopping: %d queued deliveries dropped", dropped)

    def on_event(self, event: PlaneEvent) -> None:
        """The plane's listener: queue the event and return at once."""
        if self._stop.is_set() or not self._threads:
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.error("alert queue full: %s of %s dropped", event.kind, event.model)

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Wait until nothing is queued or being delivered (tests, shutdown hooks)."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._queue.unfinished_tasks or self._active:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                with self._idle:
                    self._active += 1
                try:
                    self._dispatch(item)
                except Exception:
                    log.exception("alert delivery of %s failed", getattr(item, "kind", item))
                finally:
                    with self._idle:
                        self._active -= 1
                        self._idle.notify_all()
            finally:
                self._queue.task_done()

    def _dispatch(self, item: Any) -> None:
        """An event becomes one delivery per webhook that wants it, each its own queue item:
        a slow or dead endpoint holds one worker, never the other webhooks."""
        if isinstance(item, tuple):
            hook, event = item
            if not self._stop.is_set():
                self.deliver(hook, event)
            return
        for hook in self.webhooks.for_event(item.model, item.kind):
            try:
                self._queue.put_nowait((hook, item))
            except queue.Full:
                log.error("alert queue full: %s to %s dropped", item.kind, redact_url(hook.url))

    def deliver(self, hook: Webhook, event: PlaneEvent) -> bool:
        """Post ``event`` to ``hook`` with retries; every attempt is audited. True when an
        attempt got a 2xx answer."""
        body = body_of(event, hook.format)
        attempts = self.conf.retries + 1
        for attempt in range(1, attempts + 1):
            status, error, ms = self._post(hook.url, body)
            ok = status is not None and 200 <= status < 300
            retryable = status is None or status == 429 or status >= 500
            last = attempt == attempts or not retryable or ok
            self._audit(hook, event, attempt, status, error, ok, ms, final=last)
            if ok:
                return True
            if last or self._stop.wait(backoff(attempt, self.conf)):
                break
        log.warning(
            "alert %s of %s to %s not delivered", event.kind, event.model, redact_url(hook.url)
        )
        return False

    def _post(self, url: str, body: dict[str, Any]) -> tuple[int | None, str, float]:
        import httpx

        client = self._client
        if client is None:
            return None, "dispatcher stopped", 0.0
        started = time.perf_counter()
        try:
            response = client.post(url, json=body, headers={"User-Agent": "driftpilot-alerts"})
            return response.status_code, "", (time.perf_counter() - started) * 1000
        except (httpx.HTTPError, UnicodeError, ValueError) as exc:
            # A connection error's message can quote the URL: keep only the class. Hosts that
            # pass validation can still fail to encode (IDNA): a failed attempt like any other.
            reason = type(exc).__name__
            return None, reason, (time.perf_counter() - started) * 1000

    def _audit(
        self,
        hook: Webhook,
        event: PlaneEvent,
        attempt: int,
        status: int | None,
        error: str,
        ok: bool,
        ms: float,
        *,
        final: bool,
    ) -> None:
        try:
            self.store.record_tool_call(
                (event.run_id or f"webhook-{hook.id}")[:40],
                AGENT,
                TOOL,
                {
                    "webhook_id": hook.id,
                    "url": redact_url(hook.url),
                    "format": hook.format,
                    "event": event.kind,
                    "model": event.model,
                    "attempt": attempt,
                },
                {"status": status, "error": error, "final": final},
                ok=ok,
                latency_ms=ms,
            )
        except DriftPilotError:
            log.exception("could not audit a webhook attempt (%s)", redact_url(hook.url))
