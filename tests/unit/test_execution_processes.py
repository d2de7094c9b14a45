"""Runs executed in child processes of the API (issue 23: POST /runs p99): the writers of one
SQLite file queue across processes on a file lock, re-entrantly within a thread; a run
executes in a child, what it announces reaches the parent's listeners, and a run whose model
is busy waits in the parent's busy rule; a plane with a hand-made LLM backend keeps its runs
in threads; a child whose parent was killed exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import polars as pl
import pytest

from driftpilot.core.llm import Backend
from driftpilot.core.settings import Settings
from driftpilot.execution.inprocess import RunExecutor
from driftpilot.execution.processes import builds_from_settings
from driftpilot.runs.plane import ControlPlane, PlaneEvent
from driftpilot.store.writers import WriterQueue
from tests.rows import model_without_champion


def test_writers_queue_across_processes_on_the_file_lock(tmp_path: Path) -> None:
    """Two queues on one database stand for two processes (each opens the lock file: flock
    locks belong to the open file). The second waits, within its timeout, until the first
    releases, then gets in at once."""
    one, two = WriterQueue(tmp_path / "a.db"), WriterQueue(tmp_path / "a.db")
    held, release = threading.Event(), threading.Event()
    released: list[float] = []

    def hold() -> None:
        with one:
            held.set()
            release.wait(10)
            released.append(time.monotonic())

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    started = time.monotonic()
    assert not two.acquire(timeout=0.2)
    assert time.monotonic() - started >= 0.2
    threading.Timer(0.2, release.set).start()
    assert two.acquire(timeout=5)
    got = time.monotonic()
    two.release()
    holder.join(10)
    assert 0 <= got - released[0] < 0.05  # in at once, not after a busy handler's sleep
    assert one.path.exists() and one.path.name == "a.db.writers"


def test_a_writer_queue_is_reentrant_and_frees_the_file_at_the_outermost_release(
    tmp_path: Path,
) -> None:
    one, two = WriterQueue(tmp_path / "a.db"), WriterQueue(tmp_path / "a.db")
    with one:
        with one:  # a write transaction inside another, in one thread
            pass
        assert not two.acquire(timeout=0.05)  # still held by the outer one
    assert two.acquire(timeout=1)
    two.release()


def test_a_plane_with_a_hand_made_backend_keeps_runs_in_threads(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home").ensure_dirs()
    real, fake = ControlPlane(settings), ControlPlane(settings, Backend("fake", "llm", None))
    try:
        assert builds_from_settings(real) and not builds_from_settings(fake)
        assert RunExecutor(real, processes=1).children is not None
        assert RunExecutor(fake, processes=1).children is None
        assert RunExecutor(real, processes=0).children is None
    finally:
        real.close()
        fake.close()


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A managed model without a champion: its runs fail in ingestion's model lookup, which
    is enough to see where they execute and what they announce."""
    cp = ControlPlane(Settings(home=tmp_path / "home", lease_ttl_s=60).ensure_dirs())
    cp.store.add(model_without_champion())
    yield cp
    cp.close()


