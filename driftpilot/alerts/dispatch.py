"""Delivering alerts: the ``AlertDispatcher``.

It subscribes to the façade's events. The listener only queues the event, so a run is never
held up; worker threads look up the model's webhooks and post to each, retrying connection
errors, timeouts, 429 and 5xx answers with bounded exponential backoff
(``DRIFTPILOT_ALERTS_*``). A 3xx is a failed delivery: redirects are not followed.

Every attempt first resolves the host and checks its addresses (``destinations``); a refused
one is audited as refused, with no connection made, and not retried. The POST then goes to a
validated address (never to the name again), signed (``signing``): ``X-DriftPilot-Signature``,
``X-DriftPilot-Timestamp`` and ``X-DriftPilot-Delivery`` (one id per delivery, the same on its
retries). One attempt connects to at most ``max_addresses`` of the host's addresses and ends
by its deadline (``deadline_s``: connect, send and answer together), so a receiver that
answers slowly holds a worker for that long at most. Every attempt is audited as a tool call
(agent ``alerts``, tool ``webhook.post``, under the event's run id) with its status code,
error or refusal, the URL redacted and never the secret. Deliveries live in memory: the ones
queued when the process stops are lost (and logged).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from base64 import b64encode
from typing import TYPE_CHECKING, Any

from driftpilot.alerts.bodies import body_of
from driftpilot.alerts.destinations import (
    Destination,
    Resolver,
    pinned_backend,
    resolve,
    system_resolver,
)
from driftpilot.alerts.hooks import AGENT, Webhooks, redact_url
from driftpilot.alerts.signing import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature_header,
)
from driftpilot.core.errors import ConfigError, DriftPilotError, UnsafeURL
from driftpilot.core.settings import AlertSettings
from driftpilot.store.models import Webhook

if TYPE_CHECKING:
    import ssl

    from driftpilot.runs.plane import ControlPlane, PlaneEvent

log = logging.getLogger(__name__)

TOOL = "webhook.post"
_STOP = object()


class Attempt:
    """What one POST did: the status (None: no answer), the error class, the refusal (the
    SSRF guard's message: no connection was made, or it was closed at once) and the time."""

    __slots__ = ("error", "ms", "refused", "status")

    def __init__(
        self, status: int | None = None, error: str = "", refused: str = "", ms: float = 0.0
    ) -> None:
        self.status, self.error, self.refused, self.ms = status, error, refused, ms

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """A refusal is final; so is a 3xx or 4xx other than 429."""
        if self.refused:
            return False
        return self.status is None or self.status == 429 or self.status >= 500


def backoff(attempt: int, conf: AlertSettings) -> float:
    """The wait after failed attempt number ``attempt`` (1-based): doubling, capped."""
    return float(min(conf.max_backoff_s, conf.backoff_s * 2 ** (attempt - 1)))


class AlertDispatcher:
    """Post plane events to the webhooks that want them, in background threads."""

    def __init__(
        self,
        plane: ControlPlane,
        conf: AlertSettings | None = None,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``conf``: the plane's alert settings by default; ``resolver`` looks webhook hosts
        up (the system's by default), for creation and for every delivery attempt;
        ``ssl_context`` verifies https receivers (default: httpx's, certifi's roots)."""
        self.plane = plane
        self.store = plane.store
        self.conf = conf or plane.settings.alerts
        self.resolver = resolver
        self.webhooks = Webhooks(plane.store, self.conf, resolver)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self.conf.max_queue)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running = False
        self._ssl = ssl_context
        self._ssl_lock = threading.Lock()
        self._subscribed = False
        self._active = 0
        self._idle = threading.Condition()

    def __enter__(self) -> AlertDispatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> AlertDispatcher:
        """Subscribe to the plane's events and start the delivery threads."""
        if self._threads:
            return self
        self._stop.clear()
        self._running = True
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
        self._running = False
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
        """Post ``event`` to ``hook`` with retries, each attempt checked, signed and audited
        under one delivery id. True when an attempt got a 2xx answer."""
        delivery_id = uuid.uuid4().hex
        body = body_of(event, hook.format, delivery_id)
        try:
            # The exact bytes are signed; httpx's own JSON encoding, NaN refused as it did.
            payload = json.dumps(
                body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode("utf-8")
        except ValueError:
            self._audit(hook, event, delivery_id, 1, Attempt(error="ValueError"), final=True)
            return False
        attempts = self.conf.retries + 1
        for number in range(1, attempts + 1):
            attempt = self.attempt(hook, event.kind, delivery_id, payload)
            last = number == attempts or not attempt.retryable or attempt.ok
            self._audit(hook, event, delivery_id, number, attempt, final=last)
            if attempt.ok:
                return True
            if last or self._stop.wait(backoff(number, self.conf)):
                break
        log.warning(
            "alert %s of %s to %s not delivered", event.kind, event.model, redact_url(hook.url)
        )
        return False

    def attempt(self, hook: Webhook, kind: str, delivery_id: str, payload: bytes) -> Attempt:
        """One checked, signed POST of ``payload`` to ``hook``: resolve, refuse an internal
        address before connecting, then connect to a validated address only, all of it by
        ``deadline_s`` from now."""
        started = time.perf_counter()
        deadline = time.monotonic() + self.conf.deadline_s
        if not self._running:
            return Attempt(error="dispatcher stopped")
        try:
            destination = resolve(hook.url, self.conf, self.resolver)
        except UnsafeURL as exc:
            return Attempt(error="UnsafeURL", refused=str(exc), ms=_since(started))
        except ConfigError:  # the name does not resolve (now): like a connection error
            return Attempt(error="NameResolutionError", ms=_since(started))
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "driftpilot-alerts",
            "X-DriftPilot-Event": kind,
            DELIVERY_HEADER: delivery_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature_header(hook.secret, payload, timestamp),
        }
        return self._post(destination, hook.url, headers, payload, started, deadline)

    def _post(
        self,
        destination: Destination,
        url: str,
        headers: dict[str, str],
        payload: bytes,
        started: float,
        deadline: float,
    ) -> Attempt:
        import httpcore
        import httpx

        try:
            parsed = httpx.URL(url)
            target = httpcore.URL(
                scheme=parsed.raw_scheme,
                host=parsed.raw_host,
                port=parsed.port,
                target=parsed.raw_path,
            )
            headers = {"Host": parsed.netloc.decode("ascii"), **headers}
            if parsed.username or parsed.password:
                pair = f"{parsed.username}:{parsed.password}".encode()
                headers["Authorization"] = "Basic " + b64encode(pair).decode("ascii")
            timeout = self.conf.timeout_s
            with (
                httpcore.ConnectionPool(
                    ssl_context=self._ssl_context() if parsed.scheme == "https" else None,
                    network_backend=pinned_backend(
                        destination, max_addresses=self.conf.max_addresses, deadline=deadline
                    ),
                    retries=0,
                ) as pool,
                pool.stream(
                    "POST",
                    target,
                    headers=list(headers.items()),
                    content=payload,
                    extensions={
                        "timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)
                    },
                ) as response,
            ):
                return Attempt(status=response.status, ms=_since(started))
        except UnsafeURL as exc:  # the socket's peer is not the address checked
            return Attempt(error="UnsafeURL", refused=str(exc), ms=_since(started))
        except (
            httpcore.TimeoutException,
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.UnsupportedProtocol,
            httpx.InvalidURL,
            UnicodeError,
            ValueError,
        ) as exc:
            # A connection error's message can quote the URL: keep only the class. Hosts that
            # pass validation can still fail to encode (IDNA): a failed attempt like any other.
            return Attempt(error=type(exc).__name__, ms=_since(started))

    def _ssl_context(self) -> ssl.SSLContext:
        """httpx's default TLS context (certifi's roots, hostname checked), made once."""
        import httpx

        with self._ssl_lock:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            return self._ssl

    def _audit(
        self,
        hook: Webhook,
        event: PlaneEvent,
        delivery_id: str,
        number: int,
        attempt: Attempt,
        *,
        final: bool,
    ) -> None:
        result: dict[str, Any] = {"status": attempt.status, "error": attempt.error, "final": final}
        if attempt.refused:
            result["refused"] = attempt.refused
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
                    "delivery_id": delivery_id,
                    "attempt": number,
                },
                result,
                ok=attempt.ok,
                latency_ms=attempt.ms,
            )
        except DriftPilotError:
            log.exception("could not audit a webhook attempt (%s)", redact_url(hook.url))


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
