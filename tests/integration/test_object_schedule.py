"""A schedule over an ``s3://`` glob fires through the real scheduler (its tick thread,
croniter, a clock the test moves) and runs the newest object of a real S3 server on loopback
(moto's, tests/objects.py, IAM authentication on): real HTTP, a real control run on real
flights, the firing and its run audited. Nothing of ours is faked."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import polars as pl
import pytest

from driftpilot.core.errors import ConfigError
from driftpilot.core.settings import get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.scheduling.scheduler import GlobSource, Payload, Scheduler, ScheduleSpec
from driftpilot.store.models import Run, ScheduleBatch, ToolCall
from tests.conftest import add_flights
from tests.objects import REGION, S3Server, s3
from tests.waiting import Clock, wait_for

pytestmark = pytest.mark.integration
__all__ = ["s3"]  # the fixture (tests/objects.py)
DONE = {"completed", "failed", "waiting_approval"}
MISSING = "no-such-bucket-for-schedules"


@pytest.fixture(scope="module")
def bucket(s3: S3Server) -> str:
    return s3.bucket("sched")


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, jan_sample: pl.DataFrame, s3: S3Server, bucket: str
) -> Iterator[ControlPlane]:
    """A home whose object roots are the bucket's batches/ and a bucket that does not exist,
    with the admin's key in the environment; flights trained on January."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRIFTPILOT_HOME", str(tmp_path_factory.mktemp("objects") / "home"))
        mp.setenv("DRIFTPILOT_LEASE_TTL_S", "5")
        mp.setenv(
            "DRIFTPILOT_SOURCES_OBJECT_ROOTS", f'["s3://{bucket}/batches/", "s3://{MISSING}/"]'
        )
        mp.setenv("DRIFTPILOT_SOURCES_S3_ENDPOINT_URL", s3.endpoint)
        mp.setenv("DRIFTPILOT_SOURCES_S3_REGION", REGION)
        mp.setenv("DRIFTPILOT_SOURCES_OBJECT_TIMEOUT_S", "10")
        mp.setenv("AWS_ACCESS_KEY_ID", s3.admin.access_key_id)
        mp.setenv("AWS_SECRET_ACCESS_KEY", s3.admin.secret_access_key)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        get_settings.cache_clear()
        cp = ControlPlane(get_settings())
        add_flights(cp, jan_sample, principal="alice")
        yield cp
        cp.close()
    get_settings.cache_clear()


def spec(glob: str, schedule: str = "0 0 1 1 *") -> ScheduleSpec:
    return ScheduleSpec(
        schedule=schedule, payload=Payload(model="flights", source=GlobSource(glob=glob))
    )


def parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def run_done(cp: ControlPlane, run_id: str) -> Run | None:
    row = cp.store.get(Run, run_id)
    return row if row.status in DONE else None


def test_a_schedule_over_an_s3_glob_fires_on_its_minute(
    plane: ControlPlane, s3: S3Server, bucket: str, months: dict[str, pl.DataFrame]
) -> None:
    feb = months["2013-02"].sample(n=3000, seed=5).sort("time_hour")
    s3.put(bucket, "batches/flights/2013-01.parquet", parquet(months["2013-01"].head(500)))
    time.sleep(1.1)  # S3 keeps modification times in seconds: February is the newer one
    s3.put(bucket, "batches/flights/2013-02.parquet", parquet(feb))
    clock = Clock()
    with Scheduler(plane, clock=clock) as sched:
        view = sched.create(spec(f"s3://{bucket}/batches/flights/*.parquet", "* * * * *"), "bob")
        assert view.next_run_date is not None
        due = datetime.fromisoformat(view.next_run_date)
        clock.move_to(due + timedelta(seconds=1))  # the minute comes: the tick thread fires
        sched.wake()
        firing = wait_for(lambda: sched.firings(view.cron_id), 60, "the minute's firing")[0]
        assert firing.outcome == "fired", firing
        assert firing.batch_id == "2013-02" and firing.run_id is not None
        assert "1 older unconsumed object(s) passed over" in firing.detail, firing.detail
        run = wait_for(lambda: run_done(plane, firing.run_id or ""), 120, "the fired run")
        assert run.trigger == "schedule" and run.requested_by == "bob"
        assert run.status in ("completed", "waiting_approval"), run.summary
        assert run.batch_id == "2013-02"

        [ledger] = plane.store.list_rows(ScheduleBatch, ScheduleBatch.cron_id == view.cron_id)
        assert ledger.batch_key.startswith(f"glob:s3://{bucket}/batches/flights/2013-02.parquet:")
        assert ledger.run_id == firing.run_id
        calls = plane.store.list_rows(
            ToolCall, ToolCall.run_id == view.cron_id, ToolCall.tool == "schedule.fire"
        )
        assert [(c.agent, c.ok) for c in calls] == [("scheduler", True)]

        # The same object again is no new batch: no run. (The firing thread may still be
        # finishing its run: that firing is skipped as an overlap, so ask again.)
        outcomes = []
        for _ in range(10):
            again = sched.fire(view.cron_id)
            outcomes.append(again.outcome)
            if again.outcome != "skipped-overlap":
                break
            time.sleep(1)
        assert outcomes[-1] == "no-new-batch" and again.run_id is None, outcomes
        sched.delete(view.cron_id, "bob")
    assert plane.verify().ok


def refusal(sched: Scheduler, glob: str) -> str:
    """Why a schedule over ``glob`` gets no batch: refused when written (a ConfigError), or,
    where writes do not check object roots, its firing's error (no run)."""
    try:
        view = sched.create(spec(glob), "bob")
    except ConfigError as exc:
        return str(exc)
    try:
        failed = sched.fire(view.cron_id)
        assert failed.outcome == "error" and failed.run_id is None, failed
        return failed.detail
    finally:
        sched.delete(view.cron_id, "bob")


def test_object_globs_outside_the_roots_or_on_a_missing_bucket_fail_clearly(
    plane: ControlPlane, bucket: str
) -> None:
    with Scheduler(plane) as sched:
        outside = refusal(sched, f"s3://{bucket}/private/*.parquet")
        assert "is not under an allowed object root" in outside, outside
        view = sched.create(spec(f"s3://{MISSING}/flights/*.parquet"), "bob")
        failed = sched.fire(view.cron_id)
        assert failed.outcome == "error" and failed.run_id is None
        assert "the bucket does not exist on the object store" in failed.detail, failed
        sched.delete(view.cron_id, "bob")


def test_run_on_an_object_from_the_command_line(
    plane: ControlPlane, s3: S3Server, bucket: str, months: dict[str, pl.DataFrame]
) -> None:
    from typer.testing import CliRunner

    from driftpilot.cli import app as cli_app

    s3.put(bucket, "batches/once/2013-03.parquet", parquet(months["2013-03"].head(2000)))
    cli = CliRunner()
    url = f"s3://{bucket}/batches/once/2013-03.parquet"
    done = cli.invoke(cli_app, ["run", "flights", "--batch", url], terminal_width=200)
    assert done.exit_code == 0, done.output
    assert "batch 2013-03" in done.output
    run_id = done.output.split("run ", 1)[1].split(" ", 1)[0]
    assert plane.store.get(Run, run_id).batch_id == "2013-03"

    outside = cli.invoke(cli_app, ["run", "flights", "--batch", f"s3://{bucket}/private/x.csv"])
    assert outside.exit_code != 0 and "is not under an allowed object root" in outside.output
    missing = cli.invoke(cli_app, ["run", "flights", "--batch", f"s3://{bucket}/batches/no.csv"])
    assert missing.exit_code != 0 and "no such object" in missing.output, missing.output
