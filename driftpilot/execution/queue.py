"""Scale-out on procrastinate: runs and schedule firings as jobs in the PostgreSQL database.

Used when the audit database is PostgreSQL (``db_url`` ``postgresql...``); the embedded
default (SQLite) keeps the in-process executor and the scheduler's own tick thread, and never
imports this module's dependencies. procrastinate and psycopg are imported inside functions only.

Jobs (procrastinate 3.10, tasks registered by name on every process's own ``App``):

- ``driftpilot.execute_run(run_id)`` / ``driftpilot.resume_run(run_id)`` on queue ``runs``
  call ``ControlPlane.execute_run`` / ``resume_run``. Each job carries the procrastinate
  ``lock`` ``model:<name>``: no worker starts a job while another job of the same model is
  running, and jobs of one model start in the order they were deferred (submission order). The
  model's lease stays the guard under it (a CLI run or an embedded process takes it too): a
  job whose model is busy raises ``ModelBusy`` and is retried by the one busy rule
  (``driftpilot.execution.dispatch.BusyRetry``, every ``retry_s`` here; the order holds
  meanwhile: a waiting job with a lower id keeps later ones of its lock back).
  Jobs start in job id order, runs go in submission order: when two submitters' defers
  cross, the later run's job comes first and executes the model's runs submitted before its
  own first (``execute_in_order``); their own jobs find them ended (waiting for them there
  held their jobs back behind it for ever: the soak's lost runs).
  ``queueing_lock`` ``<task>:<run id>``: deferring a run whose job still waits is a no-op.
  Once the run stopped, its Evidently report (pending) is rendered in the worker's background
  thread (``driftpilot.runs.reports``), after the job returned its outcome.
- ``driftpilot.schedule_tick(timestamp)`` on queue ``schedules``: a periodic task
  (``tick_cron``, every minute by default; a sixth field gives seconds). Every process running
  procrastinate's periodic deferrer (each ``driftpilot worker``, each ``driftpilot serve``)
  tries to defer it for each tick; procrastinate's unique (task, periodic id, timestamp) row
  lets one of them succeed. That row is kept for the newest tick only, so a deferrer lagging
  a tick behind (a busy machine, a short tick) can defer an old tick again: the tick asks the
  Scheduler which enabled schedules are due at the tick's time (``Scheduler.due``: a cron
  time passed since the schedule's last firing, the one rule of SQLite and PostgreSQL homes),
  claims each (cron id, time) in the ``driftpilot_queue_firings`` table (primary key: once,
  whoever ticks) and defers one ``driftpilot.fire_schedule`` job per claim. N replicas never
  fire a schedule twice.
- ``driftpilot.fire_schedule(cron_id, scheduled_at)`` on queue ``schedules`` calls the one
  firing logic, ``Scheduler.fire_due`` (misfire grace, batch ledger, multitask strategy,
  audit of the outcome); its fired run is deferred as an ``execute_run`` job.
  ``queueing_lock`` and ``lock`` ``schedule:<cron_id>``: a firing never overlaps the previous
  firing of the same schedule; a tick that finds one still waiting is audited
  ``skipped-overlap``.
- Priorities: a free worker takes a waiting firing first, then a tick, then a run, so
  schedules keep their times behind a long queue of runs (late by one run at most, with a
  worker on the ``schedules`` queue).

A worker that stops without SIGTERM/SIGINT (procrastinate stops it when its listener or
heartbeat lost the database) raises ``QueueLost``: ``driftpilot worker`` exits 75.

A worker killed mid-run (kill -9) leaves its job ``doing`` (holding its model's lock) and its
run ``running`` with a lease that expires. Every worker reaps jobs whose worker stopped
beating for ``stalled_s`` (marks them failed; a job whose run had not started is queued again);
the model's next jobs then wait (``ModelBusy``: unfinished work) until ``driftpilot recover``
finished the dead run from its checkpoint.

The schema is applied once per database (``ensure_schema``, under an advisory lock, skipped
when procrastinate's tables exist) when a process opens its queue, with the firings table
(beside procrastinate's tables; not the audit store's, which its migrations own).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import zlib
from collections.abc import Iterable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from driftpilot.core.errors import ConfigError, DriftPilotError, ModelBusy, NotFound
from driftpilot.core.settings import QueueSettings, is_postgres, libpq_url
from driftpilot.execution.dispatch import BusyRetry, What
from driftpilot.store.models import Run

if TYPE_CHECKING:
    import procrastinate
    from procrastinate.app import WorkerOptions

    from driftpilot.runs.plane import ControlPlane, RunView

log = logging.getLogger(__name__)

RUNS_QUEUE = "runs"
SCHEDULES_QUEUE = "schedules"
QUEUES = (RUNS_QUEUE, SCHEDULES_QUEUE)
EXECUTE_TASK = "driftpilot.execute_run"
RESUME_TASK = "driftpilot.resume_run"
TICK_TASK = "driftpilot.schedule_tick"
FIRE_TASK = "driftpilot.fire_schedule"
# A free worker takes a waiting firing first, then a tick, then a run: schedules are not
# starved by a long queue of runs (a firing late past its grace is audited 'missed').
FIRE_PRIORITY, TICK_PRIORITY = 20, 10
# The schedule firings taken by ticks: (cron_id, scheduled time) once, whoever ticks.
FIRINGS_TABLE = "driftpilot_queue_firings"
# One key in every process: the schema is applied by one of them at a time.
_SCHEMA_LOCK = zlib.crc32(b"driftpilot:procrastinate-schema")


def conninfo(url: str) -> str:
    """The libpq URL of a SQLAlchemy PostgreSQL URL (``postgresql+psycopg://`` -> ``postgresql://``).

    Raises:
        ConfigError: not a PostgreSQL URL.
    """
    if not is_postgres(url):
        raise ConfigError(
            f"the task queue needs a PostgreSQL database (DRIFTPILOT_DB_URL=postgresql://...), "
            f"not {url.split(':', 1)[0]}"
        )
    return libpq_url(url)


def _try_lock(conn: Any, key: int) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])


class QueueLost(DriftPilotError):
    """The worker stopped because it lost its database (not because it was asked to)."""


class Outcome(Protocol):
    @property
    def outcome(self) -> str: ...


class ScheduleFirer(Protocol):
    """What the queue needs of the Scheduler (driftpilot.scheduling sits above this module)."""

    def due(self, now: datetime | None = None) -> list[tuple[str, datetime]]: ...

    def fire_due(self, cron_id: str, scheduled_at: datetime) -> Outcome: ...

    def skip_overlap(self, cron_id: str, scheduled_at: datetime) -> Outcome: ...


class _BusyRetryWithoutTraceback(logging.Filter):
    """A run that waits for its model is retried by design: its log line says so, without
    the traceback procrastinate attaches to every job that raised."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ModelBusy):
            record.msg = f"{record.msg} (model busy: {exc})"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_busy_retries(logger: logging.Logger) -> None:
    """Install the busy-retry filter on ``logger`` once."""
    if not any(isinstance(f, _BusyRetryWithoutTraceback) for f in logger.filters):
        logger.addFilter(_BusyRetryWithoutTraceback())


class Queue:
    """The procrastinate app of one process over ``plane``'s PostgreSQL database.

    ``open()`` for a process that defers jobs (the API, a CLI command); ``run_worker()`` for a
    ``driftpilot worker``; ``start_deferrer()`` for a process that only defers schedule ticks
    (``driftpilot serve``). ``scheduler``: what fires schedules in this process's jobs.
    A ``Dispatcher`` (``submit``, ``execute``, ``resume``: a run becomes a job).
    """

    def __init__(
        self,
        plane: ControlPlane,
        conf: QueueSettings | None = None,
        *,
        scheduler: ScheduleFirer | None = None,
    ) -> None:
        self.plane = plane
        self.conf = conf or plane.settings.queue
        self.scheduler = scheduler
        self.retry = BusyRetry(first_s=self.conf.retry_s, max_s=self.conf.retry_s)
        self.conninfo = conninfo(plane.settings.db_url)
        self.app = self._make_app()
        self._opened = False
        self._lock = threading.Lock()
        self._deferrer: threading.Thread | None = None
        self._deferrer_loop: asyncio.AbstractEventLoop | None = None
        self._deferrer_stop: asyncio.Event | None = None

    # -- the app and its tasks ------------------------------------------------------------------

    def _make_app(self, pool_size: int | None = None) -> procrastinate.App:
        import procrastinate

        connector = procrastinate.PsycopgConnector(
            conninfo=self.conninfo,
            min_size=1,
            max_size=pool_size or self.conf.pool_size,
        )
        app = procrastinate.App(
            connector=connector, periodic_defaults={"max_delay": self.conf.max_delay_s}
        )
        self._register(app)
        return app

    def _register(self, app: procrastinate.App) -> None:
        """The tasks, bound to this process's plane and scheduler."""
        busy = self.retry.procrastinate()

        @app.task(name=EXECUTE_TASK, queue=RUNS_QUEUE, retry=busy)
        def execute_run(run_id: str) -> str:
            return self.execute_in_order(run_id)

        @app.task(name=RESUME_TASK, queue=RUNS_QUEUE, retry=busy)
        def resume_run(run_id: str) -> str:
            return self._outcome(self._report_later(self.plane.resume_run(run_id, wait=False)))

        @app.periodic(cron=self.conf.tick_cron, periodic_id="schedules")
        @app.task(name=TICK_TASK, queue=SCHEDULES_QUEUE, priority=TICK_PRIORITY)
        def schedule_tick(timestamp: int) -> int:
            return self.tick(timestamp)

        @app.task(name=FIRE_TASK, queue=SCHEDULES_QUEUE, priority=FIRE_PRIORITY)
        def fire_schedule(cron_id: str, scheduled_at: str) -> str:
            return self._scheduler().fire_due(cron_id, datetime.fromisoformat(scheduled_at)).outcome

    def _report_later(self, view: RunView) -> RunView:
        """Queue the run's report for this worker's background thread: the job (and the
        model's lock) ends with the run, not with Evidently's render (a worker stopped
        meanwhile leaves it to the first request)."""
        self.plane.report_after_run(view)
        return view

    def execute_in_order(self, run_id: str) -> str:
        """The ``execute_run`` job: run the pending runs of the model submitted before
        ``run_id`` (oldest first), then ``run_id``; its outcome. Jobs are started in job id
        order per model (procrastinate's lock) but runs in submission order
        (``refuse_if_older_pending``): when two submitters' defers cross, the later run's
        job comes first, and waiting there for the earlier run would hold back the earlier
        run's job behind it for ever. A run whose job comes later finds it ended: a no-op.

        Raises:
            ModelBusy: the model is busy (its lease, unrecovered work): the job is retried.
        """
        tried: set[str] = set()
        while (first := self._first_pending_before(run_id)) is not None:
            if first in tried:  # still pending after it was executed: claimed elsewhere
                raise ModelBusy(f"run {first[:12]} was submitted first and is still pending")
            tried.add(first)
            log.info("run %s was submitted before run %s: it goes first", first, run_id)
            self._execute_for_another(first, run_id)
        return self._outcome(self._report_later(self.plane.execute_run(run_id, timeout_s=0)))

    def _execute_for_another(self, first: str, run_id: str) -> None:
        """Execute ``first`` in ``run_id``'s job. ModelBusy is raised (the job is retried);
        any other error is the run's (``drive`` marked it failed and it is logged here):
        ``run_id`` still runs, or it would be left pending with its job ended."""
        try:
            self._report_later(self.plane.execute_run(first, timeout_s=0))
        except ModelBusy:
            raise
        except Exception:
            log.exception("run %s, executed in the job of run %s, raised", first, run_id)

    def _first_pending_before(self, run_id: str) -> str | None:
        """The oldest pending run of ``run_id``'s model submitted before it (the order of
        ``refuse_if_older_pending``: created_at, then id); None when there is none or
        ``run_id`` itself is no longer pending."""
        run = self.plane.store.get(Run, run_id)
        if run.status != "pending":
            return None
        key = (run.created_at, run.id)
        older = self.plane.store.list_rows(
            Run, Run.model == run.model, Run.status == "pending", Run.created_at <= run.created_at
        )
        keys = sorted((r.created_at, r.id) for r in older if (r.created_at, r.id) < key)
        return keys[0][1] if keys else None

    @staticmethod
    def _outcome(view: RunView) -> str:
        return f"{view.status}:{view.outcome}" if view.outcome else view.status

    def _scheduler(self) -> ScheduleFirer:
        if self.scheduler is None:
            raise ConfigError("this process has no scheduler: it cannot fire schedules")
        return self.scheduler

    def tick(self, timestamp: int) -> int:
        """Defer a firing of every schedule due at ``timestamp`` (a cron time passed since
        its last firing); returns how many were deferred."""
        scheduler = self._scheduler()
        deferred = 0
        for cron_id, at in scheduler.due(datetime.fromtimestamp(timestamp, UTC)):
            if not self._claim(cron_id, at):
                continue  # another job of this tick (or an overlapping one) took it
            if self.defer_fire(cron_id, at):
                deferred += 1
            else:
                scheduler.skip_overlap(cron_id, at)
        return deferred

    def _claim(self, cron_id: str, at: datetime) -> bool:
        """Take the firing of ``cron_id`` at ``at``, once across every process: procrastinate
        keeps only the newest deferred tick per task, so a deferrer lagging a tick behind can
        defer an old tick a second time; this row makes the second one fire nothing."""
        from sqlalchemy import text

        with self.plane.store.engine.begin() as conn:
            row = conn.execute(
                text(
                    f"INSERT INTO {FIRINGS_TABLE} (cron_id, scheduled_at) VALUES (:c, :t) "
                    "ON CONFLICT DO NOTHING RETURNING cron_id"
                ),
                {"c": cron_id, "t": at.astimezone(UTC).isoformat()},
            ).first()
        return row is not None

    # -- opening, the schema --------------------------------------------------------------------

    def open(self) -> Queue:
        """Apply the schema if missing and open a connection pool for deferring from
        synchronous code (any thread)."""
        with self._lock:
            if not self._opened:
                self.ensure_schema()
                self.app.open()
                self._opened = True
        return self

    def close(self) -> None:
        self.stop_deferrer()
        with self._lock:
            if self._opened:
                self.app.close()
                self._opened = False

    def __enter__(self) -> Queue:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure_schema(self) -> bool:
        """Apply procrastinate's schema unless its tables exist; True when it was applied.
        Processes starting at once take turns (an advisory lock)."""
        import psycopg
        from procrastinate.schema import SchemaManager

        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            # Poll, never block: a session blocked on a lock holds a snapshot, which another
            # process's CREATE INDEX CONCURRENTLY (the checkpointer's set-up) would wait for.
            while not _try_lock(conn, _SCHEMA_LOCK):
                time.sleep(0.1)
            try:
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {FIRINGS_TABLE} (cron_id varchar(40), "
                    "scheduled_at varchar(40), PRIMARY KEY (cron_id, scheduled_at))"
                )
                row = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
                if row is not None and row[0] is not None:
                    return False
                conn.execute(SchemaManager.get_schema())
                log.info("applied procrastinate's schema")
                return True
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))

    # -- deferring ------------------------------------------------------------------------------

    def defer_run(self, run_id: str) -> int | None:
        """Queue the execution of a pending run; None when its job is already waiting."""
        return self._defer(EXECUTE_TASK, run_id)

    def defer_resume(self, run_id: str) -> int | None:
        """Queue the resumption of a run whose approval decision is recorded."""
        return self._defer(RESUME_TASK, run_id)

    def _defer(self, task: str, run_id: str) -> int | None:
        from procrastinate.exceptions import AlreadyEnqueued

        model = self.plane.store.get(Run, run_id).model
        deferrer = self.app.configure_task(
            task,
            allow_unknown=False,
            lock=f"model:{model}",
            queueing_lock=f"{task}:{run_id}",
        )
        try:
            return deferrer.defer(run_id=run_id)
        except AlreadyEnqueued:
            log.info("%s of run %s is already queued", task, run_id)
            return None

    def submit(self, what: What, run_id: str) -> Future[int | None]:
        """The ``Dispatcher`` face: queue the run's job (opening the pool if needed); the
        future holds its job id (None: already queued) or what deferring raised."""
        future: Future[int | None] = Future()
        try:
            self.open()
            defer = self.defer_run if what == "execute" else self.defer_resume
            future.set_result(defer(run_id))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def execute(self, run_id: str) -> Future[int | None]:
        return self.submit("execute", run_id)

    def resume(self, run_id: str) -> Future[int | None]:
        return self.submit("resume", run_id)

    def defer_fire(self, cron_id: str, scheduled_at: datetime) -> bool:
        """Queue one firing of a schedule; False when its previous firing still waits."""
        from procrastinate.exceptions import AlreadyEnqueued

        lock = f"schedule:{cron_id}"
        deferrer = self.app.configure_task(
            FIRE_TASK, allow_unknown=False, lock=lock, queueing_lock=lock
        )
        try:
            deferrer.defer(cron_id=cron_id, scheduled_at=scheduled_at.astimezone(UTC).isoformat())
        except AlreadyEnqueued:
            return False
        return True

    # -- the worker -----------------------------------------------------------------------------

    def run_worker(
        self,
        *,
        concurrency: int = 1,
        queues: Iterable[str] | None = None,
        name: str | None = None,
    ) -> None:
        """Take jobs until SIGTERM or SIGINT: then take no new job, let the running ones
        finish (up to ``shutdown_grace_s``) and return. Also defers schedule ticks, and reaps
        the jobs of dead workers."""
        self.ensure_schema()
        quiet_busy_retries(logging.getLogger("procrastinate.worker"))
        # A pool big enough for the jobs, their deferrals, the listener and the heartbeat.
        self.app = self._make_app(pool_size=concurrency + 4)
        asyncio.run(self._work(concurrency, list(queues) if queues else None, name))

    async def _work(self, concurrency: int, queues: list[str] | None, name: str | None) -> None:
        from procrastinate import signals
        from procrastinate.worker import Worker

        async with self.app.open_async():
            reaper = asyncio.create_task(self._reap_forever(), name="driftpilot-reaper")
            options: WorkerOptions = {
                "concurrency": concurrency,
                "name": name or "driftpilot",
                "wait": True,
                # Ours below: a stop that no signal asked for is then told from one that was.
                "install_signal_handlers": False,
                "fetch_job_polling_interval": self.conf.poll_s,
                "abort_job_polling_interval": self.conf.poll_s,
                "update_heartbeat_interval": self.conf.heartbeat_s,
                "stalled_worker_timeout": self.conf.stalled_s,
            }
            if queues:  # else every queue
                options["queues"] = queues
            if self.conf.shutdown_grace_s is not None:
                options["shutdown_graceful_timeout"] = self.conf.shutdown_grace_s
            worker = Worker(app=self.app, **options)
            asked = threading.Event()

            def stop() -> None:  # SIGTERM/SIGINT: finish runs, then stop
                asked.set()
                worker.stop()

            try:
                with signals.on_stop(stop):
                    await worker.run()
            finally:
                reaper.cancel()
            if not asked.is_set():
                # procrastinate stops "gracefully" when its listener or heartbeat loses the
                # database: exiting 0 then would tell a supervisor all is well.
                raise QueueLost(
                    "the worker stopped without being asked: its database connection failed "
                    "(its log says how); start it again once PostgreSQL answers"
                )

    async def _reap_forever(self) -> None:
        while True:
            try:
                await self.reap()
            except Exception:  # a dropped connection: the next round tries again
                log.exception("reaping stalled jobs failed")
            await asyncio.sleep(self.conf.stalled_s / 2)

    async def reap(self) -> list[int]:
        """Release the jobs left ``doing`` by workers silent for ``stalled_s`` (killed): they
        hold their model's lock. A job whose run never started (still ``pending``, or
        ``waiting_approval`` for a resume) is queued again; the others are marked failed and
        their runs, left ``running``, wait for ``recover``. A worker that was only slow loses
        nothing: a run executes once whoever takes its job (lease, status checks)."""
        from procrastinate.exceptions import ConnectorException
        from procrastinate.jobs import Status

        manager = self.app.job_manager
        reaped = []
        for job in await manager.get_stalled_jobs(seconds_since_heartbeat=self.conf.stalled_s):
            run_id = job.task_kwargs.get("run_id")
            unstarted = {EXECUTE_TASK: "pending", RESUME_TASK: "waiting_approval"}
            waiting = unstarted.get(job.task_name)
            status = await asyncio.to_thread(self._run_status, run_id) if waiting else None
            try:
                if status is not None and status == waiting:
                    await manager.retry_job(job)
                else:
                    await manager.finish_job(job, status=Status.FAILED, delete_job=False)
            except ConnectorException as exc:  # finished meanwhile (its worker was only slow)
                log.info("stalled job %s was not reaped: %s", job.id, exc)
                continue
            assert job.id is not None
            reaped.append(job.id)
            did = "queued it again" if status == waiting else "its run waits for `recover`"
            log.warning(
                "reaped job %s (%s %s) of a dead worker: %s", job.id, job.task_name, run_id, did
            )
        return reaped

    def _run_status(self, run_id: object) -> str | None:
        try:
            return self.plane.store.get(Run, str(run_id)).status
        except NotFound:
            return None

    # -- the deferrer alone (serve) -------------------------------------------------------------

    def start_deferrer(self) -> None:
        """Defer schedule ticks from a background thread (its own event loop and pool) until
        ``stop_deferrer``; the ticks are executed by workers."""
        if self._deferrer is not None:
            return
        self.ensure_schema()
        ready = threading.Event()
        self._deferrer = threading.Thread(
            target=lambda: asyncio.run(self._defer_ticks(ready)),
            name="driftpilot-deferrer",
            daemon=True,
        )
        self._deferrer.start()
        ready.wait(30)

    async def _defer_ticks(self, ready: threading.Event) -> None:
        from procrastinate.periodic import PeriodicDeferrer

        self._deferrer_loop = asyncio.get_running_loop()
        self._deferrer_stop = asyncio.Event()
        app = self._make_app(pool_size=1)
        async with app.open_async():
            deferrer = PeriodicDeferrer(app.periodic_registry, max_delay=self.conf.max_delay_s)
            loop = asyncio.create_task(deferrer.worker(), name="driftpilot-ticks")
            ready.set()
            stop = asyncio.create_task(self._deferrer_stop.wait())
            await asyncio.wait({loop, stop}, return_when=asyncio.FIRST_COMPLETED)
            loop.cancel()
            stop.cancel()
            if loop.done() and not loop.cancelled() and loop.exception() is not None:
                log.error("the schedule tick deferrer stopped: %s", loop.exception())

    def stop_deferrer(self) -> None:
        thread, self._deferrer = self._deferrer, None
        if thread is None:
            return
        if self._deferrer_loop is not None and self._deferrer_stop is not None:
            self._deferrer_loop.call_soon_threadsafe(self._deferrer_stop.set)
        thread.join(30)
