"""The limits on guessing credentials (``driftpilot.store.throttle``, ``driftpilot.runs.keys``)
on a fake clock: the lockout rule alone, then through a SQLite store whose clock the test
moves (no sleeps). Both databases: tests/conformance/test_throttle.py; over real HTTP:
tests/integration/test_auth_limits.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import driftpilot.store
from driftpilot.core.settings import AuthLimitSettings, Settings
from driftpilot.runs.keys import ApiKeys, needs_writing
from driftpilot.store import AuditStore
from driftpilot.store.models import AuthFailure, ToolCall
from driftpilot.store.throttle import (
    Counter,
    Subject,
    address_subject,
    after_failure,
    before_attempt,
    key_subject,
    known_subject,
    lockout_seconds,
    retry_after,
    user_subject,
)
from tests.conformance.conftest import FakeClock

MIGRATIONS = Path(driftpilot.store.__file__).parent / "migrations"
LIMITS = AuthLimitSettings(
    max_failures=3, window_s=600, lockout_s=60, max_lockout_s=300, forget_s=3600
)
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ADDR = Subject("address", "192.0.2.7")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fail(counter: Counter | None, *times: float) -> Counter | None:
    for t in times:
        counter = after_failure(counter, at(t), LIMITS)
    return counter


# -- the rule ---------------------------------------------------------------------------------


def test_lockouts_double_up_to_the_cap() -> None:
    assert [lockout_seconds(level, LIMITS) for level in range(1, 6)] == [60, 120, 240, 300, 300]
    assert lockout_seconds(10_000, LIMITS) == 300  # no float overflow for a long siege


def test_n_failures_within_the_window_lock_and_the_next_lock_is_longer() -> None:
    two = fail(None, 0, 10)
    assert two is not None and two.failures == 2 and two.locked_until is None
    locked = fail(two, 20)
    assert locked is not None and locked.lockouts == 1 and locked.locked_until == at(80)
    assert locked.failures == 0  # a lockout starts a fresh count
    assert after_failure(locked, at(50), LIMITS) == locked  # refused unchecked: not counted
    again = fail(locked, 81, 82, 83)
    assert again is not None and again.lockouts == 2 and again.locked_until == at(83 + 120)


def test_failures_spread_wider_than_the_window_never_lock() -> None:
    counter = fail(None, 0, 300, 601, 900, 1202)
    assert counter is not None and counter.locked_until is None and counter.lockouts == 0


def test_a_quiet_subject_is_forgotten_and_starts_from_the_first_lockout() -> None:
    twice = fail(None, 0, 1, 2, 63, 64, 65)
    assert twice is not None and twice.lockouts == 2
    later = fail(twice, 65 + 3601, 65 + 3602, 65 + 3603)
    assert later is not None and later.lockouts == 1 and later.locked_until == at(65 + 3603 + 60)


def test_counted_before_the_check_n_attempts_are_checked_and_the_next_starts_the_lock() -> None:
    counter: Counter | None = None
    checked = []
    for t in range(5):
        counter, go = before_attempt(counter, at(t), LIMITS)
        checked.append(go)
    assert checked == [True, True, True, False, False]
    assert counter is not None and counter.lockouts == 1 and counter.locked_until == at(3 + 60)
    # After the lock, a fresh budget; the next lock is twice as long.
    for t in (63, 64, 65):
        counter, go = before_attempt(counter, at(t), LIMITS)
        assert go
    counter, go = before_attempt(counter, at(66), LIMITS)
    assert not go and counter.locked_until == at(66 + 120)


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert [retry_after(s) for s in (0.01, 1.0, 59.2)] == [1, 1, 60]


# -- subjects ---------------------------------------------------------------------------------


def test_subjects_of_addresses_names_and_keys() -> None:
    assert address_subject("203.0.113.9") == Subject("address", "203.0.113.9")
    # One host holds a whole /64: its addresses are one subject; a v4-mapped one is its v4.
    assert address_subject("2001:db8:1:2:aaaa::1") == address_subject("2001:db8:1:2:ffff::9")
    assert address_subject("2001:db8:1:2::1").name == "2001:db8:1:2::/64"
    assert address_subject("::ffff:198.51.100.4") == Subject("address", "198.51.100.4")
    assert address_subject(None) == Subject("address", "unknown")
    assert address_subject("testclient") == Subject("address", "testclient")
    assert user_subject(" Ann ") == user_subject("ann") == Subject("user", "ann")
    assert user_subject("a\u200bb") is None and user_subject("  ") is None
    assert key_subject("dp_0123456789ab_secretpart") == Subject("key", "0123456789ab")
    assert key_subject("dp_nope") is None and key_subject("hunter2") is None


# -- through the store, on a clock the test moves ---------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> AuditStore:
    return AuditStore(f"sqlite:///{tmp_path / 'audit.db'}", clock=clock)


def lockout_rows(store: AuditStore) -> list[ToolCall]:
    return store.list_rows(ToolCall, ToolCall.tool == "auth.lockout")


def test_a_lockout_holds_on_the_clock_and_is_audited_without_the_secret(
    store: AuditStore, clock: FakeClock
) -> None:
    ann = Subject("user", "ann")
    limits = LIMITS.model_copy(update={"name_max_failures": 3})
    for _ in range(2):
        assert store.record_failures([ADDR, ann], limits, via="chat") == []
    [by_address, by_name] = sorted(
        store.record_failures([ADDR, ann], limits, via="chat"), key=lambda x: x.subject.kind
    )
    assert by_address.subject == ADDR and by_name.subject == ann and by_name.seconds == 60
    assert store.locked_until([ann]) == at(60)
    clock.advance(59)
    assert store.locked_until([Subject("user", "bob"), ann]) == at(60)
    clock.advance(1)
    assert store.locked_until([ADDR, ann]) is None
    rows = lockout_rows(store)
    assert [json.loads(r.args) for r in rows] == [
        {"kind": "address", "name": "192.0.2.7", "via": "chat"},
        {"kind": "user", "name": "ann", "via": "chat"},
    ]
    assert json.loads(rows[0].result) == {
        "until": "2026-03-02T12:01:00.000000+00:00",
        "seconds": 60.0,
        "lockout": 1,
    }
    assert store.verify().ok


def test_a_success_clears_the_names_failures_but_not_the_addresss(store: AuditStore) -> None:
    ann = Subject("user", "ann")
    store.record_failures([ADDR, ann], LIMITS, via="chat")
    store.record_failures([ADDR, ann], LIMITS, via="chat")
    store.clear_failures(ann)
    [only] = store.record_failures([ADDR, ann], LIMITS, via="chat")
    assert only.subject == ADDR  # the address reached 3; the name is at 1


def test_rows_quiet_for_forget_s_are_deleted_at_the_next_lockout(
    store: AuditStore, clock: FakeClock
) -> None:
    """... but a known address (one that signed in as a user) is kept for ``known_s``."""
    home, ann = Subject("address", "198.51.100.3"), Subject("user", "ann")
    store.record_failures([Subject("user", "sprayed")], LIMITS, via="chat")
    store.attempt_succeeded(home, ann)
    clock.advance(3601)
    for _ in range(3):
        store.record_failures([ADDR], LIMITS, via="api")
    assert store.locked_until([ADDR]) is not None
    known = known_subject(home, ann).name
    assert {row.name for row in store.list_rows(AuthFailure)} == {"192.0.2.7", known}
    assert store.is_known(home, ann, LIMITS)
    clock.advance(LIMITS.known_s)
    assert not store.is_known(home, ann, LIMITS)
    for _ in range(3):
        store.record_failures([ADDR], LIMITS, via="api")  # the next lockout forgets it
    assert {row.name for row in store.list_rows(AuthFailure)} == {"192.0.2.7"}


def test_a_name_locks_at_its_own_higher_threshold(store: AuditStore, clock: FakeClock) -> None:
    """Addresses lock at max_failures; a user name, which locks from every address, only at
    name_max_failures; a key id at max_failures (its lock never refuses the right key)."""
    limits = LIMITS.model_copy(update={"name_max_failures": 5})
    ann = Subject("user", "ann")
    checked = [
        store.begin_attempt([Subject("address", f"198.51.100.{i}"), ann], limits, via="chat")
        is None
        for i in range(7)
    ]
    assert checked == [True] * 5 + [False] * 2
    assert store.locked_until([ann]) == at(60)
    key = Subject("key", "0123456789ab")
    started = [store.record_failures([ADDR, key], limits, via="api") for _ in range(3)]
    assert started[:2] == [[], []]
    assert {lockout.subject for lockout in started[2]} == {ADDR, key}


# -- API keys: the verdict and what it writes ---------------------------------------------------


def test_unknown_keys_lock_the_address_and_the_key_id_but_not_the_right_key(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}", clock=clock)
    keys = ApiKeys(store)
    view, secret = keys.create_api_key("olga", "operator")
    kid = secret.split("_")[1]
    wrong = f"dp_{kid}_{'x' * 32}"
    here, there = Subject("address", "192.0.2.1"), Subject("address", "192.0.2.2")
    right = keys.admit(secret, here)
    assert right.key == view and not needs_writing(right)  # the hot path writes nothing
    for _ in range(3):
        verdict = keys.admit(wrong, here)
        assert verdict.key is None and verdict.retry_after is None and needs_writing(verdict)
        keys.settle(verdict, LIMITS)
    locked_here = keys.admit(secret, here)  # the address is locked: the right key too
    assert locked_here.key is None and locked_here.retry_after == 60
    elsewhere = keys.admit(secret, there)  # the id is locked for wrong secrets only
    assert elsewhere.key == view and elsewhere.retry_after is None
    assert keys.admit(wrong, there).retry_after == 60
    # A right key clears its id's failures (one write, only when there are some).
    other, other_secret = keys.create_api_key("pat", "viewer")
    keys.settle(keys.admit(f"dp_{other.key_id}_{'y' * 32}", there), LIMITS)
    assert store.look_up_key(other_secret, there).key_failures == 1
    cleared = keys.admit(other_secret, there)
    assert cleared.key == other and needs_writing(cleared)
    keys.settle(cleared, LIMITS)
    assert store.look_up_key(other_secret, there).key_failures == 0
    clock.advance(60)
    assert keys.admit(secret, here).key == view
    revoked = keys.revoke_api_key(view.key_id)
    assert revoked.revoked and keys.admit(secret, there).key is None


def test_retry_after_is_the_later_of_the_address_and_key_id_locks(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A wrong secret naming a locked key id from a locked address waits for both locks."""
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}", clock=clock)
    keys = ApiKeys(store)
    _, secret = keys.create_api_key("olga", "operator")
    wrong = f"dp_{secret.split('_')[1]}_{'x' * 32}"
    here = Subject("address", "192.0.2.1")
    for i in range(3):  # the address locks at 0 for 60 s
        keys.settle(keys.admit(f"dp_00000000000{i}_{'y' * 32}", here), LIMITS)
    clock.advance(30)
    for i in range(3):  # the key id locks at 30 for 60 s, from elsewhere
        keys.settle(keys.admit(wrong, Subject("address", f"192.0.2.{10 + i}")), LIMITS)
    clock.advance(1)
    assert keys.admit(wrong, here).retry_after == 59  # the key id's lock ends later
    assert keys.admit(secret, here).retry_after == 29  # the right key: the address's only
    clock.advance(29)
    assert keys.admit(wrong, here).retry_after == 30
    assert keys.admit(secret, here).key is not None


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTPILOT_AUTH_MAX_FAILURES", "7")
    monkeypatch.setenv("DRIFTPILOT_AUTH_LOCKOUT_S", "30")
    monkeypatch.setenv("DRIFTPILOT_AUTH_NAME_MAX_FAILURES", "40")
    auth = Settings().auth
    assert (auth.max_failures, auth.lockout_s, auth.window_s) == (7, 30.0, 900.0)
    assert (auth.name_max_failures, auth.known_s) == (40, 30 * 86400.0)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_0013_adds_auth_failures_and_its_downgrade_drops_it(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'audit.db'}"
        if database == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        with conn.begin():
            command.upgrade(config, "0013")
        inspector = sa.inspect(conn)
        assert inspector.get_pk_constraint("auth_failures")["constrained_columns"] == [
            "kind",
            "name",
        ]
        nullable = {c["name"]: c["nullable"] for c in inspector.get_columns("auth_failures")}
        assert nullable == {
            "kind": False,
            "name": False,
            "failures": False,
            "window_start": False,
            "lockouts": False,
            "locked_until": True,
            "last_failure": False,
        }
        conn.commit()
        with conn.begin():
            command.downgrade(config, "0012")
        assert not sa.inspect(conn).has_table("auth_failures")
    engine.dispose()
