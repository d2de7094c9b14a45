"""The one composition root: the services a DriftPilot process runs, wired the same way for
``driftpilot serve`` (api/app.py), ``driftpilot worker``, the other CLI commands and the chat
(ui/app.py).

    runtime = build_runtime(settings, plane=None, own_plane=None, executor=True,
                            scheduler=True, alerts=True, recover=True, roots=None,
                            queue=False, firing=True, workers=None, windows=None)
    with runtime.start():          # or runtime.start() ... runtime.close()
        runtime.plane, runtime.executor, runtime.queue, runtime.scheduler, runtime.alerts

``build_runtime`` only constructs; ``Runtime.start`` starts what was built, ``close`` stops it.

- ``plane``: the ``ControlPlane`` (default: one made from ``settings``, owned by the runtime).
  ``own_plane`` (default: whether the runtime made it): ``close`` closes it.
- ``executor``: the in-process ``RunExecutor`` (``driftpilot.execution.inprocess``) with
  ``workers`` threads (default ``settings.api.workers``). On PostgreSQL it defers runs to the
  task queue instead; ``runtime.queue`` is then its queue. ``start`` runs its start-up
  recovery (``ControlPlane.recover``, then the runs left pending) in the background when
  ``recover``.
- ``queue``: a procrastinate ``Queue`` of the runtime's own, for ``driftpilot worker``
  (PostgreSQL homes; ``Queue`` refuses others): the scheduler fires schedules in its jobs, and
  ``queue.run_worker`` takes them. ``start`` does not open it (the worker opens its own pool).
- ``scheduler``: the ``Scheduler``; glob sources read under ``roots`` (default
  ``settings.api.batch_roots``, else ``<home>/inbox``). Fired runs go to the executor when
  there is one, else to the queue. ``firing=False`` makes it manage schedules without firing
  them (the chat: ``driftpilot serve`` fires).
- ``alerts``: the webhook ``AlertDispatcher`` (``settings.alerts``), subscribed to the plane.
- ``windower``: the inference log's ``Windower`` (``driftpilot.inference.windows``): every
  ``settings.inference.tick_s`` it closes the due windows of every windowed model and
  re-drives windows a dead process left without a run; their runs go to the executor (else
  the queue). ``windows`` (default: whether there is an executor, i.e. the API's process).

Order: ``start`` starts the alerts first (so what recovery and firings do is delivered), then
the executor, then the scheduler and the windower (they hand runs to the executor); ``close``
stops them in reverse order, then closes the queue it made and the plane if owned. ``start``
and ``close`` block (the API calls them in a thread). A runtime that failed to build closes
what it made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from driftpilot.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from driftpilot.alerts.webhooks import AlertDispatcher
    from driftpilot.execution.inprocess import RunExecutor
    from driftpilot.execution.queue import Queue
    from driftpilot.inference.windower import Windower
    from driftpilot.runs.plane import ControlPlane
    from driftpilot.scheduling.scheduler import Scheduler


@dataclass
class Runtime:
    """A process's services over one plane (module docstring). ``None``: not wired."""

    settings: Settings
    plane: ControlPlane
    executor: RunExecutor | None = None
    queue: Queue | None = None
    scheduler: Scheduler | None = None
    alerts: AlertDispatcher | None = None
    windower: Windower | None = None
    own_plane: bool = False
    recover: bool = True
    own_queue: bool = False
    started: bool = field(default=False, init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    def start(self) -> Runtime:
        """Start the alerts, the executor (recovering in the background if ``recover``) and
        the scheduler; idempotent and thread-safe (a second caller waits for the first).
        What started is stopped again if a later start fails."""
        with self._lock:
            if self.started:
                return self
            self.started = True
            try:
                if self.alerts is not None:
                    self.alerts.start()
                if self.executor is not None:
                    self.executor.start(recover=self.recover)
                if self.scheduler is not None:
                    self.scheduler.start()
                if self.windower is not None:
                    self.windower.start()
            except BaseException:
                self.close()
                raise
            return self

    def close(self) -> None:
        """Stop the scheduler, the executor (runs in progress finish) and the alerts, then
        close the queue made here and the plane if owned. Safe to call twice."""
        with self._lock:
            self.started = False
            if self.windower is not None:
                self.windower.shutdown()
            if self.scheduler is not None:
                self.scheduler.shutdown()
            if self.executor is not None:
                self.executor.shutdown()
            if self.alerts is not None:
                self.alerts.stop()
            if self.own_queue and self.queue is not None:
                self.queue.close()
            if self.own_plane:
                self.plane.close()

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_runtime(
    settings: Settings | None = None,
    *,
    plane: ControlPlane | None = None,
    own_plane: bool | None = None,
    executor: bool = True,
    scheduler: bool = True,
    alerts: bool = True,
    recover: bool = True,
    roots: list[Path] | None = None,
    queue: bool = False,
    firing: bool = True,
    workers: int | None = None,
    windows: bool | None = None,
    processes: int | None = None,
) -> Runtime:
    """Construct (not start) the services asked for over ``plane`` (module docstring).
    ``processes``: the executor's run children on SQLite (default: the settings'
    ``api.run_processes``).

    Raises:
        ConfigError: ``queue`` on a home whose database is not PostgreSQL, or what the
            services' constructors refuse (the plane is closed first when owned).
    """
    from driftpilot.runs.plane import ControlPlane

    settings = settings or (plane.settings if plane is not None else get_settings())
    owned = plane is None if own_plane is None else own_plane
    cp = plane if plane is not None else ControlPlane(settings)
    runtime = Runtime(settings, cp, own_plane=owned, recover=recover)
    try:
        _wire(runtime, executor, scheduler, alerts, roots, queue, firing, workers, processes)
        if executor if windows is None else windows:
            _wire_windower(runtime)
    except BaseException:
        runtime.close()
        raise
    return runtime


def _wire(
    runtime: Runtime,
    executor: bool,
    scheduler: bool,
    alerts: bool,
    roots: list[Path] | None,
    queue: bool,
    firing: bool,
    workers: int | None,
    processes: int | None,
) -> None:
    settings, cp = runtime.settings, runtime.plane
    if queue:
        from driftpilot.execution.queue import Queue

        runtime.queue, runtime.own_queue = Queue(cp), True
    if executor:
        from driftpilot.execution.inprocess import RunExecutor

        runtime.executor = RunExecutor(cp, workers or settings.api.workers, processes=processes)
        if runtime.queue is None:
            runtime.queue = runtime.executor.queue
    if scheduler:
        from driftpilot.scheduling.scheduler import Scheduler

        conf = settings.scheduler
        if not firing:
            conf = conf.model_copy(update={"enabled": False})
        runtime.scheduler = Scheduler(
            cp,
            roots=roots or settings.api.batch_roots or None,
            execute=runtime.executor.execute if runtime.executor is not None else None,
            conf=conf,
            queue=runtime.queue if runtime.own_queue else None,
        )
        if runtime.own_queue and runtime.queue is not None:
            runtime.queue.scheduler = runtime.scheduler  # its jobs fire this scheduler
    if alerts:
        from driftpilot.alerts.webhooks import AlertDispatcher

        runtime.alerts = AlertDispatcher(cp, settings.alerts)


def _wire_windower(runtime: Runtime) -> None:
    from driftpilot.inference.windower import Windower
    from driftpilot.inference.windows import Windows

    execute: Callable[[str], object] | None = None
    prepare: Callable[[], object] | None = None
    if runtime.executor is not None:
        execute = runtime.executor.execute
        prepare = runtime.executor.warm_children
    elif runtime.queue is not None:
        execute = runtime.queue.defer_run
    runtime.windower = Windower(Windows(runtime.plane, execute=execute), prepare=prepare)
