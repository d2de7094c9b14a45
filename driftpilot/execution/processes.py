"""Child processes that execute runs for an API process on a SQLite home (issue 23).

A run's graph computes in Python (Polars glue, LightGBM, Evidently's report): in threads of
the API process it holds the GIL that request threads wait for. Measured over loopback
(``evals/bench_api.py``, 50 ``POST /runs`` while the first run executes): with no run
executing beside them the requests took 14 ms p50 and 21 ms p99, with runs in the API's
threads 49 ms p50 and 118-147 ms p99 (10 ms of the request thread's own CPU, the rest waiting).
Here the graph runs in ``processes`` children instead, spawned (no fork of a threaded
process) by the API's ``RunExecutor``; the API's threads only wait on their answers.

Each child builds its own ``ControlPlane`` over the same settings (so its LLM backend comes
from the settings: a plane given another backend keeps its runs in threads, see
``builds_from_settings``), warms itself up (the graph, what a run imports) and freezes its
heap. The plane events an attempt produces in the child (a run waiting for approval, a
promotion, a failure) come back with its answer and are emitted on the API's plane, so its
listeners (webhook alerts) hear them as before, once the attempt stopped. Nothing else
changes: a run is taken under its model's lease (the holder names the child's pid), its
events are the audit rows every API process streams, its report is rendered in the child's
background thread after its result is written (``report_after_run``). Children are
spawned by the first runs (not at start: ~9 CPU seconds of imports and ~400 MB each). A
report asked for before it exists (``GET /runs/{id}/report``) is rendered in a child too.

A child whose parent died (kill -9 of the API) exits within ``ORPHAN_POLL_S``: its run is
left ``running`` with a lease that expires, and the next start recovers it, as when the API
process itself executed it. A child that dies (out of memory, killed) breaks the pool: the
attempts under way raise ``BrokenProcessPool``, and the next attempt starts a new pool.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import util
from typing import TYPE_CHECKING, Any

from driftpilot.execution.dispatch import What, attempt_of
from driftpilot.runs.views import PlaneEvent, Recovery

if TYPE_CHECKING:
    from driftpilot.core.settings import Settings
    from driftpilot.runs.plane import ControlPlane, ReportView, RunView

log = logging.getLogger(__name__)
ORPHAN_POLL_S = 0.5  # how often a child looks whether its parent is still there
# A child's niceness above its parent's. Out of the GIL's way, a run still competes for the
# cores: Polars' and LightGBM's thread pools take both, and the scheduler shared them out per
# thread, so a request's thread got a fifth of a core (POST /runs 133 ms p50 beside a run in
# a child, 28 ms beside one in threads, on the same busy machine). Niced, the run takes what
# the requests leave.
CHILD_NICENESS = 10

_child: ControlPlane | None = None  # the child's plane, set by _init_child
_heard: list[PlaneEvent] = []  # the plane events of the child's current call


@dataclass
class Answer:
    """What a call in a child returned (``value``) or raised (``error``), and the plane events
    it produced meanwhile."""

    value: Any = None
    error: BaseException | None = None
    events: list[PlaneEvent] = field(default_factory=list)


def builds_from_settings(plane: ControlPlane) -> bool:
    """Whether a child's plane, made from ``plane.settings``, drives runs as ``plane`` does:
    its LLM backend is the one the settings name (a test's fake backend is not)."""
    spec = plane.settings.llm
    provider, _, model = spec.partition(":")
    expected = ("builtin", "policy-templates") if spec == "builtin" else (provider, model)
    return (plane.backend.name, plane.backend.model_name) == expected


# -- in the child ----------------------------------------------------------------------------


def _init_child(settings: Settings, parent: int) -> None:
    """The child's plane over ``settings``, its events heard, warmed up and frozen; a thread
    that ends the child when ``parent`` is gone."""
    global _child
    os.nice(CHILD_NICENESS)  # before any thread pool starts: every thread inherits it
    # Ctrl-C in a terminal reaches the whole group: a child leaves it to the API, whose
    # shutdown lets the runs finish, then ends the children. (SIGTERM keeps its default: the
    # pool ends the children of a broken pool with it.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), name="dp-orphan", daemon=True).start()
    from driftpilot.execution.inprocess import settle_heap, warm
    from driftpilot.runs.plane import ControlPlane

    plane = ControlPlane(settings)
    plane.subscribe(_heard.append)
    util.Finalize(plane, plane.close, exitpriority=10)  # at the pool's shutdown
    util.Finalize(None, _leave, exitpriority=0)  # then, last
    _child = plane
    warm(plane)
    settle_heap()


def _leave() -> None:
    """End the child at once after its finalizers, before the interpreter's own
    finalization: a child of a bench run was found alive 14 minutes after its parent was
    killed, all 17 threads (Polars', Tokio's, jemalloc's, five Python ones) waiting on
    futexes, so its parent watcher (a Python thread) could not run. Suspected, not proven: a
    hang in finalization after the pool's shutdown sentinel (its parent then waited on it
    until the bench killed it)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_S)
    os._exit(1)  # the API died: what this child runs is recovered by the next start


def _plane() -> ControlPlane:
    if _child is None:
        raise RuntimeError("not a run child: _init_child did not run")
    return _child


def _answer(call: Any, *args: Any) -> Answer:
    """``call(*args)`` with what it returned or raised and the events it produced (a child
    makes one call at a time)."""
    _heard.clear()
    try:
        return Answer(value=call(*args), events=list(_heard))
    except Exception as exc:
        return Answer(error=_portable(exc), events=list(_heard))


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives the trip to the parent (pickled and rebuilt), else a
    RuntimeError that names it: an exception that cannot be rebuilt would break the pool."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _run(what: What, run_id: str) -> RunView:
    plane = _plane()
    view = attempt_of(plane, what)(run_id)
    plane.report_after_run(view)  # rendered in this child's background thread
    return view


def _attempt(what: What, run_id: str) -> Answer:
    """One attempt at a run (``ModelBusy`` when its model is busy); its report is queued
    for this child's background thread once the result is written."""
    return _answer(_run, what, run_id)


def _report(run_id: str) -> Answer:
    """The run's report, rendered (and audited) here if it is not there yet."""
    return _answer(_plane().run_report, run_id)


def _recover() -> Answer:
    return _answer(_plane().recover)


def _ready() -> Answer:
    return _answer(os.getpid)


# -- in the parent ---------------------------------------------------------------------------


class RunChildren:
    """``processes`` spawned children executing runs over ``settings`` (module docstring)."""

    def __init__(self, plane: ControlPlane, processes: int) -> None:
        self.plane = plane
        self.settings = plane.settings
        self.processes = processes
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("the run children are shut down")
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_child,
                    initargs=(self.settings, os.getpid()),
                )
            return self._pool

    def _call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in a child, waiting for its answer; the events it produced are
        emitted on this process's plane, what it raised is raised here.

        Raises:
            BrokenProcessPool: a child died; the next call starts new children.
        """
        pool = self._current()
        future: Future[Any] = pool.submit(fn, *args)
        try:
            answer: Answer = future.result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        for event in answer.events:
            self.plane.events.emit(event.kind, event.model, event.run_id, event.detail)
        if answer.error is not None:
            raise answer.error
        return answer.value

    def attempt(self, what: What, run_id: str) -> RunView:
        """One attempt at a run in a child (``ModelBusy`` when its model is busy)."""
        view: RunView = self._call(_attempt, what, run_id)
        return view

    def render_report(self, run_id: str) -> ReportView:
        """``ControlPlane.run_report`` in a child: Evidently's render (seconds of Python)
        never holds this process's GIL.

        Raises:
            NotFound: no such run.
            DataError: Evidently could not compare the batch with the reference.
        """
        view: ReportView = self._call(_report, run_id)
        return view

    def recover(self) -> list[Recovery]:
        """``ControlPlane.recover`` in a child: a resumed run's graph, its libraries and their
        memory stay out of this process (an API that recovered a cut-off run in its own
        process grew from 123 to 447 MB and answered slower for the rest of its life)."""
        done: list[Recovery] = self._call(_recover)
        return done

    def ready(self) -> int:
        """Wait until a child is up (spawning it if none is); its process id."""
        pid: int = self._call(_ready)
        return pid

    def shutdown(self, wait: bool = True) -> None:
        """Take no more work; with ``wait``, the runs under way finish and the children exit."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)
