"""Limits on guessing at the chat's sign-in (``driftpilot.store.throttle``).

Failed sign-ins are counted per client address and per typed user name, in the audit
database the API counts unknown keys in (one address counter for both). After
``max_failures`` failures from an address, or ``name_max_failures`` (a much higher count) at
a name from anywhere, a sign-in is refused before its password is checked, and the page gets
429 with Retry-After. A name's lock and count do not apply at an address that signed in as
that user within ``known_s``: one attacker cannot shut a user out everywhere cheaply
(``driftpilot.store.throttle`` says why). Each attempt is counted before its password is
checked and taken back if it succeeds, so sign-ins sent in parallel get no more checks than
the limit.

A lock of a name holds for unknown names as for real ones, and is decided before any
hashing: how fast a refusal comes says whether a name is locked, never whether it exists
(``verify_user`` hashes against a dummy for an unknown name, as before). A success clears the
name's failures, and takes back only its own count of the address's: an attacker holding one
account must not reset the count of the guesses they make at others from the same address.

When the store fails (database down, a write refused), the sign-in is not a wrong password:
the error is logged, an attempt already counted is taken back, and the page gets 503 with
Retry-After.

Chainlit hands ``password_auth`` the name and password only; ``SignInGuard``, an ASGI
middleware on Chainlit's app, gives it the client's address (the peer the server saw; a
proxy's ``X-Forwarded-For`` only where ``FORWARDED_ALLOW_IPS`` names that proxy, see
``install``) and turns its refusal into the 429.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from driftpilot.core.errors import DriftPilotError
from driftpilot.core.settings import AuthLimitSettings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.throttle import Subject, address_subject, retry_after, user_subject
from ui.chat import Identity, sign_in

log = logging.getLogger(__name__)
FORWARDED_ALLOW_IPS = "FORWARDED_ALLOW_IPS"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# What the store raises when it cannot answer: its own errors (AuditWriteError for a refused
# write) and a driver's error on a read.
STORE_ERRORS = (DriftPilotError, SQLAlchemyError)
UNAVAILABLE_RETRY_AFTER_S = 5  # the API's wait for a database outage (api.outage)


@dataclass
class Attempt:
    """One sign-in request: where it comes from, and (set when refused as locked) how long
    the client must wait, or (set when the store failed) that the service is unavailable."""

    address: Subject
    retry_after: int | None = None
    unavailable: bool = False


_ATTEMPT: ContextVar[Attempt | None] = ContextVar("driftpilot_signin_attempt", default=None)


def current_attempt() -> Attempt:
    """The sign-in request being served (without ``SignInGuard``: an address-less one, so
    every client shares one address counter: stricter, never looser)."""
    return _ATTEMPT.get() or Attempt(address_subject(None))


def guarded_sign_in(
    cp: ControlPlane, username: str, password: str, attempt: Attempt, limits: AuthLimitSettings
) -> Identity | None:
    """``ui.chat.sign_in`` under the limits: None when refused. A refusal because the address
    or the name is locked sets ``attempt.retry_after`` (the password is not checked then); a
    store failure is logged and sets ``attempt.unavailable`` (never counted as a failure)."""
    try:
        return _counted_sign_in(cp, username, password, attempt, limits)
    except STORE_ERRORS as exc:
        log.error(
            "sign-in as %r unavailable: the store failed: %s: %s",
            username[:200],
            type(exc).__name__,
            getattr(exc, "orig", None) or exc,
        )
        attempt.unavailable = True
        return None


def _counted_sign_in(
    cp: ControlPlane, username: str, password: str, attempt: Attempt, limits: AuthLimitSettings
) -> Identity | None:
    store = cp.store
    user = user_subject(username)
    known = user is not None and store.is_known(attempt.address, user, limits)
    subjects = [attempt.address] + ([user] if user is not None and not known else [])
    # Counted before the check, taken back on success: parallel sign-ins cannot get more
    # checks than the limit between a check and its count. A failing begin_attempt counted
    # nothing (its transaction rolled back, or it refused).
    until = store.begin_attempt(subjects, limits, via="chat")
    if until is not None:
        attempt.retry_after = retry_after((until - store.clock()).total_seconds())
        return None
    try:
        who = sign_in(cp, username, password)
        if who is not None:
            store.attempt_succeeded(attempt.address, user)
    except STORE_ERRORS:
        _take_back(cp, subjects)
        raise
    return who


def _take_back(cp: ControlPlane, subjects: list[Subject]) -> None:
    """Take back an attempt whose password the store kept from checking. Best effort: the
    store just failed, and if it fails again the attempt stays counted (logged), while the
    error that stopped the check is the one reported."""
    try:
        cp.store.take_back(subjects)
    except STORE_ERRORS as exc:
        log.error("a sign-in attempt stays counted: taking it back failed: %s", type(exc).__name__)


class SignInGuard:
    """ASGI middleware: each ``POST .../login`` runs with its ``Attempt``; when the sign-in
    was refused as locked, Chainlit's 401 is replaced by 429 with ``Retry-After`` and a
    problem+json body whose ``detail`` says when to try again; when the store failed, by 503
    with ``Retry-After``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _is_sign_in(scope):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        attempt = Attempt(address_subject(client[0] if client else None))
        token = _ATTEMPT.set(attempt)
        try:
            await self.app(scope, receive, _refusing(send, attempt, str(scope["path"])))
        finally:
            _ATTEMPT.reset(token)


