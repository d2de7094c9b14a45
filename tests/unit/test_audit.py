"""The audit store on a real SQLite file: queries, identities, keys, cross checks, SQLite's
read transactions. What every backend must honour (the chain and tamper detection, leases,
approvals, intents, effects) is tests/conformance, run on SQLite and PostgreSQL."""

import sqlite3
from pathlib import Path

import pytest

from driftpilot.core.errors import ApprovalError, ConfigError, InvalidPrincipal, NotFound
from driftpilot.store import AuditStore
from driftpilot.store.audit import promotion_action


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
    store.request_approval(
        "r1", "alice", {"description": "promote v2"}, promotion_action("m", 2, 1)
    )
    store.decide_approval("r1", "bob", "approve", "fine")
    store.record_champion("m", 2, 1, "promote", "r1", "bob")


def test_approval_rules(store: AuditStore) -> None:
    action = promotion_action("m", 2, 1)
    store.request_approval("r2", "alice", {}, action)
    assert [a.run_id for a in store.pending_approvals()] == ["r2"]
    with pytest.raises(ApprovalError, match="cannot approve"):
        store.decide_approval("r2", "Alice", "approve")
    with pytest.raises(ApprovalError, match="approve' or 'reject"):
        store.decide_approval("r2", "bob", "maybe")
    store.decide_approval("r2", "bob", "reject", "too risky")
    assert store.approval_problem("r2", action) == "the request was rejected by bob"
    assert store.pending_approvals() == []
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


@pytest.mark.parametrize(
    "approver",
    ["ann\u200b", "\u200bann", "ann\u202e", "ann\x00", "ann\n", "   ", "", "\u3000"],
)
def test_invisible_or_blank_approver_is_refused(store: AuditStore, approver: str) -> None:
    store.request_approval("r3", "ann", {}, promotion_action("m", 2, 1))
    with pytest.raises(InvalidPrincipal):
        store.decide_approval("r3", approver, "approve")
    assert len(store.approval_rows("r3")) == 1  # nothing recorded


@pytest.mark.parametrize("approver", ["ANN", " ann ", "\uff21\uff4e\uff4e", "ann\u0020"])
def test_the_requester_in_another_spelling_cannot_approve(store: AuditStore, approver: str) -> None:
    store.request_approval("r4", "Ann", {}, promotion_action("m", 2, 1))
    with pytest.raises(ApprovalError, match="cannot approve"):
        store.decide_approval("r4", approver, "approve")


def test_an_approval_is_bound_to_the_exact_action(store: AuditStore) -> None:
    approved = promotion_action("m", 2, 1)
    store.request_approval("r5", "alice", {}, approved)
    store.decide_approval("r5", "bob", "approve")
    assert store.approval_problem("r5", approved) is None
    for other in (
        promotion_action("m", 3, 1),  # another version
        promotion_action("m", 2, 4),  # over a champion it was never compared against
        promotion_action("n", 2, 1),  # another model
    ):
        assert "different action" in (store.approval_problem("r5", other) or "")


def test_api_keys_store_only_a_hash_and_carry_the_principal(store: AuditStore) -> None:
    row, secret = store.create_api_key(" Bob ", "approver")
    assert row.principal == "bob" and secret not in row.secret_hash
    found = store.authenticate(secret)
    assert found is not None and (found.principal, found.role) == ("bob", "approver")
    assert store.authenticate(secret + "x") is None
    store.revoke_api_key(row.id)
    assert store.authenticate(secret) is None
    with pytest.raises(InvalidPrincipal):
        store.create_api_key("bob\u200b", "viewer")
    with pytest.raises(ConfigError, match="unknown role"):
        store.create_api_key("carol", "root")


def test_roles_include_the_ones_below() -> None:
    from driftpilot.core.identity import has_role

    assert has_role("admin", "approver") and has_role("approver", "operator")
    assert not has_role("operator", "approver") and not has_role("viewer", "operator")
    assert not has_role("root", "viewer")


def test_cross_checks_name_a_champion_change_without_its_agent_or_its_predecessor(
    store: AuditStore,
) -> None:
    store.record_decision("b", "bootstrap", "promote", "first", {}, backend="builtin")
    store.record_champion("m", 1, None, "bootstrap", "b", "alice")
    assert store.cross_checks() == []
    # A forged promotion: its decision comes from the wrong agent, and it claims to replace
    # v7 while the champion was v1.
    store.record_decision("x", "drift_analyst", "promote", "sneaky", {}, backend="builtin")
    store.record_decision("x", "cicd", "risk:low", "low", {}, backend="builtin")
    store.record_champion("m", 3, 7, "promote", "x", "mallory")
    problems = store.cross_checks()
    assert any("no promote decision by the cicd agent in run x" in p for p in problems)
    assert any("replaced v7, but the champion before it was v1" in p for p in problems)