def wait_for_status(cp: ControlPlane, run_id: str, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while (status := cp.get_run(run_id).status) in ("pending", "running"):
        assert time.monotonic() < deadline, f"run {run_id} still {status}"
        time.sleep(0.2)
    return status


def test_a_run_executes_in_a_child_and_its_events_reach_the_parent(plane: ControlPlane) -> None:
    heard: list[PlaneEvent] = []
    plane.subscribe(heard.append)
    executor = RunExecutor(plane, workers=1, processes=1)
    assert executor.children is not None
    frame = pl.DataFrame({"t": [1, 2, 3], "x": [0.1, 0.2, 0.3], "y": [0, 1, 0]})
    try:
        executor.start(recover=False)
        assert executor.children.ready() != os.getpid()  # spawned (and warmed up) first
        # The model is busy (another run holds its lease): the child answers ModelBusy and
        # the parent's busy rule tries again, holding no thread meanwhile.
        lease = plane.lifecycle.acquire("m", "other-run", wait=False)
        view = plane.submit_run("m", frame, "b1", multitask_strategy="enqueue")
        executor.execute(view.run_id)
        time.sleep(1.5)
        assert plane.get_run(view.run_id).status == "pending"
        plane.store.release_lease("m", "other-run", lease)
        assert wait_for_status(plane, view.run_id) == "failed"
    finally:
        executor.shutdown()
    failed = [e for e in heard if e.kind == "run_failed"]
    assert [e.run_id for e in failed] == [view.run_id]


def test_a_cut_off_run_is_recovered_in_a_child_and_nothing_due_spawns_none(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed graph imports a run's libraries: recovery hands it to a child, so the API
    process stays small; a start with nothing to recover spawns no child."""
    idle = RunExecutor(plane, workers=1, processes=1)
    try:
        idle.start()
        idle.wait_started(60)
        assert idle.recovered == [] and idle.recovery_error is None
        assert idle.children is not None and idle.children._pool is None
    finally:
        idle.shutdown()
    frame = pl.DataFrame({"t": [1, 2, 3], "x": [0.1, 0.2, 0.3], "y": [0, 1, 0]})
    view = plane.submit_run("m", frame, "b1")
    plane.store.update_run(view.run_id, status="running")  # its process died, no lease left

    def in_this_process() -> None:
        raise AssertionError("recovered in the API's own process")

    monkeypatch.setattr(plane, "recover", in_this_process)
    executor = RunExecutor(plane, workers=1, processes=1)
    try:
        executor.start()
        executor.wait_started(240)
        assert executor.recovery_error is None
        [done] = executor.recovered or []
        assert (done.run_id, done.did) == (view.run_id, "restarted from its input")
        assert done.status == "failed"  # no champion: ingestion fails, in the child
    finally:
        executor.shutdown()
    assert plane.get_run(view.run_id).status == "failed"


class _DyingChildren:
    """Run children whose child dies inside recovery; the runs they are handed, recorded."""

    def __init__(self) -> None:
        self.attempted: list[str] = []

    def recover(self) -> None:
        raise BrokenProcessPool("a child process terminated abruptly")

    def attempt(self, what: str, run_id: str) -> None:
        self.attempted.append(run_id)

    def shutdown(self, wait: bool = True) -> None:
        pass


def test_a_child_dying_inside_recovery_retries_it_later_and_runs_the_pending_ones(
    plane: ControlPlane,
) -> None:
    frame = pl.DataFrame({"t": [1, 2, 3], "x": [0.1, 0.2, 0.3], "y": [0, 1, 0]})
    cut = plane.submit_run("m", frame, "b1")
    pending = plane.submit_run("m", frame, "b2", multitask_strategy="enqueue")
    plane.store.update_run(cut.run_id, status="running")  # an orphan: recovery is due
    executor = RunExecutor(plane, workers=1, processes=1)
    children = _DyingChildren()
    executor.children = children  # type: ignore[assignment]
    try:
        executor.start()
        executor.wait_started(60)
        assert "BrokenProcessPool" in (executor.recovery_error or "")
        assert len(executor._timers) == 1  # recovery again once the dead child's lease expired
        deadline = time.monotonic() + 30
        while pending.run_id not in children.attempted:
            assert time.monotonic() < deadline, "the pending run was never handed on"
            time.sleep(0.05)
    finally:
        executor.shutdown()


ORPHAN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from driftpilot.core.settings import Settings
    from driftpilot.runs.plane import ControlPlane
    from driftpilot.execution.processes import RunChildren

    if __name__ == "__main__":
        cp = ControlPlane(Settings(home=Path(sys.argv[1])).ensure_dirs())
        print(RunChildren(cp, 1).ready(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_child_whose_parent_was_killed_exits(tmp_path: Path) -> None:
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN)
    parent = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr[-2000:]
    child = int(parent.stdout.split()[-1])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and _state(child) != "Z":
        assert time.monotonic() < deadline, f"child {child} outlived its parent"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
