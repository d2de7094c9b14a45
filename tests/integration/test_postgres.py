"""What only PostgreSQL has: the migrations' advisory lock and triggers, the LangGraph
checkpoint tables set up by processes at once and a graph thread across checkpointers, and one
Optuna study optimised by two processes at once.

The server is Debian's, started by ``tests/pg.py`` in a temporary directory; every test gets
a fresh database. What every backend must honour (the chain, tamper detection, two processes
appending, leases, approvals, intents, schedules, the queue, checkpoints) is the conformance
suite, ``tests/conformance``, run on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import create_engine, text

from driftpilot.core.errors import NotFound
from driftpilot.core.settings import Settings, libpq_url
from driftpilot.store import AuditStore
from driftpilot.store.models import CHAINED
from tests.pg import PostgresServer
from tools.datasets import FLIGHTS
from tools.train import TrainSpec

pytestmark = pytest.mark.integration


def test_migrations_create_the_schema_and_its_append_only_triggers(pg_url: str) -> None:
    store = AuditStore(pg_url)
    with store.engine.connect() as conn:
        head = conn.scalar(text("SELECT version_num FROM alembic_version"))
        triggers = set(
            conn.scalars(
                text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'O'")
            )
        )
    assert head is not None and head >= "0006"
    # the chained tables, and the notes (append-only; each note's audit record is chained)
    names = [m.__tablename__ for m in CHAINED] + ["notes"]
    assert triggers == {f"{t}_no_{verb}" for t in names for verb in ("update", "delete")}
    AuditStore(pg_url)  # a second open of a migrated database is a no-op


OPENER = """
import sys, time
from driftpilot.store import AuditStore
go = float(sys.argv[2])
while time.time() < go:
    time.sleep(0.005)
AuditStore(sys.argv[1]).record_decision("boot", "test", "none", "up", {}, backend="builtin")
"""


def test_processes_starting_together_migrate_a_fresh_database_once(pg_url: str) -> None:
    import time

    go = str(time.time() + 4)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, pg_url, go], stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    store = AuditStore(pg_url)
    assert store.verify().checked["decisions"] == 3


# -- LangGraph checkpoints -------------------------------------------------------------------


def pg_settings(tmp_path: Path, url: str, **extra: Any) -> Settings:
    return Settings(home=tmp_path / "home", db_url=url, **extra).ensure_dirs()


def test_checkpoint_url_follows_a_postgres_db_url(tmp_path: Path, pg_url: str) -> None:
    settings = pg_settings(tmp_path, pg_url)
    assert settings.checkpoint_url == pg_url
    embedded = Settings(home=tmp_path / "embedded")
    assert embedded.checkpoint_url == f"sqlite:///{embedded.checkpoint_path}"
    assert libpq_url(pg_url).startswith("postgresql://postgres@127.0.0.1:")


SETUPS = """
import sys, time
import langgraph.checkpoint.postgres, psycopg_pool  # imported before the start: same instant
from driftpilot.store.checkpointer import open_checkpointer
from driftpilot.core.settings import Settings
go = float(sys.argv[3])
while time.time() < go:  # all start at once: the setup race is real
    time.sleep(0.005)
