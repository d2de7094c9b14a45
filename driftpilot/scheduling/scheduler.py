"""Scheduled autonomous runs: crons that start a control run on the newest batch of a source.

A schedule has LangGraph Platform's cron shape (``cron_id``, ``schedule``, ``timezone``,
``enabled``, ``next_run_date``, ``payload``) plus ``multitask_strategy`` and ``created_by``.
Its payload names the model and the batch source:

- ``{"glob": "flights/*.parquet"}``: the newest CSV/Parquet file (by modification time) that
  the pattern matches under an allowed batch root, if this schedule has not consumed it yet
  (a file rewritten in place is new) and the model has not seen its content (a run of the
  model had the same content hash: audited ``no-new-batch`` with that run). Older unconsumed
  files are passed over, and counted in the audit: a schedule follows the newest data, it
  does not replay a backlog.
- ``{"dataset": "flights", "start": "2013-02"}``: the next batch of a built-in dataset, in
  time order, from ``start`` on; without ``start``, from the batch after the newest one the
  model has seen (``max_rows``/``seed``: a seeded sample of each batch). A batch the model
  has seen is never run again: one a run of the model was given (the whole batch's content
  hash, taken before any sampling, or its batch id when the run came from this dataset), or
  one that begins at or before the newest row the champion was trained on (the bootstrap's
  window or the current champion's).
- ``{"gdelt": {}}``: the newest GDELT 2.0 15-minute event export (``lastupdate.txt`` of
  ``DRIFTPILOT_SCHEDULER_GDELT_BASE_URL``). Offline, the firing is audited as an error.

Timing is APScheduler 3.11 (``BackgroundScheduler``) with its jobs in the audit database
(``SQLAlchemyJobStore``), so schedules and their next fire times survive a restart. Cron
expressions have the standard five fields (minute hour day month weekday; weekday 0 and 7 are
Sunday, as in crontab), evaluated in the schedule's IANA time zone.

Misfire and coalescing policy (the same for every schedule):

- ``misfire_grace_time`` (``DRIFTPILOT_SCHEDULER_MISFIRE_GRACE_S``, default 300 s): a firing
  that could not start on time (the process was down or every worker busy) still runs if it
  is at most that late; a later one is skipped and audited as ``missed``.
- ``coalesce=True``: after downtime, all the firings that were missed collapse into one.
- ``max_instances=1``: a firing never overlaps the previous firing of the same schedule; one
  that would is skipped and audited as ``skipped-overlap``.

Each firing is audited as a tool call of agent ``scheduler`` (tool ``schedule.fire``, under
the schedule's ``cron_id``) with its outcome: ``fired`` (with the run id), ``skipped-busy``
(the model is busy and the strategy is ``reject``, or an ``enqueue`` schedule still has a run
waiting), ``no-new-batch``, ``error``, ``missed``, ``skipped-overlap`` or ``disabled``.
Changes to schedules (create, update, pause, resume, delete) are audited with who made them.
A fired run has trigger ``schedule``, is requested by the schedule's creator and carries the
schedule in its metadata (``schedule_id``; a dataset batch also its ``dataset`` and the
``batch_hash`` of the whole batch before sampling). A batch is
claimed in the ``schedule_batches`` ledger before its run is submitted, so one schedule never
runs one batch twice; a busy model leaves the batch unclaimed for the next firing.

Run one scheduler that fires per database (``DRIFTPILOT_SCHEDULER_ENABLED=false`` makes a
process manage schedules without firing them): APScheduler 3 does not lock jobs across
processes (the ledger still keeps a batch from running twice).

On PostgreSQL (``db_url`` ``postgresql...``), timing is procrastinate's instead (see
``driftpilot.execution.queue``): no APScheduler.
A periodic tick, deferred once per tick however many
processes run the deferrer, asks ``due`` which schedules have a cron time since the previous
tick, and each is fired by a worker through ``fire_due`` (the same ``fire``). Any number of
``driftpilot serve`` replicas and workers fire a schedule once per cron time. The policy maps
onto it: a firing that starts more than ``misfire_grace_s`` late is audited ``missed``; the
cron times of one tick coalesce into one firing, and after downtime only the newest tick is
caught up (within the queue's ``max_delay_s``); a firing whose previous firing of the same
schedule still waits is audited ``skipped-overlap``, and firings of one schedule never run at
once. ``run_now`` queues a firing now. ``next_run_date`` is the cron's next time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import create_engine, delete, select
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from driftpilot.core.errors import ConfigError, DataError, DriftPilotError, ModelBusy, NotFound
from driftpilot.core.identity import normalize_principal
from driftpilot.core.settings import SchedulerSettings, is_postgres
from driftpilot.store.audit import now
from driftpilot.store.models import (
    BatchRecord,
    ManagedModel,
    Run,
    Schedule,
    ScheduleBatch,
    StepEffect,
    ToolCall,
)

if TYPE_CHECKING:
    import polars as pl
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger
    from sqlalchemy.engine import Engine

    from driftpilot.execution.queue import Queue
    from driftpilot.runs.plane import ControlPlane
    from tools.data import Batch

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".parquet")
AGENT = "scheduler"
FIRE_TOOL = "schedule.fire"
JOB_FUNC = "driftpilot.scheduling.scheduler:fire_job"
SYNC_JOB = "driftpilot-scheduler-sync"
EXECUTE_SLICE_S = 2.0  # an enqueued run waiting for its model re-checks for shutdown this often
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"

FiringOutcome = Literal[
    "fired", "skipped-busy", "no-new-batch", "error", "missed", "skipped-overlap", "disabled"
]
_OK: set[str] = {"fired", "no-new-batch"}


# -- cron expressions ----------------------------------------------------------------------------

_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_FIELD = re.compile(r"^[0-9*,/-]+$")
_NAMED_FIELD = re.compile(r"^[0-9A-Za-z*,/-]+$")


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``.

    Raises:
        ConfigError: not an IANA time zone name.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"unknown time zone {name!r}: give an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from exc


def _weekday(token: str, *, upper: bool) -> int:
    names = {d: i for i, d in enumerate(_DAYS)}
    low = token.lower()
    if low in names:
        return names[low]
    if token.isdigit() and 0 <= int(token) <= 7:
        day = int(token)
        return day if upper else day % 7
    raise ConfigError(f"weekday {token!r} is not 0-7 or sun-sat")


def _weekdays(field: str) -> str:
    """A crontab weekday field (0 and 7 = Sunday) as APScheduler day names: APScheduler 3
    counts 0 as Monday, so numbers are translated, never passed through."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        body, slash, step_text = item.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) >= 1):
            raise ConfigError(f"weekday step {step_text!r} must be a positive number")
        step = int(step_text) if slash else 1
        if body == "*":
            first, last = 0, 6
        elif "-" in body:
            a, _, b = body.partition("-")
            first, last = _weekday(a, upper=False), _weekday(b, upper=True)
        else:
            first = _weekday(body, upper=False)
            last = 6 if slash else first
        if first > last:
            raise ConfigError(f"weekday range {body!r} runs backwards")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_DAYS[d] for d in sorted(days))


