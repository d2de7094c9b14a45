"""Throughput of procrastinate workers: runs per minute for 1 and 2 `driftpilot worker`s.

Over one PostgreSQL database (a throwaway server from Debian's binaries, as the tests start
it, unless ``--db-url`` names one) and one home, with four flights models, each phase queues
``--runs`` runs (round robin over the models, ``multitask_strategy`` ``enqueue``) for a set
of already running workers, and times from the first deferral to the last run's completion.
Worker start-up (imports, connecting) is outside the timing: a phase queues its runs once
every worker has registered.

Every run retrains and promotes (``retrain: always``, 3 Optuna trials, low-risk policy), on
1,500-row batches: a full control run, the heaviest there is. One run per model at a time:
with four models, two workers can both be busy all along. Each worker trains with one
thread (``DRIFTPILOT_THREADS``), so two workers on two cores is the expected ceiling.

It prints a table and writes ``evals/results/bench_workers.json`` with the machine it ran on.

    python -m evals.bench_workers [--runs 12] [--workers 1,2] [--db-url postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from rich.console import Console
from rich.table import Table

from evals.common import machine, write_json

RESULTS = Path(__file__).parent / "results"
DRIFTPILOT = str(Path(sys.executable).with_name("driftpilot"))
MODELS = ("m1", "m2", "m3", "m4")
POLICY = {
    "drift": {"retrain": "always"},
    "optimizer": {"default_trials": 3},
    "risk": {"min_gain_to_halfwidth": 0.0, "max_divergence": 1.0},
}
BATCH_ROWS = 1500
ENDED = ("completed", "failed", "waiting_approval")  # a high-risk promotion waits for a person


@contextmanager
def database(url: str | None) -> Iterator[tuple[str, str]]:
    """The audit database and Optuna's (its own: Optuna's alembic table would collide):
    ``url`` and a SQLite file in the home, or two new databases on a throwaway server
    (stopped and deleted at the end)."""
    if url:
        yield url, ""
        return
    from tests.pg import start_postgres

    with start_postgres() as server:
        yield server.create_database("bench_workers"), server.create_database("bench_optuna")


def environment(home: Path, url: str, optuna: str) -> dict[str, str]:
    policy = home.parent / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    return {
        **os.environ,
        "DRIFTPILOT_HOME": str(home),
        "DRIFTPILOT_DB_URL": url,
        "DRIFTPILOT_OPTUNA_STORAGE": optuna or f"sqlite:///{home / 'optuna.db'}",
        "DRIFTPILOT_POLICY_PATH": str(policy),
        "DRIFTPILOT_QUEUE_POLL_S": "0.5",
    }


def setup(env: dict[str, str]) -> tuple[Any, dict[str, pl.DataFrame]]:
    """The plane of the benchmark's home with the four models added; flights by month."""
    from driftpilot.core.settings import Settings
    from driftpilot.runs.plane import ControlPlane
    from driftpilot.stream import add_builtin_model
    from tools.data import split_batches
    from tools.datasets import FLIGHTS, flights

    os.environ.update({k: v for k, v in env.items() if k.startswith("DRIFTPILOT_")})
    settings = Settings().ensure_dirs()
    plane = ControlPlane(settings)
    frame = flights(settings)
    months = {
        b.info.batch_id: b.frame for b in split_batches(frame, FLIGHTS.time_col, every="month")
    }
    jan = months["2013-01"].sample(n=8000, seed=11).sort(FLIGHTS.time_col)
    for i, name in enumerate(MODELS):
        first = jan.slice(i * 2000, 2000).sort(FLIGHTS.time_col)
        add_builtin_model(plane, name, first, "flights", principal="bench")
    from driftpilot.execution.queue import Queue

    Queue(plane).ensure_schema()  # as a worker does at start (the phases count workers)
    return plane, months


def workers_alive(plane: Any) -> int:
    from sqlalchemy import text

    with plane.store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM procrastinate_workers")).scalar_one())


def start_workers(n: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i in range(n):
        log = (logs / f"worker-{n}-{i}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [DRIFTPILOT, "worker", "--name", f"bench-{n}-{i}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def phase(
    plane: Any, months: dict[str, pl.DataFrame], n_workers: int, runs: int, env: dict[str, str]
) -> dict[str, Any]:
    """Queue ``runs`` runs for ``n_workers`` registered workers; time until all complete."""
    from driftpilot.execution.queue import Queue
    from driftpilot.store.models import Run

    logs = Path(env["DRIFTPILOT_HOME"]).parent
    procs = start_workers(n_workers, env, logs)
    try:
        deadline = time.monotonic() + 120
        while workers_alive(plane) < n_workers:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"workers did not start; see {logs}")
            time.sleep(0.2)
        batches = []
        for k in range(runs):
            month = months[f"2013-{(k // len(MODELS)) % 10 + 2:02d}"]
            name = MODELS[k % len(MODELS)]
            frame = month.sample(n=BATCH_ROWS, seed=1000 * n_workers + k).sort("time_hour")
            batches.append((name, frame, f"{name}-w{n_workers}-{k}"))
        ids = []
        with Queue(plane).open() as queue:
            started = time.perf_counter()
            for name, frame, batch_id in batches:
                view = plane.submit_run(name, frame, batch_id, multitask_strategy="enqueue")
                queue.defer_run(view.run_id)
                ids.append(view.run_id)
            queued = time.perf_counter() - started
            while True:
                rows = plane.store.list_rows(Run, Run.id.in_(ids))
                if all(r.status in ENDED for r in rows):
                    break
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"a worker died; see {logs}")
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(120)
    outcomes: dict[str, int] = {}
    for r in rows:
        key = f"{r.status}:{r.outcome}"
        outcomes[key] = outcomes.get(key, 0) + 1
    return {
        "workers": n_workers,
        "runs": runs,
        "seconds": round(elapsed, 2),
        "queue_seconds": round(queued, 2),
        "runs_per_minute": round(runs / elapsed * 60, 2),
        "outcomes": outcomes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="Runs per phase.")
    parser.add_argument("--workers", default="1,2", help="Worker counts, one phase each.")
    parser.add_argument("--db-url", default=None, help="An empty PostgreSQL database.")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_workers.json")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    console = Console()
    with ExitStack() as stack:
        url, optuna = stack.enter_context(database(args.db_url))
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-workers-")))
        env = environment(home / "home", url, optuna)
        plane, months = setup(env)
        stack.callback(plane.close)
        phases = [phase(plane, months, n, args.runs, env) for n in counts]
    table = Table("workers", "runs", "seconds", "runs/min", "outcomes")
    for p in phases:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(p["outcomes"].items()))
        table.add_row(
            str(p["workers"]),
            str(p["runs"]),
            f"{p['seconds']:.1f}",
            str(p["runs_per_minute"]),
            outcomes,
        )
    console.print(table)
    if len(phases) > 1:
        speedup = phases[-1]["runs_per_minute"] / phases[0]["runs_per_minute"]
        console.print(f"speed-up {counts[-1]} vs {counts[0]} workers: {speedup:.2f}x")
    payload = {
        "benchmark": "bench_workers",
        "policy": POLICY,
        "batch_rows": BATCH_ROWS,
        "models": len(MODELS),
        "phases": phases,
        "machine": machine(),
    }
    write_json(args.out, payload)
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
