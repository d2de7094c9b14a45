"""The audit database's engine: opening (and migrating) it, its transactions, and the clock.

The schema is created and upgraded by Alembic (``migrations/``) when the store opens.
SQLite by default; any SQLAlchemy URL (PostgreSQL) works. SQLite runs in WAL mode and takes
the write lock at BEGIN for write transactions (never for reads).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.core.errors import AuditWriteError

T = TypeVar("T")
Clock = Callable[[], datetime]  # the current time, timezone-aware
_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATE = zlib.crc32(b"driftpilot:audit-migrations")  # PostgreSQL advisory lock key

# True inside a read transaction: SQLite then begins without taking the write lock.
_READ_ONLY: ContextVar[bool] = ContextVar("driftpilot_read_only", default=False)


def utc_now() -> datetime:
    """The real clock (the store's default)."""
    return datetime.now(UTC)


def stamp(moment: datetime) -> str:
    """A time as the store writes it: ISO 8601 in UTC, to the microsecond (sorts as text)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def now() -> str:
    return stamp(utc_now())


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class Database:
    """Opens (and migrates) the audit database; its transactions.

    ``clock``: what the store reads the time from where a time decides something (lease
    expiry); the real clock unless a test passes one it can advance.
    """

    def __init__(self, url: str, *, clock: Clock = utc_now) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.clock = clock
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


def _begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN" if _READ_ONLY.get() else "BEGIN IMMEDIATE")


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    connection.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN IMMEDIATE
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