def cron_trigger(expression: str, timezone: str) -> CronTrigger:
    """The APScheduler trigger of a five-field crontab expression in an IANA time zone.

    Raises:
        ConfigError: not five fields, a field out of range, day of month and weekday both
            restricted (crontab ORs them, APScheduler would AND them), a schedule that never
            fires, or an unknown time zone.
    """
    from apscheduler.triggers.cron import CronTrigger

    tz = zone(timezone)
    fields = expression.split()
    if len(fields) != 5:
        raise ConfigError(
            f"cron schedule {expression!r} has {len(fields)} fields; give 5: "
            "minute hour day-of-month month day-of-week (e.g. '*/15 * * * *')"
        )
    minute, hour, day, month, weekday = fields
    for name, value, pattern in (
        ("minute", minute, _FIELD),
        ("hour", hour, _FIELD),
        ("day of month", day, _FIELD),
        ("month", month, _NAMED_FIELD),
        ("day of week", weekday, _NAMED_FIELD),
    ):
        if not pattern.match(value):
            raise ConfigError(f"cron {name} field {value!r} has characters cron does not allow")
    if day != "*" and weekday != "*":
        raise ConfigError(
            "restrict the day of month or the day of week, not both (cron fires when either "
            "matches; give two schedules instead)"
        )
    try:
        trigger = CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month.lower(),
            day_of_week=_weekdays(weekday),
            timezone=tz,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid cron schedule {expression!r}: {exc}") from exc
    if trigger.get_next_fire_time(None, datetime.now(tz)) is None:
        raise ConfigError(f"cron schedule {expression!r} never fires")
    return trigger


# -- schedule payloads -------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_glob(pattern: str) -> str:
    """A glob pattern relative to a batch root: no absolute path, '..', '~', '\\' or NUL, and
    '**' only as a whole path segment.

    Raises:
        ConfigError: the pattern could leave its root, or is not a valid glob.
    """
    pure = PurePosixPath(pattern)
    if (
        not pattern.strip()
        or "\x00" in pattern
        or "\\" in pattern
        or pure.is_absolute()
        or ".." in pure.parts
        or Path(pattern).drive
        or pattern.startswith("~")
        or any("**" in part and part != "**" for part in pure.parts)
    ):
        raise ConfigError(
            "glob must be relative to an allowed batch root, without '..', '~' or '\\' "
            "(e.g. 'flights/*.parquet')"
        )
    return pattern


