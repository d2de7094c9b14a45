"""The one champion-move transaction (tools.champion) on a real audit store, with the plane's
own write-ahead (RunContext.mutate): what it writes, in which order, and what a replay after
a crash adds. The alias move itself is MLflow's (tests/integration/test_governance.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import delete

from driftpilot.core.errors import ChampionMoved
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.audit import now
from driftpilot.store.models import (
    ChampionChange,
    Decision,
    ManagedModel,
    Mutation,
    StepEffect,
    ToolCall,
)
from tools import champion
from tools.registry import PromotionResult


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(Settings(home=tmp_path / "home").ensure_dirs())
    cp.store.add(
        ManagedModel(
            name="m",
            created_at=now(),
            source="",
            target="y",
            time_col="t",
            numeric="[]",
            categorical="[]",
            family="lightgbm",
            metric="roc_auc",
        )
    )
    yield cp
    cp.close()


def record(moved: PromotionResult) -> champion.Record:
    return champion.Record(
        version=moved.current,
        previous=moved.previous,
        model_fields={"baseline": 0.8, "reference_path": "/w.parquet"},
        rationale=f"moved v{moved.previous} -> v{moved.current}",
        evidence={"why": "test"},
        effect={"status": "promoted", "version": moved.current},
    )


def move(cp: ControlPlane, run_id: str = "r1") -> dict[str, object]:
    return champion._move(
        cp.ctx,
        "promote",
        run_id,
        "m",
        "bob",
        lambda: PromotionResult(name="m", previous=1, current=2, changed=True),
        {"name": "m", "version": 2, "expected": 1},
        record,
        "",
    )


def test_a_move_writes_intent_call_applied_history_model_decision_and_effect(
    plane: ControlPlane,
) -> None:
    effect = move(plane)
    assert effect == {"status": "promoted", "version": 2}
    store = plane.store
    assert [(m.step, m.action, m.phase) for m in store.list_rows(Mutation)] == [
        ("promote", "promote", "intent"),
        ("promote", "promote", "applied"),
    ]
    [call] = store.list_rows(ToolCall)
    assert (call.agent, call.tool, call.ok) == ("cicd", "registry.promote", True)
    [change] = store.list_rows(ChampionChange)
    assert (change.version, change.previous_version, change.action, change.actor) == (
        2,
        1,
        "promote",
        "bob",
    )
    row = store.get(ManagedModel, "m")
    assert (row.baseline, row.reference_path) == (0.8, "/w.parquet")
    [decision] = store.list_rows(Decision)
    assert (decision.agent, decision.action, decision.backend) == ("cicd", "promote", "none")
    assert json.loads(decision.evidence) == {"why": "test"}
    assert store.effect("r1", "promote") == effect
    assert store.verify().ok


def test_a_replay_after_the_effect_returns_it_and_writes_nothing(plane: ControlPlane) -> None:
    first = move(plane)
    assert move(plane) == first  # the node run again after its effect was recorded
    store = plane.store
    assert [m.phase for m in store.list_rows(Mutation)] == ["intent", "applied"]
    assert len(store.list_rows(ChampionChange)) == 1
    assert len(store.list_rows(Decision)) == 1


def test_a_replay_after_a_crash_before_the_effect_adds_no_second_history_or_decision(
    plane: ControlPlane,
) -> None:
    move(plane)
    store = plane.store
    with store.session() as session:  # the crash: history and decision written, no effect
        session.execute(delete(StepEffect).where(StepEffect.run_id == "r1"))
    move(plane)  # the node run again: the alias move reconciles, the records stay single
    assert [m.phase for m in store.list_rows(Mutation)] == ["intent", "applied", "reconciled"]
    assert len(store.list_rows(ChampionChange)) == 1
    assert len(store.list_rows(Decision)) == 1
    assert store.effect("r1", "promote") == {"status": "promoted", "version": 2}
    assert store.verify().ok


def test_a_refused_compare_and_swap_closes_its_intent_as_failed_and_records_a_failed_call(
    plane: ControlPlane,
) -> None:
    def refused() -> PromotionResult:
        raise ChampionMoved("champion is v3, not v1")

    with pytest.raises(ChampionMoved):
        champion._move(plane.ctx, "promote", "r2", "m", "bob", refused, {"name": "m"}, record, "")
    store = plane.store
    # the step raised: its intent is closed as failed (recover has nothing left to do)
    intent, failed = store.list_rows(Mutation)
    assert (intent.phase, failed.phase) == ("intent", "failed")
    assert "champion is v3, not v1" in failed.result
    assert store.open_intents() == []
    assert [c.ok for c in store.list_rows(ToolCall)] == [False]
    assert store.list_rows(ChampionChange) == [] and store.list_rows(Decision) == []
    assert store.effect("r2", "promote") is None
