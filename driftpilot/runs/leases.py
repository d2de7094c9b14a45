"""One run per model at a time: the model's lease, taken by a run (or a rollback, a label
attachment, a bootstrap) and renewed while it works; and what a process that died left
behind (runs whose lease expired, registry intents without their end)."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from driftpilot.core.errors import ModelBusy
from driftpilot.store import AuditStore
from driftpilot.store.audit import lease_holder
from driftpilot.store.engine import stamp
from driftpilot.store.models import Mutation, Run

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Holds a model's lease for one run: renews it from a daemon thread every third of its
    time to live, and releases it on exit. A process killed mid-run stops renewing, so the
    lease expires and ``recover`` may take the run over; a process that finds its lease taken
    over (``lost``) stops mutating, because mutations are fenced on its ``holder``."""

    def __init__(
        self, store: AuditStore, model: str, run_id: str, holder: str, ttl_s: float
    ) -> None:
        self.store, self.model, self.run_id, self.holder = store, model, run_id, holder
        self.ttl_s = ttl_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name=f"lease-{model}")
        self._token: Any = None

    def __enter__(self) -> LeaseKeeper:
        self._token = lease_holder.set(self.holder)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        lease_holder.reset(self._token)
        self.store.release_lease(self.model, self.run_id, self.holder)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.store.renew_lease(self.model, self.run_id, self.ttl_s, self.holder):
                    self.lost = True
                    log.error("run %s lost the lease of %s", self.run_id, self.model)
                    return
            except Exception as exc:  # a busy or dropped database: try again next tick
                # (a dead keeper would let the lease expire while the run goes on)
                log.warning("lease renewal of %s failed: %s", self.model, exc)


def holder() -> str:
    """A new lease holder name for one acquisition by this process (host:pid:token): a second
    acquisition of the same run, even in this process, is another holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def dead_local_holder(holder_name: str, acquired_at: datetime | None = None) -> bool:
    """Whether a lease holder (``holder()``'s host:pid:token) is a process of this host that
    no longer exists: its lease will expire with nobody renewing it. A process id in use again
    (a restarted container: same host name, pid 1) is no proof of life: a process that
    started after the lease was taken (``acquired_at``) is another one."""
    host, _, rest = holder_name.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    started = _process_start(pid)
    return started is not None and acquired_at is not None and started > acquired_at


def _process_start(pid: int) -> datetime | None:
    """When process ``pid`` started (Linux ``/proc``), or None where that cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            line.split()[1]
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, IndexError, StopIteration):
        return None
    # starttime is the stat file's 22nd field, in clock ticks after boot.
    seconds = int(boot) + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return datetime.fromtimestamp(seconds, UTC)


def awaiting_expiry(store: AuditStore) -> list[Run]:
    """Runs marked running whose lease has not expired yet but whose holder died on this host
    (a process killed moments before this one started): orphans once the lease expires, so a
    recovery at start-up must look again then."""
    found = []
    for run in store.list_rows(Run, Run.status == "running", order=Run.created_at):
        lease = store.lease(run.model)
        if (
            lease is not None
            and lease.run_id == run.id
            and lease.expires_at > clock_now(store)
            and dead_local_holder(lease.holder, datetime.fromisoformat(lease.acquired_at))
        ):
            found.append(run)
    return found


def clock_now(store: AuditStore) -> str:
    """The time by the store's clock, as the store writes it: what lease expiry is judged
    against (the store's own lease writes read the same clock)."""
    return stamp(store.clock())


def acquire(
    store: AuditStore,
    ttl_s: float,
    model: str,
    run_id: str,
    *,
    wait: bool,
    timeout_s: float | None = None,
) -> str:
    """Take the model's lease and return this acquisition's holder name; with ``wait``,
    poll until it is free, for at most ``timeout_s`` (default: as long as it takes)."""
    limit = math.inf if timeout_s is None else timeout_s
    deadline = time.monotonic() + (limit if wait else 0)
    name = holder()
    while True:
        try:
            store.acquire_lease(model, run_id, name, ttl_s)
            return name
        except ModelBusy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def orphans(store: AuditStore) -> list[Run]:
    """Runs marked running whose lease is gone or expired (their process died)."""
    found = []
    for run in store.list_rows(Run, Run.status == "running", order=Run.created_at):
        lease = store.lease(run.model)
        if lease is None or lease.run_id != run.id or lease.expires_at <= clock_now(store):
            found.append(run)
    return found


def dead_intents(store: AuditStore, model: str | None = None) -> list[Mutation]:
    """Open registry intents whose run or operation no longer holds its model's lease."""
    dead = []
    for m in store.open_intents():
        name = json.loads(m.args).get("name")
        if model is not None and name != model:
            continue
        lease = store.lease(name) if name else None
        if lease is None or lease.run_id != m.run_id or lease.expires_at <= clock_now(store):
            dead.append(m)
    return dead


def refuse_if_unrecovered(store: AuditStore, model: str) -> None:
    """A run of this model died mid-way (lease expired while running, or a registry
    mutation left open): nothing new may touch the model until ``recover`` finished it,
    or a rollback or new run would be undone or doubled by that recovery.

    Raises:
        ModelBusy: the model has such unfinished work.
    """
    dead = [r.id for r in orphans(store) if r.model == model]
    dead += [m.run_id for m in dead_intents(store, model) if m.run_id not in dead]
    if dead:
        raise ModelBusy(
            f"model {model!r} has unfinished work from a process that died (run "
            f"{dead[0][:12]}); run `driftpilot recover` first"
        )