class GlobSource(_Strict):
    glob: str = Field(
        min_length=1,
        max_length=500,
        description="CSV/Parquet files under an allowed batch root; the newest one is run.",
        examples=["flights/*.parquet"],
    )

    @field_validator("glob")
    @classmethod
    def _safe(cls, value: str) -> str:
        try:
            return check_glob(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc


class DatasetSource(_Strict):
    dataset: str = Field(
        pattern=r"^[a-z0-9_]+$", max_length=50, description="A built-in dataset: flights, ..."
    )
    start: str | None = Field(
        None,
        max_length=100,
        description="The first batch to run (earlier ones are skipped), e.g. '2013-02'.",
    )
    max_rows: int | None = Field(
        None, ge=100, le=1_000_000, description="A seeded sample of this many rows per batch."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)


class GdeltOptions(_Strict):
    max_rows: int | None = Field(None, ge=1, le=1_000_000, description="Keep the first N rows.")


class GdeltSource(_Strict):
    gdelt: GdeltOptions = Field(
        default_factory=GdeltOptions, description="The newest GDELT 2.0 event export."
    )


Source = GlobSource | DatasetSource | GdeltSource


class Payload(_Strict):
    """What a firing runs: the managed model and where its batches come from."""

    model: str = Field(pattern=MODEL_NAME, description="The managed model.")
    source: Source = Field(
        description="{'glob': pattern} | {'dataset': name, 'start'?} | {'gdelt': {}}"
    )


MultitaskStrategy = Literal["reject", "enqueue"]


def _check_cron(schedule: str | None, timezone: str | None) -> None:
    try:
        if timezone is not None:
            zone(timezone)
        if schedule is not None:
            cron_trigger(schedule, timezone or "UTC")
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc


class ScheduleSpec(_Strict):
    """A new schedule (LangGraph Platform's cron fields, plus the batch source)."""

    schedule: str = Field(
        max_length=200,
        description="Five-field cron: minute hour day-of-month month day-of-week "
        "(0 or 7 = Sunday).",
        examples=["* * * * *", "0 6 * * mon-fri"],
    )
    timezone: str = Field("UTC", max_length=100, description="IANA time zone of the schedule.")
    enabled: bool = True
    payload: Payload
    multitask_strategy: MultitaskStrategy = Field(
        "reject",
        description="The model is busy at a firing: 'reject' skips it (audited); 'enqueue' "
        "submits the run to wait for the model (one waiting run per schedule).",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_cron(self) -> ScheduleSpec:
        _check_cron(self.schedule, self.timezone)
        return self


class ScheduleUpdate(_Strict):
    """A change to a schedule: only the fields given change."""

    schedule: str | None = Field(None, max_length=200)
    timezone: str | None = Field(None, max_length=100)
    enabled: bool | None = None
    payload: Payload | None = None
    multitask_strategy: MultitaskStrategy | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _valid_cron(self) -> ScheduleUpdate:
        _check_cron(self.schedule, self.timezone)
        return self


class Firing(BaseModel):
    """One firing of a schedule, as audited."""

    cron_id: str
    outcome: FiringOutcome
    at: str
    scheduled_at: str | None = None
    run_id: str | None = None
    batch_id: str | None = None
    detail: str = ""


class ScheduleView(BaseModel):
    """A schedule as LangGraph Platform shows a cron (``assistant_id`` is the model)."""

    cron_id: str
    assistant_id: str
    model: str
    schedule: str
    timezone: str
    enabled: bool
    next_run_date: str | None = Field(description="Next firing (UTC); null while paused.")
    payload: dict[str, Any]
    multitask_strategy: MultitaskStrategy
    metadata: dict[str, Any]
    created_by: str
    created_at: str
    updated_at: str
    last_firing: Firing | None = None


@dataclass
class Picked:
    """A batch a firing chose: its rows, id, ledger key, how it was found, and what its run
    records about where it came from (its metadata, beside the schedule id)."""

    frame: pl.DataFrame
    batch_id: str
    key: str
    detail: str
    origin: dict[str, Any] = dataclasses.field(default_factory=dict)
    seen_by: str | None = None  # a run of the model that had this content already


# -- the job APScheduler stores ----------------------------------------------------------------

_LIVE: dict[str, Scheduler] = {}
_LIVE_LOCK = threading.Lock()


def fire_job(store_key: str, cron_id: str) -> None:
    """What APScheduler runs (stored by reference): fire ``cron_id`` with the live scheduler
    of its database in this process."""
    with _LIVE_LOCK:
        scheduler = _LIVE.get(store_key)
    if scheduler is None:
        log.warning("schedule %s is due but no scheduler of its database is live", cron_id)
        return
    scheduler.fire(cron_id)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


class Scheduler:
    """Create, change, pause and delete schedules; fire them in background threads.

    ``roots``: where glob sources may read (default ``<home>/inbox``). ``execute``: called
    with the run id of each fired run (the API hands it to its run executor); without it the
    firing thread executes the run itself. Use as a context manager, or ``start``/``shutdown``.

    On PostgreSQL the timing is the task queue's (module docstring): ``queue`` is the
    ``driftpilot.execution.queue.Queue`` whose jobs fire this scheduler's schedules (a
    worker's); without
    it, ``start`` opens one that only defers ticks (``enabled``) and firings (``run_now``).
    Fired runs are then deferred as jobs unless ``execute`` says otherwise.
    """

    def __init__(
        self,
        plane: ControlPlane,
        *,
        roots: list[Path] | None = None,
        execute: Callable[[str], Any] | None = None,
        conf: SchedulerSettings | None = None,
        queue: Queue | None = None,
    ) -> None:
        self.plane = plane
        self.store = plane.store
        self.conf = conf or plane.settings.scheduler
        self.roots = list(roots) if roots else [plane.settings.home / "inbox"]
        self.external = queue is not None or is_postgres(plane.settings.db_url)
        self._queue = queue
        self._owns_queue = False
        self._started = False
        self._execute = execute or (queue.defer_run if queue is not None else None)
        self._key = hashlib.sha256(plane.settings.db_url.encode()).hexdigest()[:16]
        self._stop = threading.Event()
        self._aps: BackgroundScheduler | None = None
        self._engine: Engine | None = None
        self._datasets: dict[str, dict[str, Batch]] = {}
        self._datasets_lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def running(self) -> bool:
        return self._aps is not None or self._started

    def start(self) -> Scheduler:
        """Open the job store and start the background scheduler (paused when this process
        does not fire: ``enabled`` false). Jobs missing for a stored schedule are re-added.
        On PostgreSQL: open the task queue and, when ``enabled``, defer its ticks."""
        if self.external:
            return self._start_external()
        from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.memory import MemoryJobStore
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler

        if self._aps is not None:
            return self
        url = self.plane.settings.db_url
        options: dict[str, Any] = {}
        if url.startswith("sqlite"):
            options["connect_args"] = {"timeout": 30}  # wait for the audit's writers
        self._engine = create_engine(url, **options)
        aps = BackgroundScheduler(
            jobstores={
                "default": SQLAlchemyJobStore(engine=self._engine),
                "local": MemoryJobStore(),
            },
            executors={"default": ThreadPoolExecutor(self.conf.workers)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": self.conf.misfire_grace_s,
            },
            timezone=UTC,
            daemon=True,
        )
        aps.add_listener(
            self._on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR
        )
        with _LIVE_LOCK:
            _LIVE[self._key] = self
        self._stop.clear()
        aps.start(paused=not self.conf.enabled)
        # Wakes the loop every poll_s, so jobs another process added or changed are seen.
        aps.add_job(
            _noop,
            "interval",
            seconds=self.conf.poll_s,
            id=SYNC_JOB,
            jobstore="local",
            replace_existing=True,
        )
        self._aps = aps
        self._reconcile()
        return self

    def _start_external(self) -> Scheduler:
        from driftpilot.execution.queue import Queue

        if self._started:
            return self
        if self._queue is None:
            self._queue = Queue(self.plane).open()
            self._owns_queue = True
            if self.conf.enabled:
                self._queue.start_deferrer()
        if self._execute is None:
            self._execute = self._queue.defer_run
        self._stop.clear()
        self._started = True
        return self

    def shutdown(self, wait: bool = True) -> None:
        """Stop firing; with ``wait``, let firings in progress finish (an enqueued run still
        waiting for its model stays pending for the next start)."""
        if self.external:
            self._stop.set()
            self._started = False
            if self._owns_queue and self._queue is not None:
                self._queue.close()
                self._queue, self._owns_queue = None, False
            return
        aps, self._aps = self._aps, None
        if aps is None:
            return
        self._stop.set()
        aps.shutdown(wait=wait)
        with _LIVE_LOCK:
            if _LIVE.get(self._key) is self:
                del _LIVE[self._key]

    def _require(self) -> BackgroundScheduler:
        if self._aps is None:
            raise ConfigError("the scheduler is not started")
        return self._aps

    def _check_started(self) -> None:
        if not self.running:
            raise ConfigError("the scheduler is not started")

    def _reconcile(self) -> None:
        """Every stored schedule has its job (with this process's store key), no job is left
        without its schedule."""
        aps = self._require()
        rows = {r.cron_id: r for r in self.store.list_rows(Schedule)}
        for job in aps.get_jobs(jobstore="default"):
            if job.id not in rows:
                aps.remove_job(job.id, jobstore="default")
            elif tuple(job.args) != (self._key, job.id):
                aps.modify_job(job.id, jobstore="default", args=[self._key, job.id])
        for cron_id, row in rows.items():
            if aps.get_job(cron_id, jobstore="default") is None:
                self._add_job(row)

    def _add_job(self, row: Schedule) -> None:
        if self.external:  # the queue's tick reads the schedule rows
            self._check_started()
            return
        aps = self._require()
        extra: dict[str, Any] = {} if row.enabled else {"next_run_time": None}
        aps.add_job(
            JOB_FUNC,
            cron_trigger(row.schedule, row.timezone),
            args=[self._key, row.cron_id],
            id=row.cron_id,
            name=f"{row.model} ({row.schedule} {row.timezone})",
            jobstore="default",
            replace_existing=True,
            **extra,
        )

    # -- CRUD -------------------------------------------------------------------------------------

    def create(self, spec: ScheduleSpec, principal: str) -> ScheduleView:
        """Add a schedule; its first firing is the cron's next time (unless disabled).

        Raises:
            NotFound: unknown model or dataset.
            ConfigError: invalid cron, time zone or source.
        """
        actor = normalize_principal(principal)
        self._check_payload(spec.payload)
        cron_id = str(uuid.uuid4())
        stamp = now()
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
        try:
            self._add_job(row)
        except Exception:
            self._delete_rows(cron_id)
            raise
        view = self.get(cron_id)
        self._audit_change(cron_id, "create", actor, view)
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
        current = self._spec(row).model_dump()
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
            stored.updated_at = now()
        self._add_job(self._row(cron_id))
        view = self.get(cron_id)
        self._audit_change(cron_id, "update", actor, view)
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
                    stored.enabled, stored.updated_at = enabled, now()
        if self.external:
            pass  # the tick reads ``enabled`` from the row
        elif (aps := self._require()).get_job(cron_id, jobstore="default") is None:
            self._add_job(self._row(cron_id))
        elif enabled:
            aps.resume_job(cron_id, jobstore="default")
        else:
            aps.pause_job(cron_id, jobstore="default")
        view = self.get(cron_id)
        self._audit_change(cron_id, "resume" if enabled else "pause", actor, view)
        return view

    def delete(self, cron_id: str, principal: str) -> None:
        """Remove a schedule, its job and its batch ledger (its audit stays).

        Raises:
            NotFound: no such schedule.
        """
        from apscheduler.jobstores.base import JobLookupError

        actor = normalize_principal(principal)
        view = self.get(cron_id)
        self._check_started()
        if not self.external:
            with contextlib.suppress(JobLookupError):
                self._require().remove_job(cron_id, jobstore="default")
        self._delete_rows(cron_id)
        self._audit_change(cron_id, "delete", actor, view)

    def run_now(self, cron_id: str, principal: str | None = None) -> ScheduleView:
        """Move the schedule's next firing to now (through the scheduler, so the misfire,
        coalescing and overlap rules apply); the cron's times follow as before. With
        ``principal``, that person requests the schedule's runs from now on (as after an
        update), so they cannot approve the run they fired.

        Raises:
            NotFound: no such schedule.
            ConfigError: the schedule is paused.
        """
        row = self._row(cron_id)
        if not row.enabled:
            raise ConfigError(f"schedule {cron_id} is paused: resume it first")
        if principal is not None:
            actor = normalize_principal(principal)
            with self.store.session() as session:
                stored = session.get(Schedule, cron_id)
                if stored is not None and stored.created_by != actor:
                    stored.created_by, stored.updated_at = actor, now()
            self._audit_change(cron_id, "run_now", actor, self.get(cron_id))
        if self.external:
            self._check_started()
            assert self._queue is not None
            at = datetime.now(UTC)
            if not self._queue.defer_fire(cron_id, at):
                self.skip_overlap(cron_id, at)
            return self.get(cron_id)
        aps = self._require()
        if aps.get_job(cron_id, jobstore="default") is None:
            self._add_job(row)
        aps.modify_job(cron_id, jobstore="default", next_run_time=datetime.now(UTC))
        aps.wakeup()
        return self.get(cron_id)

    def firings(self, cron_id: str, limit: int = 50) -> list[Firing]:
        """The schedule's audited firings, newest first."""
        rows = self.store.list_rows(
            ToolCall,
            ToolCall.run_id == cron_id,
            ToolCall.agent == AGENT,
            ToolCall.tool == FIRE_TOOL,
            order=ToolCall.id.desc(),
            limit=limit,
        )
        return [_firing(r) for r in rows]

    def _row(self, cron_id: str) -> Schedule:
        try:
            return self.store.get(Schedule, cron_id)
        except NotFound:
            raise NotFound(f"no schedule {cron_id!r}") from None

    def _spec(self, row: Schedule) -> ScheduleSpec:
        return ScheduleSpec(
            schedule=row.schedule,
            timezone=row.timezone,
            enabled=row.enabled,
            payload=Payload.model_validate_json(row.payload),
            multitask_strategy=row.multitask_strategy,
            metadata=json.loads(row.meta or "{}"),
        )

    def _view(self, row: Schedule) -> ScheduleView:
        if self.external:
            trigger = cron_trigger(row.schedule, row.timezone)
            nxt = trigger.get_next_fire_time(None, datetime.now(UTC))
        else:
            job = self._aps.get_job(row.cron_id, jobstore="default") if self._aps else None
            nxt = job.next_run_time if job is not None else None
        last = self.firings(row.cron_id, limit=1)
        return ScheduleView(
            cron_id=row.cron_id,
            assistant_id=row.model,
            model=row.model,
            schedule=row.schedule,
            timezone=row.timezone,
            enabled=row.enabled,
            next_run_date=_iso(nxt) if row.enabled else None,
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
                "source": _source_kind(view.payload),
                "multitask_strategy": view.multitask_strategy,
                "next_run_date": view.next_run_date,
            },
            ok=True,
            latency_ms=0.0,
        )

    # -- firing -----------------------------------------------------------------------------------

    def fire(self, cron_id: str, scheduled_at: datetime | None = None) -> Firing:
        """One firing: pick the newest batch of the source, submit a run (trigger
        ``schedule``, requested by the schedule's creator) following the multitask strategy,
        hand it to the executor (or execute it here), and audit what happened. Never raises
        for a bad source, a busy model or a failed run: the outcome says it."""
        started = time.perf_counter()
        try:
            row = self._row(cron_id)
        except NotFound:
            log.warning("schedule %s fired but no longer exists", cron_id)
            return Firing(cron_id=cron_id, outcome="error", at=now(), detail="no such schedule")
        if not row.enabled:
            return self._audit_firing(row, "disabled", started, scheduled_at)
        spec = self._spec(row)
        strategy = spec.multitask_strategy
        if strategy == "enqueue" and (waiting := self._waiting_run(cron_id)) is not None:
            return self._audit_firing(
                row,
                "skipped-busy",
                started,
                scheduled_at,
                run_id=waiting,
                detail="the run this schedule enqueued before is still waiting",
            )
        try:
            picked = self._pick(cron_id, spec.payload)
        except Exception as exc:  # an unusable source is this firing's outcome, not a crash
            log.warning("schedule %s: no batch: %s", cron_id, exc)
            return self._audit_firing(row, "error", started, scheduled_at, detail=_message(exc))
        if picked is None:
            return self._audit_firing(row, "no-new-batch", started, scheduled_at)
        if picked.seen_by is not None:  # claimed, so the same file is not read again
            self._claim(cron_id, picked)
            return self._audit_firing(
                row,
                "no-new-batch",
                started,
                scheduled_at,
                batch_id=picked.batch_id,
                detail=f"the model has seen this content (run {picked.seen_by[:12]})",
            )
        ledger = self._claim(cron_id, picked)
        if ledger is None:
            return self._audit_firing(
                row,
                "no-new-batch",
                started,
                scheduled_at,
                detail="another firing claimed the batch",
            )
        try:
            view = self.plane.submit_run(
                row.model,
                picked.frame,
                picked.batch_id,
                trigger="schedule",
                requested_by=row.created_by,
                multitask_strategy=strategy,
                metadata={"schedule_id": cron_id, **picked.origin},
            )
        except ModelBusy as exc:
            self._unclaim(ledger)
            return self._audit_firing(
                row, "skipped-busy", started, scheduled_at, detail=_message(exc)
            )
        except Exception as exc:
            self._unclaim(ledger)
            log.warning("schedule %s: submit failed: %s", cron_id, exc)
            return self._audit_firing(row, "error", started, scheduled_at, detail=_message(exc))
        with self.store.session() as session:
            entry = session.get(ScheduleBatch, ledger)
            if entry is not None:
                entry.run_id = view.run_id
        firing = self._audit_firing(
            row,
            "fired",
            started,
            scheduled_at,
            run_id=view.run_id,
            batch_id=view.batch_id,
            detail=picked.detail,
        )
        self._run(view.run_id)
        return firing

    def due(self, since: datetime, until: datetime) -> list[tuple[str, datetime]]:
        """The enabled schedules whose cron has a time in (``since``, ``until``], each with
        its newest such time (the times of one tick coalesce into one firing)."""
        found = []
        for row in self.store.list_rows(Schedule, Schedule.enabled.is_(True)):
            trigger = cron_trigger(row.schedule, row.timezone)
            at = trigger.get_next_fire_time(None, since + timedelta(microseconds=1))
            if at is None or at > until:
                continue
            while (later := trigger.get_next_fire_time(at, at)) is not None and later <= until:
                at = later
            found.append((row.cron_id, at.astimezone(UTC)))
        return found

    def fire_due(self, cron_id: str, scheduled_at: datetime) -> Firing:
        """A firing the task queue started: ``fire``, unless it starts more than the misfire
        grace after its time (audited ``missed``)."""
        late = (datetime.now(UTC) - scheduled_at).total_seconds()
        if late > self.conf.misfire_grace_s:
            return self._audit_skip(
                cron_id,
                "missed",
                scheduled_at,
                f"{late:.0f} s late: more than {self.conf.misfire_grace_s} s (misfire grace)",
            )
        return self.fire(cron_id, scheduled_at)

    def skip_overlap(self, cron_id: str, scheduled_at: datetime) -> Firing:
        """Audit a firing not started because the previous one of its schedule still waits."""
        return self._audit_skip(
            cron_id,
            "skipped-overlap",
            scheduled_at,
            "the previous firing of this schedule is still waiting for a worker",
        )

    def _audit_skip(
        self, cron_id: str, outcome: FiringOutcome, scheduled_at: datetime, detail: str
    ) -> Firing:
        started = time.perf_counter()
        try:
            row = self._row(cron_id)
        except NotFound:
            return Firing(cron_id=cron_id, outcome="error", at=now(), detail="no such schedule")
        return self._audit_firing(row, outcome, started, scheduled_at, detail=detail)

    def _run(self, run_id: str) -> None:
        if self._execute is not None:
            self._execute(run_id)
            return
        while not self._stop.is_set():
            try:
                self.plane.execute_run(run_id, timeout_s=EXECUTE_SLICE_S)
                return
            except ModelBusy:
                continue  # enqueued: the model is still busy
            except Exception:
                log.exception("scheduled run %s failed", run_id)
                return
        log.info("scheduler stopping: run %s stays pending for the next start", run_id)

    def _waiting_run(self, cron_id: str) -> str | None:
        with self.store.session() as session:
            ids = [
                r
                for r in session.scalars(
                    select(ScheduleBatch.run_id).where(
                        ScheduleBatch.cron_id == cron_id, ScheduleBatch.run_id.is_not(None)
                    )
                )
                if r
            ]
            if not ids:
                return None
            pending = session.scalars(
                select(Run.id).where(Run.id.in_(ids), Run.status == "pending").limit(1)
            ).first()
        return pending

    def _claim(self, cron_id: str, picked: Picked) -> int | None:
        try:
            with self.store.session() as session:
                entry = ScheduleBatch(
                    cron_id=cron_id,
                    batch_key=picked.key[:500],
                    batch_id=picked.batch_id[:200],
                    run_id=None,
                    created_at=now(),
                )
                session.add(entry)
                session.flush()
                return int(entry.id)
        except SQLIntegrityError:
            return None

    def _unclaim(self, ledger: int) -> None:
        with self.store.session() as session:
            session.execute(delete(ScheduleBatch).where(ScheduleBatch.id == ledger))

    def _consumed(self, cron_id: str) -> set[str]:
        with self.store.session() as session:
            return set(
                session.scalars(
                    select(ScheduleBatch.batch_key).where(ScheduleBatch.cron_id == cron_id)
                )
            )

    def _audit_firing(
        self,
        row: Schedule,
        outcome: FiringOutcome,
        started: float,
        scheduled_at: datetime | None,
        *,
        run_id: str | None = None,
        batch_id: str | None = None,
        detail: str = "",
    ) -> Firing:
        firing = Firing(
            cron_id=row.cron_id,
            outcome=outcome,
            at=now(),
            scheduled_at=_iso(scheduled_at),
            run_id=run_id,
            batch_id=batch_id,
            detail=detail,
        )
        try:
            self.store.record_tool_call(
                row.cron_id,
                AGENT,
                FIRE_TOOL,
                {
                    "cron_id": row.cron_id,
                    "model": row.model,
                    "source": _source_kind(json.loads(row.payload)),
                    "multitask_strategy": row.multitask_strategy,
                    "scheduled_at": firing.scheduled_at,
                },
                firing.model_dump(include={"outcome", "run_id", "batch_id", "detail"}),
                ok=outcome in _OK,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        except DriftPilotError:
            log.exception("could not audit a firing of schedule %s (%s)", row.cron_id, outcome)
        log.info("schedule %s (%s): %s %s", row.cron_id, row.model, outcome, detail)
        return firing

    def _on_event(self, event: Any) -> None:
        """APScheduler's own verdicts: a missed firing, an overlapping one, a crashed job."""
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED

        if event.job_id == SYNC_JOB or event.jobstore != "default":
            return
        try:
            row = self._row(event.job_id)
        except NotFound:
            return
        started = time.perf_counter()
        when = getattr(event, "scheduled_run_time", None)
        if event.code == EVENT_JOB_MISSED:
            grace = self.conf.misfire_grace_s
            self._audit_firing(
                row, "missed", started, when, detail=f"more than {grace} s late (misfire grace)"
            )
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            self._audit_firing(
                row,
                "skipped-overlap",
                started,
                when,
                detail="the previous firing of this schedule is still running",
            )
        else:
            exc = getattr(event, "exception", None)
            self._audit_firing(row, "error", started, when, detail=_message(exc))

    # -- sources ----------------------------------------------------------------------------------

    def _pick(self, cron_id: str, payload: Payload) -> Picked | None:
        consumed = self._consumed(cron_id)
        source = payload.source
        if isinstance(source, DatasetSource):  # its seen batches are passed over in order
            return self._pick_dataset(payload.model, source, consumed)
        if isinstance(source, GlobSource):
            picked = self._pick_file(source.glob, consumed)
        else:
            picked = self._pick_gdelt(source.gdelt, consumed)
        if picked is not None:
            hashes, _ = self._seen_by_runs(payload.model, None)
            picked.seen_by = hashes.get(picked.origin.get("batch_hash", ""))
        return picked

    def _pick_file(self, pattern: str, consumed: set[str]) -> Picked | None:
        import polars as pl

        from tools.data import content_hash, load_table

        check_glob(pattern)
        found: list[tuple[int, str, Path, int]] = []
        for root in self.roots:
            base = Path(root).expanduser().resolve()
            if not base.is_dir():
                continue
            for match in base.glob(pattern):
                real = match.resolve()
                if (
                    not real.is_relative_to(base)
                    or real.suffix.lower() not in SUFFIXES
                    or not real.is_file()
                ):
                    continue
                stat = real.stat()
                found.append(
                    (stat.st_mtime_ns, real.relative_to(base).as_posix(), real, stat.st_size)
                )
        if not found:
            return None
        mtime, relative, path, size = max(found)
        key = f"glob:{relative}:{mtime}:{size}"
        if key in consumed:
            return None
        if size > self.conf.max_file_bytes:
            raise DataError(
                f"the newest matching file has {size} bytes; the limit is "
                f"{self.conf.max_file_bytes}"
            )
        passed = sum(
            1 for m, r, _, s in found if f"glob:{r}:{m}:{s}" not in consumed and r != relative
        )
        frame = load_table(path)
        if not isinstance(frame, pl.DataFrame):
            frame = frame.collect()
        detail = f"newest of {len(found)} matching files"
        if passed:
            detail += f"; {passed} older unconsumed file(s) passed over"
        return Picked(frame, path.stem, key, detail, {"batch_hash": content_hash(frame)})

    def _pick_dataset(self, model: str, source: DatasetSource, consumed: set[str]) -> Picked | None:
        from tools.datasets import SPECS

        batches = self._dataset_batches(source.dataset)
        ids = list(batches)
        if source.start is not None and source.start not in batches:
            raise NotFound(
                f"{source.dataset} has no batch {source.start!r}; batches: {', '.join(ids[:24])}"
            )
        seen = self._seen_batches(model, source.dataset, batches)
        candidates = unseen_batches(ids, seen, source.start)
        for batch_id in candidates:
            key = f"dataset:{source.dataset}:{batch_id}"
            if key in consumed:
                continue
            batch = batches[batch_id]
            frame = batch.frame
            if source.max_rows is not None and frame.height > source.max_rows:
                frame = frame.sample(n=source.max_rows, seed=source.seed).sort(
                    SPECS[source.dataset].time_col
                )
            left = len(candidates) - candidates.index(batch_id) - 1
            origin = {
                "dataset": source.dataset,
                # The whole batch's hash, taken before sampling: a sample of a batch the model
                # has seen hashes differently, the whole batch does not.
                "batch_hash": batch.info.content_hash,
                "sampled_rows": frame.height if frame.height < batch.frame.height else None,
            }
            detail = f"{source.dataset} batch; {left} unseen after it"
            return Picked(frame, batch_id, key, detail, origin)
        return None

    def _seen_batches(self, model: str, dataset: str, batches: dict[str, Batch]) -> set[str]:
        """The ids of the dataset's batches ``model`` has seen (the module's docstring)."""
        hashes, ids = self._seen_by_runs(model, dataset)
        horizon = self._trained_until(model)
        return {
            batch_id
            for batch_id, batch in batches.items()
            if batch_id in ids
            or batch.info.content_hash in hashes
            or (horizon is not None and _at_or_before(batch.info.start, horizon))
        }

    def _seen_by_runs(self, model: str, dataset: str | None) -> tuple[dict[str, str], set[str]]:
        """The content hashes of the batches the model's runs were given (filed, submitted,
        and whole before sampling), each with a run that had it, and the batch ids of its
        runs on ``dataset``. A cancelled run never ran, and a failed one never decided: their
        batches are not seen."""
        from driftpilot.runs.plane import METADATA_STEP

        source = self.store.get(ManagedModel, model).source
        runs = [r for r in self.store.list_rows(Run, Run.model == model) if r.status != "failed"]
        with self.store.session() as session:
            stored = session.execute(
                select(StepEffect.run_id, StepEffect.result).where(
                    StepEffect.step == METADATA_STEP,
                    StepEffect.run_id.in_([r.id for r in runs]),
                )
            ).all()
        metadata = {run_id: json.loads(result) for run_id, result in stored}
        filed = self.store.list_rows(BatchRecord, BatchRecord.model == model)
        hashes = {r.content_hash: r.run_id for r in filed}
        ids: set[str] = set()
        for run in runs:
            meta = metadata.get(run.id, {})
            given = json.loads(run.summary or "{}").get("input", {}).get("batch", {})
            for digest in (meta.get("batch_hash"), given.get("content_hash")):
                if digest:
                    hashes.setdefault(digest, run.id)
            if dataset is not None and dataset in (source, meta.get("dataset")):
                ids.add(run.batch_id)
        return hashes, ids

    def _trained_until(self, model: str) -> datetime | float | None:
        """The newest time in the rows the model's bootstrap champion and current champion
        were trained on (their windows), or None when neither window is on disk."""
        import polars as pl

        from driftpilot.runs.plane import bootstrap_id

        row = self.store.get(ManagedModel, model)
        bootstrap = self.store.effect(bootstrap_id(model), "promote") or {}
        paths = {p for p in (bootstrap.get("window_path"), row.reference_path) if p}
        newest: list[Any] = []
        for path in paths:
            if Path(path).is_file():
                times = pl.read_parquet(path, columns=[row.time_col])[row.time_col]
                if times.len() and times.null_count() < times.len():
                    newest.append(times.max())
        comparable = [t for t in newest if isinstance(t, (datetime, int, float))]
        return max(comparable, key=_sort_key) if comparable else None

    def _dataset_batches(self, name: str) -> dict[str, Batch]:
        from tools.data import split_batches
        from tools.datasets import SPECS, load_dataset

        if name not in SPECS:
            raise NotFound(f"unknown dataset {name!r}")
        with self._datasets_lock:
            if name not in self._datasets:
                spec = SPECS[name]
                frame = load_dataset(name, self.plane.settings)  # type: ignore[arg-type]
                self._datasets[name] = {
                    b.info.batch_id: b
                    for b in split_batches(frame, spec.time_col, every=spec.batch_every)
                }
            return self._datasets[name]

    def _pick_gdelt(self, options: GdeltOptions, consumed: set[str]) -> Picked | None:
        from tools.data import content_hash
        from tools.gdelt import download, fetch_file_list, parse_export

        timeout = self.conf.gdelt_timeout_s
        exports = [
            e
            for e in fetch_file_list(self.conf.gdelt_base_url, timeout=timeout)
            if e.kind == "export"
        ]
        if not exports:
            return None
        newest = max(exports, key=lambda e: e.timestamp)
        stamp = newest.timestamp.strftime("%Y%m%d%H%M%S")
        key = f"gdelt:{stamp}"
        if key in consumed:
            return None
        assert self.plane.settings.cache_dir is not None
        frame = parse_export(download(newest, self.plane.settings.cache_dir, timeout=timeout))
        origin = {"batch_hash": content_hash(frame)}  # the whole export, before max_rows
        if options.max_rows is not None:
            frame = frame.head(options.max_rows)
        detail = f"GDELT 2.0 export of {stamp} UTC"
        return Picked(frame, f"gdelt-{stamp}", key, detail, origin)


def unseen_batches(ids: list[str], seen: set[str], start: str | None = None) -> list[str]:
    """The batches a dataset schedule may run, in time order: from ``start`` on when given,
    else after the newest batch the model has seen; never one it has seen."""
    if start is not None:
        first = ids.index(start)
    else:
        first = max((i + 1 for i, batch_id in enumerate(ids) if batch_id in seen), default=0)
    return [b for b in ids[first:] if b not in seen]


def _at_or_before(moment: object, horizon: datetime | float) -> bool:
    """Whether a batch that begins at ``moment`` begins at or before ``horizon`` (a time
    without a zone is wall-clock time in the other's zone, as ``tools.data.conform`` reads
    it); times of different kinds (a datetime and seconds) never compare."""
    if isinstance(moment, datetime) and isinstance(horizon, datetime):
        if (moment.tzinfo is None) != (horizon.tzinfo is None):
            zone_of = moment.tzinfo or horizon.tzinfo
            moment, horizon = moment.replace(tzinfo=zone_of), horizon.replace(tzinfo=zone_of)
        return moment <= horizon
    numbers = (int, float)
    if isinstance(moment, numbers) and isinstance(horizon, numbers):
        return moment <= horizon
    return False


def _sort_key(moment: datetime | float) -> float:
    if isinstance(moment, datetime):
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return float(moment)


def _noop() -> None:
    """The sync job: firing it wakes the scheduler loop, which re-reads the job table."""


def _source_kind(payload: dict[str, Any]) -> str:
    source = payload.get("source") or {}
    return next((k for k in ("glob", "dataset", "gdelt") if k in source), "unknown")


def _message(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    return f"{type(exc).__name__}: {exc}"[:500]


def _firing(row: ToolCall) -> Firing:
    args = json.loads(row.args)
    result = json.loads(row.result)
    return Firing(
        cron_id=row.run_id,
        outcome=result.get("outcome", "error"),
        at=row.created_at,
        scheduled_at=args.get("scheduled_at"),
        run_id=result.get("run_id"),
        batch_id=result.get("batch_id"),
        detail=result.get("detail", ""),
    )
