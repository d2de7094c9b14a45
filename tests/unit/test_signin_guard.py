"""The chat's sign-in guard (``ui.signin_guard``) as ASGI middleware, in front of a stand-in
for Chainlit's /login (which answers 401 to a refused sign-in, as Chainlit does): the
attempt carries the peer's address, a refusal as locked becomes 429 with Retry-After, and a
store failure 503. Then ``guarded_sign_in`` on a SQLite store whose clock the test moves.
The whole path through a real Chainlit server: tests/integration/test_auth_limits.py."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy import text

from driftpilot.core.settings import AuthLimitSettings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store import AuditStore
from driftpilot.store.models import AuthFailure
from driftpilot.store.throttle import Subject
from driftpilot.store.users import add_user
from tests.conformance.conftest import FakeClock
from ui.signin_guard import Attempt, SignInGuard, current_attempt, guarded_sign_in

Seen = list[Attempt]


def login_app(seen: Seen, lock_for: int | None, *, unavailable: bool = False) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        attempt = current_attempt()
        seen.append(attempt)
        attempt.retry_after = lock_for
        attempt.unavailable = unavailable
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


def test_a_sign_in_the_store_failed_is_answered_503_not_401() -> None:
    seen: Seen = []
    app = SignInGuard(login_app(seen, None, unavailable=True))
    start, body = call(app, "POST", "/login", ("192.0.2.9", 5000))
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"5"
    assert headers[b"content-type"] == b"application/problem+json"
    problem = json.loads(body["body"])
    assert problem["type"] == "urn:driftpilot:problem:service-unavailable"
    assert problem["status"] == 503 and "try again in 5 s" in problem["detail"]


# -- guarded_sign_in on a store ---------------------------------------------------------------

LIMITS = AuthLimitSettings(max_failures=3, name_max_failures=6, window_s=600, lockout_s=60)
ANN_PASSWORD = "ann-password-1"


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    made = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}", clock=FakeClock())
    add_user(made, "ann", "approver", ANN_PASSWORD)
    return made


def plane_of(store: AuditStore) -> ControlPlane:
    """What ``guarded_sign_in`` uses of a plane for a password user: its store."""
    return cast(ControlPlane, SimpleNamespace(store=store))


def try_sign_in(store: AuditStore, host: str, password: str) -> tuple[str, Attempt]:
    """A sign-in as ann from ``host``: its outcome (in | refused | locked) and attempt."""
    attempt = Attempt(Subject("address", host))
    who = guarded_sign_in(plane_of(store), "ann", password, attempt, LIMITS)
    if attempt.retry_after is not None:
        return "locked", attempt
    return ("in" if who is not None else "refused"), attempt


def outcome(store: AuditStore, host: str, password: str) -> str:
    return try_sign_in(store, host, password)[0]


def test_one_attacker_cannot_lock_a_user_out_everywhere(store: AuditStore) -> None:
    """max_failures wrong passwords for ann, each from a fresh address, used to lock ann
    from everywhere; now her name locks only at name_max_failures, and never at an address
    she signed in from."""
    assert outcome(store, "192.0.2.1", ANN_PASSWORD) == "in"  # her usual address
    for i in range(LIMITS.max_failures):
        assert outcome(store, f"198.51.100.{i}", "wrong") == "refused"
    assert outcome(store, "198.51.100.50", ANN_PASSWORD) == "in"
    # A guesser spread over name_max_failures addresses locks the name for new addresses...
    for i in range(LIMITS.name_max_failures):
        assert outcome(store, f"203.0.113.{i}", "wrong") == "refused"
    locked, fresh = try_sign_in(store, "203.0.113.99", ANN_PASSWORD)
    assert locked == "locked" and fresh.retry_after == 60
    # ... not for the addresses ann signed in from,
    assert outcome(store, "192.0.2.1", ANN_PASSWORD) == "in"
    assert outcome(store, "198.51.100.50", ANN_PASSWORD) == "in"
    # where a guesser still meets the address's own lock, at max_failures.
    for _ in range(LIMITS.max_failures):
        assert outcome(store, "192.0.2.1", "wrong") == "refused"
    assert outcome(store, "192.0.2.1", ANN_PASSWORD) == "locked"


def failures(store: AuditStore) -> dict[str, int]:
    return {f"{r.kind}:{r.name}": r.failures for r in store.list_rows(AuthFailure)}


def test_a_store_failure_is_logged_not_counted_and_unavailable(
    store: AuditStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The users table gone: the attempt was counted (begin_attempt), then reading the user
    fails. Not a wrong password: logged, the attempt taken back, the page told 503."""
    assert outcome(store, "192.0.2.1", "wrong") == "refused"
    before = failures(store)
    assert before == {"address:192.0.2.1": 1, "user:ann": 1}
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE users"))
    with caplog.at_level(logging.ERROR, logger="ui.signin_guard"):
        answer, attempt = try_sign_in(store, "192.0.2.1", ANN_PASSWORD)
    assert answer == "refused" and attempt.unavailable
    assert failures(store) == before
    [record] = caplog.records
    assert "sign-in as 'ann' unavailable" in record.getMessage()
    assert ANN_PASSWORD not in record.getMessage()
