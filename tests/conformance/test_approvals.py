"""Approvals on every backend: one request per run and question, one decision on it (even
with two approvers answering at once), never by the requester, bound to the exact action."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from driftpilot.core.errors import ApprovalError, NotFound
from driftpilot.store import AuditStore
from driftpilot.store.audit import promotion_action

ACTION = promotion_action("m", 2, 1)


def test_a_run_asks_once_per_question(store: AuditStore) -> None:
    first = store.request_approval("r1", "alice", {"gain": 0.02}, ACTION)
    again = store.request_approval("r1", "alice", {"gain": 0.03}, ACTION)
    assert again.id == first.id and len(store.approval_rows("r1")) == 1
    assert [r.run_id for r in store.pending_approvals()] == ["r1"]
    with pytest.raises(NotFound):
        store.decide_approval("no-such-run", "bob", "approve")


@pytest.mark.parametrize("requester_again", ["alice", "ALICE", " alice ", "\uff41lice"])
def test_the_store_refuses_self_approval(store: AuditStore, requester_again: str) -> None:
    store.request_approval("r1", "Alice", {}, ACTION)
    with pytest.raises(ApprovalError, match="cannot approve"):
        store.decide_approval("r1", requester_again, "approve")
    assert [r.kind for r in store.approval_rows("r1")] == ["request"]  # nothing recorded


def test_one_decision_per_request_bound_to_its_action(store: AuditStore) -> None:
    store.request_approval("r1", "alice", {}, ACTION)
    store.decide_approval("r1", "bob", "approve", "fine")
    with pytest.raises(ApprovalError, match="already decided"):
        store.decide_approval("r1", "carol", "reject")
    assert [r.kind for r in store.approval_rows("r1")] == ["request", "decision"]
    assert store.pending_approvals() == []
    assert store.approval_problem("r1", ACTION) is None
    assert "different action" in (store.approval_problem("r1", promotion_action("m", 3, 1)) or "")
    assert store.verify().ok


def test_two_approvers_answering_at_once_record_one_decision(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.request_approval("r1", "alice", {}, ACTION)
    both_read = threading.Barrier(2)
    read = store.approval_rows

    def read_then_meet(run_id: str) -> Any:
        rows = read(run_id)
        both_read.wait(timeout=10)  # each saw the request and no decision yet
        return rows

    monkeypatch.setattr(store, "approval_rows", read_then_meet)
    outcomes: list[str] = []

    def answer(who: str, decision: str) -> None:
        try:
            store.decide_approval("r1", who, decision)
            outcomes.append("recorded")
        except ApprovalError:
            outcomes.append("refused")

    threads = [
        threading.Thread(target=answer, args=a) for a in (("bob", "approve"), ("cat", "reject"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["recorded", "refused"], outcomes
    monkeypatch.undo()
    assert [r.kind for r in store.approval_rows("r1")] == ["request", "decision"]
