"""Leases on every backend: one run per model; a held lease refuses others until it expires
(on the store's clock, advanced by the test) or is released; renewing moves the expiry; a
lease taken over is no longer its old holder's."""

from __future__ import annotations

import threading

import pytest

from driftpilot.core.errors import ModelBusy
from driftpilot.store import AuditStore
from tests.conformance.conftest import FakeClock


def test_a_held_lease_refuses_every_other_run_and_holder(store: AuditStore) -> None:
    taken = store.acquire_lease("m", "run-a", "h1", ttl_s=30)
    assert (taken.model, taken.run_id, taken.holder) == ("m", "run-a", "h1")
    with pytest.raises(ModelBusy, match="run-a"):
        store.acquire_lease("m", "run-b", "h2", ttl_s=30)
    with pytest.raises(ModelBusy):  # the same run from a second process waits its turn too
        store.acquire_lease("m", "run-a", "h2", ttl_s=30)
    store.acquire_lease("m", "run-a", "h1", ttl_s=30)  # its holder takes it again
    store.acquire_lease("other", "run-b", "h2", ttl_s=30)  # other models are free
    assert store.holds_lease("m", "run-a", "h1") and not store.holds_lease("m", "run-b")
    lease = store.lease("m")
    assert lease is not None and (lease.run_id, lease.holder) == ("run-a", "h1")


def test_a_lease_expires_on_the_clock(store: AuditStore, clock: FakeClock) -> None:
    store.acquire_lease("m", "dead-run", "h1", ttl_s=30)
    clock.advance(29)
    assert store.holds_lease("m", "dead-run", "h1")
    with pytest.raises(ModelBusy):
        store.acquire_lease("m", "recovery", "h2", ttl_s=30)
    clock.advance(2)
    assert not store.holds_lease("m", "dead-run", "h1")
    store.acquire_lease("m", "recovery", "h2", ttl_s=30)
    lease = store.lease("m")
    assert lease is not None and (lease.run_id, lease.holder) == ("recovery", "h2")


def test_renewing_moves_the_expiry_and_only_the_holder_renews(
    store: AuditStore, clock: FakeClock
) -> None:
    store.acquire_lease("m", "run-a", "h1", ttl_s=30)
    clock.advance(20)
    assert store.renew_lease("m", "run-a", 30, holder="h1")
    assert not store.renew_lease("m", "run-a", 30, holder="h2")  # not this acquisition's
    assert not store.renew_lease("m", "run-b", 30)  # not this run's
    clock.advance(20)  # 40 s after the acquisition, 20 s after the renewal
    assert store.holds_lease("m", "run-a", "h1")
    with pytest.raises(ModelBusy):
        store.acquire_lease("m", "run-b", "h2", ttl_s=30)
    clock.advance(11)
    assert not store.holds_lease("m", "run-a", "h1")


def test_a_lease_taken_over_is_not_its_old_holders(store: AuditStore, clock: FakeClock) -> None:
    store.acquire_lease("m", "run-a", "old", ttl_s=10)
    clock.advance(11)
    store.acquire_lease("m", "run-a", "new", ttl_s=30)  # a recovery took the same run over
    assert not store.renew_lease("m", "run-a", 30, holder="old")
    store.release_lease("m", "run-a", holder="old")  # a no-op: not its lease any more
    assert store.holds_lease("m", "run-a", "new") and not store.holds_lease("m", "run-a", "old")


def test_a_released_lease_is_free(store: AuditStore) -> None:
    store.acquire_lease("m", "run-a", "h1", ttl_s=30)
    store.release_lease("m", "run-b", holder="h2")  # someone else's release changes nothing
    assert store.holds_lease("m", "run-a", "h1")
    store.release_lease("m", "run-a", holder="h1")
    assert store.lease("m") is None
    store.acquire_lease("m", "run-b", "h2", ttl_s=30)
    assert store.holds_lease("m", "run-b", "h2")


def race(store: AuditStore, model: str) -> tuple[list[str], list[str]]:
    """Two threads ask for the free ``model`` at the same instant: who won, who was busy."""
    won: list[str] = []
    busy: list[str] = []
    start = threading.Barrier(2)

    def take(run: str) -> None:
        start.wait(timeout=10)
        try:
            store.acquire_lease(model, run, run, ttl_s=30)
            won.append(run)
        except ModelBusy:
            busy.append(run)

    threads = [threading.Thread(target=take, args=(r,)) for r in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return won, busy


def test_two_threads_racing_for_a_free_model_get_one_lease(store: AuditStore) -> None:
    for attempt in range(3):  # the race is real only when both meet the missing row
        won, busy = race(store, f"m{attempt}")
        assert len(won) == 1 and len(busy) == 1, (won, busy)
        lease = store.lease(f"m{attempt}")
        assert lease is not None and lease.run_id == won[0]
