"""The task queue's timing, without a queue: which schedules a tick fires (``Scheduler.due``)
and what a late firing audits (``fire_due``), over a real SQLite audit store. The queue itself
runs against a real PostgreSQL in tests/integration/test_workers.py."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from driftpilot.core.errors import ConfigError, ModelBusy
from driftpilot.core.settings import Settings, is_postgres
from driftpilot.execution.queue import conninfo, quiet_busy_retries
from driftpilot.runs.plane import ControlPlane
from driftpilot.scheduling.scheduler import FIRE_TOOL, Scheduler, SchedulerSettings
from driftpilot.store.models import Schedule, ToolCall

T = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday, noon UTC


def schedule(cp: ControlPlane, cron_id: str, cron: str, tz: str = "UTC", on: bool = True) -> None:
    stamp = T.isoformat()
    cp.store.add(
        Schedule(
            cron_id=cron_id,
            model="flights",
            schedule=cron,
            timezone=tz,
            enabled=on,
            payload=json.dumps({"model": "flights", "source": {"glob": "x/*.csv"}}),
            multitask_strategy="reject",
            meta="{}",
            created_by="alice",
            created_at=stamp,
            updated_at=stamp,
        )
    )


@pytest.fixture
def sched(settings: Settings) -> Scheduler:
    cp = ControlPlane(settings)
    schedule(cp, "minutely", "* * * * *")
    schedule(cp, "noon-paris", "0 12 * * *", tz="Europe/Paris")  # 11:00 UTC in March
    schedule(cp, "quarterly", "*/15 * * * *")
    schedule(cp, "paused", "* * * * *", on=False)
    return Scheduler(cp, conf=SchedulerSettings(misfire_grace_s=60))


def test_a_tick_fires_the_schedules_due_since_the_previous_tick(sched: Scheduler) -> None:
    found = dict(sched.due(T - timedelta(minutes=1), T))
    assert found == {"minutely": T, "quarterly": T}  # not paused, not Paris' noon
    assert dict(sched.due(T - timedelta(seconds=2), T - timedelta(seconds=1))) == {}
    # A tick every 2 s: the minute falls in exactly one window.
    windows = [(T + timedelta(seconds=s - 2), T + timedelta(seconds=s)) for s in range(-4, 6, 2)]
    hits = [w for w in windows if "minutely" in dict(sched.due(*w))]
    assert len(hits) == 1 and hits[0][1] == T


def test_the_times_of_one_tick_coalesce_into_its_newest(sched: Scheduler) -> None:
    found = dict(sched.due(T - timedelta(hours=2), T))  # after downtime: one firing each
    assert found["minutely"] == T and found["quarterly"] == T
    assert found["noon-paris"] == T - timedelta(hours=1)  # crons keep their time zone


def test_a_firing_started_past_the_misfire_grace_is_audited_missed(sched: Scheduler) -> None:
    late = datetime.now(UTC) - timedelta(seconds=120)
    firing = sched.fire_due("minutely", late)
    assert firing.outcome == "missed" and "misfire grace" in firing.detail
    [row] = sched.store.list_rows(ToolCall, ToolCall.tool == FIRE_TOOL)
    assert json.loads(row.result)["outcome"] == "missed" and not row.ok
    assert sched.skip_overlap("minutely", late).outcome == "skipped-overlap"


def test_the_queue_takes_only_postgresql() -> None:
    assert is_postgres("postgresql+psycopg://u@h:5/db") and not is_postgres("sqlite:///x.db")
    assert conninfo("postgresql+psycopg://u:pw@h:5/db") == "postgresql://u:pw@h:5/db"
    with pytest.raises(ConfigError, match="PostgreSQL"):
        conninfo("sqlite:///x.db")


def test_on_sqlite_the_scheduler_keeps_apscheduler(sched: Scheduler) -> None:
    assert not sched.external


def test_a_worker_on_the_embedded_sqlite_home_is_refused_in_one_line(settings: Settings) -> None:
    from typer.testing import CliRunner

    from driftpilot.cli import app

    done = CliRunner().invoke(app, ["worker", "--queues", "runs"])
    assert done.exit_code == 1
    assert "needs a PostgreSQL database" in done.output and "Traceback" not in done.output
    bad = CliRunner().invoke(app, ["worker", "--queues", "everything"])
    assert bad.exit_code == 2 and "queues are runs, schedules" in bad.output


def test_a_busy_retry_logs_one_line_other_errors_keep_their_traceback() -> None:
    logger = logging.getLogger("test.procrastinate.worker")
    quiet_busy_retries(logger)
    quiet_busy_retries(logger)  # once only
    assert len(logger.filters) == 1
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for exc in (ModelBusy("flights is running run 1234"), RuntimeError("boom")):
        try:
            raise exc
        except Exception as raised:
            logger.info("Job execute_run ended with status: Error, to retry", exc_info=raised)
    busy, other = records
    assert busy.exc_info is None and "model busy: flights is running run 1234" in busy.msg
    assert other.exc_info is not None and other.exc_info[0] is RuntimeError