cp = open_checkpointer(Settings(home=sys.argv[2], db_url=sys.argv[1]))
cp.close()
"""


def test_processes_set_up_the_checkpoint_tables_at_once(tmp_path: Path, pg_url: str) -> None:
    import time

    go = str(time.time() + 4)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SETUPS, pg_url, str(tmp_path / f"h{i}"), go],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        versions = list(conn.scalars(text("SELECT v FROM checkpoint_migrations ORDER BY v")))
    engine.dispose()
    assert versions == list(range(len(versions))) and len(versions) > 5  # each once


def test_a_graph_thread_survives_a_new_checkpointer(tmp_path: Path, pg_url: str) -> None:
    """interrupt() on one saver, resume on a new pool (a restarted process), read back through
    the read-only reader that replays use, which cannot write."""
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, interrupt
    from typing_extensions import TypedDict

    from driftpilot.store.checkpointer import open_checkpointer

    class State(TypedDict):
        asked: str
        answer: str

    def ask(state: State) -> dict[str, str]:
        return {"answer": str(interrupt({"question": state["asked"]}))}

    def build(saver: Any) -> Any:
        graph = StateGraph(State)
        graph.add_node("ask", ask)
        graph.add_edge(START, "ask")
        graph.add_edge("ask", END)
        return graph.compile(checkpointer=saver)

    settings = pg_settings(tmp_path, pg_url)
    config: Any = {"configurable": {"thread_id": "run-1"}}
    first = open_checkpointer(settings)
    assert first.kind == "postgresql"
    try:
        paused = build(first.saver).invoke({"asked": "promote?", "answer": ""}, config)
        assert paused["__interrupt__"][0].value == {"question": "promote?"}
    finally:
        first.close()
    second = open_checkpointer(settings)
    try:
        done = build(second.saver).invoke(Command(resume="approve"), config)
        assert done == {"asked": "promote?", "answer": "approve"}
    finally:
        second.close()
    reader = open_checkpointer(settings, read_only=True)
    try:
        history = list(build(reader.saver).get_state_history(config))
        assert history[0].values["answer"] == "approve" and len(history) >= 3
        with pytest.raises(Exception, match="read-only transaction"):
            build(reader.saver).invoke({"asked": "again", "answer": ""}, config)
    finally:
        reader.close()


def test_a_read_only_checkpointer_of_an_empty_database_is_not_found(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    from driftpilot.store.checkpointer import open_checkpointer

    url = postgres.create_database()
    with pytest.raises(NotFound, match="no checkpoint tables"):
        open_checkpointer(pg_settings(tmp_path, url), read_only=True)
    postgres.drop_database(url.rsplit("/", 1)[1])


# -- Optuna: one study, two worker processes -------------------------------------------------

TUNE_WORKER = """
import json, sys, time
import polars as pl
from tests.integration.test_postgres import tune_spec
from tools.tune import TuneBudget, tune
frame = pl.read_parquet(sys.argv[1])
go = float(sys.argv[4])
while time.time() < go:
    time.sleep(0.005)
result = tune(frame, tune_spec(), study_name="shared", storage=sys.argv[2],
              budget=TuneBudget(n_trials=int(sys.argv[3]), report_every=10))
print(json.dumps({"ran": result.trials_run_now}))
"""


def tune_spec() -> TrainSpec:
    return TrainSpec(
        family="lightgbm",
        target=FLIGHTS.target,
        numeric=FLIGHTS.numeric,
        categorical=FLIGHTS.categorical,
        time_col=FLIGHTS.time_col,
        max_rounds=60,
    )


def test_two_processes_tune_one_study_without_losing_or_doubling_trials(
    tmp_path: Path, postgres: PostgresServer, jan_sample: pl.DataFrame
) -> None:
    import optuna

    url = postgres.create_database()
    storage = postgres.url(url.rsplit("/", 1)[1])
    frame = tmp_path / "jan.parquet"
    jan_sample.head(3000).write_parquet(frame)
    budget = 16
    import time

    go = str(time.time() + 6)  # both workers have imported LightGBM and Optuna by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TUNE_WORKER, str(frame), storage, str(budget), go],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    ran = [json.loads(out.strip().splitlines()[-1])["ran"] for out, _ in outs]
    assert min(ran) >= 2, f"one worker did (almost) all the work: {ran}"

    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials(deepcopy=False)
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(trials)))  # no number twice, none skipped
    assert len(trials) == sum(ran)  # every trial a worker ran is stored, none more
    assert budget <= len(trials) <= budget + 1  # the shared budget, at most one over
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert all(t.state in finished for t in trials), [t.state for t in trials]
    postgres.drop_database(url.rsplit("/", 1)[1])
