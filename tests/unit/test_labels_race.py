"""Writers of a model's log racing a window's closing, on a real PostgreSQL (where they run at
once; SQLite's write lock at BEGIN serialises them): a window that commits while a labels
request stores labels of its rows is touched by the request (marked for the windower), never
taken for open rows whose labels it would get when it closed; a row whose insert is in
flight while a window closes is never left inside the closed window's id range."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftpilot.core import settings as settings_module
from driftpilot.inference.labels import LabelsPosted, post_labels, unattached
from driftpilot.inference.log import lock_log
from driftpilot.inference.windows import Windows
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.engine import now
from driftpilot.store.models import InferenceRow, InferenceWindow
from tests.conftest import use_fresh_databases
from tests.pg import PostgresServer
from tests.rows import model_without_champion, window_of_rows


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
    cp.store.add_all([inference_row(f"r{i}") for i in range(count)])


def inference_row(row_id: str) -> InferenceRow:
    payload = json.dumps({"row_id": row_id, "t": "2026-03-01T11:00:00+00:00", "x": 1.0})
    return InferenceRow(
        model="m",
        row_id=row_id,
        event_time="2026-03-01T11:00:00+00:00",
        payload=payload,
        digest=hashlib.sha256(payload.encode()).hexdigest(),
        received_at=now(),
    )


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
            lock_log(session, "m", exclusive=True)
            session.add(
                InferenceWindow(
                    model="m", number=1, n_rows=10, first_id=1, last_id=10, reason="rows",
                    opened_at=at, closed_at=at, batch_id="window-1", run_id=None,
                )
            )  # fmt: skip
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
    threading.Event().wait(0.5)  # the request waits for the closer's log lock
    go.set()
    closer.join(10)
    labeller.join(10)
    [answer] = answers
    assert answer.open_rows == 0
    assert [(w.number, w.outcome) for w in answer.windows] == [(1, "waiting")]
    assert unattached() == {("m", 1)}  # the windower attaches it once the run has ended


@pytest.mark.parametrize("closed_before", [False, True], ids=["first-window", "after-a-window"])
def test_a_row_in_flight_while_a_window_closes_is_in_the_window_not_lost(
    pg_plane: ControlPlane, closed_before: bool
) -> None:
    """PostgreSQL hands a row its id before commit: a close that did not wait for the insert
    would take a range holding the row's id without the row, which then commits inside it
    (in no batch, and the window's count wrong); after an earlier window, a plan whose ids
    all came after the row's would leave it in no window (before the new one's first id)."""
    log_rows(pg_plane, 5)
    if closed_before:
        assert len(Windows(pg_plane).close_due("m", flush=True)) == 1
    inserted, go = threading.Event(), threading.Event()

    def in_flight() -> None:
        with pg_plane.store.session() as session:
            lock_log(session, "m")
            session.add(inference_row("late"))
            session.flush()  # its id is taken now
            inserted.set()
            go.wait(10)

    writer = threading.Thread(target=in_flight)
    writer.start()
    assert inserted.wait(10)
    with pg_plane.store.session() as session:  # a later id, committed first
        lock_log(session, "m")
        session.add(inference_row("after"))
    closed: list[object] = []
    closer = threading.Thread(
        target=lambda: closed.extend(Windows(pg_plane).close_due("m", flush=True))
    )
    closer.start()
    closer.join(0.5)
    try:
        assert closer.is_alive()  # waits for the insert in flight
    finally:
        go.set()
        writer.join(10)
        closer.join(10)
    window = Windows(pg_plane).windows("m").windows[0]  # the newest
    number = 2 if closed_before else 1
    held = window_of_rows(pg_plane.store, "m")
    assert window.number == number and held["late"] == number and held["after"] == number
    assert (
        window.n_rows == sum(1 for n in held.values() if n == number) == (2 if closed_before else 7)
    )
