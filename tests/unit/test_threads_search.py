"""Thread search in SQL (``driftpilot.store.threads.search``): placeholders and bare control
runs, filtered by status, ids, metadata and values, sorted and paged by the query."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from driftpilot.store import threads
from driftpilot.store.audit import AuditStore
from driftpilot.store.models import Run

PLACEHOLDER, BOUND = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
DONE, WAITING, FAILED = "a" * 32, "b" * 32, "c" * 32


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AuditStore]:
    """The runs and threads of the tests, on SQLite and on PostgreSQL (JSON matches differ:
    ``json_extract`` there, ``@>`` here)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    store = AuditStore(url)
    with store.session() as session:
        for run_id, status, outcome, at in (
            (DONE, "completed", "promoted", "2026-01-01T00:00:01+00:00"),
            (WAITING, "waiting_approval", None, "2026-01-01T00:00:03+00:00"),
            (FAILED, "failed", None, "2026-01-01T00:00:05+00:00"),
        ):
            session.add(
                Run(
                    id=run_id,
                    model="flights",
                    batch_id=f"flights:{run_id[0]}",
                    trigger="api",
                    requested_by="olga",
                    status=status,
                    outcome=outcome,
                    summary='{"drift": {"detected": true}}' if run_id == DONE else "{}",
                    created_at=at,
                    updated_at=at,
                )
            )
    threads.add(store, PLACEHOLDER, {"ticket": "T-1", "n": 1}, "vic")
    threads.add(store, BOUND, {}, "olga")
    assert threads.bind(store, BOUND, WAITING, "control", {"via": "sdk"}, "reject", "t")
    assert not threads.bind(store, BOUND, FAILED, "control", {}, "reject", "t")  # bound once
    yield store
    store.engine.dispose()


def ids(store: AuditStore, **query: object) -> list[str]:
    query.setdefault("waiting", {WAITING})
    query.setdefault("limit", 100)
    return [r.thread_id for r in threads.search(store, **query)]  # type: ignore[arg-type]


def test_a_bound_run_shows_under_its_placeholder_only(store: AuditStore) -> None:
    found = ids(store, sort_by="thread_id", sort_order="asc")
    assert found == [PLACEHOLDER, BOUND, DONE, FAILED]
    assert threads.of_run(store, WAITING).thread_id == BOUND  # type: ignore[union-attr]
    row = threads.search(store, waiting=set(), ids=[BOUND])[0]
    assert (row.run_id, row.assistant_id, row.placeholder) == (WAITING, "control", True)


def test_status_filters(store: AuditStore) -> None:
    assert sorted(ids(store, status="idle")) == sorted([PLACEHOLDER, DONE])
    assert ids(store, status="interrupted") == [BOUND]
    assert ids(store, status="busy") == []
    assert ids(store, status="busy", waiting=set()) == [BOUND]  # decided: about to resume
    assert ids(store, status="error") == [FAILED]


def test_metadata_and_values_filters(store: AuditStore) -> None:
    assert ids(store, metadata={"ticket": "T-1"}) == [PLACEHOLDER]
    assert ids(store, metadata={"ticket": "T-1", "n": 1}) == [PLACEHOLDER]
    assert ids(store, metadata={"n": "1"}) == []
    assert len(ids(store, metadata={"graph_id": "control"})) == 4
    assert ids(store, metadata={"graph_id": "agent"}) == []
    assert sorted(ids(store, metadata={"assistant_id": "flights"})) == sorted([DONE, FAILED])
    assert ids(store, metadata={"run_id": WAITING}) == [BOUND]
    assert ids(store, metadata={"created_by": "vic"}) == [PLACEHOLDER]
    assert ids(store, values={"outcome": "promoted"}) == [DONE]
    assert ids(store, values={"status": "interrupted", "model": "flights"}) == [BOUND]
    assert ids(store, values={"drift": {"detected": True}}) == [DONE]
    with pytest.raises(ValueError, match="steps"):
        ids(store, values={"steps": []})


def test_sort_and_pages(store: AuditStore) -> None:
    newest_first = ids(store)
    created = [r.created_at for r in threads.search(store, waiting=set(), limit=100)]
    assert created == sorted(created, reverse=True)
    assert ids(store, limit=2, offset=1) == newest_first[1:3]
    assert ids(store, ids=[DONE, PLACEHOLDER], sort_by="thread_id") == [DONE, PLACEHOLDER]
