"""Schedule rows on every backend, through the store's primitives the Scheduler uses: create,
update, list (filtered, ordered), delete; and a batch is claimed once per schedule."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from driftpilot.core.errors import NotFound
from driftpilot.store import AuditStore
from driftpilot.store.audit import now
from driftpilot.store.models import Schedule, ScheduleBatch


def schedule(cron_id: str, model: str, enabled: bool = True) -> Schedule:
    stamp = now()
    return Schedule(
        cron_id=cron_id,
        model=model,
        schedule="*/5 * * * *",
        timezone="Europe/Paris",
        enabled=enabled,
        payload=json.dumps({"model": model, "source": {"glob": "in/*.csv"}}),
        multitask_strategy="reject",
        meta="{}",
        created_by="alice",
        created_at=stamp,
        updated_at=stamp,
    )


def test_schedule_rows_are_created_updated_listed_and_deleted(store: AuditStore) -> None:
    for cron_id, model, enabled in (("c1", "m", True), ("c2", "m", False), ("c3", "n", True)):
        store.add(schedule(cron_id, model, enabled))
    assert [r.cron_id for r in store.list_rows(Schedule, order=Schedule.created_at)] == [
        "c1",
        "c2",
        "c3",
    ]
    live = store.list_rows(Schedule, Schedule.enabled.is_(True))
    assert [r.cron_id for r in live] == ["c1", "c3"]
    with store.session() as session:
        row = session.get(Schedule, "c2")
        assert row is not None
        row.enabled, row.schedule, row.updated_at = True, "0 12 * * 1", now()
    updated = store.get(Schedule, "c2")
    assert (updated.enabled, updated.schedule, updated.timezone) == (
        True,
        "0 12 * * 1",
        "Europe/Paris",
    )
    assert [r.cron_id for r in store.list_rows(Schedule, Schedule.model == "m")] == ["c1", "c2"]
    with store.session() as session:
        session.delete(session.get(Schedule, "c1"))
    with pytest.raises(NotFound):
        store.get(Schedule, "c1")
    assert [r.cron_id for r in store.list_rows(Schedule)] == ["c2", "c3"]


def claim(store: AuditStore, cron_id: str, key: str) -> int:
    with store.session() as session:
        entry = ScheduleBatch(
            cron_id=cron_id, batch_key=key, batch_id=key, run_id=None, created_at=now()
        )
        session.add(entry)
        session.flush()
        return int(entry.id)


def test_a_batch_is_claimed_once_per_schedule(store: AuditStore) -> None:
    first = claim(store, "c1", "in/2013-01.csv")
    with pytest.raises(IntegrityError):
        claim(store, "c1", "in/2013-01.csv")
    claim(store, "c2", "in/2013-01.csv")  # another schedule may take the same batch
    with store.session() as session:
        session.execute(delete(ScheduleBatch).where(ScheduleBatch.id == first))
    claim(store, "c1", "in/2013-01.csv")  # an unclaimed batch can be claimed again
    keys = [(r.cron_id, r.batch_key) for r in store.list_rows(ScheduleBatch)]
    assert sorted(keys) == [("c1", "in/2013-01.csv"), ("c2", "in/2013-01.csv")]
