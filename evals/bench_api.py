"""Benchmark of the REST API over loopback HTTP (``driftpilot serve`` in a subprocess).

Over a temporary home with the flights model and about 10,000 audit rows (written through
``AuditStore.record_decision``/``record_tool_call`` for a few hundred synthetic runs), it
measures:

- audit queries (``GET /audit``) at a fixed arrival rate (default 200 requests/s for 10 s),
  one phase per query shape: by run, the first page of everything, and by table and agent.
  The load is open-loop: request *i* is due at ``t0 + i / rate`` whether or not earlier ones
  have answered, and its latency runs from that due time, not from when the client got round
  to sending it, so a server that falls behind shows it (no coordinated omission);
- run creation (``POST /runs``, a small built-in dataset batch, ``multitask_strategy``
  ``enqueue``), one request after the other, while the executor works through the queue;
- the first server-sent event of ``GET /runs/{id}/stream``.

It prints a table and writes ``evals/results/bench_api.json`` with the machine it ran on.
Targets (issue 7): audit query p99 <= 50 ms, run creation p99 <= 100 ms.

    python -m evals.bench_api [--rate 200] [--seconds 10] [--runs 50] [--streams 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import event

RESULTS = Path(__file__).parent / "results"
DRIFTPILOT = Path(sys.executable).with_name("driftpilot")
AGENTS = ["ingestion", "drift_analyst", "optimizer", "retraining", "evaluator", "cicd"]
TOOLS = {
    "ingestion": ["quality.check_batch", "data.batch_stats"],
    "drift_analyst": ["drift.data_drift", "evaluate.score_batch"],
    "optimizer": ["tune.run_study"],
    "retraining": ["train.train_model", "registry.register_model"],
    "evaluator": ["evaluate.compare"],
    "cicd": ["policy.assess_risk"],
}
TARGETS_MS = {"audit_query_p99": 50.0, "run_create_p99": 100.0}


# -- setup ----------------------------------------------------------------------------------------


def synthetic_runs(store: Any, rows: int, seed: int = 7) -> list[str]:
    """About ``rows`` audit rows for synthetic runs: per run, each agent's tool calls and
    its decision, like a real control run writes them. Returns the run ids."""
    rng = random.Random(seed)
    run_ids: list[str] = []
    written = 0
    while written < rows:
        run_id = f"bench{len(run_ids):05d}{rng.getrandbits(64):016x}"[:32]
        run_ids.append(run_id)
        for agent in AGENTS:
            for tool in TOOLS[agent]:
                if written >= rows:
                    break
                store.record_tool_call(
                    run_id,
                    agent,
                    tool,
                    {"batch": f"2013-{rng.randint(1, 12):02d}", "rows": rng.randint(500, 5000)},
                    {"ok": True, "share": round(rng.random(), 4)},
                    ok=True,
                    latency_ms=rng.uniform(1, 900),
                )
                written += 1
            if written >= rows:
                break
            store.record_decision(
                run_id,
                agent,
                rng.choice(["accept", "retrain", "monitor", "promote", "reject"]),
                f"{agent} decided on the evidence of {len(TOOLS[agent])} tool calls",
                {"drift_share": round(rng.random(), 4), "metric": "auc", "value": 0.7},
                backend="builtin",
                latency_ms=rng.uniform(1, 50),
            )
            written += 1
    return run_ids


@dataclass
class Home:
    path: Path
    admin_key: str
    run_ids: list[str]  # synthetic runs (audit rows only)
    ended_runs: list[str]  # real runs, cancelled before they started (for streams)
    audit_rows: int
    seed_s: float


def prepare(home: Path, rows: int, streams: int) -> Home:
    """The flights model with its first champion, the audit rows, an admin key, and
    ``streams`` real runs that were cancelled before they ran."""
    from driftpilot.service import ControlPlane
    from driftpilot.settings import Settings
    from tools.data import split_batches
    from tools.datasets import FLIGHTS, flights

    settings = Settings(home=home).ensure_dirs()
    frame = flights(settings)  # cached in the home: the server reads the parquet
    months = {
        b.info.batch_id: b.frame for b in split_batches(frame, FLIGHTS.time_col, every="month")
    }
    cp = ControlPlane(settings)
    cp.add_model(
        "flights",
        months["2013-01"].sample(n=4000, seed=1).sort(FLIGHTS.time_col),
        target=FLIGHTS.target,
        time_col=FLIGHTS.time_col,
        numeric=FLIGHTS.numeric,
        categorical=FLIGHTS.categorical,
        principal="bench",
    )
    # Seeding only: no fsync per appended row (the server opens its own connections later).
    event.listen(cp.store.engine, "connect", _no_fsync)
    cp.store.engine.dispose()
    start = time.perf_counter()
    run_ids = synthetic_runs(cp.store, rows)
    seed_s = time.perf_counter() - start
    ended = []
    for i in range(streams):
        batch = months["2013-02"].sample(n=200, seed=i).sort(FLIGHTS.time_col)
        view = cp.submit_run("flights", batch, f"2013-02-s{i}", requested_by="bench")
        ended.append(cp.cancel_run(view.run_id, "bench", "benchmark stream target").run_id)
    total = sum(1 for _ in cp.audit())
    key = cp.create_api_key("bench-admin", "admin")[1]
    cp.close()
    return Home(home, key, run_ids, ended, total, seed_s)


def _no_fsync(connection: Any, _record: Any) -> None:
    connection.execute("PRAGMA synchronous=OFF")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(home: Path, log: Path) -> Iterator[str]:
    """``driftpilot serve`` on a free loopback port over ``home``; yields its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
    env["DRIFTPILOT_HOME"] = str(home)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(DRIFTPILOT), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited:\n{log.read_text()[-4000:]}")
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start:\n{log.read_text()[-4000:]}")
                time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


