"""The in-process run executor: a small thread pool that executes and resumes runs after the
request that created or approved them has answered (a run never executes inside a request),
and runs longer jobs (training a new model).

A run waiting for its model's lease (a pending run, or an approved one whose model is busy)
holds no worker: the attempt gives the thread back and is tried again after the busy rule's
delay (``driftpilot.execution.dispatch.BusyRetry``), so runs of other models never queue
behind a busy one. At shutdown it stays pending (or its decision
stays recorded) in the database, and the next start-up (recover) picks it up.

Each run task calls one façade method (``execute_run`` or ``resume_run``); the façade marks
a run that raises ``failed``, and this pool logs what it raised. Once a run stopped (ended, or
waits for its approver) with its report pending, the plane renders Evidently's report in its
background thread (``driftpilot.runs.reports``): the run's result never waits for it.

At start-up (``start``), a background thread runs ``ControlPlane.recover`` (runs left running
by a dead process, approval decisions recorded but never applied) and logs what it did, then
executes the runs still pending (their process died before executing them). Then another
thread warms the process (``warm``): it builds the control graph and imports the libraries a
run imports inside its tools, so that the first run after a start does not pay the imports.
The heap is frozen (``settle_heap``) only when this executor is idle (no run or job queued,
executing or waiting, no report rendering): a freeze keeps forever what is alive and later
becomes cyclic garbage, so it must not catch a run's or a report's objects mid-way.

On SQLite with ``settings.api.run_processes`` > 0 (the default), each run thread hands its
attempt to a child process and waits for its answer (``driftpilot.execution.processes``): the
graph's Python work never holds this process's GIL, and requests answer beside runs as
beside nothing (POST /runs, issue 23). Only the graph is warmed here then (reads of waiting
runs use it); start-up recovery still runs here, and jobs stay in this process.

On PostgreSQL, runs are not executed here: ``execute`` and ``resume`` defer a job to the task
queue (``driftpilot.execution.queue``) and return at once; ``driftpilot worker`` processes,
any number, take them. Start-up still recovers, and queues again the runs left pending (a
run whose job still waits is not queued twice). Jobs (training a new model) stay in this process.
Such a process neither warms up nor shortens the GIL's switch interval: no run executes here.
"""

from __future__ import annotations

import gc
import importlib
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from driftpilot.core.errors import DriftPilotError, ModelBusy
from driftpilot.core.settings import is_postgres
from driftpilot.execution.dispatch import BusyRetry, What, attempt_of
from driftpilot.execution.processes import RunChildren, builds_from_settings
from driftpilot.execution.queue import Queue
from driftpilot.runs import leases
from driftpilot.runs.plane import ControlPlane, Recovery, RunView

log = logging.getLogger(__name__)
RETRY_S = 0.5  # a run whose model is busy is first tried again after this (then backoff)
# What a control run imports inside its tools (kept off the CLI's start-up, issue 23 item 5),
# and what rendering its report after it imports: a server imports them anyway, at its
# first run; ``warm`` imports them at start instead.
RUN_MODULES = ("lightgbm", "mlflow.pyfunc", "sklearn.isotonic", "scipy.stats", "scipy.optimize")
REPORT_MODULES = ("evidently.legacy.report", "evidently.legacy.metric_preset")

# The GIL's switch interval while this process hosts runs beside its requests (Python's default:
# 5 ms). A request thread back from each SQLite call or Polars query waits for the GIL up to
# that long while a run's (or its report's) thread computes in Python: a dozen reads took
# 90 ms. Measured in-process, 50 submits under a run on two busy cores, p90 and max: 212 and
# 318 ms, then 164 and 333 at 5 ms; 93 and 164, then 82 and 104 at 1 ms.
SWITCH_INTERVAL_S = 0.001
_settled_modules = 0  # len(sys.modules) at the last settle_heap that froze
_settle_lock = threading.Lock()


