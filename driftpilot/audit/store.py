"""The audit store: runs, batches, hash-chained decisions / tool calls / approvals /
champion changes, and the idempotency ledger of mutating steps.

The schema is created and upgraded by Alembic (``migrations/``) when the store opens.
SQLite by default; any SQLAlchemy URL (PostgreSQL) works.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.audit.models import (
    CHAINED,
    Approval,
    BatchRecord,
    ChampionChange,
    Decision,
    ManagedModel,
    Run,
    StepEffect,
    ToolCall,
)
from driftpilot.errors import ApprovalError, NotFound

GENESIS = "0" * 64
T = TypeVar("T")
_MIGRATIONS = Path(__file__).parent / "migrations"
_CHAIN_LOCK = threading.Lock()  # one chained insert at a time within a process


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class BrokenLink(BaseModel):
    table: str
    row_id: int
    reason: str


class VerifyResult(BaseModel):
    """Result of walking every hash chain."""

    ok: bool
    checked: dict[str, int] = Field(description="Rows checked per table.")
    first_broken: BrokenLink | None = None


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


class AuditStore:
    """Opens (and migrates) the audit database; all writes go through here."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.engine: Engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.upgrade()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def upgrade(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # -- chained, append-only records -------------------------------------------------------

    def _append(self, row: T) -> T:
        with _CHAIN_LOCK, self.session() as session:
            model = type(row)
            last = session.scalars(select(model).order_by(model.id.desc()).limit(1)).first()  # type: ignore[attr-defined]
            # The id is set here, not by the database: the hash covers it and rows are never
            # updated after insert. A concurrent writer gets a primary-key conflict, not a fork.
            row.id = (last.id if last is not None else 0) + 1  # type: ignore[attr-defined]
            row.prev_hash = last.hash if last is not None else GENESIS  # type: ignore[attr-defined]
            row.created_at = now()  # type: ignore[attr-defined]
            row.hash = _row_hash(row)  # type: ignore[attr-defined]
            session.add(row)
        return row

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

    def request_approval(self, run_id: str, requester: str, payload: dict[str, Any]) -> Approval:
        """Open an approval request for a run (once: a second request returns the first)."""
        existing = self.approval_rows(run_id)
        if existing:
            return existing[0]
        return self._append(
            Approval(
                run_id=run_id,
                kind="request",
                principal=requester,
                decision="pending",
                comment="",
                payload=dumps(payload),
            )
        )

    def decide_approval(
        self, run_id: str, approver: str, decision: str, comment: str = ""
    ) -> Approval:
        """Record a person's answer to a pending request.

        Raises:
            NotFound: the run has no approval request.
            ApprovalError: already decided, unknown decision, or the approver is the requester.
        """
        if decision not in ("approve", "reject"):
            raise ApprovalError(f"decision must be 'approve' or 'reject', got {decision!r}")
        rows = self.approval_rows(run_id)
        if not rows:
            raise NotFound(f"run {run_id} has no approval request")
        if len(rows) > 1:
            raise ApprovalError(
                f"run {run_id} was already decided: {rows[1].decision} by {rows[1].principal}"
            )
        if approver.strip().lower() == rows[0].principal.strip().lower():
            raise ApprovalError(f"{approver!r} requested this promotion and cannot approve it")
        return self._append(
            Approval(
                run_id=run_id,
                kind="decision",
                principal=approver,
                decision=decision,
                comment=comment,
                payload="{}",
            )
        )

    def approval_rows(self, run_id: str) -> list[Approval]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(Approval).where(Approval.run_id == run_id).order_by(Approval.id)
                )
            )

    def approved_by_other(self, run_id: str) -> Approval | None:
        """The approving decision of a run, if given by someone other than the requester."""
        rows = self.approval_rows(run_id)
        if (
            len(rows) >= 2
            and rows[1].decision == "approve"
            and rows[1].principal != rows[0].principal
        ):
            return rows[1]
        return None

    def pending_approvals(self) -> list[Approval]:
        with self.session() as session:
            rows = list(session.scalars(select(Approval).order_by(Approval.id)))
        decided = {r.run_id for r in rows if r.kind == "decision"}
        return [r for r in rows if r.kind == "request" and r.run_id not in decided]

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

    def champion_at(self, model: str, when: datetime | str) -> int | None:
        """Which version was champion of ``model`` at time ``when`` (None: none yet)."""
        stamp = (
            when
            if isinstance(when, str)
            else when.astimezone(UTC).isoformat(timespec="microseconds")
        )
        with self.session() as session:
            row = session.scalars(
                select(ChampionChange)
                .where(ChampionChange.model == model, ChampionChange.created_at <= stamp)
                .order_by(ChampionChange.id.desc())
                .limit(1)
            ).first()
        return row.version if row else None

    # -- idempotency ledger -------------------------------------------------------------------

    def effect(self, run_id: str, step: str) -> dict[str, Any] | None:
        """The recorded result of a mutating step, if it already ran."""
        with self.session() as session:
            row = session.scalars(
                select(StepEffect).where(StepEffect.run_id == run_id, StepEffect.step == step)
            ).first()
        return json.loads(row.result) if row else None

    def record_effect(self, run_id: str, step: str, result: dict[str, Any]) -> None:
        with self.session() as session:
            session.add(
                StepEffect(run_id=run_id, step=step, result=dumps(result), created_at=now())
            )

    # -- runs, batches, models -----------------------------------------------------------------

    def add(self, row: Any) -> Any:
        with self.session() as session:
            session.add(row)
        return row

    def get(self, model: type[T], key: Any) -> T:
        with self.session() as session:
            row = session.get(model, key)
        if row is None:
            raise NotFound(f"no {model.__tablename__[:-1]} {key!r}")  # type: ignore[attr-defined]
        return row

    def _update(self, model: type[T], key: str, fields: dict[str, Any]) -> T:
        """Update a mutable row (runs, models; chained tables are never updated)."""
        with self.session() as session:
            row = session.get(model, key)
            if row is None:
                raise NotFound(f"no {model.__tablename__[:-1]} {key!r}")  # type: ignore[attr-defined]
            for name, value in fields.items():
                setattr(row, name, value)
        return row

    def update_run(self, run_id: str, **fields: Any) -> Run:
        if "summary" in fields:
            fields["summary"] = dumps(fields["summary"])
        return self._update(Run, run_id, {**fields, "updated_at": now()})

    def update_model(self, name: str, **fields: Any) -> ManagedModel:
        return self._update(ManagedModel, name, fields)

    def list_rows(
        self, model: type[T], *where: Any, order: Any = None, limit: int | None = None
    ) -> list[T]:
        with self.session() as session:
            query = select(model).where(*where)
            if order is not None:
                query = query.order_by(order)
            if limit is not None:
                query = query.limit(limit)
            return list(session.scalars(query))

    def seen_hashes(self, model: str) -> set[str]:
        rows = self.list_rows(
            BatchRecord, BatchRecord.model == model, BatchRecord.status == "accepted"
        )
        return {r.content_hash for r in rows}

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
                if row.prev_hash != prev:
                    return VerifyResult(
                        ok=False,
                        checked={**checked, name: count},
                        first_broken=BrokenLink(
                            table=name,
                            row_id=row.id,
                            reason="prev_hash does not match the previous row "
                            "(a row was deleted or inserted)",
                        ),
                    )
                if _row_hash(row) != row.hash:
                    return VerifyResult(
                        ok=False,
                        checked={**checked, name: count},
                        first_broken=BrokenLink(
                            table=name,
                            row_id=row.id,
                            reason="content does not match its hash (row edited)",
                        ),
                    )
                prev = row.hash
            checked[name] = count
        return VerifyResult(ok=True, checked=checked)

    def export(self, run_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Every chained row (optionally of one run) as dicts, table by table, in order."""
        for model in CHAINED:
            name = model.__tablename__
            where = [model.run_id == run_id] if run_id else []
            for row in self.list_rows(model, *where, order=model.id):
                yield {
                    "table": name,
                    **{c.name: getattr(row, c.name) for c in row.__table__.columns},
                }


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
