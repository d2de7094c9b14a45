"""Limits on guessing at the chat's sign-in (``driftpilot.store.throttle``).

Failed sign-ins are counted per client address and per typed user name, in the audit
database the API counts unknown keys in (one address counter for both). After
``max_failures`` failures, a sign-in is refused before its password is checked, and the page
gets 429 with Retry-After. Each attempt is counted before its password is checked and taken
back if it succeeds, so sign-ins sent in parallel get no more checks than the limit.

A lock of a name holds for unknown names as for real ones, and is decided before any
hashing: how fast a refusal comes says whether a name is locked, never whether it exists
(``verify_user`` hashes against a dummy for an unknown name, as before). A success clears the
name's failures, and takes back only its own count of the address's: an attacker holding one
account must not reset the count of the guesses they make at others from the same address.

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


@dataclass
class Attempt:
    """One sign-in request: where it comes from, and (set when refused as locked) how long
    the client must wait."""

    address: Subject
    retry_after: int | None = None


_ATTEMPT: ContextVar[Attempt | None] = ContextVar("driftpilot_signin_attempt", default=None)


def current_attempt() -> Attempt:
    """The sign-in request being served (without ``SignInGuard``: an address-less one, so
    every client shares one address counter: stricter, never looser)."""
    return _ATTEMPT.get() or Attempt(address_subject(None))


def guarded_sign_in(
    cp: ControlPlane, username: str, password: str, attempt: Attempt, limits: AuthLimitSettings
) -> Identity | None:
    """``ui.chat.sign_in`` under the limits: None when refused. A refusal because the address
    or the name is locked sets ``attempt.retry_after`` (the password is not checked then)."""
    store = cp.store
    user = user_subject(username)
    subjects = [attempt.address] + ([user] if user is not None else [])
    # Counted before the check, taken back on success: parallel sign-ins cannot get more
    # checks than the limit between a check and its count.
    until = store.begin_attempt(subjects, limits, via="chat")
    if until is not None:
        attempt.retry_after = retry_after((until - store.clock()).total_seconds())
        return None
    who = sign_in(cp, username, password)
    if who is not None:
        store.attempt_succeeded(attempt.address, user)
    return who


class SignInGuard:
    """ASGI middleware: each ``POST .../login`` runs with its ``Attempt``; when the sign-in
    was refused as locked, Chainlit's 401 is replaced by 429 with ``Retry-After`` and a
    problem+json body whose ``detail`` says when to try again."""

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
    """``send``, but a response to a locked attempt is replaced by the 429 (its own start and
    body messages are dropped)."""
    replaced = False

    async def guarded(message: Message) -> None:
        nonlocal replaced
        if message["type"] == "http.response.start" and attempt.retry_after is not None:
            replaced = True
            await _send_locked(send, attempt.retry_after, path)
            return
        if not replaced:
            await send(message)

    return guarded


async def _send_locked(send: Send, wait: int, path: str) -> None:
    body = json.dumps(
        {
            "type": "urn:driftpilot:problem:too-many-attempts",
            "title": "Too many failed attempts",
            "status": 429,
            "detail": f"Too many failed sign-ins from this address or for this name: try again "
            f"in {wait} s.",
            "instance": path,
            "retry_after": wait,
        }
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(wait).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
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
