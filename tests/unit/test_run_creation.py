"""Run creation only records and enqueues (issue 23): the view a submit answers is built from
what was written and equals a read of it; a frame is hashed in memory exactly as its filed
Parquet would be; the writers of one SQLite file queue on one lock of the process; the heap
is frozen once new code was imported, not after every run."""

from __future__ import annotations

import datetime as dt
import gc
import json
import sqlite3
import sys
import threading
import time
import types
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import event, text

from driftpilot.core.errors import AuditWriteError
from driftpilot.core.settings import Settings
from driftpilot.execution import inprocess
from driftpilot.runs.plane import ControlPlane
from driftpilot.store import AuditStore
from driftpilot.store import engine as engine_module
from driftpilot.store.audit import now
from driftpilot.store.models import ManagedModel, Run
from tools.data import content_hash


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(Settings(home=tmp_path / "home").ensure_dirs())
    cp.store.add(
        ManagedModel(
            name="m",
            source="test",
            target="y",
            time_col="t",
            numeric=json.dumps(["x"]),
            categorical=json.dumps(["c"]),
            family="lightgbm",
            metric="roc_auc",
            created_at=now(),
        )
    )
    yield cp
    cp.close()


def frame() -> pl.DataFrame:
    """Rows of the dtypes a batch may carry, with nulls."""
    return pl.DataFrame(
        {
            "t": [dt.datetime(2024, 1, d, tzinfo=dt.UTC) for d in (1, 2, 3)],
            "day": [dt.date(2024, 1, 1), None, dt.date(2024, 1, 3)],
            "x": [1.5, None, -2.0],
            "n": [1, 2, None],
            "c": pl.Series(["a", "b", None], dtype=pl.Categorical),
            "e": pl.Series(["lo", "hi", "lo"], dtype=pl.Enum(["lo", "hi"])),
            "flag": [True, None, False],
            "amount": pl.Series([Decimal("1.10"), Decimal("2.00"), None]),
            "y": [0, 1, 0],
        }
    )


def test_a_submit_answers_what_a_read_of_the_run_answers(plane: ControlPlane) -> None:
    metadata = {"schedule_id": "s-1", "note": "nightly"}
    view = plane.submit_run("m", frame(), "b1", requested_by="ann", metadata=metadata)
    assert view == plane.get_run(view.run_id)
    assert (view.status, view.schedule_id, view.metadata) == ("pending", "s-1", metadata)
    bare = plane.submit_run("m", frame(), "b2", requested_by="ann", multitask_strategy="enqueue")
    assert bare == plane.get_run(bare.run_id)


def test_a_frame_is_hashed_in_memory_as_its_filed_parquet(plane: ControlPlane) -> None:
    given = frame()
    view = plane.submit_run("m", given, "b1", requested_by="ann")
    batch = json.loads(plane.store.get(Run, view.run_id).summary)["input"]["batch"]
    filed = pl.scan_parquet(batch["path"])
    assert batch["content_hash"] == content_hash(filed) == content_hash(given)
    assert batch["n_rows"] == 3