# -- measurements ---------------------------------------------------------------------------------


def summary(latencies_s: list[float], errors: int = 0, **extra: Any) -> dict[str, Any]:
    """p50/p90/p99/max in ms (nearest-rank percentiles)."""
    ms = sorted(x * 1000 for x in latencies_s)

    def pct(p: float) -> float:
        return round(ms[max(0, math.ceil(p / 100 * len(ms)) - 1)], 2) if ms else math.nan

    return {
        "n": len(ms),
        "errors": errors,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(ms[-1], 2) if ms else math.nan,
        "mean_ms": round(sum(ms) / len(ms), 2) if ms else math.nan,
        **extra,
    }


async def open_loop(
    url: str, headers: dict[str, str], paths: Callable[[int], str], rate: float, seconds: float
) -> dict[str, Any]:
    """GET ``paths(i)`` at ``rate`` requests/s for ``seconds``; latency from the due time."""
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    late_sends: list[float] = []
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=60
    ) as client:
        await client.get(paths(0))  # one connection up before the clock starts
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2

        async def one(i: int) -> None:
            nonlocal errors
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            late_sends.append(loop.time() - due)
            try:
                response = await client.get(paths(i))
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(loop.time() - due)
            errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(total)))
        wall = time.perf_counter() - started
    late = sorted(late_sends)
    return summary(
        latencies,
        errors,
        rate_per_s=rate,
        seconds=seconds,
        achieved_per_s=round(total / wall, 1),
        client_send_lag_p99_ms=round(late[int(0.99 * (len(late) - 1))] * 1000, 2),
    )


def audit_shapes(run_ids: list[str]) -> dict[str, Callable[[int], str]]:
    rng = random.Random(3)
    picks = [rng.choice(run_ids) for _ in range(100_000)]
    return {
        "by_run": lambda i: f"/audit?run_id={picks[i % len(picks)]}&limit=100",
        "first_page": lambda i: "/audit?limit=50",
        "by_table_agent": lambda i: "/audit?table=decisions&agent=evaluator&limit=50",
    }


def run_creation(client: httpx.Client, n: int) -> tuple[dict[str, Any], list[str], float]:
    """``n`` runs created one after the other (distinct 500-row samples of a month)."""
    body = {
        "model": "flights",
        "multitask_strategy": "enqueue",
        "input": {"batch": {"dataset": "flights:2013-07", "max_rows": 500, "seed": 0}},
    }
    start = time.perf_counter()  # the first one loads the dataset into the server (cold)
    first = client.post("/runs", json=body)
    cold = time.perf_counter() - start
    first.raise_for_status()
    latencies, errors, ids = [], 0, [first.json()["run_id"]]
    for i in range(1, n + 1):
        body["input"]["batch"]["seed"] = i  # type: ignore[index]
        start = time.perf_counter()
        response = client.post("/runs", json=body)
        latencies.append(time.perf_counter() - start)
        if response.status_code == 202:
            ids.append(response.json()["run_id"])
        else:
            errors += 1
        time.sleep(0.05)
    return summary(latencies, errors, batch_rows=500), ids, cold


