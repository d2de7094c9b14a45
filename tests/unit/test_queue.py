"""The schedules' timing, without a queue: which schedules a tick fires (``Scheduler.due``, the
one rule of the in-process tick and the queue's) and what a late firing audits (``fire_due``),
over a real SQLite audit store and a clock the tests move. The queue itself runs against a
real PostgreSQL in tests/integration/test_workers.py."""

from __future__ import annotations

import json
import logging
import time
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
    stamp = (T - timedelta(hours=2)).isoformat()  # made (or last changed) two hours ago
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


class Clock:
    """A clock the test moves."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> Clock:
    return Clock(T)


@pytest.fixture
def sched(settings: Settings, clock: Clock) -> Scheduler:
    cp = ControlPlane(settings)
    schedule(cp, "minutely", "* * * * *")
    schedule(cp, "noon-paris", "0 12 * * *", tz="Europe/Paris")  # 11:00 UTC in March
    schedule(cp, "quarterly", "*/15 * * * *")
    schedule(cp, "paused", "* * * * *", on=False)
    return Scheduler(cp, conf=SchedulerSettings(misfire_grace_s=60), clock=clock)


def fire_outcomes(sched: Scheduler) -> list[tuple[str, str | None, str]]:
    rows = sched.store.list_rows(ToolCall, ToolCall.tool == FIRE_TOOL, order=ToolCall.id)
    return [
        (r.run_id, json.loads(r.args)["scheduled_at"], json.loads(r.result)["outcome"])
        for r in rows
    ]


def test_a_schedule_is_due_at_its_newest_cron_time_since_its_last_firing(
    sched: Scheduler,
) -> None:
    # Two hours since they were made: the times in between coalesce into the newest.
    found = dict(sched.due(T))
    assert found == {"minutely": T, "quarterly": T, "noon-paris": T - timedelta(hours=1)}
    assert sched.due() == sched.due(T)  # the clock's now by default
    # A firing (here: no file, 'no-new-batch') is the new anchor: not due again until the
    # next minute, whoever asks (a lagging tick asking about an older time finds nothing).
    assert sched.fire_due("minutely", T).outcome == "no-new-batch"
    assert "minutely" not in dict(sched.due(T + timedelta(seconds=59)))
    assert "minutely" not in dict(sched.due(T - timedelta(minutes=5)))
    assert dict(sched.due(T + timedelta(minutes=1)))["minutely"] == T + timedelta(minutes=1)


def test_a_change_restarts_the_cron_from_now(sched: Scheduler, clock: Clock) -> None:
    # Managing only (no tick thread): a thread firing the due time itself would race the
    # asserts below.
    sched = Scheduler(
        sched.plane, conf=SchedulerSettings(misfire_grace_s=60, enabled=False), clock=clock
    ).start()
    try:
        clock.at = T + timedelta(seconds=30)
        sched.pause("quarterly", "bob")
        clock.at = T + timedelta(minutes=40)
        sched.resume("quarterly", "bob")  # the paused 12:15 and 12:30 are not caught up
        assert "quarterly" not in dict(sched.due())
        clock.at = T + timedelta(minutes=45)
        assert dict(sched.due())["quarterly"] == clock.at
        view = sched.get("quarterly")
        assert view.next_run_date == (T + timedelta(minutes=45)).isoformat()  # within grace
    finally:
        sched.shutdown()


def test_a_firing_started_past_the_misfire_grace_is_audited_missed(
    sched: Scheduler, clock: Clock
) -> None:
    late = T - timedelta(seconds=120)
    firing = sched.fire_due("minutely", late)
    assert firing.outcome == "missed" and "misfire grace" in firing.detail
    [row] = sched.store.list_rows(ToolCall, ToolCall.tool == FIRE_TOOL)
    assert json.loads(row.result)["outcome"] == "missed" and not row.ok
    assert sched.skip_overlap("minutely", late).outcome == "skipped-overlap"


def test_the_tick_audits_a_time_missed_during_downtime_once(sched: Scheduler, clock: Clock) -> None:
    """The process was down from 11:00 to 12:02: each schedule's newest time is one
    firing; the ones more than the grace (60 s) late are audited 'missed', once."""
    clock.at = T + timedelta(minutes=2)
    with sched:  # the tick thread runs too: both tick under one lock, at the same clock
        sched.tick()
        sched.tick()
        deadline = time.monotonic() + 30
        while len(fire_outcomes(sched)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sorted(fire_outcomes(sched)) == [
        ("minutely", (T + timedelta(minutes=2)).isoformat(), "no-new-batch"),
        ("noon-paris", (T - timedelta(hours=1)).isoformat(), "missed"),
        ("quarterly", T.isoformat(), "missed"),
    ]
    assert sched.due() == []


def test_the_queue_takes_only_postgresql() -> None:
    assert is_postgres("postgresql+psycopg://u@h:5/db") and not is_postgres("sqlite:///x.db")
    assert conninfo("postgresql+psycopg://u:pw@h:5/db") == "postgresql://u:pw@h:5/db"
    with pytest.raises(ConfigError, match="PostgreSQL"):
        conninfo("sqlite:///x.db")


def test_on_sqlite_the_scheduler_ticks_in_process(sched: Scheduler) -> None:
    assert not sched.on_queue


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
