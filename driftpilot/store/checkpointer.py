"""The LangGraph checkpointer of the control graph, chosen by ``Settings.checkpoint_url``.

- ``sqlite:///<file>`` (the embedded default, ``checkpoint_path``): ``SqliteSaver`` on one
  connection shared by the graph's threads.
- ``postgresql://...`` (also ``postgresql+psycopg://``): ``PostgresSaver``
  (langgraph-checkpoint-postgres 3.2) on a psycopg connection pool, so concurrent runs in one
  process each get their own connection. The saver needs autocommit connections with dict
  rows and no server-side prepared statements (``prepare_threshold=0``: a pooled connection
  must not carry prepared statements across users); its tables are created once by
  ``setup()``, under an advisory lock so two processes starting at once do not race.

psycopg and the savers are imported inside the functions: nothing heavy at import time.
"""

from __future__ import annotations

import sqlite3
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from driftpilot.core.errors import ConfigError, NotFound
from driftpilot.core.settings import Settings, is_postgres, libpq_url

# The same key in every process: setup() of the checkpoint tables runs once at a time.
_SETUP_LOCK = zlib.crc32(b"driftpilot:langgraph-checkpoint-setup")
SETUP_WAIT_S = 120.0  # longest wait for another process's setup of the checkpoint tables
POOL_MAX = 8  # connections per process: one per concurrently checkpointing run, plus readers


@dataclass
class Checkpointer:
    """A LangGraph checkpoint saver and what it holds open; ``close()`` releases it."""

    saver: Any
    close: Callable[[], None]
    kind: str  # "sqlite" | "postgresql"


def open_checkpointer(settings: Settings, *, read_only: bool = False) -> Checkpointer:
    """Open the checkpointer ``settings.checkpoint_url`` names.

    ``read_only``: a reader that cannot write (SQLite ``mode=ro``; PostgreSQL sessions with
    ``default_transaction_read_only``), for replays; it creates nothing.

    Raises:
        NotFound: ``read_only`` and there is no checkpoint database (or no checkpoint tables).
        ConfigError: the URL is neither SQLite nor PostgreSQL, or PostgreSQL cannot be reached.
    """
    url = settings.checkpoint_url
    if is_postgres(url):
        return _postgres(libpq_url(url), read_only)
    if url.startswith("sqlite:///"):
        return _sqlite(url.removeprefix("sqlite:///"), read_only)
    raise ConfigError(f"checkpoint_url must be sqlite:///<file> or postgresql://..., got {url!r}")


def _sqlite(path: str, read_only: bool) -> Checkpointer:
    from pathlib import Path

    from langgraph.checkpoint.sqlite import SqliteSaver

    file = Path(path)
    if read_only:
        if not file.exists():
            raise NotFound(f"no checkpoint database at {file}")
        conn = sqlite3.connect(
            file.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False
        )
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(file, check_same_thread=False)
    return Checkpointer(SqliteSaver(conn), conn.close, "sqlite")


def _postgres(conninfo: str, read_only: bool) -> Checkpointer:
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    if read_only:
        kwargs["options"] = "-c default_transaction_read_only=on"
    try:
        if not read_only:
            _setup_once(conninfo, PostgresSaver)
        pool: Any = ConnectionPool(
            conninfo, min_size=1, max_size=POOL_MAX, kwargs=kwargs, open=True, timeout=30
        )
        pool.wait(timeout=30)
    except (psycopg.Error, TimeoutError) as exc:  # PoolTimeout is a psycopg.Error
        raise ConfigError(f"cannot open the PostgreSQL checkpointer: {exc}") from exc
    if read_only and not _has_tables(pool):
        pool.close()
        raise NotFound("no checkpoint tables in the PostgreSQL checkpoint database")
    return Checkpointer(PostgresSaver(pool), pool.close, "postgresql")


def _setup_once(conninfo: str, saver_type: Any) -> None:
    """Create or migrate the checkpoint tables, one process at a time (session lock).

    The lock is polled, not waited for: a session blocked in pg_advisory_lock holds a
    snapshot, and the holder's ``CREATE INDEX CONCURRENTLY`` (in setup()) waits for every
    snapshot to end: a deadlock. Between polls the waiting session is idle and holds none.

    Raises:
        TimeoutError: another process held the lock for SETUP_WAIT_S.
    """
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(
        conninfo, autocommit=True, prepare_threshold=0, row_factory=dict_row
    ) as conn:
        deadline = time.monotonic() + SETUP_WAIT_S
        while not _try_lock(conn):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the checkpoint tables' setup lock was held {SETUP_WAIT_S} s")
            time.sleep(0.05)
        saver_type(conn).setup()  # the lock goes with the connection


def _try_lock(conn: Any) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (_SETUP_LOCK,)).fetchone()
    return bool(row["got"])


def _has_tables(pool: Any) -> bool:
    with pool.connection() as conn:
        row = conn.execute("SELECT to_regclass('checkpoints') IS NOT NULL AS present").fetchone()
    return bool(row["present"])
