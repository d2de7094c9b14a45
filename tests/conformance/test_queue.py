"""The procrastinate queue (``driftpilot.execution.queue``) on the backends that have one:
a run deferred once is one job (a second defer while it waits is a no-op), a worker fetches
it, and a second job of the same model is not fetched while the first runs (its lock)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from driftpilot.core.settings import Settings
from driftpilot.store.audit import now
from driftpilot.store.models import Run
from tests.conformance.conftest import Backend


@pytest.fixture
def queue(backend: Backend, tmp_path: Path) -> Iterator[Any]:
    if backend.name == "sqlite":
        pytest.skip(
            "SQLite has no queue: on SQLite runs execute in process "
            "(driftpilot.execution.inprocess); procrastinate needs PostgreSQL"
        )
    from driftpilot.execution.queue import Queue
    from driftpilot.runs.plane import ControlPlane

    plane = ControlPlane(Settings(home=tmp_path / "home", db_url=backend.url).ensure_dirs())
    opened = Queue(plane).open()
    yield opened
    opened.close()
    plane.close()


def pending_run(queue: Any, run_id: str, model: str) -> str:
    stamp = now()
    queue.plane.store.add(
        Run(
            id=run_id,
            model=model,
            batch_id="b",
            trigger="api",
            requested_by="ann",
            status="pending",
            outcome=None,
            summary="{}",
            created_at=stamp,
            updated_at=stamp,
        )
    )
    return run_id


def fetch_twice(queue: Any) -> list[Any]:
    """What a worker on the ``runs`` queue fetches, twice in a row (None: nothing it may take)."""

    async def fetch() -> list[Any]:
        async with queue.app.open_async():
            jobs = queue.app.job_manager
            worker = await jobs.register_worker()
            try:
                return [await jobs.fetch_job(queues=["runs"], worker_id=worker) for _ in range(2)]
            finally:
                await jobs.unregister_worker(worker)

    return asyncio.run(fetch())


def test_a_deferred_run_is_one_job_until_it_is_fetched(queue: Any) -> None:
    from driftpilot.execution.queue import EXECUTE_TASK

    run = pending_run(queue, "r1", "m")
    job_id = queue.defer_run(run)
    assert isinstance(job_id, int)
    assert queue.defer_run(run) is None  # its job still waits: no second one
    waiting = queue.app.job_manager.list_jobs(task=EXECUTE_TASK, status="todo")
    assert [(j.id, j.lock, j.task_kwargs) for j in waiting] == [
        (job_id, "model:m", {"run_id": run})
    ]
    queue.close()
    fetched, nothing = fetch_twice(queue)
    assert fetched is not None and (fetched.id, fetched.task_name) == (job_id, EXECUTE_TASK)
    assert fetched.task_kwargs == {"run_id": run}
    assert nothing is None


def test_a_job_of_a_busy_model_waits_for_the_one_running(queue: Any) -> None:
    first = queue.defer_run(pending_run(queue, "r1", "m"))
    queue.defer_run(pending_run(queue, "r2", "m"))  # same model: same lock
    other = queue.defer_run(pending_run(queue, "r3", "n"))
    queue.close()
    fetched = fetch_twice(queue)
    assert [j.id if j is not None else None for j in fetched] == [first, other]
