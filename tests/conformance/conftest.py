"""The backend every conformance test runs on: SQLite (a file in the test's directory) and
PostgreSQL (a fresh database on the session's server, ``tests/pg.py``), each test once per
backend (ids ``[sqlite]`` and ``[postgres]``; ``-k sqlite`` picks one).

Fixtures:

``backend`` -> :class:`Backend`
    ``name`` (``sqlite`` | ``postgres``) and ``url``, the SQLAlchemy URL of a database of its
    own with the audit schema: a new SQLite file, or on PostgreSQL a copy of a database
    migrated once per session (``CREATE DATABASE ... TEMPLATE``: the migrations run once, not
    per test; opening the store still runs the upgrade, a no-op at head).
``clock`` -> :class:`FakeClock`
    A clock that stands still until ``advance()``d: what lease expiry is judged by.
``store`` -> ``AuditStore``
    The audit store on the backend's database, on ``clock``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from driftpilot.store import AuditStore
from tests.pg import PostgresServer

BACKENDS = ("sqlite", "postgres")
START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Backend:
    name: str
    url: str


class FakeClock:
    """The time the store reads, moved only by the test."""

    def __init__(self, start: datetime = START) -> None:
        self.moment = start

    def __call__(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def migrated_template(postgres: PostgresServer) -> Iterator[str]:
    """The name of a PostgreSQL database with the audit schema, to copy for each test."""
    url = postgres.create_database()
    AuditStore(url).engine.dispose()  # no connection left: a template must have none
    name = url.rsplit("/", 1)[1]
    yield name
    postgres.drop_database(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'audit.db'}")
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    template = request.getfixturevalue("migrated_template")
    name = f"conformance_{uuid.uuid4().hex[:12]}"
    server.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield Backend("postgres", server.url(name))
    server.drop_database(name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(backend: Backend, clock: FakeClock) -> Iterator[AuditStore]:
    opened = AuditStore(backend.url, clock=clock)
    yield opened
    opened.engine.dispose()  # the PostgreSQL database is dropped next


def tamper(store: AuditStore, sql: str, trigger: str) -> None:
    """Change a chained table as someone with direct access to the database could: past its
    append-only trigger (dropped on SQLite, disabled by a superuser on PostgreSQL)."""
    table = trigger.rsplit("_no_", 1)[0]
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "sqlite":
            conn.execute(text(f"DROP TRIGGER {trigger}"))
            conn.execute(text(sql))
        else:
            conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}"))
            conn.execute(text(sql))
            conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}"))
