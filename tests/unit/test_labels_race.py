"""Labels racing a window's closing, on a real PostgreSQL (where a label request and a closer
run at once; SQLite's write lock at BEGIN serialises them): a window that commits while a
labels request stores labels of its rows is touched by the request (marked for the
windower), never taken for open rows whose labels it would get when it closed."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from driftpilot.core import settings as settings_module
from driftpilot.inference.labels import LabelsPosted, post_labels, unattached
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.engine import now
from driftpilot.store.models import InferenceRow, InferenceWindow
from tests.conftest import use_fresh_databases
from tests.pg import PostgresServer
from tests.rows import model_without_champion


@pytest.fixture
def pg_plane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres: PostgresServer
) -> Iterator[ControlPlane]:
    monkeypatch.setenv("DRIFTPILOT_HOME", str(tmp_path / "home"))
    drop = use_fresh_databases(postgres, monkeypatch)
    settings_module.get_settings.cache_clear()
    cp = ControlPlane(settings_module.get_settings())
    try:
        cp.store.add_all([model_without_champion("m")])
        yield cp
    finally:
        cp.close()
        settings_module.get_settings.cache_clear()
        drop()


def log_rows(cp: ControlPlane, count: int) -> None:
    rows = []
    for i in range(count):
        payload = json.dumps({"row_id": f"r{i}", "t": "2026-03-01T11:00:00+00:00", "x": 1.0})
        rows.append(
            InferenceRow(
                model="m",
                row_id=f"r{i}",
                event_time="2026-03-01T11:00:00+00:00",
                payload=payload,
                digest=hashlib.sha256(payload.encode()).hexdigest(),
                received_at=now(),
            )
        )
    cp.store.add_all(rows)


def test_a_window_committing_while_labels_are_stored_is_touched_by_the_request(
    pg_plane: ControlPlane,
) -> None:
    log_rows(pg_plane, 10)
    unattached()  # marks other tests left
    marked, go = threading.Event(), threading.Event()
    answers: list[LabelsPosted] = []

    def close() -> None:
        """What closing writes, held open until the labels request is under way."""
        at = now()
        with pg_plane.store.session() as session:
            session.add(
                InferenceWindow(
                    model="m", number=1, n_rows=10, first_id=1, last_id=10, reason="rows",
                    opened_at=at, closed_at=at, batch_id="window-1", run_id=None,
                )
            )  # fmt: skip
            session.execute(update(InferenceRow).values(window_number=1))
            session.flush()
            marked.set()
            go.wait(10)

    def label() -> None:
        answers.append(post_labels(pg_plane, "m", [{"row_id": "r3", "y": 1}], "ann"))

    closer = threading.Thread(target=close)
    closer.start()
    assert marked.wait(10)
    labeller = threading.Thread(target=label)
    labeller.start()
    threading.Event().wait(0.5)  # the request waits for the closer's row locks
    go.set()
    closer.join(10)
    labeller.join(10)
    [answer] = answers
    assert answer.open_rows == 0
    assert [(w.number, w.outcome) for w in answer.windows] == [(1, "waiting")]
    assert unattached() == {("m", 1)}  # the windower attaches it once the run has ended
