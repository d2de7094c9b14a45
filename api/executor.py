"""The in-process run executor: a small thread pool that executes and resumes runs after the
request that created or approved them has answered (a run never executes inside a request).

Each task calls one façade method (``execute_run`` or ``resume_run``); the façade marks a run
that raises ``failed``, and this pool logs what it raised. ``driftpilot recover`` picks up
what a dead process left.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from driftpilot.service import ControlPlane, RunView

log = logging.getLogger(__name__)


class RunExecutor:
    """Execute and resume runs in ``workers`` background threads."""

    def __init__(self, plane: ControlPlane, workers: int = 2) -> None:
        self.plane = plane
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dp-run")
        self._lock = threading.Lock()
        self._futures: dict[str, Future[RunView | None]] = {}

    def execute(self, run_id: str) -> Future[RunView | None]:
        """Execute a pending run (it waits for its model's lease first)."""
        return self._submit(run_id, "execute", self.plane.execute_run)

    def resume(self, run_id: str) -> Future[RunView | None]:
        """Resume a run whose approval decision has been recorded."""
        return self._submit(run_id, "resume", self.plane.resume_run)

    def _submit(
        self, run_id: str, what: str, call: Callable[[str], RunView]
    ) -> Future[RunView | None]:
        def task() -> RunView | None:
            try:
                return call(run_id)
            except Exception:
                log.exception("%s of run %s failed", what, run_id)
                return None
            finally:
                with self._lock:
                    self._futures.pop(run_id, None)

        with self._lock:
            future = self._pool.submit(task)
            self._futures[run_id] = future
        return future

    def busy(self) -> int:
        """How many runs are queued or executing here."""
        with self._lock:
            return len(self._futures)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