def first_event(client: httpx.Client, run_ids: list[str]) -> dict[str, Any]:
    """Time from sending ``GET /runs/{id}/stream`` to its first complete event."""
    latencies: list[float] = []
    errors = 0
    names: set[str] = set()
    for run_id in run_ids:
        start = time.perf_counter()
        with client.stream("GET", f"/runs/{run_id}/stream") as response:
            if response.status_code != 200:
                errors += 1
                continue
            name = None
            for line in response.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line == "" and name:
                    latencies.append(time.perf_counter() - start)
                    names.add(name)
                    break
    return summary(latencies, errors, first_events=sorted(names))


def machine() -> dict[str, Any]:
    packages = ["fastapi", "starlette", "uvicorn", "sse-starlette", "httpx", "sqlalchemy"]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in packages},
        "commit": commit,
    }


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="audit requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per audit phase")
    parser.add_argument("--rows", type=int, default=10_000, help="synthetic audit rows")
    parser.add_argument("--runs", type=int, default=50, help="runs created")
    parser.add_argument("--streams", type=int, default=50, help="streams opened")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_api.json")
    args = parser.parse_args(argv)
    console = Console()

    with tempfile.TemporaryDirectory(prefix="driftpilot-bench-api-") as tmp:
        console.print(f"preparing a home with {args.rows} audit rows ...")
        home = prepare(Path(tmp) / "home", args.rows, args.streams)
        console.print(
            f"{home.audit_rows} audit rows ({args.rows} synthetic, written in "
            f"{home.seed_s:.1f} s); serving ..."
        )
        headers = {"X-Api-Key": home.admin_key}
        results: dict[str, Any] = {"audit_query": {}}
        with serve(home.path, Path(tmp) / "serve.log") as url:
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                for path in ("/audit?limit=1", "/models", "/runs?limit=1"):  # warm up
                    client.get(path).raise_for_status()
                results["sse_first_event"] = first_event(client, home.ended_runs)
            for name, paths in audit_shapes(home.run_ids).items():
                console.print(f"audit query {name}: {args.rate:g}/s for {args.seconds:g} s ...")
                results["audit_query"][name] = asyncio.run(
                    open_loop(url, headers, paths, args.rate, args.seconds)
                )
            console.print(f"creating {args.runs} runs ...")
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                created, ids, cold = run_creation(client, args.runs)
                results["run_create"] = created | {"cold_first_ms": round(cold * 1000, 1)}
                results["sse_first_event_live"] = first_event(client, ids[:10])
                for run_id in ids:  # leave nothing to execute at shutdown
                    client.post(f"/runs/{run_id}/cancel")

    results |= {
        "audit_rows": home.audit_rows,
        "synthetic_runs": len(home.run_ids),
        "targets_ms": TARGETS_MS,
        "met": {
            "audit_query_p99": {
                k: v["p99_ms"] <= TARGETS_MS["audit_query_p99"]
                for k, v in results["audit_query"].items()
            },
            "run_create_p99": results["run_create"]["p99_ms"] <= TARGETS_MS["run_create_p99"],
        },
        "method": (
            "driftpilot serve (uvicorn, one process) on 127.0.0.1; audit queries open-loop at a "
            "fixed arrival rate (httpx.AsyncClient in the same machine), latency from each "
            "request's scheduled send time (no coordinated omission); run creation and streams "
            "one request at a time (httpx.Client)"
        ),
        "machine": machine(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(console, results)
    console.print(f"wrote {args.out}")
    return results


def print_table(console: Console, results: dict[str, Any]) -> None:
    table = Table(title=f"REST API on loopback ({results['audit_rows']} audit rows)")
    for column in ("measure", "n", "err", "p50 ms", "p90 ms", "p99 ms", "max ms", "target"):
        table.add_column(column, justify="left" if column == "measure" else "right")

    def row(label: str, r: dict[str, Any], target: float | None = None) -> None:
        mark = ""
        if target is not None:
            mark = f"{'✓' if r['p99_ms'] <= target else '✗'} p99≤{target:g}"
        table.add_row(
            label,
            str(r["n"]),
            str(r["errors"]),
            f"{r['p50_ms']:.1f}",
            f"{r['p90_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['max_ms']:.1f}",
            mark,
        )

    for name, r in results["audit_query"].items():
        row(f"GET /audit {name} @{r['rate_per_s']:g}/s", r, TARGETS_MS["audit_query_p99"])
    row("POST /runs (enqueue)", results["run_create"], TARGETS_MS["run_create_p99"])
    row("SSE first event (ended runs)", results["sse_first_event"])
    row("SSE first event (live runs)", results["sse_first_event_live"])
    console.print(table)


if __name__ == "__main__":
    main()
