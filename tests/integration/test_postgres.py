"""The audit store, the LangGraph checkpointer and Optuna on a real PostgreSQL server.

The server is Debian's, started by ``tests/pg.py`` in a temporary directory; every test gets
a fresh database. The append-only triggers, the chain-append advisory lock (two real
processes), tamper detection with the triggers disabled (as a superuser could), leases,
approvals, schedules, checkpoints across processes, and one Optuna study optimised by two
processes at once."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from driftpilot.core.errors import ApprovalError, ModelBusy, NotFound
from driftpilot.core.settings import Settings, libpq_url
from driftpilot.store import AuditStore
from driftpilot.store.models import CHAINED, Decision
from tests.pg import PostgresServer
from tools.datasets import FLIGHTS
from tools.train import TrainSpec

pytestmark = pytest.mark.integration


def fill(store: AuditStore) -> None:
    """One row in every chained table."""
    store.record_decision("r1", "drift_analyst", "watch", "why", {"share": 0.2}, backend="b")
    store.record_tool_call(
        "r1", "drift_analyst", "drift.detect", {"a": 1}, [1], ok=True, latency_ms=1.5
    )
    store.request_approval("r1", "alice", {"gain": 0.01}, {"op": "promote", "version": 2})
    store.record_champion("flights", 1, None, "bootstrap", "r0", "alice")
    store.record_mutation("r1", "promote", "set_alias", "intent", {"version": 2})


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
    names = [m.__tablename__ for m in CHAINED]
    assert triggers == {f"{t}_no_{verb}" for t in names for verb in ("update", "delete")}
    AuditStore(pg_url)  # a second open of a migrated database is a no-op


@pytest.mark.parametrize("verb", ["UPDATE", "DELETE"])
def test_the_triggers_refuse_updates_and_deletes_of_chained_rows(pg_url: str, verb: str) -> None:
    store = AuditStore(pg_url)
    fill(store)
    for model in CHAINED:
        table = model.__tablename__
        sql = (
            f"UPDATE {table} SET created_at = 'x' WHERE id = 1"
            if verb == "UPDATE"
            else f"DELETE FROM {table} WHERE id = 1"
        )
        refused = pytest.raises(DBAPIError, match=f"audit table {table} is append-only")
        with refused, store.engine.begin() as conn:
            conn.execute(text(sql))
    assert store.verify().ok


def tamper(store: AuditStore, table: str, sql: str, trigger: str) -> None:
    """Change a chained table the way a superuser could: with its trigger disabled."""
    with store.engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}"))
        conn.execute(text(sql))
        conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}"))


def test_verify_finds_an_edit_made_with_the_trigger_disabled(pg_url: str) -> None:
    store = AuditStore(pg_url)
    for i in range(3):
        store.record_decision("r1", "evaluator", "promote", f"gain {i}", {"i": i}, backend="b")
    assert store.verify().ok
    tamper(
        store,
        "decisions",
        "UPDATE decisions SET action = 'reject' WHERE id = 2",
        "decisions_no_update",
    )
    result = store.verify()
    assert not result.ok and result.first_broken is not None
    assert (result.first_broken.table, result.first_broken.row_id) == ("decisions", 2)
    assert "edited" in result.first_broken.reason


def test_verify_finds_a_row_deleted_with_the_trigger_disabled(pg_url: str) -> None:
    store = AuditStore(pg_url)
    fill(store)
    store.record_tool_call("r1", "cicd", "registry.promote", {}, {}, ok=True, latency_ms=2.0)
    tamper(store, "tool_calls", "DELETE FROM tool_calls WHERE id = 1", "tool_calls_no_delete")
    result = store.verify()
    assert not result.ok and result.first_broken is not None
    assert (result.first_broken.table, result.first_broken.row_id) == ("tool_calls", 2)
    assert "deleted" in result.first_broken.reason


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


APPENDER = """
import sys, time
from driftpilot.store import AuditStore
store = AuditStore(sys.argv[1])
go = float(sys.argv[4])
while time.time() < go:  # both processes start appending at the same instant
    time.sleep(0.005)
for i in range(int(sys.argv[2])):
    store.record_decision(sys.argv[3], "test", "none", f"row {i}", {"i": i}, backend="builtin")
