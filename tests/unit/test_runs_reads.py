"""The plane's read models answer a page in a constant number of SQL statements (no query per
run), with the same views a single read gives; and the self-approval rule of the edges."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from driftpilot.core.errors import InvalidPrincipal
from driftpilot.core.settings import Settings
from driftpilot.runs.approvals import is_own_run
from driftpilot.runs.plane import ControlPlane, RunView
from driftpilot.store.audit import now
from driftpilot.store.models import ChampionChange, ManagedModel, Run

ACTION = {"op": "promote", "model": "m", "version": 2, "replaces": 1}


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(Settings(home=tmp_path / "home").ensure_dirs())
    yield cp
    cp.close()


class Statements:
    """Counts the SQL statements the audit engine executes while active."""

    def __init__(self, cp: ControlPlane) -> None:
        self.engine, self.count = cp.store.engine, 0

    def _count(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        # A PRAGMA is the connection's housekeeping (the writer queue's busy timeout, set again
        # on a connection's first read after a write), not a query of the page.
        if not statement.lstrip().upper().startswith("PRAGMA"):
            self.count += 1

    def __enter__(self) -> Statements:
        event.listen(self.engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._count)


def add_runs(cp: ControlPlane, n: int, model: str = "m") -> list[str]:
    """``n`` runs of ``model``: every third has an open approval request, every third a
    decided one, every other one submitted metadata (a schedule id)."""
    ids = []
    for i in range(n):
        run_id = f"{model}-run-{i:03d}"
        cp.store.add(
            Run(
                id=run_id,
                model=model,
                batch_id=f"b{i}",
                trigger="api",
                requested_by="ann",
                status="completed" if i % 3 else "failed",
                outcome="no_action",
                summary='{"input": {"x": 1}, "drift": {"share": 0.1}}',
                created_at=now(),
                updated_at=now(),
            )
        )
        if i % 3 in (1, 2):
            cp.store.request_approval(run_id, "ann", {"description": f"run {i}"}, ACTION)
        if i % 3 == 2:
            cp.store.decide_approval(run_id, "bob", "approve", "ok")
        if i % 2 == 0:
            cp.store.record_effect(run_id, "metadata", {"schedule_id": f"s{i}", "i": i})
        ids.append(run_id)
    return ids


def expected(i: int, run_id: str) -> dict[str, Any]:
    metadata = {"schedule_id": f"s{i}", "i": i} if i % 2 == 0 else {}
    return {
        "run_id": run_id,
        "status": "completed" if i % 3 else "failed",
        "summary": {"drift": {"share": 0.1}},
        "pending": i % 3 == 1,
        "schedule_id": metadata.get("schedule_id"),
        "metadata": metadata,
    }


def seen(view: RunView) -> dict[str, Any]:
    return {
        "run_id": view.run_id,
        "status": view.status,
        "summary": view.summary,
        "pending": view.approval_request is not None,
        "schedule_id": view.schedule_id,
        "metadata": view.metadata,
    }


def page_statements(cp: ControlPlane, n: int) -> int:
    ids = add_runs(cp, n, model=f"m{n}")
    with Statements(cp) as statements:
        views = cp.list_runs(model=f"m{n}", limit=100)
    assert len(views) == n
    by_id = {v.run_id: v for v in views}
    for i, run_id in enumerate(ids):
        assert seen(by_id[run_id]) == expected(i, run_id)
        assert by_id[run_id] == cp.get_run(run_id)
    return statements.count


def test_list_runs_issues_the_same_number_of_statements_for_1_and_20_runs(
    plane: ControlPlane,
) -> None:
    one, twenty = page_statements(plane, 1), page_statements(plane, 20)
    assert one == twenty, (one, twenty)
    assert twenty < 20  # the page, its approval rows, its metadata: not one query per run


def test_a_pending_request_is_the_runs_current_approval(plane: ControlPlane) -> None:
    add_runs(plane, 3)
    view = plane.get_run("m-run-001")
    assert view.approval_request is not None
    assert view.approval_request["description"] == "run 1"
    assert view.approval_request["action"] == ACTION
    assert plane.get_run("m-run-002").approval_request is None  # decided: nothing pending


def test_pending_approvals_issue_a_constant_number_of_statements(plane: ControlPlane) -> None:
    add_runs(plane, 3, model="a")
    with Statements(plane) as few:
        small = plane.pending_approvals()
    add_runs(plane, 30, model="b")
    with Statements(plane) as many:
        large = plane.pending_approvals()
    assert [v.run_id for v in small] == ["a-run-001"]
    assert [v.run_id for v in large] == ["a-run-001"] + [
        f"b-run-{i:03d}" for i in range(30) if i % 3 == 1
    ]
    assert few.count == many.count


def test_list_models_reads_the_latest_champion_of_each_model(plane: ControlPlane) -> None:
    def add_model(name: str, champions: list[int]) -> None:
        plane.store.add(
            ManagedModel(
                name=name,
                created_at=now(),
                source="",
                target="y",
                time_col="t",
                numeric='["a"]',
                categorical='["c"]',
                family="lightgbm",
                metric="roc_auc",
            )
        )
        previous = None
        for version in champions:
            plane.store.record_champion(name, version, previous, "promote", f"r-{name}", "ann")
            previous = version

    add_model("one", [1])
    with Statements(plane) as few:
        assert [(m.name, m.champion) for m in plane.list_models()] == [("one", 1)]
    add_model("three", [1, 2, 3])
    add_model("none", [])
    plane.store.record_champion("three", 2, 3, "rollback", "rb-1", "ann")
    with Statements(plane) as many:
        models = plane.list_models()
    assert [(m.name, m.champion) for m in models] == [("none", None), ("one", 1), ("three", 2)]
    assert models == [plane.model_view(m.name) for m in models]
    assert few.count == many.count
    assert len(plane.store.list_rows(ChampionChange)) == 5


def test_the_self_approval_rule_holds_under_the_identity_rule() -> None:
    run = RunView(
        run_id="r",
        model="m",
        batch_id="b",
        status="waiting_approval",
        outcome=None,
        requested_by="ann",
        created_at=now(),
        summary={},
    )
    assert is_own_run("ann", run)
    assert is_own_run("  ANN ", run)  # casefolded and stripped: the same person
    assert not is_own_run("bob", run)
    with pytest.raises(InvalidPrincipal):
        is_own_run("ann\u200b", run)  # an invisible character is not a new person