def test_an_approval_row_with_an_invisible_principal_is_reported_not_raised(
    store: AuditStore,
) -> None:
    from driftpilot.store.models import Approval

    action = promotion_action("m", 2, 1)
    store.request_approval("r", "alice", {"d": "x"}, action)
    request = store.approval_rows("r")[0]
    # Written around the entry points (which would refuse the name):
    store._append(
        Approval(
            run_id="r",
            kind="decision",
            principal="bob\u200b",
            decision="approve",
            comment="",
            payload=request.payload,
        )
    )
    problem = store.approval_problem("r", action)
    assert problem is not None and "invalid principal" in problem


def test_readers_do_not_wait_for_a_writer(store: AuditStore, tmp_path: Path) -> None:
    fill(store)
    writer = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a run holds the write lock
    try:
        # A reader that took the write lock too would wait out the busy timeout, then fail.
        assert store.approval_rows("r1")
        assert store.effect("r1", "nothing") is None
        assert store.verify().ok
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_audit_queries_page_in_sql_with_filters(store: AuditStore) -> None:
    fill(store)
    store.record_decision("r2", "evaluator", "accept", "ok", {}, backend="builtin")
    page, more = store.query_audit(limit=2)
    assert [(r["table"], r["id"]) for r in page] == [("decisions", 1), ("decisions", 2)] and more
    rest, more = store.query_audit(after=("decisions", 2), limit=100)
    assert rest[0]["id"] == 3 and not more
    assert {"decisions", "tool_calls", "approvals"} <= {r["table"] for r in rest}
    only, _ = store.query_audit(run_ids={"r2"}, table="decisions")
    assert [r["agent"] for r in only] == ["evaluator"]
    by_agent, _ = store.query_audit(agent="drift_analyst")
    assert {r["table"] for r in by_agent} == {"decisions", "tool_calls"}
    late, _ = store.query_audit(since=page[1]["created_at"], table="decisions")
    assert [r["id"] for r in late] == [2, 3, 4]
    with pytest.raises(ConfigError, match="unknown audit table"):
        store.query_audit(table="runs")


def test_a_run_transition_is_a_compare_and_set(store: AuditStore) -> None:
    from driftpilot.store.audit import now
    from driftpilot.store.models import Run

    for i, status in enumerate(("pending", "pending", "running")):
        stamp = now()
        store.add(
            Run(
                id=f"run-{i}",
                model="m",
                batch_id="b",
                trigger="api",
                requested_by="ann",
                status=status,
                outcome=None,
                summary="{}",
                created_at=stamp,
                updated_at=stamp,
            )
        )
    assert store.transition_run("run-0", "pending", status="running")
    assert not store.transition_run("run-0", "pending", status="failed")  # the claim won
    newest = store.query_runs(model="m", limit=2)
    assert [r.id for r in newest] == ["run-2", "run-1"]
    older = store.query_runs(model="m", before=(newest[-1].created_at, newest[-1].id))
    assert [r.id for r in older] == ["run-0"]
    assert [r.id for r in store.query_runs(status="pending")] == ["run-1"]


def test_a_run_asks_one_question_at_a_time_and_an_answer_is_bound_to_its_question(
    store: AuditStore,
) -> None:
    accept = {"action": "accept_batch", "model": "m", "batch_id": "b", "content_hash": "h"}
    store.request_approval("r9", "alice", {}, accept, step="escalation")
    assert store.request_approval("r9", "alice", {}, accept, step="escalation").id  # once
    store.decide_approval("r9", "bob", "approve", step="escalation")
    assert [r.run_id for r in store.pending_approvals()] == []
    promote = promotion_action("m", 2, 1)
    store.request_approval("r9", "alice", {}, promote)  # the second question
    assert [r.run_id for r in store.pending_approvals()] == ["r9"]
    assert len(store.approval_rows("r9")) == 1  # the current question only
    with pytest.raises(ApprovalError, match="now asks about its promotion"):
        store.decide_approval("r9", "carol", "approve", step="escalation")
    assert store.approval_problem("r9", promote) == "no approval decision on record"
    store.decide_approval("r9", "carol", "approve", step="promotion")
    assert store.approval_problem("r9", promote) is None
    assert store.approval_problem("r9", accept) is not None  # bound to the promotion now


def test_leases_are_judged_on_the_real_clock_by_default(store: AuditStore) -> None:
    from datetime import UTC, datetime, timedelta

    before = datetime.now(UTC)
    lease = store.acquire_lease("m", "r", "h", ttl_s=30)
    expires = datetime.fromisoformat(lease.expires_at)
    assert before + timedelta(seconds=30) <= expires <= datetime.now(UTC) + timedelta(seconds=30)
    assert store.holds_lease("m", "r", "h")
