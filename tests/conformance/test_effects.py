"""Intents and step effects on every backend: an intent stays open until its end row; a run
step's effect is recorded once (a replay keeps the first); a run's status moves by
compare-and-set."""

from __future__ import annotations

from driftpilot.store import AuditStore
from driftpilot.store.audit import now
from driftpilot.store.models import Run, StepEffect


def test_an_intent_is_open_until_its_end_row(store: AuditStore) -> None:
    store.record_mutation("r1", "promote", "set_alias", "intent", {"version": 2})
    store.record_mutation("r2", "promote", "set_alias", "intent", {"version": 5})
    store.record_mutation("r1", "register", "register", "intent", {})
    assert [(m.run_id, m.step) for m in store.open_intents()] == [
        ("r1", "promote"),
        ("r2", "promote"),
        ("r1", "register"),
    ]
    store.record_mutation("r1", "promote", "set_alias", "applied", {"version": 2}, {"ok": 1})
    store.record_mutation("r1", "register", "register", "void", {}, None)
    assert store.open_intent("r1", "promote") is None
    assert store.open_intent("r1", "register") is None
    open_one = store.open_intent("r2", "promote")
    assert open_one is not None and open_one.phase == "intent"
    assert [(m.run_id, m.step) for m in store.open_intents()] == [("r2", "promote")]
    last = store.last_mutation("r1", "promote")
    assert last is not None and last.phase == "applied"
    assert store.verify().checked["mutations"] == 5


def test_a_step_effect_is_recorded_once_per_run_step(store: AuditStore) -> None:
    assert store.effect("r1", "train") is None
    store.record_effect("r1", "train", {"version": 3})
    store.record_effect("r1", "train", {"version": 4})  # a replay keeps the first record
    store.record_effect("r1", "promote", {"alias": "champion"})
    store.record_effect("r2", "train", {"version": 9})
    assert store.effect("r1", "train") == {"version": 3}
    kept = store.list_rows(StepEffect, StepEffect.run_id == "r1", StepEffect.step == "train")
    assert len(kept) == 1
    assert store.effect("r1", "promote") == {"alias": "champion"}
    assert store.effect("r2", "train") == {"version": 9}


def test_a_run_transition_is_a_compare_and_set(store: AuditStore) -> None:
    stamp = now()
    store.add(
        Run(
            id="r1",
            model="m",
            batch_id="b",
            trigger="api",
            requested_by="ann",
            status="pending",
            outcome=None,
            summary="{}",
            created_at=stamp,
            updated_at=stamp,
        )
    )
    assert store.transition_run("r1", "pending", status="running")
    assert not store.transition_run("r1", "pending", status="failed")  # the first claim won
    assert store.get(Run, "r1").status == "running"
    assert [r.id for r in store.query_runs(model="m", status="running")] == ["r1"]
