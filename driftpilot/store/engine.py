"""The audit database's engine: opening (and migrating) it, its transactions, and the clock.

The schema is created and upgraded by Alembic (``migrations/``) when the store opens.
SQLite by default; any SQLAlchemy URL (PostgreSQL) works. SQLite runs in WAL mode and takes
the write lock at BEGIN for write transactions (never for reads); within a process, writers
of one database file queue on a lock of the process first (``_writer_lock``). A write waits
for both locks within one deadline (``BUSY_TIMEOUT_MS``; ``write_deadline`` spans retries).
"""

from __future__ import annotations

import ast
import json
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.core.errors import AuditWriteError
from driftpilot.store.writers import WriterQueue

T = TypeVar("T")
Clock = Callable[[], datetime]  # the current time, timezone-aware
_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATE = zlib.crc32(b"driftpilot:audit-migrations")  # PostgreSQL advisory lock key

# True inside a read transaction: SQLite then begins without taking the write lock.
_READ_ONLY: ContextVar[bool] = ContextVar("driftpilot_read_only", default=False)
BUSY_TIMEOUT_MS = 10_000  # how long a write waits for this process's and SQLite's locks together
# When the current write stops waiting for locks (time.monotonic()); None: no write under way.
_DEADLINE: ContextVar[float | None] = ContextVar("driftpilot_write_deadline", default=None)
_WRITERS: dict[str, WriterQueue] = {}  # SQLite file -> its writers' queue in this process
_WRITERS_GUARD = threading.Lock()


def _writer_lock(url: str) -> WriterQueue:
    """The queue the writers of one SQLite file take before BEGIN IMMEDIATE (threads of this
    process on a lock, processes on a lock of a file beside it: ``driftpilot.store.writers``).

    Why: a writer that finds SQLite's lock taken sleeps in SQLite's busy handler by steps of
    1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms, however soon the lock is free: behind a
    run's 10-40 ms commits a request waited 53, 78 or 103 ms (issue 23: run creation's p99).
    Queued on a lock of the process, it starts the moment the writer before it commits.
    Re-entrant: a thread inside a write transaction that opens another one reaches SQLite's
    lock, as it did."""
    path = Path(url.removeprefix("sqlite:///")).resolve()
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(str(path), WriterQueue(path))


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
        self._writers: WriterQueue | None = None
        if self.engine.dialect.name == "sqlite":
            if url.startswith("sqlite:///") and ":memory:" not in url:
                self._writers = _writer_lock(url)
            event.listen(self.engine, "connect", _sqlite_pragmas)
            # Every transaction takes the write lock at BEGIN: a deferred read-then-write
            # transaction gets SQLITE_BUSY at once when another process writes, without waiting.
            event.listen(self.engine, "begin", _begin_immediate)
        if not self.at_head():
            self.upgrade()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def at_head(self) -> bool:
        """Whether the schema is at the newest revision of ``migrations/`` already. Checked
        with one query before Alembic is imported: Alembic and its migration scripts take
        about half a second to load, the most of what a read-only command (``driftpilot
        runs``) spends opening the store. False when unsure (no single head found in the
        files, no version table): then ``upgrade`` decides."""
        head = head_revision()
        if head is None:
            return False
        with self._reading_connection() as conn:  # SQLite: no write lock for a look
            if not inspect(conn).has_table("alembic_version"):
                return False
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
            return list(versions) == [head]

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
        with self._queued(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def write_deadline(self) -> Iterator[None]:
        """The writes inside wait for locks ``BUSY_TIMEOUT_MS`` in all, however many they are
        (a write retried after a lock timeout waits only for what is left, then fails at
        once). Nested: the outermost deadline holds."""
        if _DEADLINE.get() is not None:
            yield
            return
        token = _DEADLINE.set(time.monotonic() + BUSY_TIMEOUT_MS / 1000)
        try:
            yield
        finally:
            _DEADLINE.reset(token)

    @contextmanager
    def _queued(self) -> Iterator[None]:
        """A write transaction on SQLite waits for the other writers of this process first
        (``_writer_lock``), then for SQLite's lock (at BEGIN IMMEDIATE) for what is left of
        one deadline (``write_deadline``'s, else ``BUSY_TIMEOUT_MS`` from now): the two
        waits never add up. Reads and other databases do not queue.

        Raises:
            OperationalError: the writers before it held the lock past the deadline (as
                SQLite would have said).
        """
        if self.engine.dialect.name != "sqlite" or _READ_ONLY.get():
            yield
            return
        with self.write_deadline():
            lock = self._writers
            if lock is not None and not lock.acquire(timeout=_left_s()):
                raise OperationalError(
                    "BEGIN IMMEDIATE", None, Exception("database is locked (by this process)")
                )
            try:
                yield
            finally:
                if lock is not None:
                    lock.release()


_REVISION = re.compile(r"^(down_)?revision\b[^=\n]*=\s*(.+?)\s*$", re.MULTILINE)


def head_revision(versions: Path = _MIGRATIONS / "versions") -> str | None:
    """The one revision no migration revises, read from the ``revision`` and
    ``down_revision`` assignments of the migration files (None: not exactly one head, or a
    file this reading does not understand, such as a merge of several revisions)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for script in versions.glob("*.py"):
        found = {bool(down): _literal(v) for down, v in _REVISION.findall(script.read_text())}
        revision, down_revision = found.get(False), found.get(True, ...)
        if not isinstance(revision, str) or not isinstance(down_revision, str | None):
            return None
        revisions.add(revision)
        if down_revision is not None:
            revised.add(down_revision)
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


def _literal(source: str) -> object:
    """The Python literal ``source`` spells, or an ``Ellipsis`` for an expression that is not
    one (a name, a call), which ``head_revision`` takes for a file it does not understand."""
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError):  # not a literal: head_revision leaves it to Alembic
        return ...


def write_time_left() -> float:
    """Seconds the current write may still wait for a lock (a full busy timeout outside a
    write): what a lock taken before the database's must bound its wait by."""
    return _left_s()


def _left_s() -> float:
    """Seconds left before the current write's deadline (0 when past it; a full busy
    timeout outside a write)."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return BUSY_TIMEOUT_MS / 1000
    return max(0.0, deadline - time.monotonic())


def _begin_immediate(connection: Any) -> None:
    # SQLite's busy handler waits only for what the process's queue left of the deadline; a
    # read gets the full timeout back if a write on this connection had shortened it.
    busy_ms = BUSY_TIMEOUT_MS if _READ_ONLY.get() else round(_left_s() * 1000)
    if connection.info.get("busy_ms", BUSY_TIMEOUT_MS) != busy_ms:
        connection.exec_driver_sql(f"PRAGMA busy_timeout={busy_ms}")
        connection.info["busy_ms"] = busy_ms
    connection.exec_driver_sql("BEGIN" if _READ_ONLY.get() else "BEGIN IMMEDIATE")


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    connection.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN IMMEDIATE
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()
