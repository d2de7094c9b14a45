"""Leases: one run per model at a time, across processes.

A lease names the run and the holder (one acquisition by one process) and expires unless
renewed; an expired lease can be taken over (``driftpilot recover``). Expiry is judged by the
store's clock (``Database.clock``: the real clock unless a test passes one it advances).
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import timedelta

from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from driftpilot.core.errors import ModelBusy
from driftpilot.store.engine import Database, stamp
from driftpilot.store.models import Lease

# The lease acquisition this thread's run works under (set by the service's LeaseKeeper):
# mutations are fenced on it, so a process whose lease was taken over stops mutating.
lease_holder: ContextVar[str | None] = ContextVar("driftpilot_lease_holder", default=None)


class Leases(Database):
    """Acquire, renew, release and read the per-model lease."""

    def _now(self) -> str:
        return stamp(self.clock())

    def _later(self, seconds: float) -> str:
        return stamp(self.clock() + timedelta(seconds=seconds))

    def acquire_lease(self, model: str, run_id: str, holder: str, ttl_s: float) -> Lease:
        """Take (or renew) the model's lease for ``run_id``.

        Raises:
            ModelBusy: another run holds an unexpired lease on the model.
        """
        now = self._now()
        expires = self._later(ttl_s)
        try:
            with self.session() as session:
                row = session.get(Lease, model, with_for_update=True)
                if row is None:
                    row = Lease(
                        model=model,
                        run_id=run_id,
                        holder=holder,
                        acquired_at=now,
                        expires_at=expires,
                    )
                    session.add(row)
                    return row
                # A live lease is the holder's: even the same run may not be driven by a
                # second process (two recovers, a retried decide) until it expires.
                if row.expires_at > now and (row.run_id != run_id or row.holder != holder):
                    raise ModelBusy(
                        f"model {model!r} is busy: run {row.run_id[:12]} ({row.holder}) holds "
                        f"its lease until {row.expires_at[:19]}; retry later or wait (--wait)"
                    )
                if row.run_id != run_id:
                    row.acquired_at = now
                row.run_id, row.holder, row.expires_at = run_id, holder, expires
                return row
        except SQLIntegrityError as exc:  # PostgreSQL: another process inserted it first
            raise ModelBusy(f"model {model!r} is busy: another run took its lease") from exc

    def renew_lease(self, model: str, run_id: str, ttl_s: float, holder: str | None = None) -> bool:
        """Extend a held lease; False when the lease is no longer this run's (or, given
        ``holder``, no longer this acquisition's: another process took the run over)."""
        with self.session() as session:
            row = session.get(Lease, model, with_for_update=True)
            if row is None or not _matches(row, run_id, holder):
                return False
            row.expires_at = self._later(ttl_s)
            return True

    def release_lease(self, model: str, run_id: str, holder: str | None = None) -> None:
        """Give the lease back, if it is still this run's (and ``holder``'s)."""
        with self.session() as session:
            row = session.get(Lease, model, with_for_update=True)
            if row is not None and _matches(row, run_id, holder):
                session.delete(row)

    def lease(self, model: str) -> Lease | None:
        with self.reading() as session:
            return session.get(Lease, model)

    def holds_lease(self, model: str, run_id: str, holder: str | None = None) -> bool:
        row = self.lease(model)
        return row is not None and _matches(row, run_id, holder) and row.expires_at > self._now()


def _matches(row: Lease, run_id: str, holder: str | None) -> bool:
    return row.run_id == run_id and (holder is None or row.holder == holder)
