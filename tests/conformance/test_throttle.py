"""The failure counters of the limits on guessing (``driftpilot.store.throttle``) on every
backend: concurrent failures are each counted once (a first failure of a subject races to
insert its row: ON CONFLICT DO NOTHING, then the row is locked before it is read), a lockout
starts once and is audited once, and the API's key lookup reads the locks in its one query."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from driftpilot.core.settings import AuthLimitSettings
from driftpilot.store import AuditStore
from driftpilot.store.models import AuthFailure, ToolCall
from driftpilot.store.throttle import Lockout, Subject
from tests.conformance.conftest import FakeClock

ADDR, ANN = Subject("address", "198.51.100.1"), Subject("user", "ann")


def hammer(store: AuditStore, limits: AuthLimitSettings, n: int) -> list[Lockout]:
    """``n`` failures of ADDR and ANN at once, from 8 threads; every lockout they started."""
    with ThreadPoolExecutor(8) as pool:
        done = list(
            pool.map(lambda _: store.record_failures([ANN, ADDR], limits, via="api"), range(n))
        )
    return [lockout for started in done for lockout in started]


def test_concurrent_failures_are_each_counted_once(store: AuditStore) -> None:
    limits = AuthLimitSettings(max_failures=1000, name_max_failures=1000)
    assert hammer(store, limits, 40) == []
    rows = {(r.kind, r.name): r.failures for r in store.list_rows(AuthFailure)}
    assert rows == {("address", ADDR.name): 40, ("user", "ann"): 40}


def test_a_lockout_reached_concurrently_starts_and_is_audited_once(
    store: AuditStore, clock: FakeClock
) -> None:
    limits = AuthLimitSettings(max_failures=12, name_max_failures=12, lockout_s=60)
    started = hammer(store, limits, 12)
    assert sorted(lockout.subject for lockout in started) == [ADDR, ANN]
    assert store.locked_until([ADDR]) == started[0].until
    assert hammer(store, limits, 5) == []  # refused while locked: not counted
    audited = [json.loads(r.args) for r in store.list_rows(ToolCall, ToolCall.agent == "auth")]
    assert sorted((a["kind"], a["name"]) for a in audited) == [
        ("address", ADDR.name),
        ("user", "ann"),
    ]
    assert store.verify().ok


def test_the_key_lookup_reads_the_locks_of_the_address_and_the_key_id(
    store: AuditStore, clock: FakeClock
) -> None:
    row, secret = store.create_api_key("olga", "operator")
    limits = AuthLimitSettings(max_failures=2, lockout_s=30)
    key = Subject("key", row.id)
    free = store.look_up_key(secret, ADDR)
    assert free.row is not None and free.row.principal == "olga"
    assert (free.address_locked_until, free.key_locked_until, free.key_failures) == (None, None, 0)
    store.record_failures([ADDR, key], limits, via="api")
    assert store.look_up_key(secret, ADDR).key_failures == 1
    store.record_failures([ADDR, key], limits, via="api")
    locked = store.look_up_key("dp_000000000000_unknown", ADDR)
    assert locked.row is None and locked.address_locked_until is not None
    assert store.look_up_key(secret, Subject("address", "other")).key_locked_until == (
        locked.address_locked_until
    )
    clock.advance(31)
    assert store.locked_until([ADDR, key]) is None


def test_parallel_attempts_counted_before_the_check_get_exactly_the_limit(
    store: AuditStore, clock: FakeClock
) -> None:
    """The chat's way (``begin_attempt``): of 24 sign-ins at one name in flight at once, 5
    are checked, and the others are refused: the lockout starts once and is audited once."""
    limits = AuthLimitSettings(max_failures=5, name_max_failures=5, lockout_s=60)

    def attempt(i: int) -> bool:
        address = Subject("address", f"198.51.100.{i}")
        return store.begin_attempt([address, ANN], limits, via="chat") is None

    with ThreadPoolExecutor(8) as pool:
        checked = list(pool.map(attempt, range(24)))
    assert sum(checked) == 5
    audited = [json.loads(r.args) for r in store.list_rows(ToolCall, ToolCall.agent == "auth")]
    assert audited == [{"kind": "user", "name": "ann", "via": "chat"}]
    # A refused attempt counted nothing against its address.
    failures = {r.name: r.failures for r in store.list_rows(AuthFailure) if r.kind == "address"}
    assert sum(failures.values()) == 5


def test_a_success_takes_back_its_attempt(store: AuditStore, clock: FakeClock) -> None:
    limits = AuthLimitSettings(max_failures=2, lockout_s=60)
    for _ in range(2):
        assert store.begin_attempt([ADDR, ANN], limits, via="chat") is None
    store.attempt_succeeded(ADDR, ANN)  # the second was right: the address is back at 1
    bob = Subject("user", "bob")
    assert store.begin_attempt([ADDR, bob], limits, via="chat") is None
    until = store.begin_attempt([ADDR, bob], limits, via="chat")
    assert until is not None and (until - clock()).total_seconds() == 60
    assert store.begin_attempt([Subject("address", "other"), ANN], limits, via="chat") is None


def test_a_success_makes_its_address_known_for_the_name_and_a_take_back_undoes_a_count(
    store: AuditStore, clock: FakeClock
) -> None:
    """``attempt_succeeded`` marks (address, name) known, again on a later success (the
    row's conflict path); ``take_back`` drops each count by one, never below 0."""
    limits = AuthLimitSettings(known_s=100)
    assert not store.is_known(ADDR, ANN, limits)
    store.attempt_succeeded(ADDR, ANN)
    clock.advance(90)
    store.attempt_succeeded(ADDR, ANN)
    clock.advance(90)
    assert store.is_known(ADDR, ANN, limits)
    assert not store.is_known(Subject("address", "other"), ANN, limits)
    clock.advance(11)
    assert not store.is_known(ADDR, ANN, limits)
    for _ in range(2):
        assert store.begin_attempt([ADDR, ANN], limits, via="chat") is None
    store.take_back([ADDR, ANN])
    store.take_back([ADDR])
    store.take_back([ADDR])
    counts = {r.kind: r.failures for r in store.list_rows(AuthFailure) if r.kind != "known"}
    assert counts == {"address": 0, "user": 1}