"""


def test_two_processes_appending_at_once_keep_one_valid_chain(pg_url: str) -> None:
    import time

    AuditStore(pg_url)  # migrate once, so the race is on the appends
    go = str(time.time() + 4)  # both interpreters are up and connected by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, pg_url, "150", name, go],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    store = AuditStore(pg_url)
    result = store.verify()
    assert result.ok and result.checked["decisions"] == 300, result
    rows = store.list_rows(Decision, order=Decision.id)
    assert [r.id for r in rows] == list(range(1, 301))
    runs = [r.run_id for r in rows]
    assert runs.count("p1") == runs.count("p2") == 150
    # Interleaved, not one after the other: the lock was contended, not merely unused.
    switches = sum(1 for a, b in itertools.pairwise(runs) if a != b)
    assert switches >= 2, "the two processes did not append at the same time"


def test_leases_one_run_per_model(pg_url: str) -> None:
    store = AuditStore(pg_url)
    store.acquire_lease("flights", "run-a", "h1", ttl_s=30)
    with pytest.raises(ModelBusy, match="run-a"):
        store.acquire_lease("flights", "run-b", "h2", ttl_s=30)
    assert store.renew_lease("flights", "run-a", 30, holder="h1")
    assert not store.renew_lease("flights", "run-a", 30, holder="h2")
    assert store.holds_lease("flights", "run-a", "h1")
    store.release_lease("flights", "run-a", holder="h1")
    assert store.lease("flights") is None
    store.acquire_lease("flights", "run-b", "h2", ttl_s=0.001)  # expires at once
    taken = store.acquire_lease("flights", "run-c", "h3", ttl_s=30)
    assert (taken.run_id, taken.holder) == ("run-c", "h3")


def test_two_threads_racing_for_a_free_model_get_one_lease(pg_url: str) -> None:
    store = AuditStore(pg_url)
    for attempt in range(5):  # the race is real only when both meet the missing row
        model = f"m{attempt}"
        won: list[str] = []
        busy: list[str] = []
        start = threading.Barrier(2)

        def take(
            run: str, model: str = model, won: Any = won, busy: Any = busy, start: Any = start
        ) -> None:
            start.wait()
            try:
                store.acquire_lease(model, run, run, ttl_s=30)
                won.append(run)
            except ModelBusy:
                busy.append(run)

        threads = [threading.Thread(target=take, args=(r,)) for r in ("x", "y")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(busy) == 1, (won, busy)
        lease = store.lease(model)
        assert lease is not None and lease.run_id == won[0]


def test_approvals_bound_once_and_not_by_the_requester(pg_url: str) -> None:
    store = AuditStore(pg_url)
    action = {"op": "promote", "model": "flights", "version": 2, "alias": "champion"}
    request = store.request_approval("r1", "alice", {"gain": 0.02}, action)
    assert store.request_approval("r1", "alice", {}, action).id == request.id  # once per step
    assert [r.run_id for r in store.pending_approvals()] == ["r1"]
    with pytest.raises(ApprovalError, match="cannot approve"):
        store.decide_approval("r1", " ALICE ", "approve")
    store.decide_approval("r1", "bob", "approve", "looks good")
    with pytest.raises(ApprovalError, match="already decided"):
        store.decide_approval("r1", "carol", "reject")
    assert store.approval_problem("r1", action) is None
    assert store.approval_problem("r1", {**action, "version": 3}) is not None
    assert store.pending_approvals() == []
    assert store.verify().ok


def test_idempotency_ledger_and_runs_queries(pg_url: str) -> None:
    from driftpilot.store.audit import now
    from driftpilot.store.models import Run

    store = AuditStore(pg_url)
    store.record_effect("r1", "train", {"version": 3})
    store.record_effect("r1", "train", {"version": 4})  # a replay keeps the first record
    assert store.effect("r1", "train") == {"version": 3}
    stamp = now()
    store.add(
        Run(
            id="r1",
            model="flights",
            batch_id="b",
            trigger="manual",
            requested_by="ann",
            status="running",
            outcome=None,
            summary="{}",
            created_at=stamp,
            updated_at=stamp,
        )
    )
    assert store.transition_run("r1", "running", status="completed")
    assert not store.transition_run("r1", "running", status="failed")
    assert [r.id for r in store.query_runs(model="flights", status="completed")] == ["r1"]
    rows, more = store.query_audit(run_ids={"r1"})
    assert rows == [] and not more


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
