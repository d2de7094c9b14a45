"""Scheduled autonomous runs: crons that start a control run on the newest batch of a source.

What a schedule is: ``driftpilot.scheduling.specs``; its batch sources (glob, dataset,
GDELT) and which batches a model has seen: ``driftpilot.scheduling.sources``; its cron times:
``driftpilot.scheduling.cron``; one firing and its audit: ``driftpilot.scheduling.firing``.

Timing is one rule on SQLite and PostgreSQL homes. A schedule is *due* when a time of its
cron (croniter, in the schedule's IANA time zone) has passed since its anchor: its newest
audited firing, or its last change when newer (create, update, resume and ``run_now`` with a
new requester restart it from now: paused firings are not caught up). The schedules live in
the audit database (``schedules``), so they and their firings survive a restart.

- In process (``driftpilot serve``, the chat, SQLite homes): a small thread ticks, at the
  next cron time of any schedule and at least every ``DRIFTPILOT_SCHEDULER_POLL_S`` (to see
  what other processes changed), and fires what is due in ``workers`` threads.
- On PostgreSQL (``db_url`` ``postgresql...``): procrastinate's periodic tick asks ``due``
  and defers one ``fire_due`` job per due schedule (``driftpilot.execution.queue``): any
  number of ``driftpilot serve`` replicas and workers fire a schedule once per cron time.

Time comes from ``clock`` (an aware datetime; default: now in UTC), so tests fire a cron
minute by moving the clock.

Misfire and coalescing policy (the same for every schedule and both homes):

- ``misfire_grace_s`` (``DRIFTPILOT_SCHEDULER_MISFIRE_GRACE_S``, default 300 s): a firing
  that could not start on time (the process was down or every worker busy) still runs if it
  is at most that late; a later one is skipped and audited as ``missed``.
- Coalescing: the cron times since the anchor collapse into the newest one (after downtime,
  one firing, or one ``missed``).
- A firing never overlaps the previous firing of the same schedule; one that would is
  skipped and audited as ``skipped-overlap``.

Changes to schedules (create, update, pause, resume, delete, run_now) are audited with who
made them (tool ``schedule.<action>`` of agent ``scheduler``). ``DRIFTPILOT_SCHEDULER_ENABLED
=false`` makes a process manage schedules without firing them. On SQLite, run one process
that fires per database: the batch ledger still keeps a batch from running twice.

Before croniter, SQLite homes were timed by APScheduler, whose job table
(``apscheduler_jobs``, migration 0004) migration 0008 drops: nothing in it was needed.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy import delete

from driftpilot.core.errors import ConfigError, NotFound
from driftpilot.core.identity import normalize_principal
from driftpilot.core.settings import SchedulerSettings, is_postgres
from driftpilot.scheduling.cron import Cron, cron_trigger, zone
from driftpilot.scheduling.firing import Firings, iso, spec_of
from driftpilot.scheduling.sources import Picked, Sources, unseen_batches
from driftpilot.scheduling.specs import (
    AGENT,
    FIRE_TOOL,
    DatasetSource,
    Firing,
    GdeltSource,
    GlobSource,
    Payload,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleView,
    check_glob,
    source_kind,
)
from driftpilot.store.engine import utc_now
from driftpilot.store.models import ManagedModel, Schedule, ScheduleBatch

if TYPE_CHECKING:
    from driftpilot.execution.queue import Queue
    from driftpilot.runs.plane import ControlPlane

__all__ = [
    "AGENT",
    "FIRE_TOOL",
    "Cron",
    "DatasetSource",
    "Firing",
    "GdeltSource",
    "GlobSource",
    "Payload",
    "Picked",
    "ScheduleSpec",
    "ScheduleUpdate",
    "ScheduleView",
    "Scheduler",
    "SchedulerSettings",
    "check_glob",
    "cron_trigger",
    "unseen_batches",
    "utc_now",
    "zone",
]

log = logging.getLogger(__name__)
MIN_SLEEP_S = 0.05  # the tick thread never spins faster than this
OVERLAP = "the previous firing of this schedule is still running"


class Scheduler(Firings):
    """Create, change, pause and delete schedules; fire them when due (module docstring).

    ``roots``: where glob sources may read (default ``<home>/inbox``). ``execute``: called
    with the run id of each fired run (the API hands it to its run executor); without it the
    firing thread executes the run itself. ``clock``: the time (default ``utc_now``). Use as
    a context manager, or ``start``/``shutdown``.

    On PostgreSQL, ``queue`` is the ``driftpilot.execution.queue.Queue`` whose jobs fire
    this scheduler's schedules (a worker's); without it, ``start`` opens one that only defers
    ticks (``enabled``) and firings (``run_now``). Fired runs are then deferred as jobs
    unless ``execute`` says otherwise.
    """

    def __init__(
        self,
        plane: ControlPlane,
        *,
        roots: list[Path] | None = None,
        execute: Callable[[str], Any] | None = None,
        conf: SchedulerSettings | None = None,
        queue: Queue | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.plane = plane
        self.conf = conf or plane.settings.scheduler
        self.roots = list(roots) if roots else [plane.settings.home / "inbox"]
        self.sources = Sources(plane, self.roots, self.conf)
        self.on_queue = queue is not None or is_postgres(plane.settings.db_url)
        self._clock = clock or utc_now
        self._queue = queue
        self._owns_queue = False
        self._execute = execute or (queue.defer_run if queue is not None else None)
        self._started = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # the fields below
        self._tick_lock = threading.Lock()  # one tick at a time: due, then dispatch
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._firing: set[str] = set()  # schedules with a firing in progress here
        self._dispatched: dict[str, datetime] = {}  # the newest time each was fired for here

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Scheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def running(self) -> bool:
        return self._started

    def start(self) -> Scheduler:
        """Start managing schedules; when ``enabled``, fire them: in process, a tick thread;
        on PostgreSQL, open the task queue and defer its ticks."""
        if self._started:
            return self
        self._stop.clear()
        if self.on_queue:
            from driftpilot.execution.queue import Queue

            if self._queue is None:
                self._queue = Queue(self.plane).open()
                self._owns_queue = True
                if self.conf.enabled:
                    self._queue.start_deferrer()
            if self._execute is None:
                self._execute = self._queue.defer_run
        else:
            self._pool = ThreadPoolExecutor(self.conf.workers, thread_name_prefix="dp-firing")
            if self.conf.enabled:
                self._thread = threading.Thread(
                    target=self._loop, name="driftpilot-scheduler", daemon=True
                )
                self._thread.start()
        self._started = True
        return self

    def shutdown(self, wait: bool = True) -> None:
        """Stop firing; with ``wait``, let firings in progress finish (an enqueued run still
        waiting for its model stays pending for the next start)."""
        if not self._started:
            return
        self._started = False
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)
        if self._owns_queue and self._queue is not None:
            self._queue.close()
            self._queue, self._owns_queue = None, False

    def _check_started(self) -> None:
        if not self._started:
            raise ConfigError("the scheduler is not started")

    # -- timing: due, tick, dispatch ---------------------------------------------------------------

    def _anchors(self, rows: list[Schedule]) -> dict[str, datetime]:
        """Each schedule's anchor: the newest of its last change, its newest audited firing
        and the newest time this process fired it for."""
        fired = self.last_fired([r.cron_id for r in rows])
        with self._lock:
            here = dict(self._dispatched)
        anchors = {}
        for row in rows:
            times = [datetime.fromisoformat(row.updated_at).astimezone(UTC)]
            times += [t for t in (fired.get(row.cron_id), here.get(row.cron_id)) if t]
            anchors[row.cron_id] = max(times)
        return anchors

    def due(self, now: datetime | None = None) -> list[tuple[str, datetime]]:
        """The enabled schedules with a cron time in (anchor, ``now``], each with its newest
        such time (the earlier ones coalesce into it). ``now``: default the clock's."""
        moment = now or self._clock()
        rows = self.store.list_rows(Schedule, Schedule.enabled.is_(True))
        anchors = self._anchors(rows)
        found = []
        for row in rows:
            try:
                at = cron_trigger(row.schedule, row.timezone).due(anchors[row.cron_id], moment)
            except ConfigError as exc:  # stored before a rule changed: say so, fire the rest
                log.warning("schedule %s has an invalid cron: %s", row.cron_id, exc)
                continue
            if at is not None:
                found.append((row.cron_id, at))
        return found

    def tick(self) -> list[tuple[str, datetime]]:
        """Fire, in the background, every schedule due now (in process; on PostgreSQL the
        queue's tick does this); returns the (cron id, time) pairs it took."""
        with self._tick_lock:
            found = self.due()
            for cron_id, at in found:
                self._dispatch(cron_id, at)
        return found

    def _dispatch(self, cron_id: str, at: datetime, *, by_hand: bool = False) -> None:
        """Start one firing in a firing thread, unless one of the same schedule still runs
        (audited ``skipped-overlap``)."""
        pool = self._pool
        if pool is None:
            raise ConfigError("the scheduler is not started")
        with self._lock:
            if not by_hand:
                self._dispatched[cron_id] = max(at, self._dispatched.get(cron_id, at))
            overlap = cron_id in self._firing
            if not overlap:
                self._firing.add(cron_id)
        if overlap:
            self.skip_overlap(cron_id, at, OVERLAP)
            return

        def firing() -> None:
            try:
                self.fire_due(cron_id, at)
            except Exception:  # fire audits its own failures; this is a bug: log it
                log.exception("firing of schedule %s failed", cron_id)
            finally:
                with self._lock:
                    self._firing.discard(cron_id)

        try:
            pool.submit(firing)
        except RuntimeError:  # shut down meanwhile
            with self._lock:
                self._firing.discard(cron_id)

    def _loop(self) -> None:
        """The tick thread: tick, then sleep until the next cron time (at most poll_s)."""
        while not self._stop.is_set():
            try:
                self.tick()
                wait = self._sleep_s()
            except Exception:
                log.exception("a schedule tick failed; trying again in %s s", self.conf.poll_s)
                wait = self.conf.poll_s
            self._wake.wait(wait)
            self._wake.clear()

    def _sleep_s(self) -> float:
        moment = self._clock()
        wait = self.conf.poll_s
        for row in self.store.list_rows(Schedule, Schedule.enabled.is_(True)):
            with_cron = _cron_or_none(row)
            nxt = with_cron.next_after(moment) if with_cron is not None else None
            if nxt is not None:
                wait = min(wait, (nxt - moment).total_seconds())
        return max(MIN_SLEEP_S, wait)

    def wake(self) -> None:
        """Tick now (a schedule changed, or the clock moved)."""
        self._wake.set()

    # -- CRUD -------------------------------------------------------------------------------------

    def _stamp(self) -> str:
        return self._clock().astimezone(UTC).isoformat(timespec="microseconds")

    def create(self, spec: ScheduleSpec, principal: str) -> ScheduleView:
        """Add a schedule; its first firing is the cron's next time (unless disabled).

        Raises:
            NotFound: unknown model or dataset.
            ConfigError: invalid cron, time zone or source.
        """
        actor = normalize_principal(principal)
        self._check_payload(spec.payload)
        cron_id = str(uuid.uuid4())
        stamp = self._stamp()
        row = Schedule(
            cron_id=cron_id,
            model=spec.payload.model,
            schedule=" ".join(spec.schedule.split()),
            timezone=spec.timezone,
            enabled=spec.enabled,
            payload=spec.payload.model_dump_json(exclude_defaults=False),
            multitask_strategy=spec.multitask_strategy,
            meta=json.dumps(spec.metadata, default=str),
            created_by=actor,
            created_at=stamp,
            updated_at=stamp,
        )
        self._check_started()
        self.store.add(row)
        view = self.get(cron_id)
        self._audit_change(cron_id, "create", actor, view)
        self.wake()
        return view

    def get(self, cron_id: str) -> ScheduleView:
        """One schedule, with its next fire time and last firing.

        Raises:
            NotFound: no such schedule.
        """
        return self._view(self._row(cron_id))

    def list_schedules(
        self, model: str | None = None, enabled: bool | None = None
    ) -> list[ScheduleView]:
        """Schedules, oldest first, optionally of one model or only (not) enabled ones."""
        where: list[Any] = []
        if model is not None:
            where.append(Schedule.model == model)
        if enabled is not None:
            where.append(Schedule.enabled == enabled)
        rows = self.store.list_rows(Schedule, *where, order=Schedule.created_at)
        return [self._view(r) for r in rows]

    def update(self, cron_id: str, change: ScheduleUpdate, principal: str) -> ScheduleView:
        """Change a schedule's cron, time zone, payload, strategy, metadata or enabled flag;
        the next fire time is recomputed from now.

        Raises:
            NotFound: no such schedule, unknown model or dataset.
            ConfigError: the changed schedule is invalid.
        """
        actor = normalize_principal(principal)
        row = self._row(cron_id)
        current = spec_of(row).model_dump()
        merged = {**current, **change.model_dump(exclude_unset=True, exclude_none=True)}
        try:
            spec = ScheduleSpec.model_validate(merged)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"invalid schedule: {first['msg']}") from exc
        self._check_payload(spec.payload)
        self._check_started()
        with self.store.session() as session:
            stored = session.get(Schedule, cron_id)
            if stored is None:
                raise NotFound(f"no schedule {cron_id!r}")
            stored.model = spec.payload.model
            stored.schedule = " ".join(spec.schedule.split())
            stored.timezone = spec.timezone
            stored.enabled = spec.enabled
            stored.payload = spec.payload.model_dump_json()
            stored.multitask_strategy = spec.multitask_strategy
            stored.meta = json.dumps(spec.metadata, default=str)
            # Whoever changes a schedule requests its runs from now on, so they cannot
            # approve what their change makes it do (four eyes across a borrowed schedule).
            stored.created_by = actor
            stored.updated_at = self._stamp()
        view = self.get(cron_id)
        self._audit_change(cron_id, "update", actor, view)
        self.wake()
        return view

    def pause(self, cron_id: str, principal: str) -> ScheduleView:
        """Stop firing until ``resume`` (a firing in progress finishes)."""
        return self._set_enabled(cron_id, False, principal)

    def resume(self, cron_id: str, principal: str) -> ScheduleView:
        """Fire again from the cron's next time after now (paused firings are not caught up)."""
        return self._set_enabled(cron_id, True, principal)

    def _set_enabled(self, cron_id: str, enabled: bool, principal: str) -> ScheduleView:
        actor = normalize_principal(principal)
        row = self._row(cron_id)
        self._check_started()
        if row.enabled != enabled:
            with self.store.session() as session:
                stored = session.get(Schedule, cron_id)
                if stored is not None:
                    stored.enabled, stored.updated_at = enabled, self._stamp()
        view = self.get(cron_id)
        self._audit_change(cron_id, "resume" if enabled else "pause", actor, view)
        self.wake()
        return view

    def delete(self, cron_id: str, principal: str) -> None:
        """Remove a schedule and its batch ledger (its audit stays).

        Raises:
            NotFound: no such schedule.
        """
        actor = normalize_principal(principal)
        view = self.get(cron_id)
        self._check_started()
        self._delete_rows(cron_id)
        with self._lock:
            self._dispatched.pop(cron_id, None)
        self._audit_change(cron_id, "delete", actor, view)

    def run_now(self, cron_id: str, principal: str | None = None) -> ScheduleView:
        """Fire the schedule now, in the background (through the scheduler, so the misfire
        and overlap rules apply); the cron's times follow as before. With ``principal``,
        that person requests the schedule's runs from now on (as after an update), so they
        cannot approve the run they fired.

        Raises:
            NotFound: no such schedule.
            ConfigError: the schedule is paused.
        """
        row = self._row(cron_id)
        if not row.enabled:
            raise ConfigError(f"schedule {cron_id} is paused: resume it first")
        self._check_started()
        if principal is not None:
            actor = normalize_principal(principal)
            with self.store.session() as session:
                stored = session.get(Schedule, cron_id)
                if stored is not None and stored.created_by != actor:
                    stored.created_by, stored.updated_at = actor, self._stamp()
            self._audit_change(cron_id, "run_now", actor, self.get(cron_id))
        at = self._clock()
        if self._queue is not None:
            if not self._queue.defer_fire(cron_id, at):
                self.skip_overlap(cron_id, at)
        else:
            self._dispatch(cron_id, at, by_hand=True)
        return self.get(cron_id)

    def _view(self, row: Schedule) -> ScheduleView:
        last = self.firings(row.cron_id, limit=1)
        nxt = None
        cron = _cron_or_none(row)
        if row.enabled and cron is not None:
            anchor = datetime.fromisoformat(row.updated_at).astimezone(UTC)
            if last:
                fired = datetime.fromisoformat(last[0].scheduled_at or last[0].at)
                anchor = max(anchor, fired.astimezone(UTC))
            grace = timedelta(seconds=self.conf.misfire_grace_s)
            nxt = cron.next_after(max(anchor, self._clock() - grace))
        return ScheduleView(
            cron_id=row.cron_id,
            assistant_id=row.model,
            model=row.model,
            schedule=row.schedule,
            timezone=row.timezone,
            enabled=row.enabled,
            next_run_date=iso(nxt),
            payload=json.loads(row.payload),
            multitask_strategy=row.multitask_strategy,
            metadata=json.loads(row.meta or "{}"),
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
            last_firing=last[0] if last else None,
        )

    def _check_payload(self, payload: Payload) -> None:
        try:
            self.store.get(ManagedModel, payload.model)
        except NotFound:
            raise NotFound(f"no model {payload.model!r}") from None
        # A SQL database that is not configured, or a bucket outside the object roots, is
        # refused when the schedule is written rather than at every firing.
        self.sources.check(payload)
        if isinstance(payload.source, DatasetSource):
            from tools.datasets import SPECS

            if payload.source.dataset not in SPECS:
                raise NotFound(
                    f"unknown dataset {payload.source.dataset!r}; built-in datasets: "
                    f"{', '.join(SPECS)}"
                )

    def _delete_rows(self, cron_id: str) -> None:
        with self.store.session() as session:
            session.execute(delete(ScheduleBatch).where(ScheduleBatch.cron_id == cron_id))
            session.execute(delete(Schedule).where(Schedule.cron_id == cron_id))

    def _audit_change(self, cron_id: str, action: str, actor: str, view: ScheduleView) -> None:
        self.store.record_tool_call(
            cron_id,
            AGENT,
            f"schedule.{action}",
            {"cron_id": cron_id, "by": actor},
            {
                "model": view.model,
                "schedule": view.schedule,
                "timezone": view.timezone,
                "enabled": view.enabled,
                "source": source_kind(view.payload),
                "multitask_strategy": view.multitask_strategy,
                "next_run_date": view.next_run_date,
            },
            ok=True,
            latency_ms=0.0,
        )


def _cron_or_none(row: Schedule) -> Cron | None:
    try:
        return cron_trigger(row.schedule, row.timezone)
    except ConfigError:
        return None
