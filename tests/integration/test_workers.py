"""Scale-out on procrastinate: real PostgreSQL (tests/pg.py), real `driftpilot worker`
processes, real MLflow and Optuna, real flights, the builtin LLM.

One database, one home and four trained models are shared by the module. Two workers drain 20
queued runs (the shipped policy) while both run procrastinate's periodic deferrer under a
minute schedule; then a worker is killed -9 inside a run (the project's ``after_register``
fault point, with a policy that retrains every run so each leaves a registry version to
count: a run done twice would leave two), and ``driftpilot recover`` finishes it. Two runs
of a model whose jobs were deferred in the opposite order both end, in submission order; a
worker whose PostgreSQL stops under it exits 75 (a server of its own).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import polars as pl
import pytest
import yaml
from sqlalchemy import text

from driftpilot.core.settings import get_settings
from driftpilot.execution.queue import Queue
from driftpilot.runs.plane import ControlPlane
from driftpilot.scheduling.scheduler import (
    FIRE_TOOL,
    GlobSource,
    Payload,
    Scheduler,
    SchedulerSettings,
    ScheduleSpec,
)
from driftpilot.store.engine import stamp
from driftpilot.store.models import Decision, Mutation, Run, ToolCall
from tests.conftest import add_flights
from tests.integration.test_control_graph import FORCE_RETRAIN, LOW_RISK, merge
from tests.pg import PostgresServer
from tools import registry

pytestmark = pytest.mark.integration
T = TypeVar("T")
MODELS = ("m1", "m2", "m3", "m4")
TTL = 3.0  # lease time to live: a killed run is recoverable this long after its last renewal
WORKER_ENV = {
    "DRIFTPILOT_LEASE_TTL_S": str(TTL),
    "DRIFTPILOT_QUEUE_HEARTBEAT_S": "1",
    "DRIFTPILOT_QUEUE_STALLED_S": "10",  # beats can be late on a busy machine
    "DRIFTPILOT_QUEUE_POLL_S": "0.5",
    "DRIFTPILOT_QUEUE_RETRY_S": "1",
    "DRIFTPILOT_QUEUE_TICK_CRON": "* * * * * */2",  # a tick every 2 s (seconds field)
}
DRIFTPILOT = str(Path(sys.executable).parent / "driftpilot")
ENDED = {"completed", "waiting_approval", "failed"}


@dataclass
class Worker:
    """A `driftpilot worker` subprocess and its log."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes] = field(repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log_file.close()