def _is_sign_in(scope: Scope) -> bool:
    return (
        scope["type"] == "http"
        and scope.get("method") == "POST"
        and str(scope.get("path", "")).rstrip("/").endswith("/login")
    )


def _refusing(send: Send, attempt: Attempt, path: str) -> Send:
    """``send``, but a response to a locked attempt is replaced by the 429, and one to an
    attempt the store failed by the 503 (its own start and body messages are dropped)."""
    replaced = False

    async def guarded(message: Message) -> None:
        nonlocal replaced
        if message["type"] == "http.response.start" and attempt.unavailable:
            replaced = True
            await _send_problem(send, _unavailable(path), UNAVAILABLE_RETRY_AFTER_S)
            return
        if message["type"] == "http.response.start" and attempt.retry_after is not None:
            replaced = True
            await _send_problem(send, _locked(attempt.retry_after, path), attempt.retry_after)
            return
        if not replaced:
            await send(message)

    return guarded


def _locked(wait: int, path: str) -> dict[str, object]:
    return {
        "type": "urn:driftpilot:problem:too-many-attempts",
        "title": "Too many failed attempts",
        "status": 429,
        "detail": f"Too many failed sign-ins from this address or for this name: try again "
        f"in {wait} s.",
        "instance": path,
        "retry_after": wait,
    }


def _unavailable(path: str) -> dict[str, object]:
    wait = UNAVAILABLE_RETRY_AFTER_S
    return {
        "type": "urn:driftpilot:problem:service-unavailable",
        "title": "Service unavailable",
        "status": 503,
        "detail": f"Sign-in is unavailable (the audit database failed); your password was not "
        f"checked and this attempt does not count: try again in {wait} s.",
        "instance": path,
        "retry_after": wait,
    }


async def _send_problem(send: Send, problem: dict[str, object], wait: int) -> None:
    body = json.dumps(problem).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(wait).encode()),
    ]
    await send({"type": "http.response.start", "status": problem["status"], "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install(app: Any) -> None:
    """Put ``SignInGuard`` on Chainlit's app (once). Called when Chainlit loads ``ui/app.py``,
    before its server starts; a Starlette app that has started refuses new middleware, and
    then sign-ins still are limited, all clients under one address counter.

    Also makes uvicorn trust no ``X-Forwarded-For`` unless ``FORWARDED_ALLOW_IPS`` (uvicorn's
    own setting: the proxies whose header names the client) is set: by default uvicorn takes
    the client's address from that header for peers on 127.0.0.1 and ::1, so any process on
    this host could pose as a fresh address at each sign-in. Chainlit builds its uvicorn
    config after loading ``ui/app.py``, so the default set here is the one it reads."""
    os.environ.setdefault(FORWARDED_ALLOW_IPS, "")
    if any(m.cls is SignInGuard for m in app.user_middleware):
        return
    try:
        app.add_middleware(SignInGuard)
    except RuntimeError as exc:
        log.warning("sign-in limits without client addresses: %s", exc)
