"""A run left running under a lease whose holder died moments before a restart: start-up
recovery cannot take it yet (the lease has not expired), so it must be found and looked at
again when it expires (``leases.awaiting_expiry``), or the model's later runs wait forever."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from driftpilot.runs import leases
from driftpilot.store import AuditStore
from driftpilot.store.engine import now
from driftpilot.store.models import Run


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _running(store: AuditStore, run_id: str, model: str) -> None:
    stamp = now()
    store.add_all(
        [
            Run(
                id=run_id,
                model=model,
                batch_id="b",
                trigger="window",
                requested_by="t",
                status="running",
                outcome=None,
                summary="{}",
                created_at=stamp,
                updated_at=stamp,
            )
        ]
    )


def test_a_dead_local_holder_is_told_from_a_live_or_remote_one() -> None:
    host = socket.gethostname()
    assert leases.dead_local_holder(f"{host}:{_dead_pid()}:abcd1234")
    assert not leases.dead_local_holder(leases.holder())  # this process
    assert not leases.dead_local_holder(f"elsewhere-{host}:{_dead_pid()}:abcd1234")
    assert not leases.dead_local_holder("garbage")


def test_runs_under_an_unexpired_lease_of_a_dead_process_await_its_expiry(tmp_path: Path) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'a.db'}")
    host = socket.gethostname()
    _running(store, "dead-run", "m1")
    store.acquire_lease("m1", "dead-run", f"{host}:{_dead_pid()}:abcd1234", ttl_s=600)
    _running(store, "live-run", "m2")
    store.acquire_lease("m2", "live-run", leases.holder(), ttl_s=600)
    assert [r.id for r in leases.awaiting_expiry(store)] == ["dead-run"]
    assert leases.orphans(store) == []  # not yet: recovery at start-up would pass it over


def test_a_process_id_in_use_again_is_no_proof_of_life() -> None:
    """A restarted container has the same host name and often the same pid (1): the holder's
    pid is alive, but this process started after the lease was taken, so the holder died."""
    import os
    from datetime import UTC, datetime, timedelta

    host = socket.gethostname()
    reused = f"{host}:{os.getpid()}:0ld70ken"
    started = leases._process_start(os.getpid())
    assert started is not None and started <= datetime.now(UTC)
    assert leases.dead_local_holder(reused, started - timedelta(minutes=1))
    assert not leases.dead_local_holder(reused, datetime.now(UTC))  # taken by this process
    assert not leases.dead_local_holder(reused)  # no acquisition time: no proof of death
