"""The audit store: runs, batches, hash-chained decisions / tool calls / approvals /
champion changes, and the idempotency ledger of mutating steps.

The schema is created and upgraded by Alembic (``migrations/``) when the store opens.
SQLite by default; any SQLAlchemy URL (PostgreSQL) works.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import and_, bindparam, create_engine, event, func, or_, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, aliased, sessionmaker

from driftpilot.core.errors import (
    ApprovalError,
    AuditWriteError,
    ConfigError,
    InvalidPrincipal,
    ModelBusy,
    NotFound,
)
from driftpilot.core.identity import ROLES, normalize_principal, same_person
from driftpilot.store.models import (
    CHAINED,
    ApiKey,
    Approval,
    BatchRecord,
    ChampionChange,
    Decision,
    Lease,
    ManagedModel,
    Mutation,
    Run,
    StepEffect,
    ToolCall,
)

GENESIS = "0" * 64
T = TypeVar("T")
_MIGRATIONS = Path(__file__).parent / "migrations"
_CHAIN_LOCK = threading.Lock()  # one chained insert at a time within a process
_MIGRATE = zlib.crc32(b"driftpilot:audit-migrations")  # PostgreSQL advisory lock key


# The lease acquisition this thread's run works under (set by the service's LeaseKeeper):
# mutations are fenced on it, so a process whose lease was taken over stops mutating.
_READ_ONLY: ContextVar[bool] = ContextVar("driftpilot_read_only", default=False)
lease_holder: ContextVar[str | None] = ContextVar("driftpilot_lease_holder", default=None)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def promotion_action(model: str, version: int, replaces: int | None) -> dict[str, Any]:
    """The action a promotion approval is about: move ``champion`` of ``model`` to ``version``,
    replacing exactly the champion ``replaces`` (None: there was none)."""
    return {
        "op": "promote",
        "model": model,
        "version": int(version),
        "alias": "champion",
        "replaces": replaces,
    }


def action_hash(action: dict[str, Any]) -> str:
    """The digest an approval is bound to: the exact action (model, version, alias, the
    champion it replaces). An approval of one action cannot be replayed onto another."""
    return hashlib.sha256(f"action|{dumps(action)}".encode()).hexdigest()


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
            # Every transaction takes the write lock at BEGIN: a deferred read-then-write
            # transaction gets SQLITE_BUSY at once when another process writes, without waiting.
            event.listen(self.engine, "begin", _begin_immediate)
        self.upgrade()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def upgrade(self) -> None:
        """Bring the schema to the newest Alembic revision. On PostgreSQL one process at a
        time (a transaction advisory lock): replicas and workers starting together on a fresh
        database would otherwise all run the same CREATE TABLEs."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with self.engine.begin() as connection:
            if self.engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATE})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write transaction. SQLite takes the write lock at BEGIN (a transaction that reads
        then writes cannot deadlock); a lock not granted within the busy timeout is an
        AuditWriteError, never a raw driver error."""
        try:
            with self._transaction() as session:
                yield session
        except OperationalError as exc:
            raise AuditWriteError(f"the audit database refused a write: {exc.orig}") from exc

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read transaction: one consistent snapshot that takes no write lock, so readers
        (the API, verify) never wait for a run's writes."""
        token = _READ_ONLY.set(True)
        try:
            with self._transaction() as session:
                yield session
        finally:
            _READ_ONLY.reset(token)

    @contextmanager
    def _reading_connection(self) -> Iterator[Any]:
        """A Core connection in a read transaction (no ORM session, no write lock)."""
        token = _READ_ONLY.set(True)
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        finally:
            _READ_ONLY.reset(token)

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    # -- chained, append-only records -------------------------------------------------------

    def _append(self, row: T, check: Callable[[Session], None] | None = None) -> T:
        """Append a row to its chain. Safe across processes: SQLite transactions take the write
        lock at BEGIN, PostgreSQL takes a per-table advisory lock; a lock held past the busy
        timeout is retried, then reported as AuditWriteError (never a raw driver error).
        ``check`` runs under that lock, before the row is added: what it reads cannot change
        before the row is in (it raises to refuse the append)."""
        model = type(row)
        for attempt in range(4):
            try:
                with _CHAIN_LOCK, self._transaction() as session:
                    self._lock_chain(session, model.__tablename__)  # type: ignore[attr-defined]
                    if check is not None:
                        check(session)
                    last = session.scalars(
                        select(model).order_by(model.id.desc()).limit(1)  # type: ignore[attr-defined]
                    ).first()
                    # The id is set here, not by the database: the hash covers it.
                    row.id = (last.id if last is not None else 0) + 1  # type: ignore[attr-defined]
                    row.prev_hash = last.hash if last is not None else GENESIS  # type: ignore[attr-defined]
                    row.created_at = now()  # type: ignore[attr-defined]
                    row.hash = _row_hash(row)  # type: ignore[attr-defined]
                    session.add(row)
                return row
            except (OperationalError, SQLIntegrityError) as exc:
                if attempt == 3:
                    raise AuditWriteError(
                        f"could not append to {model.__tablename__} "  # type: ignore[attr-defined]
                        f"after {attempt + 1} tries: {exc.orig}"
                    ) from exc
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

    def request_approval(
        self,
        run_id: str,
        requester: str,
        payload: dict[str, Any],
        action: dict[str, Any],
        *,
        step: str = "promotion",
    ) -> Approval:
        """Open an approval request for ``action`` at ``step`` of the run (once per step: a
        second request for the same step returns the first). A run asks at most once per
        step: whether to accept a batch as the new normal (``escalation``), then whether to
        promote (``promotion``); each question is answered before the next is asked.

        The request stores the action and its hash; the decision will be bound to that hash.
        """
        with self.reading() as session:
            asked = session.scalars(
                select(Approval)
                .where(Approval.run_id == run_id, Approval.kind == "request")
                .order_by(Approval.id)
            ).all()
        for row in asked:
            if json.loads(row.payload).get("step", "promotion") == step:
                return row
        body = {**payload, "step": step, "action": action, "action_hash": action_hash(action)}
        return self._append(
            Approval(
                run_id=run_id,
                kind="request",
                principal=normalize_principal(requester),
                decision="pending",
                comment="",
                payload=dumps(body),
            )
        )

    def decide_approval(
        self,
        run_id: str,
        approver: str,
        decision: str,
        comment: str = "",
        *,
        step: str | None = None,
    ) -> Approval:
        """Record a person's answer to a pending request, bound to the requested action.

        ``step`` names the question the person answered (``escalation`` or ``promotion``, as
        the request they were shown says): a run that has moved on to another question since
        refuses the answer, so an approval of one question never authorises the next.

        Raises:
            NotFound: the run has no approval request.
            InvalidPrincipal: the approver's name is empty, blank or has invisible characters.
            ApprovalError: already decided, unknown decision, the approver is the requester,
                or the run now asks another question than ``step``.
        """
        if decision not in ("approve", "reject"):
            raise ApprovalError(f"decision must be 'approve' or 'reject', got {decision!r}")
        approver = normalize_principal(approver)
        rows = self.approval_rows(run_id)
        if not rows:
            raise NotFound(f"run {run_id} has no approval request")
        check_step(run_id, rows[0], step)
        if len(rows) > 1:
            raise ApprovalError(
                f"run {run_id} was already decided: {rows[1].decision} by {rows[1].principal}"
            )
        if same_person(approver, rows[0].principal):
            raise ApprovalError(f"{approver!r} asked for this and cannot approve it")
        bound = json.loads(rows[0].payload).get("action_hash", "")

        def first_decision(session: Session) -> None:
            # Two approvers answering at once: the second finds the first's row here.
            earlier = session.scalars(
                select(Approval).where(
                    Approval.run_id == run_id,
                    Approval.kind == "decision",
                    Approval.id > rows[0].id,
                )
            ).first()
            if earlier is not None:
                raise ApprovalError(
                    f"run {run_id} was already decided: {earlier.decision} by {earlier.principal}"
                )

        return self._append(
            Approval(
                run_id=run_id,
                kind="decision",
                principal=approver,
                decision=decision,
                comment=comment,
                payload=dumps({"action_hash": bound}),
            ),
            check=first_decision,
        )

    def approval_rows(self, run_id: str) -> list[Approval]:
        """The run's current approval: its latest request, then the decision on it (if any).
        Earlier questions of the run, already answered, are not part of it."""
        with self.reading() as session:
            rows = list(
                session.scalars(
                    select(Approval).where(Approval.run_id == run_id).order_by(Approval.id)
                )
            )
        return _from_last_request(rows)

    def approval_problem(
        self, run_id: str, action: dict[str, Any], *, unbound_ok: bool = False
    ) -> str | None:
        """Why the run's approval does not authorise ``action`` (None: it does).

        It does when the request was for exactly this action, the decision is 'approve', and
        the approver is not the requester under the one identity rule. ``unbound_ok`` accepts
        approvals written before approvals were bound to their action (verify reads old homes
        with it; the promotion gate never does)."""
        rows = self.approval_rows(run_id)
        if len(rows) < 2:
            return "no approval decision on record"
        request, answer = rows[0], rows[1]
        if answer.decision != "approve":
            return f"the request was {answer.decision}ed by {answer.principal}"
        try:
            if same_person(answer.principal, request.principal):
                return f"{answer.principal!r} approved their own request"
        except InvalidPrincipal as exc:  # a row written around the entry points
            return f"the approval names an invalid principal: {exc}"
        wanted = action_hash(action)
        bound = {json.loads(r.payload).get("action_hash") for r in (request, answer)}
        if unbound_ok and bound == {None}:
            return None
        if bound != {wanted}:
            return "the approval was given for a different action (model, version or champion)"
        return None

    def pending_approvals(self) -> list[Approval]:
        with self.reading() as session:
            rows = list(session.scalars(select(Approval).order_by(Approval.id)))
        current: dict[str, list[Approval]] = {}
        for row in rows:  # per run, the rows from its latest request on
            if row.kind == "request":
                current[row.run_id] = [row]
            elif row.run_id in current:
                current[row.run_id].append(row)
        return sorted((r[0] for r in current.values() if len(r) == 1), key=lambda r: r.id)

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
        with self.reading() as session:
            row = session.scalars(
                select(ChampionChange)
                .where(ChampionChange.model == model, ChampionChange.created_at <= stamp)
                .order_by(ChampionChange.id.desc())
                .limit(1)
            ).first()
        return row.version if row else None

    # -- leases: one run per model ---------------------------------------------------------------

    def acquire_lease(self, model: str, run_id: str, holder: str, ttl_s: float) -> Lease:
        """Take (or renew) the model's lease for ``run_id``.

        Raises:
            ModelBusy: another run holds an unexpired lease on the model.
        """
        stamp = now()
        expires = _later(ttl_s)
        try:
            with self.session() as session:
                row = session.get(Lease, model, with_for_update=True)
                if row is None:
                    row = Lease(
                        model=model,
                        run_id=run_id,
                        holder=holder,
                        acquired_at=stamp,
                        expires_at=expires,
                    )
                    session.add(row)
                    return row
                # A live lease is the holder's: even the same run may not be driven by a
                # second process (two recovers, a retried decide) until it expires.
                if row.expires_at > stamp and (row.run_id != run_id or row.holder != holder):
                    raise ModelBusy(
                        f"model {model!r} is busy: run {row.run_id[:12]} ({row.holder}) holds "
                        f"its lease until {row.expires_at[:19]}; retry later or wait (--wait)"
                    )
                if row.run_id != run_id:
                    row.acquired_at = stamp
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
            row.expires_at = _later(ttl_s)
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
        return row is not None and _matches(row, run_id, holder) and row.expires_at > now()

    def champion_generation(self, model: str) -> int:
        """The id of the model's latest champion change (0: none): it moves with every
        promotion and rollback, so a replay can tell that the champion changed meanwhile."""
        with self.reading() as session:
            latest = session.scalar(
                select(func.max(ChampionChange.id)).where(ChampionChange.model == model)
            )
        return int(latest or 0)

    # -- write-ahead mutations ------------------------------------------------------------------

    def record_mutation(
        self,
        run_id: str,
        step: str,
        action: str,
        phase: str,
        args: dict[str, Any],
        result: Any = None,
    ) -> Mutation:
        """Append an ``intent`` (before a registry mutation) or its end: ``applied``,
        ``reconciled`` (found done on resume) or ``void`` (refused, nothing changed)."""
        return self._append(
            Mutation(
                run_id=run_id,
                step=step,
                action=action,
                phase=phase,
                args=dumps(args),
                result=dumps(result),
            )
        )

    def last_mutation(self, run_id: str, step: str) -> Mutation | None:
        """The newest write-ahead row of (run, step), if the step was ever attempted."""
        rows = self.list_rows(
            Mutation,
            Mutation.run_id == run_id,
            Mutation.step == step,
            order=Mutation.id.desc(),
            limit=1,
        )
        return rows[0] if rows else None

    def open_intent(self, run_id: str, step: str) -> Mutation | None:
        """The intent of (run, step) that has no end row yet: it may or may not have happened."""
        last = self.last_mutation(run_id, step)
        return last if last is not None and last.phase == "intent" else None

    def open_intents(self) -> list[Mutation]:
        """Every intent still without its end row (a crash between intent and effect)."""
        later = aliased(Mutation)
        ended = (
            select(later.id)
            .where(later.run_id == Mutation.run_id, later.step == Mutation.step)
            .where(later.id > Mutation.id)
            .exists()
        )
        return self.list_rows(Mutation, Mutation.phase == "intent", ~ended, order=Mutation.id)

    # -- api keys -------------------------------------------------------------------------------

    def create_api_key(self, principal: str, role: str) -> tuple[ApiKey, str]:
        """A new key for ``principal`` with ``role``; returns the row and the secret (shown
        once: only its SHA-256 is stored).

        Raises:
            InvalidPrincipal: the name is empty, blank or has invisible characters.
            ConfigError: unknown role.
        """
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        key_id = secrets.token_hex(6)
        secret = f"dp_{key_id}_{secrets.token_urlsafe(24)}"
        row = ApiKey(
            id=key_id,
            principal=normalize_principal(principal),
            role=role,
            secret_hash=_secret_hash(secret),
            created_at=now(),
            revoked_at=None,
        )
        self.add(row)
        return row, secret

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key whose secret this is (None: unknown or revoked)."""
        table = ApiKey.__table__
        with self._reading_connection() as conn:
            found = (
                conn.execute(select(table).where(table.c.secret_hash == _secret_hash(secret)))
                .mappings()
                .first()
            )
        if found is None or found["revoked_at"] is not None:
            return None
        return ApiKey(**found)

    def revoke_api_key(self, key_id: str) -> ApiKey:
        return self._update(ApiKey, key_id, {"revoked_at": now()})

    # -- idempotency ledger -------------------------------------------------------------------

    def effect(self, run_id: str, step: str) -> dict[str, Any] | None:
        """The recorded result of a mutating step, if it already ran."""
        with self.reading() as session:
            row = session.scalars(
                select(StepEffect).where(StepEffect.run_id == run_id, StepEffect.step == step)
            ).first()
        return json.loads(row.result) if row else None

    def record_effect(self, run_id: str, step: str, result: dict[str, Any]) -> None:
        """Remember what a step did; a replay that records it again keeps the first record."""
        with self.session() as session:
            exists = session.scalar(
                select(StepEffect.id).where(StepEffect.run_id == run_id, StepEffect.step == step)
            )
            if exists is not None:
                return
            session.add(
                StepEffect(run_id=run_id, step=step, result=dumps(result), created_at=now())
            )

    # -- runs, batches, models -----------------------------------------------------------------

    def add(self, row: Any) -> Any:
        with self.session() as session:
            session.add(row)
        return row

    def get(self, model: type[T], key: Any) -> T:
        with self.reading() as session:
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

    def transition_run(self, run_id: str, expected: str, **fields: Any) -> bool:
        """Compare-and-set: update the run only if its status is still ``expected``."""
        with self.session() as session:
            done = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == expected)
                .values(**fields, updated_at=now())
            )
            return getattr(done, "rowcount", 0) == 1

    def query_runs(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        outcome: str | None = None,
        requested_by: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before: tuple[str, str] | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Runs newest first, filtered in SQL; ``before`` = (created_at, id) of the last run
        of the previous page (a cursor that stays put while runs are added)."""
        query = select(Run)
        for column, value in (
            (Run.model, model),
            (Run.status, status),
            (Run.outcome, outcome),
            (Run.requested_by, requested_by),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(Run.created_at >= since)
        if until is not None:
            query = query.where(Run.created_at < until)
        if before is not None:
            query = query.where(
                or_(
                    Run.created_at < before[0],
                    and_(Run.created_at == before[0], Run.id < before[1]),
                )
            )
        query = query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)
        with self.reading() as session:
            return list(session.scalars(query))

    def model_run_ids(self, model: str) -> set[str]:
        """Every run id the audit files under ``model``: its control runs, its bootstrap and
        its rollbacks (named in its champion history)."""
        with self.reading() as session:
            runs = set(session.scalars(select(Run.id).where(Run.model == model)))
            changes = set(
                session.scalars(select(ChampionChange.run_id).where(ChampionChange.model == model))
            )
        return runs | changes

    def query_audit(
        self,
        *,
        run_ids: set[str] | None = None,
        table: str | None = None,
        agent: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after: tuple[str, int] | None = None,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Chained rows table by table in chain order, filtered in SQL; ``after`` = (table,
        id) of the last row of the previous page. Returns the page and whether more follow.

        Raises:
            ConfigError: unknown table or cursor table.
        """
        names = [m.__tablename__ for m in CHAINED]
        for name in (table, after[0] if after else None):
            if name is not None and name not in names:
                raise ConfigError(f"unknown audit table {name!r}; tables: {', '.join(names)}")
        start = names.index(after[0]) if after else 0
        rows: list[dict[str, Any]] = []
        ids = sorted(run_ids) if run_ids is not None else None
        params: dict[str, Any] = {
            "after": after[1] if after else 0,
            "run_id": ids[0] if ids and len(ids) == 1 else None,
            "run_ids": ids,
            "agent": agent,
            "since": since,
            "until": until,
        }
        shape = (
            "one" if ids is not None and len(ids) == 1 else "many" if ids is not None else "",
            agent is not None,
            since is not None,
            until is not None,
        )
        # Core statements built once per filter shape, on one read connection: the ORM cost
        # ~10x the queries themselves.
        with self._reading_connection() as conn:
            for model in CHAINED[start:]:
                name = model.__tablename__
                if table is not None and name != table:
                    continue
                if agent is not None and not hasattr(model, "agent"):
                    continue
                query = _audit_statement(name, after is not None and name == after[0], shape)
                found = conn.execute(query, {**params, "limit": limit + 1 - len(rows)})
                rows += [{"table": name, **row} for row in found.mappings()]
                if len(rows) > limit:
                    break
        return rows[:limit], len(rows) > limit

    def update_run(self, run_id: str, **fields: Any) -> Run:
        if "summary" in fields:
            fields["summary"] = dumps(fields["summary"])
        return self._update(Run, run_id, {**fields, "updated_at": now()})

    def update_model(self, name: str, **fields: Any) -> ManagedModel:
        return self._update(ManagedModel, name, fields)

    def list_rows(
        self, model: type[T], *where: Any, order: Any = None, limit: int | None = None
    ) -> list[T]:
        """Rows of ``model`` matching ``where``, in ``order`` (default: primary key, so the
        order is the insertion order of chained rows on every database: PostgreSQL, unlike
        SQLite, returns an unordered select in no particular order)."""
        with self.reading() as session:
            key = model.__table__.primary_key.columns.values()[0]  # type: ignore[attr-defined]
            query = select(model).where(*where).order_by(order if order is not None else key)
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
            tier = tiers.get(change.run_id)
            if tier is None:
                problems.append(f"{label} has no risk assessment in run {change.run_id}")
                continue
            if tier == "risk:low":
                continue
            action = promotion_action(change.model, change.version, change.previous_version)
            why = self.approval_problem(change.run_id, action, unbound_ok=True)
            if why is not None:
                problems.append(f"{label} was rated {tier} but is not approved: {why}")
        return problems

    def logged_versions(self, model: str) -> set[int]:
        """Versions of ``model`` whose registration has its (successful) tool call."""
        found: set[int] = set()
        for call in self.list_rows(
            ToolCall, ToolCall.tool == "registry.register_model", ToolCall.ok.is_(True)
        ):
            result = json.loads(call.result)
            if isinstance(result, dict) and result.get("name") == model:
                found.add(int(result["version"]))
        return found

    def export(self, run_id: str | None = None) -> Iterator[dict[str, Any]]:
        """Every chained row (optionally of one run) as dicts, table by table, in order."""
        for model in CHAINED:
            where = [model.run_id == run_id] if run_id else []
            for row in self.list_rows(model, *where, order=model.id):
                yield _row_dict(row)


@functools.lru_cache(maxsize=256)
def _audit_statement(name: str, after: bool, shape: tuple[str, bool, bool, bool]) -> Any:
    """The select of one chained table for one filter shape, with bound parameters."""
    runs, agent, since, until = shape
    table = next(m.__table__ for m in CHAINED if m.__tablename__ == name)
    c = table.c
    query = select(table)
    if after:
        query = query.where(c.id > bindparam("after"))
    if runs == "one":
        query = query.where(c.run_id == bindparam("run_id"))
    elif runs == "many":
        query = query.where(c.run_id.in_(bindparam("run_ids", expanding=True)))
    if agent:
        query = query.where(c.agent == bindparam("agent"))
    if since:
        query = query.where(c.created_at >= bindparam("since"))
    if until:
        query = query.where(c.created_at < bindparam("until"))
    return query.order_by(c.id).limit(bindparam("limit"))


def _row_dict(row: Any) -> dict[str, Any]:
    return {
        "table": row.__tablename__,
        **{c.name: getattr(row, c.name) for c in row.__table__.columns},
    }


def _matches(row: Lease, run_id: str, holder: str | None) -> bool:
    return row.run_id == run_id and (holder is None or row.holder == holder)


def _secret_hash(secret: str) -> str:
    # Secrets are 190 random bits: a fast hash is enough (no dictionary to guess from).
    return hashlib.sha256(secret.encode()).hexdigest()


def _later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def _begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN" if _READ_ONLY.get() else "BEGIN IMMEDIATE")


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    connection.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN IMMEDIATE
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _from_last_request(rows: list[Approval]) -> list[Approval]:
    starts = [i for i, row in enumerate(rows) if row.kind == "request"]
    return rows[starts[-1] :] if starts else rows


def request_step(request: Approval) -> str:
    """The question an approval request asks: ``escalation`` or ``promotion``."""
    return str(json.loads(request.payload).get("step", "promotion"))


def check_step(run_id: str, request: Approval, step: str | None) -> None:
    """Refuse an answer given to another question than the run's current one."""
    current = request_step(request)
    if step is not None and step != current:
        raise ApprovalError(
            f"run {run_id} now asks about its {current}, not its {step}: the answer was given "
            "to an earlier question and is not recorded; look at the run again"
        )
