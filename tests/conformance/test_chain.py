"""The audit chain on every backend: appends link up from the genesis, the tables refuse
updates and deletes, verify names the first edited or missing row, and two processes
appending at once leave one valid chain."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from driftpilot.store import AuditStore
from driftpilot.store.audit import GENESIS, promotion_action
from driftpilot.store.models import CHAINED, Decision
from tests.conformance.conftest import Backend, tamper


def fill(store: AuditStore) -> None:
    """Rows in every chained table: three decisions, then one or two of each other kind."""
    for i in range(3):
        store.record_decision("r1", "drift_analyst", "watch", f"why {i}", {"i": i}, backend="b")
    store.record_tool_call(
        "r1", "drift_analyst", "drift.detect", {"a": 1}, [1], ok=True, latency_ms=1
    )
    store.request_approval("r1", "alice", {"gain": 0.01}, promotion_action("m", 2, 1))
    store.decide_approval("r1", "bob", "approve")
    store.record_champion("m", 2, 1, "promote", "r1", "bob")
    store.record_mutation("r1", "promote", "set_alias", "intent", {"version": 2})


def test_appends_link_every_chain_from_its_genesis(store: AuditStore, backend: Backend) -> None:
    fill(store)
    result = store.verify()
    assert result.ok and result.first_broken is None
    assert result.checked == {
        "decisions": 3,
        "tool_calls": 1,
        "approvals": 2,
        "champion_history": 1,
        "mutations": 1,
    }
    for model in CHAINED:
        rows = store.list_rows(model)
        assert [r.id for r in rows] == list(range(1, len(rows) + 1))
        assert [r.prev_hash for r in rows] == [GENESIS] + [r.hash for r in rows[:-1]]
    exported = list(store.export("r1"))
    assert [(r["table"], r["id"]) for r in exported][:4] == [
        ("decisions", 1),
        ("decisions", 2),
        ("decisions", 3),
        ("tool_calls", 1),
    ]
    assert AuditStore(backend.url).verify() == result  # reopening migrates nothing, changes nothing


@pytest.mark.parametrize("verb", ["UPDATE", "DELETE"])
def test_the_chained_tables_refuse_updates_and_deletes(store: AuditStore, verb: str) -> None:
    fill(store)
    for model in CHAINED:
        table = model.__tablename__
        sql = (
            f"UPDATE {table} SET created_at = 'x' WHERE id = 1"
            if verb == "UPDATE"
            else f"DELETE FROM {table} WHERE id = 1"
        )
        with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(sql))
    assert store.verify().ok


def test_verify_names_an_edited_row(store: AuditStore) -> None:
    fill(store)
    tamper(store, "UPDATE decisions SET rationale = 'nothing' WHERE id = 2", "decisions_no_update")
    result = store.verify()
    assert not result.ok and result.first_broken is not None
    assert (result.first_broken.table, result.first_broken.row_id) == ("decisions", 2)
    assert "edited" in result.first_broken.reason


def test_verify_names_the_row_after_a_deleted_one(store: AuditStore) -> None:
    fill(store)
    tamper(store, "DELETE FROM approvals WHERE id = 1", "approvals_no_delete")
    result = store.verify()
    assert not result.ok and result.first_broken is not None
    assert (result.first_broken.table, result.first_broken.row_id) == ("approvals", 2)
    assert "deleted" in result.first_broken.reason
    assert result.checked["decisions"] == 3  # the chains before it were intact


APPENDER = """
import sys, time
from driftpilot.store import AuditStore
store = AuditStore(sys.argv[1])
store.engine.connect().close()
print("ready", flush=True)
sys.stdin.readline()  # both processes start appending on the same word
start = time.time()
for i in range(int(sys.argv[2])):
    store.record_decision(sys.argv[3], "test", "none", f"row {i}", {"i": i}, backend="builtin")
print(start, time.time(), flush=True)
"""
ROWS = 50


def test_two_processes_appending_at_once_keep_one_valid_chain(
    store: AuditStore, backend: Backend
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, backend.url, str(ROWS), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outs]
    result = store.verify()
    assert result.ok and result.checked["decisions"] == 2 * ROWS, result
    rows = store.list_rows(Decision, order=Decision.id)
    assert [r.id for r in rows] == list(range(1, 2 * ROWS + 1))
    runs = [r.run_id for r in rows]
    assert runs.count("p1") == runs.count("p2") == ROWS
    # The two processes were appending at the same time (one may have waited for the
    # other's lock all along: SQLite's busy handler does not queue fairly).
    (start1, end1), (start2, end2) = ([float(t) for t in out.split()] for out, _ in outs)
    assert start1 < end2 and start2 < end1, "the two processes did not append at the same time"
