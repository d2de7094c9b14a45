"""Windows of the inference log (``driftpilot.inference.windows``): when a window is due
(rows, minutes, both, flush), closing it exactly once in one transaction, in order, and
driving it into one run (trigger ``window``) even when driven again after a crash. The clock
is injected: no test sleeps."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from driftpilot.core.errors import NotFound
from driftpilot.core.settings import Settings
from driftpilot.inference.log import windows_of
from driftpilot.inference.plans import WindowSetting, plan, window_run_id
from driftpilot.inference.windower import Windower
from driftpilot.inference.windows import AGENT, CLOSE_TOOL, Windows
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.engine import stamp
from driftpilot.store.models import InferenceRow, InferenceWindow, ManagedModel, Run, ToolCall
from tests.rows import model_without_champion

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


@pytest.fixture
def plane(settings: Settings) -> Iterator[ControlPlane]:
    cp = ControlPlane(settings)
    cp.store.add_all([model_without_champion("m")])
    yield cp
    cp.close()


def log_rows(cp: ControlPlane, count: int, at: datetime = T0, start: int = 0) -> None:
    """``count`` rows of model ``m``, received at ``at`` (one microsecond apart)."""
    rows = []
    for i in range(start, start + count):
        payload = json.dumps(
            {
                "row_id": f"r{i}",
                "t": "2026-03-01T11:00:00+00:00",
                "x": float(i),
                "prediction": i % 2,
            },
            sort_keys=True,
        )
        rows.append(
            InferenceRow(
                model="m",
                row_id=f"r{i}",
                event_time="2026-03-01T11:00:00+00:00",
                payload=payload,
                digest=hashlib.sha256(payload.encode()).hexdigest(),
                received_at=stamp(at + timedelta(microseconds=i - start)),
            )
        )
    cp.store.add_all(rows)


def set_window(cp: ControlPlane, **setting: Any) -> None:
    with cp.store.session() as session:
        model = session.get(ManagedModel, "m")
        assert model is not None
        model.windowing = json.dumps(setting)


def rows_by_window(cp: ControlPlane) -> dict[int | None, list[int]]:
    with cp.store.reading() as session:
        ids = [int(i) for i in session.scalars(select(InferenceRow.id).order_by(InferenceRow.id))]
        numbers = windows_of(session, "m", ids)
    out: dict[int | None, list[int]] = {}
    for number, row_id in zip(numbers, ids, strict=True):
        out.setdefault(number, []).append(row_id)
    return out


def rows_at(*minutes: float) -> list[tuple[int, str]]:
    return [(i + 1, stamp(T0 + timedelta(minutes=m))) for i, m in enumerate(minutes)]


# -- when a window is due ----------------------------------------------------------------------


def test_a_rows_window_takes_the_first_n_open_rows_once_n_are_open() -> None:
    setting = WindowSetting(rows=10)
    assert plan(rows_at(*[0] * 9), setting, T0, cap=1000) is None
    due = plan(rows_at(*[0] * 12), setting, T0 + timedelta(days=9), cap=1000)
    assert due is not None and due.ids == list(range(1, 11)) and due.reason == "rows"
    assert plan([], setting, T0, cap=1000) is None


def test_a_minutes_window_closes_m_minutes_after_its_first_row() -> None:
    setting = WindowSetting(minutes=5)
    rows = rows_at(0, 1, 4.99, 5, 6)
    assert plan(rows, setting, T0 + timedelta(minutes=4, seconds=59), cap=1000) is None
    due = plan(rows, setting, T0 + timedelta(minutes=5), cap=1000)
    assert due is not None and due.reason == "minutes"
    assert due.ids == [1, 2, 3]  # received before 12:05; the 12:05 row opens the next
    assert due.opened_at == stamp(T0)


def test_both_close_on_whichever_comes_first() -> None:
    setting = WindowSetting(rows=10, minutes=5)
    by_rows = plan(rows_at(*range(11)), setting, T0 + timedelta(minutes=3), cap=1000)
    assert by_rows is not None and by_rows.reason == "rows" and by_rows.ids == list(range(1, 11))
    by_minutes = plan(rows_at(0, 1), setting, T0 + timedelta(minutes=5), cap=1000)
    assert by_minutes is not None and (by_minutes.reason, by_minutes.ids) == ("minutes", [1, 2])
    # Past the deadline with more rows than a window holds: still at most `rows`.
    late = plan(rows_at(*[0] * 12), setting, T0 + timedelta(hours=1), cap=1000)
    assert late is not None and late.ids == list(range(1, 11)) and late.reason == "rows"


def test_a_window_never_holds_more_than_the_cap_and_a_flush_takes_whats_open() -> None:
    due = plan(rows_at(*[0] * 8), WindowSetting(minutes=1), T0 + timedelta(minutes=2), cap=5)
    assert due is not None and due.ids == [1, 2, 3, 4, 5]
    flushed = plan(rows_at(0, 0), WindowSetting(rows=10), T0, cap=5, flush=True)
    assert flushed is not None and (flushed.reason, flushed.ids) == ("flush", [1, 2])


def test_a_window_setting_needs_rows_or_minutes_in_bounds() -> None:
    for bad in ({}, {"rows": None, "minutes": None}, {"rows": 9}, {"minutes": 0}):
        with pytest.raises(ValidationError):
            WindowSetting.model_validate(bad)
    assert WindowSetting(rows=10, minutes=0.5).minutes == 0.5


# -- closing -----------------------------------------------------------------------------------


def test_closing_marks_every_row_once_in_order_and_audits_each_window(
    plane: ControlPlane,
) -> None:
    set_window(plane, rows=10, minutes=None)
    log_rows(plane, 25)
    windows = Windows(plane, clock=Clock())
    closed = windows.close_due("m")
    assert [(w.number, w.n_rows, w.reason) for w in closed] == [(1, 10, "rows"), (2, 10, "rows")]
    assert windows.close_due("m") == []  # nothing more is due: nothing is written
    by_window = rows_by_window(plane)
    assert [len(by_window[n]) for n in (1, 2, None)] == [10, 10, 5]
    assert max(by_window[1]) < min(by_window[2]) < min(by_window[None])
    assert (closed[0].first_id, closed[0].last_id) == (by_window[1][0], by_window[1][-1])
    calls = plane.store.list_rows(ToolCall, ToolCall.agent == AGENT, ToolCall.tool == CLOSE_TOOL)
    assert [json.loads(c.args)["number"] for c in calls] == [1, 2]
    assert calls[0].run_id == window_run_id("m", 1, closed[0].closed_at)
    assert plane.store.verify().ok
    view = windows.windows("m")
    assert view.open_rows == 5 and [w.number for w in view.windows] == [2, 1]
    assert all(w.run_id is None for w in view.windows)  # not driven yet


def test_a_minutes_window_follows_the_injected_clock(plane: ControlPlane) -> None:
    set_window(plane, rows=None, minutes=2)
    clock = Clock()
    log_rows(plane, 3, at=T0)
    log_rows(plane, 2, at=T0 + timedelta(minutes=3), start=3)
    windows = Windows(plane, clock=clock)
    clock.advance(minutes=1, seconds=59)
    assert windows.close_due("m") == []
    clock.advance(seconds=1)
    first = windows.close_due("m")
    assert [(w.number, w.n_rows, w.reason) for w in first] == [(1, 3, "minutes")]
    assert first[0].closed_at == stamp(T0 + timedelta(minutes=2))
    clock.advance(minutes=3)  # 12:05: the 12:03 rows' window is due too
    assert [(w.number, w.n_rows) for w in windows.close_due("m")] == [(2, 2)]
    assert None not in rows_by_window(plane)


def test_concurrent_closers_put_every_row_in_exactly_one_window(plane: ControlPlane) -> None:
    set_window(plane, rows=10, minutes=None)
    log_rows(plane, 500)
    closers = [Windows(plane, clock=Clock()) for _ in range(4)]
    found: list[list[int]] = [[] for _ in closers]
    failed: list[BaseException] = []

    def close(i: int) -> None:
        try:
            found[i] = [w.number for w in closers[i].close_due("m", most=1000)]
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=close, args=(i,)) for i in range(len(closers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failed
    assert sorted(n for numbers in found for n in numbers) == list(range(1, 51))
    assert plane.store.verify().ok  # 50 tool calls appended by four closers, one chain
    by_window = rows_by_window(plane)
    assert None not in by_window and sorted(n for n in by_window if n is not None) == list(
        range(1, 51)
    )
    assert all(len(ids) == 10 for ids in by_window.values())
    # In order: window n holds the ids just before window n + 1's.
    for n in range(1, 50):
        assert max(by_window[n]) < min(by_window[n + 1])


def test_flush_closes_what_is_open_without_a_setting(plane: ControlPlane) -> None:
    log_rows(plane, 4)
    windows = Windows(plane, clock=Clock())
    assert windows.close_due("m") == []  # no setting: nothing closes by itself
    assert [(w.n_rows, w.reason) for w in windows.close_due("m", flush=True)] == [(4, "flush")]
    with pytest.raises(NotFound):
        windows.close_due("nope")


# -- driving -----------------------------------------------------------------------------------


def test_a_window_becomes_one_run_even_when_driven_again_after_a_crash(
    plane: ControlPlane,
) -> None:
    set_window(plane, rows=10, minutes=None)
    log_rows(plane, 20)
    handed: list[str] = []
    windows = Windows(plane, execute=handed.append, clock=Clock())
    made = windows.tick()
    assert len(made) == 2 and handed == made
    runs = plane.store.list_rows(Run, order=Run.created_at)
    assert {r.id for r in runs} == set(made)
    assert {r.trigger for r in runs} == {"window"} and {r.status for r in runs} == {"pending"}
    first = plane.get_run(made[0])
    assert first.metadata["window"] == 1 and first.metadata["rows"] == 10
    assert first.batch_id == "window-1"
    # A crash after the run was made and before the window recorded it: driven again, the
    # window finds its run (the same id), and no second run is made.
    with plane.store.session() as session:
        session.execute(update(InferenceWindow).values(run_id=None))
    assert [w.number for w in windows.undriven()] == [1, 2]
    assert windows.tick() == made
    assert len(plane.store.list_rows(Run)) == 2
    assert windows.undriven() == []
    assert [w.run_id for w in windows.windows("m").windows] == made[::-1]


# -- late labels on the rows ---------------------------------------------------------------------


def test_labels_are_stored_once_on_their_rows_all_or_nothing(plane: ControlPlane) -> None:
    from driftpilot.inference.labels import LabelConflict, catch_up, post_labels, unattached
    from driftpilot.inference.rows import RowsRefused

    set_window(plane, rows=10, minutes=None)
    log_rows(plane, 12)
    Windows(plane, clock=Clock()).tick()  # window 1 (its run pending): rows r0..r9
    with pytest.raises(RowsRefused, match="unknown row id 'zz'"):
        post_labels(plane, "m", [{"row_id": "r1", "y": 1}, {"row_id": "zz", "y": 0}], "ann")
    with pytest.raises(RowsRefused, match="0/1"):
        post_labels(plane, "m", [{"row_id": "r1", "y": 3}], "ann")
    with pytest.raises(RowsRefused, match="twice with other labels"):
        post_labels(plane, "m", [{"row_id": "r1", "y": 1}, {"row_id": "r1", "y": 0}], "ann")
    with plane.store.reading() as session:
        assert (
            session.scalars(select(InferenceRow.label).where(InferenceRow.label.is_not(None))).all()
            == []
        )
    done = post_labels(
        plane, "m", [{"row_id": "r1", "y": True}, {"row_id": "r11", "y": "false"}], "ann"
    )
    assert (done.accepted, done.duplicates, done.open_rows) == (2, 0, 1)
    [window] = done.windows
    assert window.number == 1 and window.outcome == "waiting"  # its run has filed nothing yet
    assert unattached() == {("m", 1)} and unattached() == set()  # marked for the windower
    assert catch_up(plane, "m", 1) is False  # its run is pending: look again later
    again = post_labels(plane, "m", [{"row_id": "r1", "y": 1}], "ann")
    assert (again.accepted, again.duplicates) == (0, 1)
    with pytest.raises(LabelConflict, match="'r1'"):
        post_labels(plane, "m", [{"row_id": "r2", "y": 1}, {"row_id": "r1", "y": 0}], "ann")
    with plane.store.reading() as session:
        stored = dict(
            session.execute(
                select(InferenceRow.row_id, InferenceRow.label).where(
                    InferenceRow.label.is_not(None)
                )
            ).all()
        )
    assert stored == {"r1": "1", "r11": "0"}  # r2 was refused with the conflict


def test_the_windower_starts_the_run_children_once_a_model_is_windowed(
    plane: ControlPlane,
) -> None:
    started: list[int] = []
    windows = Windows(plane, execute=lambda run_id: None)
    windower = Windower(windows, tick_s=0.01, prepare=lambda: started.append(1))
    windower.start()
    try:
        windower.poke()
        threading.Event().wait(0.1)
        assert started == []  # no windowed model: no child costs ~9 s of imports for nothing
        set_window(plane, rows=100)
        for _ in range(200):
            if started:
                break
            threading.Event().wait(0.01)
        threading.Event().wait(0.1)
    finally:
        windower.shutdown()
    assert started == [1]


def test_a_window_run_renders_its_report_on_request_only(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    from driftpilot.runs.views import RunView

    queued: list[str] = []
    monkeypatch.setattr(plane.settings, "report_render", "after_run")
    monkeypatch.setattr(plane.reports, "render_later", queued.append)
    for trigger in ("window", "api"):
        view = RunView(
            run_id=f"r-{trigger}",
            model="m",
            batch_id="b",
            status="completed",
            outcome="no_retrain:none",
            requested_by="t",
            created_at="2026-12-07T00:00:00+00:00",
            summary={},
            trigger=trigger,
            report_status="pending",
        )
        plane.report_after_run(view)
    assert queued == ["r-api"]


# -- a window that cannot become a run, the setting's audit, labels' bounds ------------------------


def corrupt(cp: ControlPlane, row_id: str, payload: str) -> None:
    with cp.store.session() as session:
        session.execute(
            update(InferenceRow).where(InferenceRow.row_id == row_id).values(payload=payload)
        )


def test_a_window_that_cannot_become_a_run_holds_back_the_later_ones_and_backs_off(
    plane: ControlPlane,
) -> None:
    from driftpilot.inference.windows import DRIVE_TOOL, RETRY_FIRST_S

    set_window(plane, rows=10, minutes=None)
    log_rows(plane, 30)
    with plane.store.reading() as session:
        good = session.scalar(select(InferenceRow.payload).where(InferenceRow.row_id == "r0"))
    corrupt(plane, "r0", "{not json")  # window 1 makes no batch
    clock = Clock()
    windows = Windows(plane, execute=lambda run_id: None, clock=clock)
    assert windows.tick() == []
    # Window 2 must not be driven before window 1: its run would be made, and run, first.
    assert plane.store.list_rows(Run) == []
    assert [w.number for w in windows.undriven()] == [1, 2, 3]
    assert windows.failing[("m", 1)].attempts == 1
    assert "ComputeError" in windows.failing[("m", 1)].error
    for _ in range(3):  # backing off: no try (and no traceback) every tick
        assert windows.tick() == []
    assert windows.failing[("m", 1)].attempts == 1
    clock.advance(seconds=RETRY_FIRST_S)
    assert windows.tick() == [] and windows.failing[("m", 1)].attempts == 2
    reported = plane.store.list_rows(ToolCall, ToolCall.tool == DRIVE_TOOL)
    assert len(reported) == 1 and not reported[0].ok  # reported once, at the first failure
    assert json.loads(reported[0].args) == {"model": "m", "number": 1}
    corrupt(plane, "r0", str(good))
    clock.advance(seconds=2 * RETRY_FIRST_S)
    made = windows.tick()
    assert len(made) == 3 and windows.failing == {}
    ordered = plane.store.list_rows(Run, order=Run.created_at)
    assert [plane.get_run(r.id).metadata["window"] for r in ordered] == [1, 2, 3]


def test_a_window_setting_is_never_changed_without_its_audit(plane: ControlPlane) -> None:
    from sqlalchemy import text

    from tests.conftest import on_postgres

    if on_postgres():
        refuse = [
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; "
            "END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_calls BEFORE INSERT ON tool_calls FOR EACH ROW "
            "EXECUTE FUNCTION refuse()",
        ]
    else:
        refuse = [
            "CREATE TRIGGER refuse_calls BEFORE INSERT ON tool_calls "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ]
    with plane.store.engine.begin() as conn:
        for statement in refuse:
            conn.execute(text(statement))
    windows = Windows(plane, clock=Clock())
    with pytest.raises(Exception, match="refused"):
        windows.set_window("m", WindowSetting(rows=10), "ann")
    assert plane.store.get(ManagedModel, "m").windowing is None  # not set without its audit
    with plane.store.engine.begin() as conn:
        conn.execute(
            text("DROP TRIGGER refuse_calls" + (" ON tool_calls" if on_postgres() else ""))
        )
    assert windows.set_window("m", WindowSetting(rows=10), "ann").setting == WindowSetting(rows=10)
    [call] = plane.store.list_rows(ToolCall, ToolCall.tool == "window.set")
    assert json.loads(call.args) == {"model": "m", "by": "ann"}
    assert plane.store.verify().ok
    with pytest.raises(NotFound):
        windows.set_window("nope", None, "ann")


def test_labels_touching_many_windows_attach_a_few_and_queue_the_rest(
    plane: ControlPlane,
) -> None:
    from driftpilot.inference.labels import INLINE_WINDOWS, post_labels, unattached

    set_window(plane, rows=10, minutes=None)
    log_rows(plane, 50)
    Windows(plane, clock=Clock()).tick()  # windows 1..5, their runs pending
    unattached()  # marks other tests left
    done = post_labels(plane, "m", [{"row_id": f"r{10 * n + 1}", "y": 1} for n in range(5)], "a")
    outcomes = [(w.number, w.outcome) for w in done.windows]
    assert INLINE_WINDOWS == 3
    waiting = [(n, "waiting") for n in (1, 2, 3)]
    assert outcomes == [*waiting, (4, "queued"), (5, "queued")]
    assert unattached() == {("m", n) for n in range(1, 6)}  # every one is the windower's


def test_a_label_is_stamped_by_the_stores_clock(plane: ControlPlane) -> None:
    from driftpilot.inference.labels import _late, post_labels

    clock = Clock()
    plane.store.clock = clock
    set_window(plane, rows=10, minutes=None)
    log_rows(plane, 10)
    Windows(plane).tick()  # closed by the store's clock: at T0
    clock.advance(minutes=20)
    post_labels(plane, "m", [{"row_id": "r3", "y": 1}], "ann")
    with plane.store.reading() as session:
        at = session.scalar(select(InferenceRow.labelled_at).where(InferenceRow.row_id == "r3"))
        window = session.get(InferenceWindow, ("m", 1))
    assert at == stamp(T0 + timedelta(minutes=20))
    assert window is not None and _late(plane, window) == 1


def test_logging_rows_pokes_the_apps_windower(plane: ControlPlane) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from driftpilot.core.settings import ApiSettings

    key = plane.create_api_key("olga", "operator")[1]
    set_window(plane, rows=10, minutes=None)
    # The window's run in the app's threads: the poke is the point here, not where the run
    # goes. With run children (the SQLite default) the windower spawns them (~9 CPU s of
    # imports each, waited for at shutdown); that is tested above.
    with TestClient(create_app(plane, ApiSettings(workers=1, run_processes=0))) as client:
        runtime = client.app.state.runtime  # type: ignore[attr-defined]
        runtime.windower.shutdown()
        # Ticks an hour apart: only a poke closes the window while the test waits.
        runtime.windower = Windower(Windows(plane), tick_s=3600).start()
        threading.Event().wait(0.3)  # its first tick (nothing open) is over
        rows = [
            {"row_id": f"p{i}", "t": "2026-03-01T11:00:00Z", "x": float(i), "prediction": 1}
            for i in range(10)
        ]
        answer = client.post("/models/m/inferences", json=rows, headers={"X-Api-Key": key})
        assert answer.status_code == 200, answer.text
        for _ in range(100):
            if Windows(plane).windows("m").windows:
                break
            threading.Event().wait(0.05)
    assert [w.n_rows for w in Windows(plane).windows("m").windows] == [10]
