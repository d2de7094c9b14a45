"""The chat's sign-in guard (``ui.signin_guard``) as ASGI middleware, in front of a stand-in
for Chainlit's /login (which answers 401 to a refused sign-in, as Chainlit does): the
attempt carries the peer's address, and a refusal as locked becomes 429 with Retry-After.
The whole path through a real Chainlit server: tests/integration/test_auth_limits.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from driftpilot.store.throttle import Subject
from ui.signin_guard import Attempt, SignInGuard, current_attempt

Seen = list[Attempt]


def login_app(seen: Seen, lock_for: int | None) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        attempt = current_attempt()
        seen.append(attempt)
        attempt.retry_after = lock_for
        body = b'{"detail":"credentialssignin"}'
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def call(app: Any, method: str, path: str, client: tuple[str, int] | None) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "client": client,
        "headers": [],
    }
    asyncio.run(app(scope, receive, send))
    return sent


def test_a_locked_sign_in_is_answered_429_with_retry_after() -> None:
    seen: Seen = []
    sent = call(SignInGuard(login_app(seen, 42)), "POST", "/login", ("192.0.2.9", 5000))
    assert seen[0].address == Subject("address", "192.0.2.9")
    start, body = sent  # Chainlit's own 401 and its body are dropped
    assert start["status"] == 429
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"42"
    assert headers[b"content-type"] == b"application/problem+json"
    problem = json.loads(body["body"])
    assert problem["status"] == 429 and problem["retry_after"] == 42
    assert "try again in 42 s" in problem["detail"]
    assert int(headers[b"content-length"]) == len(body["body"])


def test_a_wrong_password_keeps_chainlits_401() -> None:
    seen: Seen = []
    sent = call(SignInGuard(login_app(seen, None)), "POST", "/chat/login/", ("2001:db8::5", 1))
    assert seen[0].address == Subject("address", "2001:db8::/64")
    assert [m.get("status") for m in sent] == [401, None]
    assert sent[1]["body"] == b'{"detail":"credentialssignin"}'


def test_other_requests_pass_untouched_and_carry_no_attempt() -> None:
    seen: Seen = []
    sent = call(SignInGuard(login_app(seen, 42)), "GET", "/login", ("192.0.2.9", 5000))
    assert sent[0]["status"] == 401  # the page itself, not a sign-in: nothing replaced
    assert seen[0].address == Subject("address", "unknown")  # current_attempt's default
