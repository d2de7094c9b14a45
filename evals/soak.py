"""Fault soak (issue 20 item 7): mixed API traffic for ``--minutes`` while the harness kills
and starts the system's parts, then checks that nothing was lost, doubled or let through.

Loopback only. It starts a throwaway PostgreSQL server (tests/pg.py's way: the audit store,
the LangGraph checkpoints and the procrastinate queue live there; Optuna gets its own
database), a home on a small tmpfs (``--disk-mb``) with three trained flights models and API
keys, ``driftpilot serve`` and ``--workers`` ``driftpilot worker`` processes. Client threads
(``evals.soak_traffic``) create runs (dataset batches, CSV uploads, files written under the
home's inbox), approve or reject what waits, read runs and the audit, and fire a schedule.

Faults, in turn on a timetable spread over the soak (``FAULTS``): kill -9 of a worker (started
again at once), ``pg_ctl stop -m immediate`` of PostgreSQL (started again after
``--down-s``), kill -9 of the API (started again on the same port), and the home's disk filled
to the last byte (freed after ``--down-s``). After each: ``driftpilot recover`` (once the
leases of the runs a dead process held have expired), a readiness probe, and
``driftpilot audit --verify``; its recovery time runs from the fault to the probe answering
(``recover`` finishes a dead run's remaining steps itself, so it is most of it). A supervisor
thread starts again a worker that exited, at most every 5 s, as systemd's ``Restart=always``
would (a worker stops by itself when it loses its database); any service found dead after a
fault is started again and named in the fault's record.

At the end traffic stops, the runs left are drained (waiting approvals approved, ``recover``
every 30 s), and the store is checked against the clients' ledger: every acknowledged run
ended exactly once (0 lost, 0 doubled), no run registered two MLflow versions, every
promotion was low-risk by policy or approved by someone other than its requester, every
``audit --verify`` was ok, and every 5xx was a 503 problem+json with Retry-After.

    python -m evals.soak [--minutes 20] [--workers 2] [--clients 3] [--disk-mb 256]
                         [--down-s 15] [--out evals/results/soak.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from driftpilot.core.llm import free_port
from evals.common import git_commit, machine, write_json
from evals.soak_checks import checks
from evals.soak_services import DRIFTPILOT, Postgres, Service
from evals.soak_traffic import Traffic, summarize

RESULTS = Path(__file__).parent / "results"
MODELS = ["m1", "m2", "m3"]
POLICY = {"drift": {"retrain": "always"}, "optimizer": {"default_trials": 2}}
LEASE_TTL_S = 10
RESTART_S = 5.0  # a worker that keeps exiting (its database down) is restarted this often
ENV = {
    "DRIFTPILOT_LEASE_TTL_S": str(LEASE_TTL_S),
    "DRIFTPILOT_QUEUE_HEARTBEAT_S": "3",
    "DRIFTPILOT_QUEUE_STALLED_S": "15",
    "DRIFTPILOT_QUEUE_POLL_S": "1",
    "DRIFTPILOT_REPORT_RENDER": "on_request",  # no Evidently render per run: CPU for runs
    "DRIFTPILOT_THREADS": "1",
}
OPEN_RUNS = "SELECT id, status FROM runs WHERE status NOT IN ('completed', 'failed')"
MACHINE_NOTE = (
    "2 cores shared with 6 other people's work (builds, tests, benchmarks) during the soak: "
    "latencies and run times are noisy, and slow under contention"
)


@dataclass
class Soak:
    """The running system and what the harness recorded."""

    root: Path
    home: Path
    env: dict[str, str]
    pg: Postgres
    api: Service
    port: int
    workers: list[Service]
    keys: dict[str, str]
    disk: dict[str, Any]
    faults: list[dict[str, Any]] = field(default_factory=list)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    t0: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str, timeout: float = 600) -> tuple[int, str, float]:
        """Run ``driftpilot ARGS`` against the soak's home; (exit code, output's end, s)."""
        started = time.monotonic()
        done = subprocess.run(
            [DRIFTPILOT, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        out = (done.stdout + done.stderr)[-1500:]
        return done.returncode, out, round(time.monotonic() - started, 2)

    def start_api(self) -> float:
        return self.api.start(ready_url=f"{self.url}/healthz")

    def ready(self, timeout_s: float = 180) -> bool:
        """The API answers /readyz 200 (its database answers) within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        return False

    def revive(self) -> list[str]:
        """Start again every service that died; their names."""
        dead = []
        with self.lock:
            if not self.api.alive():
                dead.append("api")
                self.start_api()
            for worker in self.workers:
                if not worker.alive():
                    self._restart(worker)
                    dead.append(worker.name)
        return dead

    def _restart(self, worker: Service) -> None:
        code = worker.proc.returncode if worker.proc is not None else None
        at = round(time.monotonic() - self.t0, 1)
        self.restarts.append({"service": worker.name, "exit_code": code, "at_s": at})
        worker.start()

    def supervise(self, stop: threading.Event) -> None:
        """What systemd's Restart=always does for a worker: start again one that exited (a
        worker stops by itself when it loses its database), at most every ``RESTART_S``."""
        while not stop.wait(1.0):
            with self.lock:
                for worker in self.workers:
                    exited = worker.proc is not None and worker.proc.poll() is not None
                    if exited and time.monotonic() - worker.started_at >= RESTART_S:
                        self._restart(worker)


