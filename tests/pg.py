"""A real PostgreSQL server for tests, started from Debian's binaries.

Interface (other test modules and helpers rely on it):

``postgres`` (pytest fixture, session scope) -> :class:`PostgresServer`
    One server per pytest session: ``initdb`` into a fresh temporary directory (as the
    ``postgres`` OS user when the tests run as root: ``initdb`` refuses root), ``pg_ctl`` on a
    free loopback port with its unix socket in that directory; stopped and deleted at the end
    of the session. Trust authentication on 127.0.0.1, superuser ``postgres``, durability
    off (fsync, synchronous_commit, full_page_writes: a test server loses nothing it needs).

``pg_url`` (pytest fixture, function scope) -> str
    A fresh, empty database on that server, as a SQLAlchemy URL
    ``postgresql+psycopg://postgres@127.0.0.1:<port>/<name>``; dropped (WITH FORCE) after the
    test. Several per test: call ``postgres.create_database()`` yourself.

:class:`PostgresServer`
    ``host``, ``port``, ``user``, ``socket_dir``, ``data_dir``;
    ``url(dbname, driver="psycopg")`` SQLAlchemy URL of a database (``driver=""`` gives the
    plain ``postgresql://`` form libpq/psycopg/procrastinate/Optuna accept);
    ``conninfo(dbname)`` a libpq conninfo string; ``create_database(name=None) -> str``
    (SQLAlchemy URL of a new empty database; a unique name when None);
    ``drop_database(name)``; ``psql(sql, dbname="postgres") -> str`` runs SQL as the
    superuser through ``psql`` (no Python driver needed) and returns its unaligned output.

:func:`start_postgres` (context manager)
    The same server outside pytest (benchmarks, scripts): ``with start_postgres() as pg:``.

:func:`find_bin_dir`
    The directory of ``initdb``/``pg_ctl``/``psql`` (newest of ``/usr/lib/postgresql/*/bin``,
    or ``$DRIFTPILOT_PG_BIN``), or None when PostgreSQL is not installed.

Skipping: a test using ``postgres``/``pg_url`` is skipped, with the reason, only when the
binaries are absent and ``DRIFTPILOT_REQUIRE_POSTGRES`` is unset; with it set (CI: ``.ci/run``
installs Debian ``postgresql`` and sets it) a missing server is a failure, never a skip.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from driftpilot.core.llm import free_port

REQUIRE_ENV = "DRIFTPILOT_REQUIRE_POSTGRES"
BIN_ENV = "DRIFTPILOT_PG_BIN"
SUPERUSER = "postgres"
# Settings for a throwaway server: no durability, room for many pooled connections.
_SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "64MB",
    "max_locks_per_transaction": "256",
    "log_min_messages": "warning",
    "timezone": "UTC",
}
_names = itertools.count(1)


def find_bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` live, or None when PostgreSQL is not installed."""
    override = os.environ.get(BIN_ENV)
    if override:
        return Path(override)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def postgres_required() -> bool:
    """True when a missing PostgreSQL must fail the tests instead of skipping them (CI)."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0", "false", "no")


@dataclass(frozen=True)
class PostgresServer:
    """A running server: where it listens and how to make databases on it."""

    bin_dir: Path
    data_dir: Path
    socket_dir: Path
    host: str
    port: int
    user: str = SUPERUSER

    def url(self, dbname: str, driver: str = "psycopg") -> str:
        """SQLAlchemy URL of ``dbname`` (``driver=""``: the plain libpq ``postgresql://``)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{dbname}"

    def conninfo(self, dbname: str) -> str:
        """libpq conninfo of ``dbname`` (psycopg.connect, procrastinate's connector)."""
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run ``sql`` as the superuser; returns psql's unaligned, tuples-only output."""
        done = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                dbname,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}) on {sql!r}: {done.stderr}")
        return done.stdout.strip()

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a unique name when None); returns its SQLAlchemy URL."""
        name = name or f"t{next(_names)}_{uuid.uuid4().hex[:8]}"
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting whatever still holds it (a test's leaked pool)."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_server_user() -> list[str]:
    """The command prefix that runs initdb/pg_ctl as a non-root user (they refuse root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SUPERUSER)
    except KeyError as exc:
        raise RuntimeError(
            "running as root and there is no 'postgres' OS user to run initdb as "
            "(Debian's postgresql package creates it)"
        ) from exc
    return ["runuser", "-u", SUPERUSER, "--"]


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@contextmanager
def start_postgres(bin_dir: Path | None = None) -> Iterator[PostgresServer]:
    """Start a throwaway server in a new temporary directory; stop and delete it on exit.

    Raises:
        RuntimeError: no PostgreSQL binaries, or initdb/pg_ctl failed (with their output).
    """
    bin_dir = bin_dir or find_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL binaries not found (apt-get install -y postgresql)")
    # Not under pytest's tmp_path: that is 0700 root's, and the server runs as 'postgres'.
    base = Path(tempfile.mkdtemp(prefix="driftpilot-pg-"))
    try:
        prefix = _as_server_user()
        if prefix:
            shutil.chown(base, user=SUPERUSER)
        data, sockets = base / "data", base / "sock"
        _run([*prefix, "mkdir", "-p", str(sockets)], "mkdir")
        _run(
            [
                *prefix,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        server = _start(prefix, bin_dir, data, sockets)
        try:
            yield server
        finally:
            _run(
                [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                "pg_ctl stop",
            )
    finally:
        shutil.rmtree(base)


def _start(prefix: list[str], bin_dir: Path, data: Path, sockets: Path) -> PostgresServer:
    """pg_ctl start on a free port; a port taken between picking and binding is retried."""
    error = ""
    for _ in range(3):
        port = free_port()
        options = {**_SERVER_OPTIONS, "port": str(port), "unix_socket_directories": str(sockets)}
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        log = data.parent / "server.log"
        pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60"]
        done = subprocess.run(
            [*prefix, *pg_ctl, "-o", opts, "start"],
            capture_output=True,
            text=True,
            timeout=90,
        )
        if done.returncode == 0:
            return PostgresServer(bin_dir, data, sockets, "127.0.0.1", port)
        error = f"{done.stdout}\n{done.stderr}\n{log.read_text() if log.exists() else ''}"
    raise RuntimeError(f"pg_ctl start failed three times:\n{error}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (skipped only when it is not installed and not
    required; see the module docstring)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        if postgres_required():
            pytest.fail(f"{REQUIRE_ENV} is set but no PostgreSQL binaries were found")
        pytest.skip(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); "
            f"apt-get install -y postgresql, or set {REQUIRE_ENV}=1 to make this a failure"
        )
    with start_postgres(bin_dir) as server:
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh empty database for this test, as a ``postgresql+psycopg://`` URL."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url.rsplit("/", 1)[1])