def settle_heap() -> bool:
    """Collect, then freeze what is alive (``gc.freeze``), if modules were imported since the
    last time; whether it did.

    A server's heap is mostly the code it imported (graph, LightGBM, MLflow, Evidently: half
    a million objects). A full collection walks all of it while holding the GIL: 130-690 ms
    pauses on two busy cores, every request thread stalled meanwhile (the p99 of run creation,
    issue 23). Frozen objects are never walked again. Only after new imports, so it happens a
    few times in a process's life, and after a collection, so no garbage is kept forever
    (objects frozen alive that become cyclic garbage later are: the code and caches a run
    loaded, a bounded amount)."""
    global _settled_modules
    with _settle_lock:
        if len(sys.modules) <= _settled_modules:
            return False
        gc.collect()
        gc.freeze()
        _settled_modules = len(sys.modules)
        return True


def warm(
    plane: ControlPlane, stop: threading.Event | None = None, *, libraries: bool = True
) -> bool:
    """Build the control graph and import what a run (and its report, when reports render
    after runs) imports: the first run after a start pays neither. A library that is not
    installed is skipped (the run that needs it says so). ``stop`` set: nothing more is
    begun (a plane closed meanwhile is not opened again); whether it warmed everything.
    ``libraries`` False: the graph only (reads of waiting runs use it; runs execute in
    child processes). The caller freezes the heap (``settle_heap``) when nothing else runs."""
    modules: tuple[str, ...] = RUN_MODULES if libraries else ()
    if libraries and plane.settings.report_render == "after_run":
        modules += REPORT_MODULES
    for step in ("graph", *modules):
        if stop is not None and stop.is_set():
            return False
        if step == "graph":
            _ = plane.graph
            continue
        try:
            importlib.import_module(step)
        except ImportError as exc:
            log.info("warm-up: %s is not importable (%s); a run needing it says so", step, exc)
    return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Job(BaseModel):
    """Background work that is not a control run (training a new model's first champion).
    Jobs live in the memory of the API process that runs them."""

    job_id: str
    kind: str
    model: str
    status: Literal["pending", "running", "success", "error"]
    requested_by: str
    created_at: str
    updated_at: str
    detail: str = ""
    result: dict[str, Any] | None = None


