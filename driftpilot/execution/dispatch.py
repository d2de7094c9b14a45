"""Who runs a control run (a ``Dispatcher``), and the one rule for a model that is busy.

A pending run executes, and a run whose approval decision is recorded resumes, only while it
holds its model's lease (one run per model). When the model is busy (``ModelBusy``: another
run holds it, an older run of it is still pending, or it has unrecovered work), the attempt
is tried again later: ``BusyRetry`` says when (a backoff from ``first_s``, doubling up to
``max_s``) and until when (``deadline_s`` after the first attempt; None: as long as it
takes, or until the dispatcher stops). Every dispatcher follows it:

- ``Inline`` (this module): now, in the calling thread, sleeping between attempts (the CLI,
  and a scheduler firing without an executor).
- ``driftpilot.execution.inprocess.RunExecutor``: a thread pool; an attempt that finds the
  model busy gives its thread back and is submitted again after the rule's delay.
- ``driftpilot.execution.queue.Queue``: procrastinate jobs on PostgreSQL; a job whose model
  is busy is retried by procrastinate after the rule's delay (``BusyRetry.procrastinate``).

``submit(what, run_id)`` hands the run over (``what``: ``execute`` or ``resume``);
``execute`` and ``resume`` are its two cases. Each returns a future: the run's view (in
process), the job id (queue), or what the attempt raised.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from driftpilot.core.errors import ModelBusy

if TYPE_CHECKING:
    from procrastinate.retry import BaseRetryStrategy

    from driftpilot.runs.plane import ControlPlane, RunView

log = logging.getLogger(__name__)
T = TypeVar("T")
What = Literal["execute", "resume"]


@dataclass(frozen=True)
class BusyRetry:
    """When a run whose model is busy is tried again: after ``first_s``, then each wait
    ``factor`` times the last, at most ``max_s``; not after ``deadline_s`` from the first
    attempt (None: no deadline)."""

    first_s: float = 0.5
    max_s: float = 2.0
    factor: float = 2.0
    deadline_s: float | None = None

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (0 is the first)."""
        return min(self.max_s, self.first_s * self.factor ** min(attempt, 64))

    def gives_up(self, waited_s: float, attempt: int) -> bool:
        """Whether attempt ``attempt`` failed too late to wait again (``waited_s`` since the
        first attempt)."""
        limit = math.inf if self.deadline_s is None else self.deadline_s
        return waited_s + self.delay(attempt) > limit

    def call(self, attempt: Callable[[], T], *, stop: threading.Event | None = None) -> T:
        """``attempt()`` until it does not raise ``ModelBusy``, sleeping by the rule.

        Raises:
            ModelBusy: still busy at the deadline, or ``stop`` was set meanwhile.
        """
        started = time.monotonic()
        tries = 0
        while True:
            try:
                return attempt()
            except ModelBusy:
                if self.gives_up(time.monotonic() - started, tries):
                    raise
                wait = self.delay(tries)
                tries += 1
                if stop is None:
                    time.sleep(wait)
                elif stop.wait(wait):
                    raise

    def procrastinate(self) -> BaseRetryStrategy:
        """The rule as a procrastinate retry strategy: only ``ModelBusy`` is retried."""
        from procrastinate.retry import BaseRetryStrategy, RetryDecision

        rule = self

        class _Busy(BaseRetryStrategy):
            def get_retry_decision(self, *, exception: BaseException, job: Any) -> Any:
                if not isinstance(exception, ModelBusy):
                    return None
                attempts = int(job.attempts)
                waited = sum(rule.delay(a) for a in range(min(attempts, 10_000)))
                if rule.gives_up(waited, attempts):
                    return None
                wait = timedelta(seconds=rule.delay(attempts))
                return RetryDecision(retry_at=datetime.now(UTC) + wait)

        return _Busy()


class Dispatcher(Protocol):
    """Hands runs over to whoever executes them (module docstring)."""

    def submit(self, what: What, run_id: str) -> Future[Any]: ...

    def execute(self, run_id: str) -> Future[Any]: ...

    def resume(self, run_id: str) -> Future[Any]: ...


def attempt_of(plane: ControlPlane, what: What) -> Callable[[str], RunView]:
    """One attempt at a run, without waiting for its model: ``ModelBusy`` when it is busy."""
    if what == "execute":
        return lambda run_id: plane.execute_run(run_id, timeout_s=0)
    return lambda run_id: plane.resume_run(run_id, wait=False)


class Inline:
    """Runs now, in the calling thread, waiting for a busy model by ``retry`` (until
    ``stop`` is set, when given). The future is done when the call returns."""

    def __init__(
        self,
        plane: ControlPlane,
        retry: BusyRetry | None = None,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        self.plane = plane
        self.retry = retry or BusyRetry()
        self.stop = stop

    def submit(self, what: What, run_id: str) -> Future[RunView]:
        future: Future[RunView] = Future()
        attempt = attempt_of(self.plane, what)
        try:
            future.set_result(self.retry.call(lambda: attempt(run_id), stop=self.stop))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def execute(self, run_id: str) -> Future[RunView]:
        return self.submit("execute", run_id)

    def resume(self, run_id: str) -> Future[RunView]:
        return self.submit("resume", run_id)
