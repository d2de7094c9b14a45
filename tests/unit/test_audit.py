"""The audit store on a real SQLite file."""

import sqlite3
from pathlib import Path

import pytest

from driftpilot.audit import AuditStore
from driftpilot.errors import ApprovalError, NotFound


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    return AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")


def fill(store: AuditStore) -> None:
    for i in range(3):
        store.record_decision(
            "r1",
            "drift_analyst",
            "monitor",
            f"reason {i}",
            {"drift_share": 0.1 * i},
            backend="builtin",
            latency_ms=3,
        )
    store.record_tool_call(
        "r1",
        "drift_analyst",
        "drift.data_drift",
        {"rows": 10},
        {"share": 0.5},
        ok=True,
        latency_ms=12.5,
    )
    store.request_approval("r1", "alice", {"description": "promote v2"})
    store.decide_approval("r1", "bob", "approve", "fine")
    store.record_champion("m", 2, 1, "promote", "r1", "bob")


def tamper(store: AuditStore, sql: str, trigger: str) -> None:
    conn = sqlite3.connect(store.url.removeprefix("sqlite:///"))
    conn.execute(f"DROP TRIGGER {trigger}")  # an attacker with file access can do this
    conn.execute(sql)
    conn.commit()
    conn.close()


def test_chain_verifies_and_reopens(store: AuditStore) -> None:
    fill(store)
    result = store.verify()
    assert result.ok and result.checked == {
        "decisions": 3,
        "tool_calls": 1,
        "approvals": 2,
        "champion_history": 1,
    }
    assert AuditStore(store.url).verify().ok  # migration is idempotent


def test_append_only_triggers(store: AuditStore) -> None:
    fill(store)
    conn = sqlite3.connect(store.url.removeprefix("sqlite:///"))
    for sql in ("UPDATE decisions SET rationale = 'x'", "DELETE FROM approvals"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)


def test_edited_row_is_named(store: AuditStore) -> None:
    fill(store)
    tamper(
        store,
        "UPDATE decisions SET rationale = 'nothing to see' WHERE id = 2",
        "decisions_no_update",
    )
    result = store.verify()
    assert not result.ok and result.first_broken is not None
    assert (result.first_broken.table, result.first_broken.row_id) == ("decisions", 2)
    assert "edited" in result.first_broken.reason


def test_deleted_row_breaks_the_link(store: AuditStore) -> None:
    fill(store)
    tamper(store, "DELETE FROM decisions WHERE id = 2", "decisions_no_delete")
    broken = store.verify().first_broken
    assert broken is not None and (broken.table, broken.row_id) == ("decisions", 3)
    assert "deleted" in broken.reason


def test_approval_rules(store: AuditStore) -> None:
    store.request_approval("r2", "alice", {})
    assert [a.run_id for a in store.pending_approvals()] == ["r2"]
    with pytest.raises(ApprovalError, match="cannot approve"):
        store.decide_approval("r2", "Alice", "approve")
    with pytest.raises(ApprovalError, match="approve' or 'reject"):
        store.decide_approval("r2", "bob", "maybe")
    store.decide_approval("r2", "bob", "reject", "too risky")
    assert store.approved_by_other("r2") is None and store.pending_approvals() == []
    with pytest.raises(ApprovalError, match="already decided"):
        store.decide_approval("r2", "carol", "approve")
    with pytest.raises(NotFound):
        store.decide_approval("nope", "bob", "approve")


def test_champion_at_a_time_and_effects(store: AuditStore) -> None:
    store.record_champion("m", 1, None, "bootstrap", "b", "alice")
    middle = store.list_rows(type(store.record_champion("other", 7, None, "bootstrap", "b", "x")))[
        -1
    ].created_at
    store.record_champion("m", 2, 1, "promote", "r1", "bob")
    assert store.champion_at("m", middle) == 1
    assert store.champion_at("m", "2999-01-01") == 2
    assert store.champion_at("m", "2000-01-01") is None
    assert store.effect("r1", "promote") is None
    store.record_effect("r1", "promote", {"version": 2})
    assert store.effect("r1", "promote") == {"version": 2}
