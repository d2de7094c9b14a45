"""Scheduled runs on real flights, the real scheduler (its tick thread, croniter) over the real
SQLite audit database, real control runs, and the REST API with its lifespan. Cron minutes
come from a clock the tests move, not from waiting for the wall clock.

One home and one trained model are shared by the module (training takes seconds); each test
reads its own inbox folder and its own schedules. A busy model is a real lease held by
another holder."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from api.app import create_app
from driftpilot.core.errors import ConfigError, NotFound
from driftpilot.core.settings import ApiSettings, get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.scheduling.scheduler import (
    DatasetSource,
    Firing,
    GdeltSource,
    GlobSource,
    Payload,
    Scheduler,
    SchedulerSettings,
    ScheduleSpec,
    ScheduleUpdate,
)
from driftpilot.store.models import BatchRecord, Run, ScheduleBatch, ToolCall
from tests.conftest import add_flights
from tests.fixtures.gdelt import write_gdelt_fixtures
from tests.waiting import Clock, wait_for
from tools.data import content_hash

pytestmark = pytest.mark.integration
NEVER_SOON = "0 0 1 1 *"  # once a year: tests fire these with run_now or fire
DONE = {"completed", "failed", "waiting_approval"}
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory, jan_sample: pl.DataFrame) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("schedules") / "home"
        mp.setenv("DRIFTPILOT_HOME", str(home))
        mp.setenv("DRIFTPILOT_LEASE_TTL_S", "5")
        get_settings.cache_clear()
        cp = ControlPlane(get_settings())
        add_flights(cp, jan_sample, principal="alice")
        yield cp
        cp.close()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def feb(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return months["2013-02"].sample(n=3000, seed=5).sort("time_hour")


def drop(cp: ControlPlane, relative: str, frame: pl.DataFrame) -> Path:
    path = cp.settings.home / "inbox" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


def next_firing(sched: Scheduler, cron_id: str, seen: int) -> Firing:
    """The newest firing once there are more than ``seen``."""

    def newer() -> list[Firing] | None:
        firings = sched.firings(cron_id)
        return firings if len(firings) > seen else None

    return wait_for(newer, 30, f"firing {seen + 1} of {cron_id}")[0]


def glob_spec(pattern: str, schedule: str = NEVER_SOON, **kw: Any) -> ScheduleSpec:
    return ScheduleSpec(
        schedule=schedule, payload=Payload(model="flights", source=GlobSource(glob=pattern)), **kw
    )


def run_row(cp: ControlPlane, run_id: str) -> Run:
    return cp.store.get(Run, run_id)


def run_done(cp: ControlPlane, run_id: str) -> Run | None:
    row = run_row(cp, run_id)
    return row if row.status in DONE else None


def test_a_cron_every_minute_fires_and_is_audited(plane: ControlPlane, feb: pl.DataFrame) -> None:
    drop(plane, "minute/2013-02.parquet", feb)
    clock = Clock()
    with Scheduler(plane, clock=clock) as sched:
        view = sched.create(glob_spec("minute/*.parquet", "* * * * *"), " Bob ")
        assert view.created_by == "bob" and view.enabled
        assert view.next_run_date is not None
        due = datetime.fromisoformat(view.next_run_date)
        assert due.second == 0 and 0 < (due - clock()).total_seconds() <= 60
        assert sched.due() == [] and sched.firings(view.cron_id) == []  # not before its time
        clock.move_to(due + timedelta(seconds=1))  # the minute comes: the tick thread fires
        sched.wake()
        firing = wait_for(lambda: sched.firings(view.cron_id), 30, "the minute's firing")[0]
        assert firing.outcome == "fired", firing
        assert firing.scheduled_at == due.isoformat()
        assert firing.run_id is not None and firing.batch_id == "2013-02"
        run = wait_for(lambda: run_done(plane, firing.run_id or ""), 120, "the fired run")
        assert run.trigger == "schedule" and run.requested_by == "bob"
        # February against a January champion may retrain and wait for a person: either way
        # the scheduled run went through the whole loop.
        assert run.status in ("completed", "waiting_approval"), run.summary

        calls = plane.store.list_rows(
            ToolCall, ToolCall.run_id == view.cron_id, ToolCall.tool == "schedule.fire"
        )
        assert [(c.agent, c.ok) for c in calls] == [("scheduler", True)]
        assert '"outcome": "fired"' in calls[0].result and firing.run_id in calls[0].result
        later = sched.get(view.cron_id)
        assert later.next_run_date is not None and later.next_run_date > firing.at
        assert later.last_firing is not None and later.last_firing.run_id == firing.run_id

        # The same file again is no new batch: audited, no run. The firing thread may still be
        # finishing the run it executed (the run is done, the thread not yet): that firing is
        # skipped as an overlap, as documented, so ask again.
        outcomes: list[str] = []
        for _ in range(10):
            seen = len(sched.firings(view.cron_id))
            sched.run_now(view.cron_id)
            again = next_firing(sched, view.cron_id, seen)
            outcomes.append(again.outcome)
            if again.outcome != "skipped-overlap":
                break
            time.sleep(1)
        assert outcomes[-1] == "no-new-batch" and again.run_id is None, outcomes
        assert set(outcomes[:-1]) <= {"skipped-overlap"}, outcomes
        sched.delete(view.cron_id, "bob")
    assert plane.verify().ok


def test_schedules_survive_a_restart(plane: ControlPlane) -> None:
    spec = ScheduleSpec(
        schedule="30 6 * * 1-5",
        timezone="Europe/Paris",
        payload=Payload(model="flights", source=DatasetSource(dataset="flights", start="2013-02")),
        multitask_strategy="enqueue",
        metadata={"owner": "ops"},
    )
    with Scheduler(plane) as first:
        kept = first.create(spec, "carol")
        paused = first.pause(first.create(glob_spec("restart/*.csv"), "carol").cron_id, "carol")
    assert paused.enabled is False and paused.next_run_date is None
    assert kept.next_run_date is not None
    local = datetime.fromisoformat(kept.next_run_date).astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (6, 30) and local.weekday() < 5  # Mon-Fri, crontab 1-5

    # A new process: a new façade and a new scheduler on the same database.
    again = ControlPlane(plane.settings)
    try:  # the schedules table is all there is (APScheduler's, dropped by migration 0008)
        assert not inspect(plane.store.engine).has_table("apscheduler_jobs")
        with Scheduler(again) as second:
            seen = second.get(kept.cron_id)
            assert seen.next_run_date == kept.next_run_date
            assert seen.payload["source"]["dataset"] == "flights"
            assert seen.metadata == {"owner": "ops"} and seen.multitask_strategy == "enqueue"
            assert second.get(paused.cron_id).next_run_date is None
            resumed = second.resume(paused.cron_id, "dan")
            assert resumed.enabled and resumed.next_run_date is not None
            for cron_id in (kept.cron_id, paused.cron_id):
                second.delete(cron_id, "dan")
            with pytest.raises(NotFound):
                second.get(kept.cron_id)
        changes = [
            c.tool
            for c in plane.store.list_rows(ToolCall, ToolCall.run_id == paused.cron_id)
            if c.agent == "scheduler"
        ]
        assert changes == [
            "schedule.create",
            "schedule.pause",
            "schedule.resume",
            "schedule.delete",
        ]
    finally:
        again.close()


def test_bad_cron_or_time_zone_is_a_clear_error(plane: ControlPlane) -> None:
    with Scheduler(plane) as sched:
        view = sched.create(glob_spec("bad/*.csv"), "erin")
        with pytest.raises(ConfigError, match="unknown time zone"):
            sched.update(view.cron_id, ScheduleUpdate.model_construct(timezone="Mars/Olympus"), "e")
        with pytest.raises(ValueError, match="5"):
            ScheduleUpdate(schedule="* * * *")
        with pytest.raises(NotFound, match="no model"):
            sched.create(
                ScheduleSpec(
                    schedule="* * * * *",
                    payload=Payload(model="nope", source=GlobSource(glob="*.csv")),
                ),
                "erin",
            )
        assert sched.get(view.cron_id).timezone == "UTC"  # the failed update changed nothing
        sched.delete(view.cron_id, "erin")


def test_busy_model_reject_skips_enqueue_waits(plane: ControlPlane, feb: pl.DataFrame) -> None:
    drop(plane, "busy/2013-02b.parquet", feb.head(2500))
    plane.store.acquire_lease("flights", "other-run", "someone:else", 60)
    held = True
    try:
        with Scheduler(plane) as sched:
            reject = sched.create(glob_spec("busy/*.parquet"), "fay")
            sched.run_now(reject.cron_id)
            skipped = wait_for(lambda: sched.firings(reject.cron_id), 30, "the reject firing")[0]
            assert skipped.outcome == "skipped-busy" and "busy" in skipped.detail
            assert skipped.run_id is None
            call = plane.store.list_rows(ToolCall, ToolCall.run_id == reject.cron_id)[-1]
            assert call.tool == "schedule.fire" and call.ok is False
            assert not plane.store.list_rows(
                ScheduleBatch, ScheduleBatch.cron_id == reject.cron_id
            )  # the batch stays for a later firing

            enqueue = sched.create(glob_spec("busy/*.parquet", multitask_strategy="enqueue"), "fay")
            sched.run_now(enqueue.cron_id)
            fired = wait_for(lambda: sched.firings(enqueue.cron_id), 30, "the enqueue firing")[0]
            assert fired.outcome == "fired" and fired.run_id is not None
            assert run_row(plane, fired.run_id).status == "pending"  # waits for the model
            # The firing still waits for the model: the next one overlaps and is skipped.
            sched.run_now(enqueue.cron_id)
            overlap = next_firing(sched, enqueue.cron_id, 1)
            assert overlap.outcome == "skipped-overlap"

            plane.store.release_lease("flights", "other-run", "someone:else")
            held = False
            run = wait_for(lambda: run_done(plane, fired.run_id or ""), 120, "the enqueued run")
            assert run.status == "completed" and run.trigger == "schedule"

            # The rejected schedule takes its unclaimed batch up again now that the model is
            # free, and finds that the model has seen it (the enqueued run had it): not rerun.
            sched.run_now(reject.cron_id)
            later = next_firing(sched, reject.cron_id, 1)
            assert later.outcome == "no-new-batch" and later.batch_id == "2013-02b", later
            assert f"run {fired.run_id[:12]}" in later.detail and later.run_id is None
            for cron_id in (reject.cron_id, enqueue.cron_id):
                sched.delete(cron_id, "fay")
    finally:
        if held:
            plane.store.release_lease("flights", "other-run", "someone:else")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_gdelt_source_takes_the_newest_export_once_and_fails_cleanly_offline(
    plane: ControlPlane, tmp_path: Path
) -> None:
    root = tmp_path / "www" / "gdeltv2"
    root.mkdir(parents=True)
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root.parent))
    )
    base = f"http://127.0.0.1:{httpd.server_address[1]}/gdeltv2/"
    write_gdelt_fixtures(root, base)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    gdelt = ScheduleSpec(
        schedule=NEVER_SOON, payload=Payload(model="flights", source=GdeltSource())
    )
    try:
        conf = SchedulerSettings(gdelt_base_url=base, gdelt_timeout_s=5)
        with Scheduler(plane, conf=conf) as sched:
            view = sched.create(gdelt, "gus")
            first = sched.fire(view.cron_id)  # executes its run in this thread
            assert first.outcome == "fired" and first.batch_id == "gdelt-20261122103000"
            assert run_row(plane, first.run_id or "").status in {"completed", "failed"}
            assert sched.fire(view.cron_id).outcome == "no-new-batch"
            sched.delete(view.cron_id, "gus")
    finally:
        httpd.shutdown()
        httpd.server_close()
    offline = SchedulerSettings(gdelt_base_url="http://127.0.0.1:9/gdeltv2/", gdelt_timeout_s=2)
    with Scheduler(plane, conf=offline) as sched:
        view = sched.create(gdelt, "gus")
        started = time.monotonic()
        failed = sched.fire(view.cron_id)
        assert time.monotonic() - started < 10
        assert failed.outcome == "error" and "DatasetUnavailable" in failed.detail
        assert failed.run_id is None
        sched.delete(view.cron_id, "gus")


def test_dataset_source_runs_the_next_batch_in_order(plane: ControlPlane) -> None:
    source = DatasetSource(dataset="flights", start="2013-11", max_rows=2000)
    spec = ScheduleSpec(schedule=NEVER_SOON, payload=Payload(model="flights", source=source))
    with Scheduler(plane) as sched:
        view = sched.create(spec, "hal")
        fired = [sched.fire(view.cron_id) for _ in range(3)]
        assert [f.outcome for f in fired] == ["fired", "fired", "no-new-batch"]
        assert [f.batch_id for f in fired[:2]] == ["2013-11", "2013-12"]
        for f in fired[:2]:
            assert run_row(plane, f.run_id or "").status in DONE
        sched.delete(view.cron_id, "hal")


def test_schedules_over_the_api(plane: ControlPlane, feb: pl.DataFrame) -> None:
    _, operator = plane.create_api_key("olga", "operator")
    _, viewer = plane.create_api_key("vic", "viewer")
    ops, view = {"X-Api-Key": operator}, {"X-Api-Key": viewer}
    conf = ApiSettings(recover_on_start=False, batch_roots=[plane.settings.home / "inbox"])
    drop(plane, "api/2013-02c.parquet", feb.tail(2500))
    body: dict[str, Any] = {
        "schedule": "0 7 * * *",
        "timezone": "America/New_York",
        "payload": {"model": "flights", "source": {"glob": "api/*.parquet"}},
    }
    with TestClient(create_app(plane, conf, own_plane=False)) as client:
        for bad, needle in (
            ({"schedule": "* * * *"}, "5"),
            ({"schedule": "99 * * * *"}, "99"),
            ({"timezone": "Mars/Olympus"}, "time zone"),
            ({"payload": {"model": "flights", "source": {"glob": "../etc/*.csv"}}}, ".."),
        ):
            answer = client.post("/schedules", json={**body, **bad}, headers=ops)
            assert answer.status_code == 422, answer.text
            assert answer.headers["content-type"] == PROBLEM and needle in answer.json()["detail"]
        unknown = {**body, "payload": {"model": "nope", "source": {"glob": "*.csv"}}}
        assert client.post("/schedules", json=unknown, headers=ops).status_code == 404
        assert client.post("/schedules", json=body, headers=view).status_code == 403
        assert client.post("/schedules", json=body).status_code == 401

        made = client.post("/schedules", json=body, headers=ops)
        assert made.status_code == 201, made.text
        cron = made.json()
        cron_id = cron["cron_id"]
        assert cron["assistant_id"] == "flights" and cron["created_by"] == "olga"
        local = datetime.fromisoformat(cron["next_run_date"]).astimezone(
            ZoneInfo("America/New_York")
        )
        assert (local.hour, local.minute) == (7, 0)
        listed = client.get("/schedules", params={"model": "flights"}, headers=view).json()
        assert cron_id in [s["cron_id"] for s in listed]

        patched = client.patch(
            f"/schedules/{cron_id}", json={"schedule": "*/5 * * * *"}, headers=ops
        )
        assert patched.status_code == 200, patched.text
        assert datetime.fromisoformat(patched.json()["next_run_date"]).minute % 5 == 0
        bad_patch = client.patch(f"/schedules/{cron_id}", json={"timezone": "Nowhere"}, headers=ops)
        assert bad_patch.status_code == 422
        assert client.patch(f"/schedules/{cron_id}", json={}, headers=view).status_code == 403

        paused = client.post(f"/schedules/{cron_id}/pause", headers=ops).json()
        assert paused["enabled"] is False and paused["next_run_date"] is None
        assert client.post(f"/schedules/{cron_id}/run", headers=ops).status_code == 422
        resumed = client.post(f"/schedules/{cron_id}/resume", headers=ops).json()
        assert resumed["enabled"] is True and resumed["next_run_date"] is not None

        # Fire now: the run executes in the app's run executor.
        assert client.post(f"/schedules/{cron_id}/run", headers=ops).status_code == 202
        firings = wait_for(
            lambda: client.get(f"/schedules/{cron_id}/firings", headers=view).json(), 30, "firing"
        )
        assert firings[0]["outcome"] == "fired", firings
        run_id = firings[0]["run_id"]
        wait_for(
            lambda: (
                client.get(f"/runs/{run_id}", headers=view).json()["status"]
                in {"success", "error", "interrupted"}
            ),
            120,
            "the fired run over the API",
        )

        assert client.delete(f"/schedules/{cron_id}", headers=view).status_code == 403
        assert client.delete(f"/schedules/{cron_id}", headers=ops).status_code == 204
        gone = client.get(f"/schedules/{cron_id}", headers=view)
        assert gone.status_code == 404 and gone.headers["content-type"] == PROBLEM


def test_who_changes_or_fires_a_schedule_requests_its_runs(plane: ControlPlane) -> None:
    """Four eyes across a borrowed schedule: Bob repoints Ann's schedule (or fires it by
    hand); its runs are then his requests, so he cannot approve them."""
    with Scheduler(plane) as sched:
        made = sched.create(glob_spec("borrowed/*.parquet"), "ann")
        assert made.created_by == "ann"
        changed = sched.update(made.cron_id, ScheduleUpdate(metadata={"by": "bob"}), " Bob ")
        assert changed.created_by == "bob"
        fired = sched.run_now(made.cron_id, "cat")
        assert fired.created_by == "cat"
        actions = [f.tool for f in plane.store.list_rows(ToolCall, ToolCall.run_id == made.cron_id)]
        assert "schedule.update" in actions and "schedule.run_now" in actions


def sse_events(body: str) -> list[tuple[str, Any]]:
    """The (event, data) pairs of a finished server-sent event stream."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields.get("data", "null"))))
    return events