def test_writers_of_one_file_queue_on_one_lock(tmp_path: Path) -> None:
    """A writer behind another writer of this process waits on the process's lock and asks
    SQLite for its lock only once the one before it committed: it never sleeps in SQLite's
    busy handler (SQLite alone would order the two as well, by those sleeps)."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    one, two = AuditStore(url), AuditStore(url)
    assert one._writers is not None and one._writers is two._writers
    holding, release = threading.Event(), threading.Event()
    committing: list[float] = []
    asked: list[float] = []  # when the waiter issued its BEGIN (asked SQLite for the lock)
    event.listen(two.engine, "begin", lambda _conn: asked.append(time.monotonic()), insert=True)

    def hold() -> None:
        with one.session():
            holding.set()
            release.wait(10)
            committing.append(time.monotonic())

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    threading.Timer(0.3, release.set).start()
    with two.session() as session:  # waits for the holder's commit, then begins at once
        session.execute(text("SELECT 1"))
    holder.join(10)
    assert committing and asked
    assert asked[0] > committing[0]  # not while the holder held SQLite's lock
    one.engine.dispose()
    two.engine.dispose()


def test_a_writes_lock_waits_share_one_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait for the process's queue and SQLite's busy wait count against one deadline,
    and an audit append's tries share it: held by a writer of this process for 0.3 s and by
    another process throughout, an append fails after about the busy timeout (0.4 s) plus
    its retry pauses (0.35 s), not after 0.3 + 0.4 s on its first try and 0.4 s on each of
    three more (2.25 s)."""
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_MS", 400)
    path = tmp_path / "audit.db"
    store = AuditStore(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)  # as another process would
    other.execute("BEGIN IMMEDIATE")
    queued = threading.Event()
    assert store._writers is not None

    def hold_queue() -> None:
        with store._writers:  # type: ignore[union-attr]
            queued.set()
            time.sleep(0.3)

    holder = threading.Thread(target=hold_queue)
    holder.start()
    queued.wait(10)
    started = time.monotonic()
    try:
        with pytest.raises(AuditWriteError, match="locked"):
            store.record_decision("r", "a", "act", "why", {}, backend="test")
        took = time.monotonic() - started
    finally:
        other.execute("ROLLBACK")
        other.close()
        holder.join(10)
    assert took < 1.3, took
    store.record_decision("r", "a", "act", "why", {}, backend="test")  # free again: written
    store.engine.dispose()


def test_a_writer_held_past_the_busy_timeout_is_an_audit_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_MS", 200)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.session():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    try:
        with pytest.raises(AuditWriteError, match="locked"), store.session():
            pass
        with store.reading():  # readers never queue
            pass
    finally:
        release.set()
        holder.join(10)
    with store.session():  # and the lock is free again
        pass
    store.engine.dispose()


def test_the_heap_is_frozen_after_new_imports_only() -> None:
    try:
        inprocess.settle_heap()
        frozen = gc.get_freeze_count()
        assert not inprocess.settle_heap()  # nothing imported since: no collection, no freeze
        assert gc.get_freeze_count() == frozen
        sys.modules["driftpilot_test_new_code"] = types.ModuleType("driftpilot_test_new_code")
        alive = [[i] for i in range(1000)]  # containers: objects the collector tracks
        assert inprocess.settle_heap()
        assert gc.get_freeze_count() >= frozen + len(alive)
    finally:
        sys.modules.pop("driftpilot_test_new_code", None)
        gc.unfreeze()


def test_an_executor_shortens_the_gils_switch_interval_until_shutdown(
    plane: ControlPlane,
) -> None:
    before = sys.getswitchinterval()
    executor = inprocess.RunExecutor(plane, workers=1, processes=0)
    try:
        sys.setswitchinterval(0.005)
        executor.start(recover=False)
        assert sys.getswitchinterval() == pytest.approx(inprocess.SWITCH_INTERVAL_S)
        executor.shutdown()
        assert sys.getswitchinterval() == pytest.approx(0.005)  # the previous one, back
    finally:
        executor.shutdown()
        sys.setswitchinterval(before)


class QueueElsewhere:
    """Stands for the PostgreSQL task queue: runs execute in workers, not here."""

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_with_runs_executed_elsewhere_nothing_is_warmed_nor_switched(
    plane: ControlPlane,
) -> None:
    before = sys.getswitchinterval()
    executor = inprocess.RunExecutor(plane, workers=1, processes=0)
    executor.queue = QueueElsewhere()  # type: ignore[assignment]
    try:
        sys.setswitchinterval(0.005)
        executor.start()
        executor.wait_started(30)
        assert executor.recovered == []  # recovery still ran
        assert executor._warm is None
        assert sys.getswitchinterval() == pytest.approx(0.005)
    finally:
        executor.shutdown()
        sys.setswitchinterval(before)