@dataclass
class Farm:
    """The module's database, home, plane and running workers."""

    plane: ControlPlane
    env: dict[str, str]
    home: Path
    url: str
    retrain_policy: Path
    workers: list[Worker] = field(default_factory=list)
    cron_id: str = ""
    deferring_since: datetime | None = None  # both workers were up and deferring from then

    def worker(self, name: str, **extra_env: str) -> Worker:
        log_path = self.home.parent / f"{name}.log"
        log_file = log_path.open("wb")
        proc = subprocess.Popen(
            [DRIFTPILOT, "--log-level", "INFO", "worker", "--name", name],
            env={**self.env, **extra_env, "COLUMNS": "250"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        worker = Worker(proc, log_path, log_file)
        self.workers.append(worker)
        return worker

    def sql(self, query: str, **params: Any) -> list[Any]:
        with self.plane.store.engine.connect() as conn:
            return list(conn.execute(text(query), params))


def wait_for(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def live_workers(farm: Farm) -> int:
    return int(farm.sql("SELECT count(*) FROM procrastinate_workers")[0][0])


def wait_registered(farm: Farm, count: int, *workers: Worker) -> None:
    def ready() -> bool:
        for w in workers:
            assert w.proc.poll() is None, w.log()
        return live_workers(farm) >= count

    wait_for(ready, 90, f"{count} registered workers")


@pytest.fixture(scope="module")
def farm(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: PostgresServer,
    months: dict[str, pl.DataFrame],
) -> Iterator[Farm]:
    base = tmp_path_factory.mktemp("workers")
    home = base / "home"
    url = postgres.create_database()
    watch, retrain = base / "watch.yaml", base / "retrain.yaml"
    watch.write_text(yaml.safe_dump({"drift": {"retrain": "never"}}))  # quick runs: the drain
    retrain.write_text(yaml.safe_dump(merge(FORCE_RETRAIN, LOW_RISK)))
    env = {
        "DRIFTPILOT_HOME": str(home),
        "DRIFTPILOT_DB_URL": url,
        "DRIFTPILOT_POLICY_PATH": str(watch),
        **WORKER_ENV,
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        get_settings.cache_clear()
        plane = ControlPlane(get_settings())
        jan = months["2013-01"].sample(n=8000, seed=11).sort("time_hour")
        for i, name in enumerate(MODELS):
            add_flights(plane, jan.slice(i * 2000, 2000).sort("time_hour"), name=name)
        Queue(plane).ensure_schema()  # what workers do at start; the probes below read it
        farm = Farm(plane, {**os.environ, **env}, home, url, retrain)
        try:
            yield farm
        finally:
            for w in farm.workers:
                w.stop(signal.SIGKILL, timeout=30)
            plane.close()
    get_settings.cache_clear()
    postgres.drop_database(url.rsplit("/", 1)[1])


def submit(
    farm: Farm, months: dict[str, pl.DataFrame], per_model: dict[str, int], seed: int
) -> list[str]:
    """Submit runs of each model (round robin, ``per_model`` of each) and queue them, in
    that order; their ids. ``seed``: batches of another call must differ (a batch seen
    before is quarantined as a duplicate)."""
    ids: list[str] = []
    with Queue(farm.plane).open() as queue:
        for k in range(max(per_model.values())):
            month = months[f"2013-{k % 10 + 2:02d}"]
            for name in MODELS:
                if k >= per_model.get(name, 0):
                    continue
                batch = month.sample(n=1500, seed=seed + len(ids)).sort("time_hour")
                view = farm.plane.submit_run(
                    name, batch, f"{name}-{len(ids)}", multitask_strategy="enqueue"
                )
                assert queue.defer_run(view.run_id) is not None
                ids.append(view.run_id)
    return ids


def runs_of(farm: Farm, ids: list[str]) -> list[Run]:
    return farm.plane.store.list_rows(Run, Run.id.in_(ids))


def settled(farm: Farm, ids: list[str], *workers: Worker) -> Callable[[], bool]:
    """A probe: every run ended (or waits for a person) and its job is finished; no worker
    died meanwhile."""

    def probe() -> bool:
        for w in workers:
            assert w.proc.poll() is None, w.log()
        if not all(r.status in ENDED for r in runs_of(farm, ids)):
            return False
        open_jobs = farm.sql(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'driftpilot.execute_run' "
            "AND status IN ('todo', 'doing') AND args->>'run_id' = ANY(:ids)",
            ids=ids,
        )
        return int(open_jobs[0][0]) == 0

    return probe


def assert_serialised(farm: Farm, ids: list[str]) -> None:
    """Per model, the audit rows of its runs come in whole blocks, in submission order: no
    run of a model wrote anything while another run of it was between its first and last
    row."""
    runs = {r.id: r.model for r in runs_of(farm, ids)}
    rows = [(d.created_at, d.run_id) for d in farm.plane.store.list_rows(Decision)]
    rows += [(t.created_at, t.run_id) for t in farm.plane.store.list_rows(ToolCall)]
    rows = [(at, run) for at, run in rows if run in runs]
    for name in MODELS:
        order = [run for _, run in sorted(rows) if runs[run] == name]
        blocks = [run for i, run in enumerate(order) if i == 0 or order[i - 1] != run]
        assert len(blocks) == len(set(blocks)), f"runs of {name} interleave: {blocks}"
        assert blocks == [i for i in ids if runs[i] == name], f"{name} ran out of order"


def assert_once(farm: Farm, ids: list[str]) -> None:
    """Each run ended once: completed (or waiting for approval), no agent decided the same
    thing twice, and at most one registry version carries its id."""
    rows = runs_of(farm, ids)
    assert sorted(r.id for r in rows) == sorted(ids)
    failed = [(r.id, r.outcome, r.summary) for r in rows if r.status == "failed"]
    assert not failed, failed
    for run in rows:
        made = Counter(
            (d.agent, d.action)
            for d in farm.plane.store.list_rows(Decision, Decision.run_id == run.id)
        )
        assert made and max(made.values()) == 1, (run.id, made)
        assert len(versions_of(farm, run)) <= 1, (run.id, versions_of(farm, run))


def versions_of(farm: Farm, run: Run) -> list[int]:
    return [
        v.version
        for v in registry.list_versions(run.model, farm.plane.settings)
        if v.tags.get("driftpilot.run_id") == run.id
    ]


def minutes_between(start: datetime, end: datetime) -> set[str]:
    """The minute boundaries in (start, end], as the audit writes scheduled times."""
    at = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    found = set()
    while at <= end:
        found.add(at.isoformat())
        at += timedelta(minutes=1)
    return found


def deferring(farm: Farm, months: dict[str, pl.DataFrame]) -> tuple[Worker, Worker]:
    """A minute schedule of m1 and two live workers deferring ticks (both run procrastinate's
    periodic deferrer): made by whichever test needs them first, so each test runs alone."""
    if not farm.cron_id:
        inbox = farm.home / "inbox" / "sched"
        inbox.mkdir(parents=True, exist_ok=True)
        april = months["2013-04"].sample(n=1500, seed=4).sort("time_hour")
        april.write_parquet(inbox / "apr.parquet")
        sched = Scheduler(farm.plane, conf=SchedulerSettings(enabled=False)).start()
        try:  # every minute; its source has one file: a run, then 'no-new-batch' each minute
            farm.cron_id = sched.create(
                ScheduleSpec(
                    schedule="* * * * *",
                    payload=Payload(model="m1", source=GlobSource(glob="sched/*.parquet")),
                    multitask_strategy="enqueue",  # m1 may be busy with the drain: wait
                ),
                "alice",
            ).cron_id
        finally:
            sched.shutdown()
    live = [w for w in farm.workers if w.proc.poll() is None]
    if len(live) < 2 or farm.deferring_since is None:
        live += [farm.worker(name) for name in ("a", "b")[len(live) :]]
        wait_registered(farm, 2, *live)
        farm.deferring_since = datetime.now(UTC)
    return live[0], live[1]


def test_two_workers_drain_twenty_runs_over_four_models(
    farm: Farm, months: dict[str, pl.DataFrame]
) -> None:
    a, b = deferring(farm, months)
    ids = submit(farm, months, dict.fromkeys(MODELS, 5), seed=0)
    wait_for(settled(farm, ids, a, b), 400, "20 runs to end")
    assert_once(farm, ids)
    assert_serialised(farm, ids)
    # Both workers took runs (a job keeps its worker's id while that worker lives).
    took = farm.sql(
        "SELECT worker_id, count(*) FROM procrastinate_jobs "
        "WHERE task_name = 'driftpilot.execute_run' AND status = 'succeeded' "
        "AND args->>'run_id' = ANY(:ids) GROUP BY worker_id",
        ids=ids,
    )
    assert len(took) == 2 and sum(n for _, n in took) == 20, took
    result = farm.plane.verify()
    assert result.ok, result.problems


def test_a_worker_that_loses_its_database_exits_non_zero(tmp_path: Path) -> None:
    """PostgreSQL stopped under an idle worker (pg_ctl stop -m immediate) and started again
    3 s later (the soak's outage): procrastinate's listener and heartbeat fail, it stops
    the worker "gracefully" and, the database back, unregisters it; the worker still exits
    EX_TEMPFAIL (75) with a one-line error, so a supervisor restarting on failure
    (systemd's Restart=on-failure) starts it again. Polling every 60 s: no fetch meets the
    outage, only the connections procrastinate keeps. A server of its own: the shared one
    keeps serving the other tests. It runs between the drain and the minute schedule's test:
    its outage overlaps that test's wait for a minute boundary on the real clock."""
    from tests.pg import start_postgres

    with start_postgres() as server:
        url = server.create_database()
        env = {
            **os.environ,
            **WORKER_ENV,
            "DRIFTPILOT_QUEUE_POLL_S": "60",
            "DRIFTPILOT_HOME": str(tmp_path / "home"),
            "DRIFTPILOT_DB_URL": url,
            "COLUMNS": "250",
        }
        log_path = tmp_path / "worker.err"
        with log_path.open("wb") as log_file, (tmp_path / "worker.out").open("wb") as out:
            proc = subprocess.Popen(
                [DRIFTPILOT, "--log-level", "INFO", "worker", "--name", "orphan"],
                env=env,
                stdout=out,  # its log
                stderr=log_file,
            )
            try:
                code = _outage_under(proc, server, url.rsplit("/", 1)[1], log_path)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
    stderr = log_path.read_text(errors="replace")
    assert code == 75, (code, stderr)
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "database" in last, stderr


def _outage_under(
    proc: subprocess.Popen[bytes], server: PostgresServer, dbname: str, log_path: Path
) -> int:
    """Wait for the worker to register, stop the server for 3 s; the worker's exit code."""
    from tests.pg import _as_server_user

    def up() -> bool:
        assert proc.poll() is None, log_path.read_text()
        try:
            return server.psql("SELECT count(*) FROM procrastinate_workers", dbname) == "1"
        except RuntimeError:  # the worker has not created the tables yet
            return False

    wait_for(up, 90, "the worker to register")
    prefix = _as_server_user()
    pg_ctl = [str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir)]
    subprocess.run([*prefix, *pg_ctl, "-m", "immediate", "stop"], check=True)
    time.sleep(3)
    # On its port: the worker reconnects to where it was (start_postgres stops it at the end).
    _start_on(prefix, server)
    return proc.wait(60)


def _start_on(prefix: list[str], server: PostgresServer) -> None:
    """Start the stopped ``server`` again on its own port."""
    from tests.pg import _SERVER_OPTIONS

    options = {
        **_SERVER_OPTIONS,
        "port": str(server.port),
        "unix_socket_directories": str(server.socket_dir),
    }
    opts = " ".join(f"-c {k}={v}" for k, v in options.items())
    log = server.data_dir.parent / "server.log"
    pg_ctl = [str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-l", str(log), "-w"]
    subprocess.run([*prefix, *pg_ctl, "-o", opts, "start"], check=True, timeout=90)


def test_two_deferrers_fire_a_minute_schedule_once_per_minute(
    farm: Farm, months: dict[str, pl.DataFrame]
) -> None:
    """Two workers run procrastinate's periodic deferrer (a tick every 2 s; during the drain
    when it ran first): the schedule fired at each minute once, though two processes
    deferred ticks. The workers are processes on the real clock: alone, this test waits for
    the first minute after they started deferring (after the drain it has long passed)."""
    deferring(farm, months)
    assert farm.deferring_since is not None
    first = minutes_between(farm.deferring_since, farm.deferring_since + timedelta(minutes=1))
    enough = max(  # a minute boundary has passed, and 10 ticks of 2 s
        datetime.fromisoformat(min(first)) + timedelta(seconds=6),
        farm.deferring_since + timedelta(seconds=24),
    )
    time.sleep(max(0.0, (enough - datetime.now(UTC)).total_seconds()))
    assert live_workers(farm) == 2
    rows = farm.plane.store.list_rows(
        ToolCall, ToolCall.run_id == farm.cron_id, ToolCall.tool == FIRE_TOOL
    )
    times = Counter(json.loads(r.args)["scheduled_at"] for r in rows)
    assert times and max(times.values()) == 1, times  # never twice for one time
    expected = minutes_between(farm.deferring_since, datetime.now(UTC) - timedelta(seconds=5))
    assert expected and expected <= set(times), (expected, times)
    # The first firing found the file and fired a run (its job deferred from a worker's job,
    # executed by a worker); the later ones found it still waiting, or nothing new.
    results = [json.loads(r.result) for r in sorted(rows, key=lambda r: r.id)]
    assert results[0]["outcome"] == "fired", results
    assert {r["outcome"] for r in results[1:]} <= {"skipped-busy", "no-new-batch"}, results
    fired = results[0]["run_id"]
    wait_for(settled(farm, [fired]), 300, "the scheduled run")
    assert farm.plane.get_run(fired).trigger == "schedule"
    ticks = farm.sql(
        "SELECT DISTINCT args->>'timestamp' FROM procrastinate_jobs "
        "WHERE task_name = 'driftpilot.schedule_tick'"
    )
    assert len(ticks) >= 10, ticks  # a tick every 2 s
    # A tick run again (a lagging deferrer can defer an old tick twice) fires nothing more.
    sched = Scheduler(farm.plane, conf=SchedulerSettings(enabled=False))
    again = Queue(farm.plane, scheduler=sched).tick(
        int(datetime.fromisoformat(min(times)).timestamp())
    )
    assert again == 0
    assert len(
        farm.plane.store.list_rows(
            ToolCall, ToolCall.run_id == farm.cron_id, ToolCall.tool == FIRE_TOOL
        )
    ) == len(rows)


def test_runs_whose_jobs_were_deferred_in_the_opposite_order_both_end(
    farm: Farm, months: dict[str, pl.DataFrame]
) -> None:
    """Two submitters' defers crossed (the soak's lost runs): run A was submitted first, run
    B's job was deferred first. procrastinate starts B's job first (job id order on the
    model's lock) and runs go in submission order, so B's job runs A, then B; A's job then
    finds A ended. Before, B's job waited for A, whose job waited behind B's: for ever. It
    runs on the schedule's workers while they are up (warm: no worker of its own to start)."""
    live = [w for w in farm.workers if w.proc.poll() is None]
    with Queue(farm.plane).open() as queue:
        first, second = (
            farm.plane.submit_run(
                "m1",
                months["2013-06"].sample(n=1500, seed=300 + k).sort("time_hour"),
                f"crossed-{k}",
                multitask_strategy="enqueue",
            ).run_id
            for k in range(2)
        )
        second_job, first_job = queue.defer_run(second), queue.defer_run(first)
    assert second_job is not None and first_job is not None and second_job < first_job
    worker = live[0] if live else farm.worker("crossed")
    wait_for(settled(farm, [first, second], worker), 240, "both runs to end")
    assert_once(farm, [first, second])
    assert_serialised(farm, [first, second])  # A, then B: submission order
    jobs = farm.sql(
        "SELECT id, status FROM procrastinate_jobs WHERE id IN (:a, :b) ORDER BY id",
        a=second_job,
        b=first_job,
    )
    assert [tuple(j) for j in jobs] == [(second_job, "succeeded"), (first_job, "succeeded")]
    if not live:  # a stop asked by SIGTERM is a clean exit: 0, not the lost database's 75
        assert worker.stop() == 0, worker.log()
        farm.workers.remove(worker)


def test_kill_9_of_a_worker_mid_run_then_recover_finishes_it(
    farm: Farm, months: dict[str, pl.DataFrame]
) -> None:
    """A worker dies inside a run (after MLflow logged its challenger, before the audit
    said so). The other worker goes on with the other models; the dead run's model waits
    until `driftpilot recover` finished its run: nothing lost, nothing done twice."""
    for w in list(farm.workers):  # the drain's workers stop gracefully (SIGTERM)
        assert w.stop() == 0, w.log()
        farm.workers.remove(w)
    assert live_workers(farm) == 0
    retrain = {"DRIFTPILOT_POLICY_PATH": str(farm.retrain_policy)}  # every run registers
    # after_log: every retrain logs its challenger (only a winner registers a version)
    doomed = farm.worker("doomed", DRIFTPILOT_FAULTS="after_log", **retrain)
    wait_registered(farm, 1, doomed)
    ids = submit(farm, months, {"m1": 2, "m2": 1, "m3": 1}, seed=100)  # m1's first: `doomed`
    # The survivor starts once `doomed` holds m1's first run, so it goes on with the other
    # models while `doomed` is still inside that run (and its start-up overlaps that run).
    wait_for(lambda: farm.plane.store.get(Run, ids[0]).status == "running", 120, "m1's run")
    survivor = farm.worker("survivor", **retrain)
    assert doomed.proc.wait(240) == -signal.SIGKILL, doomed.log()
    farm.workers.remove(doomed)
    killed = farm.plane.store.get(Run, ids[0])
    assert (killed.model, killed.status) == ("m1", "running")
    others = [i for i in ids if farm.plane.store.get(Run, i).model != "m1"]
    wait_for(settled(farm, others, survivor), 240, "the other models' runs")
    m1 = runs_of(farm, [i for i in ids if i not in others])
    assert sorted(r.status for r in m1) == ["pending", "running"]  # m1 waits for recover
    wait_for(lambda: lease_expired(farm, "m1", ids[0]), 2 * TTL, "the dead run's lease to expire")
    done = subprocess.run(
        [DRIFTPILOT, "recover"],
        env={**farm.env, **retrain, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert ids[0][:12] in done.stdout and "resumed from its checkpoint" in done.stdout, done.stdout
    wait_for(settled(farm, ids, survivor), 240, "m1's second run")
    assert_once(farm, ids)
    assert_serialised(farm, ids[1:])
    promoted = [(len(versions_of(farm, r)), r.outcome == "promoted") for r in runs_of(farm, ids)]
    assert all(n == int(won) for n, won in promoted)  # a version for each winner only
    phases = [
        (m.step, m.phase)
        for m in farm.plane.store.list_rows(Mutation, Mutation.run_id == ids[0], order=Mutation.id)
    ]
    assert ("retraining:log_model", "intent") in phases
    assert ("retraining:log_model", "reconciled") in phases
    reaped = farm.sql(
        "SELECT status FROM procrastinate_jobs "
        "WHERE task_name = 'driftpilot.execute_run' AND args->>'run_id' = :run",
        run=ids[0],
    )
    assert [r[0] for r in reaped] == ["failed"]  # the dead worker's job was reaped, not rerun
    result = farm.plane.verify()
    assert result.ok, result.problems
    assert survivor.stop() == 0, survivor.log()
    farm.workers.remove(survivor)


def lease_expired(farm: Farm, model: str, run_id: str) -> bool:
    """The model's lease is still the dead run's, and expired half a second ago or more (a
    margin for the clocks of the processes that read it)."""
    lease = farm.plane.store.lease(model)
    assert lease is not None and lease.run_id == run_id, lease
    return lease.expires_at <= stamp(datetime.now(UTC) - timedelta(seconds=0.5))


def test_the_api_queues_runs_and_defers_ticks_on_postgresql(
    farm: Farm, months: dict[str, pl.DataFrame]
) -> None:
    """On PostgreSQL the API executes nothing itself: a created run becomes a job for the
    workers (locked on its model), and its scheduler defers the schedule ticks."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from driftpilot.core.settings import ApiSettings

    inbox = farm.home / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    months["2013-03"].sample(n=1500, seed=9).write_parquet(inbox / "march.parquet")
    _, secret = farm.plane.create_api_key("carol", "operator")
    ticks_before = farm.sql(
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'driftpilot.schedule_tick'"
    )[0][0]
    app = create_app(farm.plane, ApiSettings(recover_on_start=False), own_plane=False)
    with TestClient(app) as client:
        answer = client.post(
            "/runs",
            json={"model": "m4", "input": {"batch": {"path": "march.parquet"}}},
            headers={"X-Api-Key": secret},
        )
        assert answer.status_code == 202, answer.text
        run_id = answer.json()["run_id"]
        jobs = farm.sql(
            "SELECT status, lock FROM procrastinate_jobs WHERE args->>'run_id' = :run", run=run_id
        )
        assert [tuple(j) for j in jobs] == [("todo", "model:m4")]  # no worker is up
        assert farm.plane.get_run(run_id).status == "pending"
        wait_for(
            lambda: (
                farm.sql(
                    "SELECT count(*) FROM procrastinate_jobs "
                    "WHERE task_name = 'driftpilot.schedule_tick'"
                )[0][0]
                > ticks_before
            ),
            10,
            "the API's deferrer to defer a tick",
        )
    assert not any(t.name == "driftpilot-deferrer" for t in threading.enumerate())