def test_a_dataset_schedule_starts_after_what_the_model_has_seen(
    plane: ControlPlane, jan_sample: pl.DataFrame, months: dict[str, pl.DataFrame]
) -> None:
    """A model bootstrapped on January: a schedule without ``start`` runs February first; a
    batch the model was given (sampled by a schedule, or whole under another name) is never
    run again, even from an explicit ``start``; the run names its schedule in the API."""
    add_flights(plane, jan_sample, principal="alice", name="seen")
    sampled = DatasetSource(dataset="flights", max_rows=2000, seed=3)
    with Scheduler(plane) as sched:
        first = sched.create(
            ScheduleSpec(schedule=NEVER_SOON, payload=Payload(model="seen", source=sampled)), "ida"
        )
        fired = sched.fire(first.cron_id)  # executes its run in this thread
        assert (fired.outcome, fired.batch_id) == ("fired", "2013-02"), fired
        run = plane.get_run(fired.run_id or "")
        assert (run.trigger, run.schedule_id) == ("schedule", first.cron_id)
        # the flights batch: the table without the other flights datasets' targets
        whole = content_hash(months["2013-02"].drop("arr_delay", "delay_class"))
        assert run.metadata["batch_hash"] == whole and run.metadata["sampled_rows"] == 2000
        filed = plane.store.list_rows(BatchRecord, BatchRecord.run_id == run.run_id)
        assert [r.content_hash != whole for r in filed] == [True]  # the sample hashes apart
        started = run.summary["ingestion"]["time_range"]["start"]
        assert started.startswith("2013-02"), run.summary["ingestion"]

    # March arrives whole under another name (submitted, not yet run); then a schedule told
    # to start at February, which the model has seen as a sample.
    march_batch = months["2013-03"].drop("arr_delay", "delay_class")  # as the dataset serves it
    march = plane.submit_run("seen", march_batch, "march-delivery", requested_by="jo")
    explicit = DatasetSource(dataset="flights", start="2013-02")
    with Scheduler(plane, execute=lambda run_id: None) as quiet:  # its run stays pending
        second = quiet.create(
            ScheduleSpec(
                schedule=NEVER_SOON,
                payload=Payload(model="seen", source=explicit),
                multitask_strategy="enqueue",
            ),
            "ida",
        )
        later = quiet.fire(second.cron_id)
    assert (later.outcome, later.batch_id) == ("fired", "2013-04"), later
    waiting = plane.get_run(later.run_id or "")
    assert waiting.metadata["sampled_rows"] is None and waiting.status == "pending"
    # March again, as a file in the inbox: the model has seen that content.
    drop(plane, "seen/again.parquet", march_batch)
    with Scheduler(plane, execute=lambda run_id: None) as quiet:
        inbox = Payload(model="seen", source=GlobSource(glob="seen/*.parquet"))
        files = quiet.create(ScheduleSpec(schedule=NEVER_SOON, payload=inbox), "ida")
        again = quiet.fire(files.cron_id)
        assert (again.outcome, again.batch_id) == ("no-new-batch", "again"), again
        assert f"run {march.run_id[:12]}" in again.detail
        assert quiet.fire(files.cron_id).detail == ""  # claimed: the file is not read again

    _, key = plane.create_api_key("vera", "viewer")
    conf = ApiSettings(recover_on_start=False, batch_roots=[plane.settings.home / "inbox"])
    try:
        with TestClient(create_app(plane, conf, own_plane=False)) as client:
            shown = client.get(f"/runs/{run.run_id}", headers={"X-Api-Key": key}).json()
            assert (shown["trigger"], shown["schedule_id"]) == ("schedule", first.cron_id)
            assert shown["metadata"]["schedule_id"] == first.cron_id
            listed = client.get("/runs", params={"model": "seen"}, headers={"X-Api-Key": key})
            triggers = {r["run_id"]: r["trigger"] for r in listed.json()["items"]}
            assert triggers[run.run_id] == "schedule" and triggers[march.run_id] == "api"
            streamed = client.get(f"/runs/{run.run_id}/stream", headers={"X-Api-Key": key})
            name, meta = sse_events(streamed.text)[0]
            assert name == "metadata" and meta["trigger"] == "schedule"
            assert meta["schedule_id"] == first.cron_id
    finally:  # the pending runs are not this module's to execute
        for pending in (march.run_id, later.run_id or ""):
            plane.cancel_run(pending, "ida")
