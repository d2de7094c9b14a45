"""The audit store: runs, batches, hash-chained decisions / tool calls / approvals /
champion changes, and the idempotency ledger of mutating steps.

``AuditStore`` is the one class callers use; it is composed of one class per concern:

- ``engine.Database``: the engine, transactions, migrations on open, the clock;
- ``queries.Queries``: add/get/update/list of rows, runs, and the read queries (paged);
- ``chain.Chain``: the append-only hash chains and their verification (``VerifyResult``);
- ``approvals.Approvals``: requests and decisions (chained);
- ``effects.Effects``: write-ahead intents (chained) and step effects (idempotency);
- ``leases.Leases``: one run per model;
- ``keys.ApiKeys``: API keys.

The schema is created and upgraded by Alembic (``migrations/``) when the store opens.
SQLite by default; any SQLAlchemy URL (PostgreSQL) works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from driftpilot.store.approvals import (
    Approvals,
    action_hash,
    check_step,
    promotion_action,
    request_step,
)
from driftpilot.store.chain import GENESIS, BrokenLink, VerifyResult
from driftpilot.store.effects import Effects
from driftpilot.store.engine import T, dumps, now
from driftpilot.store.keys import ApiKeys
from driftpilot.store.leases import Leases, lease_holder
from driftpilot.store.models import ChampionChange, Decision

__all__ = [
    "GENESIS",
    "AuditStore",
    "BrokenLink",
    "VerifyResult",
    "action_hash",
    "check_step",
    "dumps",
    "lease_holder",
    "now",
    "promotion_action",
    "request_step",
]


class AuditStore(Approvals, Effects, Leases, ApiKeys):
    """Opens (and migrates) the audit database; all writes go through here.

    ``AuditStore(url, clock=...)``: ``clock`` (default: the real one) is what lease expiry is
    judged by."""

    def _append(self, row: T, check: Callable[[Session], None] | None = None) -> T:
        """``Chain._append`` with its tries inside one ``write_deadline``: a chained write
        waits for locks ``BUSY_TIMEOUT_MS`` in all, not that long on each try."""
        with self.write_deadline():
            return super()._append(row, check)

    def add_with_decision(self, rows: Callable[[], list[Any]], decision: Decision) -> Decision:
        """Insert the rows ``rows()`` makes and append ``decision`` to its chain in one
        transaction: both commit or neither (a row that a decision accounts for never exists
        without it). ``rows`` is called once per try of the append, so that a retried append
        starts from fresh rows (a rolled-back flush leaves ids on the old ones).

        Raises:
            AuditWriteError: the append failed on each of its tries (nothing was written).
        """
        return self._append(decision, check=lambda session: session.add_all(rows()))

    def cross_checks(self) -> list[str]:
        """Invariants across tables: every champion change has its decision by the agent that
        may make it and continues the model's history (it replaces the champion before it),
        and every promotion the policy rated other than low has an approval by a different
        principal, bound to exactly that promotion."""
        problems: list[str] = []
        decisions = self.list_rows(Decision, order=Decision.id)
        actions = {(d.run_id, d.agent, d.action) for d in decisions}
        tiers = {d.run_id: d.action for d in decisions if d.action.startswith("risk:")}
        champion: dict[str, int | None] = {}
        for change in self.list_rows(ChampionChange, order=ChampionChange.id):
            verb = "rollback" if change.action == "rollback" else "promote"
            label = f"champion change #{change.id} ({change.model} v{change.version}, {verb})"
            agent = "bootstrap" if change.action == "bootstrap" else "cicd"
            if (change.run_id, agent, verb) not in actions:
                problems.append(
                    f"{label} has no {verb} decision by the {agent} agent in run {change.run_id}"
                )
            before = champion.get(change.model)
            if change.previous_version != before:
                problems.append(
                    f"{label} says it replaced v{change.previous_version}, but the champion "
                    f"before it was v{before}"
                )
            champion[change.model] = change.version
            if change.action != "promote":
                continue
            problem = self._promotion_problem(change, tiers.get(change.run_id))
            if problem is not None:
                problems.append(f"{label} {problem}")
        return problems

    def _promotion_problem(self, change: ChampionChange, tier: str | None) -> str | None:
        """Why a promotion lacks the approval its risk tier asks for (None: it does not)."""
        if tier is None:
            return f"has no risk assessment in run {change.run_id}"
        if tier == "risk:low":
            return None
        action = promotion_action(change.model, change.version, change.previous_version)
        why = self.approval_problem(change.run_id, action, unbound_ok=True)
        return None if why is None else f"was rated {tier} but is not approved: {why}"