def test_the_heap_is_not_frozen_while_another_job_runs(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A freeze keeps what a running job holds forever once it is cyclic garbage: a job that
    ends while another runs leaves the heap alone; the last one to end freezes it."""
    executor = inprocess.RunExecutor(plane, workers=2, processes=0)
    monkeypatch.setattr(inprocess, "_settled_modules", 0)  # other tests' modules came and went
    assert inprocess.settle_heap()
    frozen = gc.get_freeze_count()
    started, release = threading.Event(), threading.Event()

    def slow() -> dict[str, object]:
        started.set()
        release.wait(10)
        return {}

    try:
        executor.submit_job("slow", "m", "ann", slow)
        assert started.wait(10)
        sys.modules["driftpilot_test_new_code"] = types.ModuleType("driftpilot_test_new_code")
        quick = executor.submit_job("quick", "m", "ann", dict)
        while executor.job(quick.job_id).status != "success":  # type: ignore[union-attr]
            time.sleep(0.01)
        time.sleep(0.1)  # the task's end (where it would freeze) is past its status
        assert gc.get_freeze_count() == frozen
        assert not executor.settle_if_idle()
        release.set()
        deadline = time.monotonic() + 10
        while executor.busy() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert gc.get_freeze_count() > frozen  # the last job's end froze the new code
    finally:
        release.set()
        executor.shutdown()
        sys.modules.pop("driftpilot_test_new_code", None)
        gc.unfreeze()


def test_shutdown_joins_the_warm_up_and_close_leaves_no_graph_open(plane: ControlPlane) -> None:
    """A warm-up still building the graph when the executor stops is waited for, so that the
    plane closed after it stays closed (on PostgreSQL, an open pool would leak)."""
    executor = inprocess.RunExecutor(plane, workers=1, processes=0)
    plane._graph_lock.acquire()  # the warm-up waits inside plane.graph
    try:
        executor.start()
        executor.wait_started(30)
        deadline = time.monotonic() + 10
        while executor._warm is None and time.monotonic() < deadline:
            time.sleep(0.01)
        warming = executor._warm
        assert warming is not None and warming.is_alive()
        threading.Timer(0.3, plane._graph_lock.release).start()
        executor.shutdown()
        assert not warming.is_alive()
    finally:
        executor.shutdown()
    plane.close()
    assert plane._checkpoints is None and plane._graph is None


class _Gate:
    """The plane's graph lock, held by the test, telling when a thread has asked for it: a
    thread that asked is inside ``plane.graph`` (not before it, where the warm-up may still
    step aside for a run that came first)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.asked = threading.Event()

    def __enter__(self) -> None:
        self.asked.set()
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_a_run_begins_after_the_warm_up_under_way(plane: ControlPlane) -> None:
    """Two threads importing one package tree at once can hand one of them a half-initialised
    module: a run submitted while the warm-up imports waits for it to end."""
    executor = inprocess.RunExecutor(plane, workers=1, processes=0)
    began = threading.Event()
    gate = _Gate()
    gate.lock.acquire()  # the warm-up waits inside plane.graph, holding _warming
    plane._graph_lock = gate  # type: ignore[assignment]
    held = True
    try:
        executor.start()
        executor.wait_started(30)
        # Submitted once the warm-up is inside plane.graph: before that, a warm-up that sees
        # a run under way steps aside (and the run would rightly begin at once).
        assert gate.asked.wait(30)
        assert executor._warming.locked()
        executor._submit("k", "test", lambda key: began.set())
        assert not began.wait(0.3)  # not beside the warm-up
        gate.lock.release()
        held = False
        assert began.wait(60)
    finally:
        if held:
            gate.lock.release()
        executor.shutdown()
    plane.close()


def test_close_waits_for_a_graph_being_built(plane: ControlPlane) -> None:
    plane._graph_lock.acquire()  # a graph being built
    closing = threading.Thread(target=plane.close)
    closing.start()
    closing.join(0.2)
    try:
        assert closing.is_alive()  # waits for the build, then closes what it opened
    finally:
        plane._graph_lock.release()
    closing.join(10)
    assert not closing.is_alive()