class RunExecutor:
    """Execute and resume runs, and run jobs, in ``workers`` background threads (runs: in
    the task queue's workers, on PostgreSQL). A ``Dispatcher``; ``retry``: when a run whose
    model is busy is tried again (no deadline by default: until shutdown).

    ``processes`` (default ``settings.api.run_processes``) > 0 on SQLite: each thread hands
    its run to one of that many child processes and waits for its answer
    (``driftpilot.execution.processes``), so the graph's Python work never holds this
    process's GIL; a plane whose LLM backend its settings would not make keeps runs here."""

    def __init__(
        self,
        plane: ControlPlane,
        workers: int = 2,
        *,
        retry: BusyRetry | None = None,
        processes: int | None = None,
    ) -> None:
        self.plane = plane
        self.retry = retry or BusyRetry(first_s=RETRY_S)
        # On PostgreSQL the queue's pool is opened at the first deferral (or at start).
        self.queue = Queue(plane) if is_postgres(plane.settings.db_url) else None
        count = plane.settings.api.run_processes if processes is None else processes
        self.children: RunChildren | None = None
        if self.queue is None and count > 0 and builds_from_settings(plane):
            self.children = RunChildren(plane, count)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dp-run")
        self._lock = threading.Lock()
        self._futures: dict[str, Future[Any]] = {}
        self._jobs: dict[str, Job] = {}
        self._stop = threading.Event()
        self._startup: threading.Thread | None = None
        self._warm: threading.Thread | None = None
        # Held by the warm-up while it imports; a run waits for it before it begins. Two threads
        # importing one package tree at once can meet a module another is still initialising
        # (importlib breaks the deadlock by handing one of them the half-made module): a run
        # that began beside the warm-up failed after ingestion in the full suite.
        self._warming = threading.Lock()
        self._switch_before: float | None = None  # the interval start() replaced
        self._timers: set[threading.Timer] = set()
        self.recovered: list[Recovery] | None = None  # None: recovery not finished (or off)
        self.recovery_error: str | None = None

    # -- runs -------------------------------------------------------------------------------

    def submit(self, what: What, run_id: str) -> Future[Any]:
        """Execute (a pending run) or resume (a recorded decision) in the background: in this
        pool, or as a queued job on PostgreSQL."""
        if self.queue is not None:  # the future holds its job id, or what deferring raised
            queued = self.queue.submit(what, run_id)  # (the run stays: start-up queues again)
            if (failed := queued.exception()) is not None:
                log.error("could not queue the %s of run %s", what, run_id, exc_info=failed)
            return queued
        attempt = attempt_of(self.plane, what)
        if self.children is not None:
            children = self.children
            attempt = lambda key: children.attempt(what, key)  # noqa: E731
        return self._submit(run_id, what, self._attempt(run_id, what, attempt, 0, 0.0))

    def execute(self, run_id: str) -> Future[Any]:
        """Execute a pending run (it waits for its model's lease first)."""
        return self.submit("execute", run_id)

    def resume(self, run_id: str) -> Future[Any]:
        """Resume a run whose approval decision has been recorded."""
        return self.submit("resume", run_id)

    def _attempt(
        self, run_id: str, what: str, attempt: Callable[[str], RunView], tries: int, waited: float
    ) -> Callable[[str], RunView | None]:
        """One attempt; a busy model (still pending, or the decision recorded) gives the
        thread back and is tried again by the busy rule."""

        def call(key: str) -> RunView | None:
            try:
                return attempt(key)
            except ModelBusy:
                if self.retry.gives_up(waited, tries):
                    raise
                delay = self.retry.delay(tries)
                again = self._attempt(run_id, what, attempt, tries + 1, waited + delay)
                self._retry(run_id, what, again, delay)
                return None

        return call

    def _retry(
        self, run_id: str, what: str, call: Callable[[str], RunView | None], delay: float
    ) -> None:
        if self._stop.is_set():
            log.info("shutting down: run %s is left for the next start (%s)", run_id, what)
            return

        def again() -> None:
            with self._lock:
                self._timers.discard(timer)
            if not self._stop.is_set():
                self._submit(run_id, what, call)

        timer = threading.Timer(delay, again)
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def _submit(
        self, key: str, what: str, call: Callable[[str], RunView | None]
    ) -> Future[RunView | None]:
        def task() -> RunView | None:
            try:
                with self._warming:  # a warm-up under way finishes first (see _warm_up)
                    pass
                view = call(key)
                if isinstance(view, RunView) and self.children is None:
                    # After the run's result is written: the report never delays it (a
                    # child renders the report of the run it executed).
                    self.plane.report_after_run(view)
                return view
            except BrokenProcessPool:
                log.exception("%s of run %s: its child process died", what, key)
                self._after_crash()
                return None
            except Exception:
                log.exception("%s of run %s failed", what, key)
                return None
            finally:
                with self._lock:
                    if self._futures.get(key) is future:
                        self._futures.pop(key, None)
                # What the run imported, if anything: frozen, not walked again.
                self.settle_if_idle()

        with self._lock:
            future = self._pool.submit(task)
            self._futures[key] = future
        return future

    def render_report(self, run_id: str) -> bool:
        """Render the run's report in a run child if it is pending and this executor has
        children (whether it did; else the caller renders it, in its own process).

        Raises:
            NotFound: no such run.
            DataError: Evidently could not compare the batch with the reference.
        """
        if self.children is None or self.plane.report_status(run_id).status != "pending":
            return False
        self.children.render_report(run_id)
        return True

    def warm_children(self) -> None:
        """Spawn every run child now, in the background, rather than at the first runs: a
        child's ~9 s of imports would otherwise make the first runs after a start late (an
        inference log's windows want their decisions within seconds). Nothing without
        children; a child that fails to start is left to the first run, which starts one."""
        children = self.children
        if children is None or self._stop.is_set():
            return

        def spawn() -> None:
            try:
                children.ready()
            except Exception:  # costs the first run's speed only
                log.exception("a run child did not start ahead of its runs")

        for n in range(children.processes):
            threading.Thread(target=spawn, name=f"dp-child-warm-{n}", daemon=True).start()

    def settle_if_idle(self) -> bool:
        """``settle_heap`` if no run or job is queued, executing or waiting for its model here
        and no report is rendering (whether it froze). Under the executor's lock: no run is
        taken between the look and the freeze. Objects a run or a report still holds, frozen,
        would be kept for the process's life once they became cyclic garbage."""
        with self._lock:
            if self._futures or self._timers or not self.plane.reports_idle():
                return False
            return settle_heap()

    def busy(self) -> int:
        """How many runs and jobs are queued, executing or waiting for their model here."""
        with self._lock:
            return len(self._futures) + len(self._timers)

    # -- jobs -------------------------------------------------------------------------------

    def submit_job(
        self, kind: str, model: str, requested_by: str, work: Callable[[], dict[str, Any]]
    ) -> Job:
        """Run ``work`` in the background as a job; its result (a dict) is kept with it."""
        stamp = _now()
        job = Job(
            job_id=uuid.uuid4().hex,
            kind=kind,
            model=model,
            status="pending",
            requested_by=requested_by,
            created_at=stamp,
            updated_at=stamp,
        )
        with self._lock:
            self._jobs[job.job_id] = job

        def task(_: str) -> None:
            self._update(job.job_id, status="running")
            try:
                result = work()
            except DriftPilotError as exc:
                self._update(job.job_id, status="error", detail=str(exc) or type(exc).__name__)
            except Exception as exc:
                log.exception("job %s (%s of %s) failed", job.job_id, kind, model)
                self._update(job.job_id, status="error", detail=f"{type(exc).__name__}: {exc}")
            else:
                self._update(job.job_id, status="success", result=result)

        self._submit(job.job_id, kind, task)
        return self.job(job.job_id) or job

    def _update(self, job_id: str, **fields: Any) -> None:
        with self._lock:
            job = self._jobs[job_id]
            self._jobs[job_id] = job.model_copy(update={**fields, "updated_at": _now()})

    def job(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        """Every job of this process, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created_at, reverse=True)

    def job_in_flight(self, model: str) -> Job | None:
        """A pending or running job about ``model``, if any."""
        with self._lock:
            return next(
                (
                    j
                    for j in self._jobs.values()
                    if j.model == model and j.status in ("pending", "running")
                ),
                None,
            )

    # -- start and stop ----------------------------------------------------------------------

    def start(self, *, recover: bool = True) -> None:
        """Recover, then execute pending runs, in a background thread (start-up is not held
        up by a long recovery), then warm the process (``warm``) in another. On PostgreSQL,
        first apply the queue's schema if missing (and neither warm nor touch the switch
        interval: runs execute in the workers). With run children, they are spawned by the
        first run (a child costs ~9 CPU seconds of imports and ~400 MB: an app that runs
        nothing spawns nothing). On SQLite, shortens the GIL's switch interval to
        ``SWITCH_INTERVAL_S`` until ``shutdown``: runs (in threads) and requests share this
        process, and requests share it among themselves (audit queries at 200/s, one
        bench_api run each on an idle machine: p99 5-7 ms at 1 ms, 7-11 ms at Python's 5 ms
        with runs in children)."""
        if self.queue is not None:
            self.queue.open()
        else:
            # Process-wide: requests answer sooner for a slightly slower run (more GIL
            # hand-overs). shutdown puts the previous interval back.
            self._switch_before = sys.getswitchinterval()
            sys.setswitchinterval(min(self._switch_before, SWITCH_INTERVAL_S))
        if not recover:
            return
        self._startup = threading.Thread(target=self._recover, name="dp-recover", daemon=True)
        self._startup.start()

    def _after_crash(self) -> None:
        """A child died: its run, left running, is recovered once its lease has expired (then
        the runs still pending are executed again), by the start-up recovery's path."""
        if self._stop.is_set():
            return
        delay = self.plane.settings.lease_ttl_s + 1.0

        def again() -> None:
            with self._lock:
                self._timers.discard(timer)
            if not self._stop.is_set():
                self._recover(warm_up=False)

        timer = threading.Timer(delay, again)
        timer.daemon = True
        with self._lock:
            self._timers.add(timer)
        timer.start()

    def _recover(self, *, warm_up: bool = True) -> None:
        crashed = False
        try:
            done = self._recovered()
        except BrokenProcessPool as exc:
            # The child died inside recovery (the resumed run is the heavy one): its run is
            # left under the dead child's lease, recovered again once that has expired; the
            # pending runs below go on meanwhile.
            log.exception("recovery at start-up: its run child died")
            self.recovery_error = f"{type(exc).__name__}: {exc}"
            self._after_crash()
            done, crashed = [], True
        except Exception as exc:
            if self._stop.is_set():  # the children were shut down under it
                log.info("recovery at start-up interrupted by the shutdown: %s", exc)
                return
            self.recovery_error = f"{type(exc).__name__}: {exc}"
            log.exception("recovery at start-up failed")
            return
        if self._stop.is_set():
            return  # shut down meanwhile: the plane may be closed; the next start goes on
        self.recovered = done
        if not done and not crashed:
            log.info("recovery at start-up: nothing to recover")
        for r in done:
            log.warning(
                "recovery at start-up: run %s (%s) was %s; %s; now %s%s",
                r.run_id,
                r.model,
                r.found,
                r.did,
                r.status,
                f", {r.outcome}" if r.outcome else "",
            )
        if not crashed and leases.awaiting_expiry(self.plane.store):
            # A process killed moments before this start left a run under a lease that has
            # not expired: recovered when it has, or the model's later runs wait forever.
            self._after_crash()
        # Pending runs of a dead process were never executed: take them (a pending run that
        # another live process executes is safe too: execute_run re-checks under the lease).
        pending = [v for v in self.plane.list_runs(limit=100_000) if v.status == "pending"]
        for view in sorted(pending, key=lambda v: v.created_at):
            if self._stop.is_set():
                return
            log.warning("start-up: executing run %s, left pending", view.run_id)
            self.execute(view.run_id)
        if self.queue is not None or not warm_up:
            return  # runs execute in the workers: nothing here to warm up for
        # Not joined by wait_started: readiness and the tests never wait for the imports.
        # Started under the lock, after a look at stop: shutdown joins every warm-up begun.
        with self._lock:
            if self._stop.is_set():
                return
            self._warm = threading.Thread(target=self._warm_up, name="dp-warm", daemon=True)
            self._warm.start()

    def _recovered(self) -> list[Recovery]:
        """``plane.recover()``; with run children, in one of them when it has anything to
        do (a resumed graph imports a run's libraries: they stay out of this process, which
        answers requests). Nothing to do spawns no child. The price: the recovery holds a
        child until it ends (other runs queue behind it when there is one child), its
        events reach this process's listeners when it returns, and a shutdown waits for it."""
        if self.children is not None and self.plane.recovery_due():
            return self.children.recover()
        return self.plane.recover()

    def _warm_up(self) -> None:
        started = time.perf_counter()
        try:
            with self._warming:
                if self.busy():  # a run came first: it imports what it needs, alone
                    log.info("warm-up skipped: a run is under way")
                    return
                if not warm(self.plane, self._stop, libraries=self.children is None):
                    return
        except Exception:  # a failed warm-up costs speed only: the first run imports itself
            log.exception("warm-up at start-up failed")
            return
        # Runs recovery dispatched may still execute: then the last of them to finish
        # freezes the heap (the imports count as new modules for it).
        settled = self.settle_if_idle()
        log.info(
            "warm-up at start-up: %.1f s (heap %s)",
            time.perf_counter() - started,
            "frozen" if settled else "left to the first idle moment",
        )

    def wait_started(self, timeout: float | None = None) -> None:
        """Wait for the start-up recovery (tests, readiness)."""
        if self._startup is not None:
            self._startup.join(timeout)

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking runs: queued work is cancelled, pending runs stop waiting for their
        model (they stay pending), runs already executing finish when ``wait``."""
        self._stop.set()
        with self._lock:
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()
        self._pool.shutdown(wait=wait, cancel_futures=True)
        with self._lock:
            warming = self._warm
        if warming is not None:
            # It begins nothing more once stop is set; joined, so that no graph is opened
            # on a plane closed after this returns (at most the import under way is waited).
            warming.join()
        if self.children is not None:
            self.children.shutdown(wait=wait)
        if self._switch_before is not None:
            sys.setswitchinterval(self._switch_before)
            self._switch_before = None
        if self.queue is not None:
            self.queue.close()
