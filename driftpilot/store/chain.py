"""The hash chains: append-only tables (decisions, tool calls, approvals, champion changes,
mutations) whose every row carries the hash of the one before it, and their verification.

A row's hash covers every column but ``hash`` (its id, ``prev_hash`` and ``created_at``
included); an edited row no longer matches its hash, a deleted or inserted row breaks the
link of the row after it. The migrations add triggers refusing UPDATE and DELETE.
"""

from __future__ import annotations

import hashlib
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from driftpilot.core.errors import AuditWriteError
from driftpilot.store.engine import T, dumps, now, write_time_left
from driftpilot.store.models import CHAINED, ChampionChange, Decision, ToolCall
from driftpilot.store.queries import Queries

GENESIS = "0" * 64
_CHAIN_LOCK = threading.Lock()  # one chained insert at a time within a process (bounded wait)
_TRIES = 4  # appends retried on a lock timeout or a lost id race, then AuditWriteError


class BrokenLink(BaseModel):
    table: str
    row_id: int
    reason: str


class VerifyResult(BaseModel):
    """Result of walking every hash chain (and, from the service, of the cross checks)."""

    ok: bool
    checked: dict[str, int] = Field(description="Rows checked per table.")
    first_broken: BrokenLink | None = None
    problems: list[str] = Field(
        default_factory=list,
        description="Checkpoint and cross-table findings: truncation, missing approvals, ...",
    )
    checkpoint: str | None = Field(None, description="The checkpoint verified against, if any.")


class Chain(Queries):
    """Appends to the chained tables, and walks them."""

    def _append(self, row: T, check: Callable[[Session], None] | None = None) -> T:
        """Append a row to its chain. Safe across processes: SQLite transactions take the write
        lock at BEGIN, PostgreSQL takes a per-table advisory lock; a lock held past the busy
        timeout is retried, then reported as AuditWriteError (never a raw driver error).
        ``check`` runs under that lock, before the row is added: what it reads cannot change
        before the row is in (it raises to refuse the append). The process's chain lock is
        waited for within the same deadline as the database's locks (``write_time_left``):
        an append stuck behind it is an AuditWriteError too, never a thread hung for good."""
        model: Any = type(row)
        for attempt in range(_TRIES):
            if not _CHAIN_LOCK.acquire(timeout=write_time_left()):
                raise AuditWriteError(
                    f"could not append to {model.__tablename__}: another append of this "
                    "process held the chain lock past the write deadline"
                )
            try:
                with self._transaction() as session:
                    self._lock_chain(session, model.__tablename__)
                    if check is not None:
                        check(session)
                    _link(session, row)
                return row
            except (OperationalError, SQLIntegrityError) as exc:
                if attempt == _TRIES - 1:
                    raise AuditWriteError(
                        f"could not append to {model.__tablename__} "
                        f"after {attempt + 1} tries: {exc.orig}"
                    ) from exc
            finally:
                _CHAIN_LOCK.release()
            time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    def _lock_chain(self, session: Session, table: str) -> None:
        if self.engine.dialect.name == "postgresql":
            key = zlib.crc32(f"driftpilot:{table}".encode())
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    def record_decision(
        self,
        run_id: str,
        agent: str,
        action: str,
        rationale: str,
        evidence: dict[str, Any],
        *,
        backend: str,
        llm_model: str = "",
        fallback: bool = False,
        flags: list[str] | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        latency_ms: float = 0.0,
    ) -> Decision:
        return self._append(
            Decision(
                run_id=run_id,
                agent=agent,
                action=action,
                rationale=rationale,
                evidence=dumps(evidence),
                backend=backend,
                llm_model=llm_model,
                fallback=fallback,
                flags=dumps(flags or []),
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                latency_ms=round(latency_ms, 2),
            )
        )

    def record_tool_call(
        self,
        run_id: str,
        agent: str,
        tool: str,
        args: dict[str, Any],
        result: Any,
        *,
        ok: bool,
        latency_ms: float,
    ) -> ToolCall:
        return self._append(
            ToolCall(
                run_id=run_id,
                agent=agent,
                tool=tool,
                args=dumps(args),
                result=dumps(result),
                ok=ok,
                latency_ms=round(latency_ms, 2),
            )
        )

    def record_champion(
        self, model: str, version: int, previous: int | None, action: str, run_id: str, actor: str
    ) -> ChampionChange:
        return self._append(
            ChampionChange(
                model=model,
                version=version,
                previous_version=previous,
                action=action,
                run_id=run_id,
                actor=actor,
            )
        )

    # -- verification and export --------------------------------------------------------------

    def verify(self) -> VerifyResult:
        """Walk every chain from its genesis; name the first row whose link or hash is wrong."""
        checked: dict[str, int] = {}
        for model in CHAINED:
            name = model.__tablename__
            prev = GENESIS
            count = 0
            for row in self.list_rows(model, order=model.id):
                count += 1
                reason = _broken(row, prev)
                if reason is not None:
                    return VerifyResult(
                        ok=False,
                        checked={**checked, name: count},
                        first_broken=BrokenLink(table=name, row_id=row.id, reason=reason),
                    )
                prev = row.hash
            checked[name] = count
        return VerifyResult(ok=True, checked=checked)

    def export(self, run_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Every chained row (optionally of one run) as dicts, table by table, in order."""
        for model in CHAINED:
            where = [model.run_id == run_id] if run_id else []
            for row in self.list_rows(model, *where, order=model.id):
                yield _row_dict(row)


def _link(session: Session, row: Any) -> None:
    """Give ``row`` the next id of its chain, the link to the last row and its hash; add it."""
    model = type(row)
    last = session.scalars(select(model).order_by(model.id.desc()).limit(1)).first()
    # The id is set here, not by the database: the hash covers it.
    row.id = (last.id if last is not None else 0) + 1
    row.prev_hash = last.hash if last is not None else GENESIS
    row.created_at = now()
    row.hash = _row_hash(row)
    session.add(row)


def _broken(row: Any, prev: str) -> str | None:
    """Why ``row`` does not continue a chain whose previous hash is ``prev`` (None: it does)."""
    if row.prev_hash != prev:
        return "prev_hash does not match the previous row (a row was deleted or inserted)"
    if _row_hash(row) != row.hash:
        return "content does not match its hash (row edited)"
    return None


def _canonical(column: Any, value: Any) -> Any:
    # Values are hashed as the database gives them back (3 -> 3.0 in a Float column, etc.).
    if value is None:
        return None
    kind = column.type.python_type
    return kind(value) if kind in (int, float, bool, str) else value


def _row_hash(row: Any) -> str:
    table = row.__table__
    content = {
        c.name: _canonical(c, getattr(row, c.name)) for c in table.columns if c.name != "hash"
    }
    return hashlib.sha256(f"{table.name}|{dumps(content)}".encode()).hexdigest()


def _row_dict(row: Any) -> dict[str, Any]:
    return {
        "table": row.__tablename__,
        **{c.name: getattr(row, c.name) for c in row.__table__.columns},
    }