# -- setup --------------------------------------------------------------------------------


@contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[dict[str, Any]]:
    """A tmpfs of ``size_mb`` mounted on ``path`` (root only), unmounted on exit. Without the
    right to mount, the home stays on the machine's disk and the disk fault is skipped: filling
    a shared disk to the last byte would break everyone else's work."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        yield {"method": "none", "why": done.stderr.strip() or "mount failed", "size_mb": None}
        return
    try:
        yield {"method": "tmpfs", "size_mb": size_mb}
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def prepare(root: Path, home: Path, env: dict[str, str]) -> tuple[dict[str, str], Any]:
    """The home: three flights models trained on January, three API keys; returns the keys
    (role -> secret) and the months of flights."""
    from driftpilot.core.settings import Settings
    from driftpilot.runs.plane import ControlPlane
    from driftpilot.stream import add_builtin_model
    from tools.data import split_batches
    from tools.datasets import FLIGHTS, flights

    os.environ.update({k: v for k, v in env.items() if k.startswith("DRIFTPILOT_")})
    settings = Settings().ensure_dirs()
    frame = flights(settings)
    months = {
        b.info.batch_id: b.frame for b in split_batches(frame, FLIGHTS.time_col, every="month")
    }
    plane = ControlPlane(settings)
    try:
        jan = months["2013-01"].sample(n=6000, seed=11).sort(FLIGHTS.time_col)
        for i, name in enumerate(MODELS):
            add_builtin_model(plane, name, jan.slice(i * 2000, 2000), "flights", principal="ops")
        keys = {
            "operator": plane.create_api_key("olga", "operator")[1],
            "approver": plane.create_api_key("abby", "approver")[1],
            "viewer": plane.create_api_key("vic", "viewer")[1],
        }
    finally:
        plane.close()
    (home / "inbox").mkdir(exist_ok=True)
    return keys, months


def create_schedule(soak: Soak) -> str:
    """A schedule of m3 on the flights months that fires only when asked (its cron is once a
    year): the clients fire it through ``POST /schedules/{id}/run``."""
    body = {
        "schedule": "0 0 1 1 *",
        "timezone": "UTC",
        "payload": {
            "model": "m3",
            "source": {"dataset": "flights", "start": "2013-02", "max_rows": 1500},
        },
        "multitask_strategy": "enqueue",
    }
    response = httpx.post(
        f"{soak.url}/schedules", json=body, headers={"X-Api-Key": soak.keys["operator"]}
    )
    response.raise_for_status()
    return str(response.json()["cron_id"])


# -- faults -------------------------------------------------------------------------------


def kill_worker(soak: Soak, down_s: float) -> dict[str, Any]:
    """kill -9 of the first worker (mid-run when it has one), started again at once."""
    with soak.lock:  # not restarted twice: the supervisor waits
        soak.workers[0].kill9()
        soak.workers[0].start()
    return {"what": f"kill -9 {soak.workers[0].name}, started again"}


def stop_postgres(soak: Soak, down_s: float) -> dict[str, Any]:
    soak.pg.stop_immediate()
    time.sleep(down_s)
    soak.pg.start()
    return {"what": f"pg_ctl stop -m immediate, {down_s:.0f} s down, started again"}


def kill_api(soak: Soak, down_s: float) -> dict[str, Any]:
    soak.api.kill9()
    start_s = soak.start_api()
    return {"what": "kill -9 of driftpilot serve, started again", "api_start_s": round(start_s, 2)}


def fill_disk(soak: Soak, down_s: float) -> dict[str, Any]:
    """Write a file under the home until the filesystem refuses (ENOSPC), hold, delete it."""
    if soak.disk["method"] != "tmpfs":
        return {"what": "skipped: no small filesystem could be mounted", "skipped": True}
    filler = soak.home / "filler.bin"
    written = 0
    chunk = b"\0" * (1 << 20)
    with filler.open("wb") as out:
        try:
            while True:
                out.write(chunk)
                out.flush()
                written += len(chunk)
        except OSError as exc:
            error = exc.strerror
    time.sleep(down_s)
    filler.unlink()
    return {"what": f"home's disk filled ({written >> 20} MB more, then {error}), freed"}


FAULTS: list[tuple[str, Callable[[Soak, float], dict[str, Any]]]] = [
    ("kill_worker", kill_worker),
    ("stop_postgres", stop_postgres),
    ("kill_api", kill_api),
    ("fill_disk", fill_disk),
]


def inject(
    soak: Soak, name: str, fault: Callable[[Soak, float], dict[str, Any]], down_s: float, t0: float
) -> dict[str, Any]:
    """One fault, then recovery: the dead revived, the leases left to expire, ``recover``,
    the readiness probe, ``audit --verify``."""
    started = time.monotonic()
    record: dict[str, Any] = {"fault": name, "at_s": round(started - t0, 1)}
    record |= fault(soak, down_s)
    record["cleared_s"] = round(time.monotonic() - started, 2)
    record["revived"] = soak.revive()
    time.sleep(LEASE_TTL_S + 1)  # a dead holder's lease must expire before recover takes it
    code, out, seconds = soak.cli("recover")
    record["recover"] = {"exit": code, "seconds": seconds, "output": out[-600:]}
    record["ready"] = soak.ready()
    record["recovery_s"] = round(time.monotonic() - started, 2)
    code, out, seconds = soak.cli("audit", "--verify")
    record["verify"] = {"ok": code == 0, "seconds": seconds, "output": out[-800:]}
    return record


# -- the soak -----------------------------------------------------------------------------


def drain(soak: Soak, traffic: Traffic, limit_s: float) -> dict[str, Any]:
    """Approve what waits and recover every 30 s until no run is pending, running or waiting
    (or ``limit_s`` passed)."""
    import sqlalchemy as sa

    engine = sa.create_engine(soak.env["DRIFTPILOT_DB_URL"])
    started, last_recover = time.monotonic(), 0.0
    approved = 0
    left = -1
    try:
        with httpx.Client(timeout=30) as http:
            while time.monotonic() - started < limit_s:
                with engine.connect() as conn:
                    rows = conn.execute(sa.text(OPEN_RUNS)).all()
                left = len(rows)
                if not rows:
                    break
                for run_id, status in rows:
                    if status == "waiting_approval":
                        body = {"decision": "approve", "comment": "soak drain"}
                        r = traffic.call(
                            http,
                            "POST",
                            "POST /approvals/{id}",
                            f"/approvals/{run_id}",
                            "approver",
                            json=body,
                        )
                        approved += r is not None and r.status_code == 202
                if time.monotonic() - last_recover > 30:
                    soak.revive()
                    soak.cli("recover")
                    last_recover = time.monotonic()
                time.sleep(2)
    finally:
        engine.dispose()
    return {"seconds": round(time.monotonic() - started, 1), "approved": approved, "left": left}


def soak_run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.pg import start_postgres

    with ExitStack() as stack:
        server = stack.enter_context(start_postgres())
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        home = root / "home"
        disk = stack.enter_context(small_disk(home, args.disk_mb))
        policy = root / "policy.yaml"
        policy.write_text(yaml.safe_dump(POLICY))
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
        env |= ENV | {
            "DRIFTPILOT_HOME": str(home),
            "DRIFTPILOT_CACHE_DIR": str(root / "cache"),  # the dataset cache is not the quota's
            "DRIFTPILOT_DB_URL": server.create_database("soak_audit"),
            "DRIFTPILOT_OPTUNA_STORAGE": server.create_database("soak_optuna"),
            "DRIFTPILOT_POLICY_PATH": str(policy),
        }
        setup_started = time.monotonic()
        keys, months = prepare(root, home, env)
        logs = root / "logs"
        logs.mkdir()
        port = free_port()
        api = Service("api", ["serve", "--host", "127.0.0.1", "--port", str(port)], env, logs)
        workers = [
            Service(f"worker-{i}", ["worker", "--name", f"soak-{i}"], env, logs)
            for i in range(args.workers)
        ]
        soak = Soak(root, home, env, Postgres(server), api, port, workers, keys, disk)
        if args.logs is not None:  # after the services stopped (callbacks run in reverse)
            stack.callback(shutil.copytree, logs, args.logs, dirs_exist_ok=True)
        soak.start_api()
        stack.callback(_stop_all, soak)
        for worker in workers:
            worker.start()
        stop = threading.Event()
        supervisor = threading.Thread(target=soak.supervise, args=(stop,), name="soak-supervisor")
        supervisor.start()
        stack.callback(supervisor.join)
        stack.callback(stop.set)
        traffic = Traffic(
            soak.url,
            keys,
            MODELS,
            months,
            home / "inbox",
            create_schedule(soak),
            clients=args.clients,
        )
        setup_s = time.monotonic() - setup_started
        result = _timetable(soak, traffic, args)
        result["setup_s"] = round(setup_s, 1)
        result["drain"] = drain(soak, traffic, args.drain_s)
        code, out, seconds = soak.cli("audit", "--verify")
        result["final_verify"] = {"ok": code == 0, "seconds": seconds, "output": out[-800:]}
        result["checks"] = checks(soak, traffic.ledger, result)
        result["traffic"] = summarize(traffic.ledger)
        result["decisions_by_clients"] = dict(traffic.ledger.decisions)
        result["violations"] = traffic.ledger.violations[:20]
        result["client_errors"] = traffic.ledger.client_errors[:20]
        result["disk_quota"] = disk
        result["worker_restarts_by_supervisor"] = soak.restarts
        result["logs_tail"] = {s.name: s.tail(1500) for s in [api, *workers] if _errors(s)}
        return result


def _errors(service: Service) -> bool:
    return "Traceback" in service.tail(1_000_000)


def _stop_all(soak: Soak) -> None:
    for service in [soak.api, *soak.workers]:
        service.stop(timeout_s=60)


def _timetable(soak: Soak, traffic: Traffic, args: argparse.Namespace) -> dict[str, Any]:
    """Traffic for ``args.minutes``; the faults in turn at even intervals (at least one of
    each; one per ``args.every_s`` when the soak is long enough)."""
    total_s = args.minutes * 60
    count = max(len(FAULTS), int(total_s // args.every_s))
    slots = [total_s * (i + 1) / (count + 1) for i in range(count)]
    t0 = soak.t0 = time.monotonic()
    traffic.start()
    try:
        for i, at in enumerate(slots):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            name, fault = FAULTS[i % len(FAULTS)]
            record = inject(soak, name, fault, args.down_s, t0)
            soak.faults.append(record)
            print(json.dumps({k: record[k] for k in ("fault", "at_s", "recovery_s")}), flush=True)
            print(f"  verify ok: {record['verify']['ok']}", flush=True)
        time.sleep(max(0.0, t0 + total_s - time.monotonic()))
    finally:
        traffic.finish()
    return {"soak_s": round(time.monotonic() - t0, 1), "faults": soak.faults}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="Traffic time (faults in).")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=3, help="Client threads.")
    parser.add_argument("--disk-mb", type=int, default=256, help="The home's tmpfs size.")
    parser.add_argument("--down-s", type=float, default=15.0, help="PostgreSQL down, disk full.")
    parser.add_argument("--every-s", type=float, default=150.0, help="One fault per this.")
    parser.add_argument("--drain-s", type=float, default=600.0, help="Longest drain at the end.")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    parser.add_argument("--logs", type=Path, default=None, help="Copy the services' logs here.")
    args = parser.parse_args(argv)
    facts = machine() | {"note": MACHINE_NOTE}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = soak_run(args)
    payload = {
        "eval": "soak",
        "commit": git_commit(),
        "started_at": started,
        "minutes": args.minutes,
        "workers": args.workers,
        "clients": args.clients,
        "policy": POLICY,
        "env": ENV,
        **result,
        "machine": facts,
    }
    write_json(args.out, payload)
    print(json.dumps(payload["checks"], indent=1))
    print(f"wrote {args.out}")
    return 0 if payload["checks"]["all_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
