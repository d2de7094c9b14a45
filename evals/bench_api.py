"""Benchmark of the REST API over loopback HTTP (``driftpilot serve`` in a subprocess).

Over a temporary home with the flights model and about 10,000 audit rows (written through
``AuditStore.record_decision``/``record_tool_call`` for a few hundred synthetic runs), it
measures:

- audit queries (``GET /audit``) at a fixed arrival rate (default 200 requests/s for 10 s),
  one phase per query shape: by run, the first page of everything, and by table and agent;
  then queries by run at lower rates (5 s each) to show where the knee is. The load is
  open-loop: request *i* is due at ``t0 + i / rate`` whether or not earlier ones have
  answered, and its latency runs from that due time, not from when the client got round to
  sending it, so a server that falls behind shows it (no coordinated omission). The client
  is a minimal asyncio HTTP/1.1 client over keep-alive connections (cheap enough not to be
  the bottleneck); the server's CPU per request is read from /proc;
- run creation (``POST /runs``, a small built-in dataset batch, ``multitask_strategy``
  ``enqueue``), one request after the other, while the executor works through the queue:
  first beside the server's first run (first-run costs; with run processes, their spawning:
  ``driftpilot.execution.processes``), then steady, once that run stopped and the server
  and its children are idle again (the target is judged on both);
- the first server-sent event of ``GET /runs/{id}/stream``.

It prints a table and writes ``evals/results/bench_api.json`` with the machine it ran on.
Targets (issues 7 and 23): every audit query shape p99 <= 50 ms at 200 requests/s, run
creation p99 <= 100 ms; each is printed as met or missed. ``--run-processes 0`` runs the
server's runs in its threads (the default: ``api.run_processes`` child processes).
``--before`` puts an earlier results file (the same benchmark on an older commit) beside
this one's numbers.

    python -m evals.bench_api [--rate 200] [--seconds 10] [--runs 50] [--streams 50]
                              [--before evals/results/bench_api.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import event

from driftpilot.core.llm import free_port
from driftpilot.core.settings import ApiSettings
from evals.common import (
    git_commit,
    machine,
    synthetic_decision,
    synthetic_tool_call,
    write_json,
)

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
                synthetic_tool_call(store, run_id, agent, tool, rng)
                written += 1
            if written >= rows:
                break
            synthetic_decision(store, run_id, agent, len(TOOLS[agent]), rng, "auc")
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
    from driftpilot.runs.plane import ControlPlane
    from driftpilot.stream import add_builtin_model
    from evals.harness import eval_settings
    from tools.data import split_batches
    from tools.datasets import FLIGHTS, flights

    settings = eval_settings(home).ensure_dirs()
    frame = flights(settings)  # cached in the home: the server reads the parquet
    months = {
        b.info.batch_id: b.frame for b in split_batches(frame, FLIGHTS.time_col, every="month")
    }
    cp = ControlPlane(settings)
    first = months["2013-01"].sample(n=4000, seed=1).sort(FLIGHTS.time_col)
    add_builtin_model(cp, "flights", first, "flights", principal="bench")
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


@contextmanager
def serve(home: Path, log: Path, run_processes: int | None = None) -> Iterator[tuple[str, int]]:
    """``driftpilot serve`` on a free loopback port over ``home`` (``run_processes``: its
    ``api.run_processes``, None: the default); yields its base URL and process id."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
    env["DRIFTPILOT_HOME"] = str(home)
    if run_processes is not None:
        env["DRIFTPILOT_API_RUN_PROCESSES"] = str(run_processes)
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
            yield url, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def wait_idle(pid: int, *, quiet_s: float = 0.1, max_s: float = 180.0) -> float:
    """Wait until the server uses less than ``quiet_s`` CPU seconds per second, twice in a
    row: its start-up work (recovery, then the warm-up that builds the graph, imports what a
    run imports and freezes the heap) is done, and what follows measures the server as it
    serves, not as it starts. Returns the seconds waited (``max_s`` at most)."""
    start = time.monotonic()
    quiet = 0
    last = server_cpu_s(pid)
    while last is not None and quiet < 2 and time.monotonic() - start < max_s:
        time.sleep(1.0)
        now = server_cpu_s(pid)
        if now is None:
            break
        quiet = quiet + 1 if now - last < quiet_s else 0
        last = now
    return time.monotonic() - start


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


class Connection:
    """A keep-alive HTTP/1.1 connection that sends GETs and reads whole answers: a few
    tens of microseconds of client CPU per request (httpx spends ~2 ms, which on a 2-core
    machine would make the load generator the bottleneck)."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        lines = [f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
        self.head = "\r\n".join(lines) + "\r\n\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """The status of ``GET path`` (its body read and dropped)."""
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        writer.write(f"GET {path} HTTP/1.1\r\n{self.head}".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head[9:12])
        if b"transfer-encoding: chunked" in head:
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readuntil(b"\r\n")
        else:
            at = head.index(b"content-length:") + 15
            await reader.readexactly(int(head[at : head.index(b"\r\n", at)]))
        if b"connection: close" in head:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (None: gone, or not Linux)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (the server's run children), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        below = [child for child, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found


def server_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds so far of a process and its live descendants (the run
    children of the server: their start-up warm-up counts as the server's; Linux), None
    elsewhere."""
    fields = _stat(pid)
    if fields is None:
        return None
    total = int(fields[11]) + int(fields[12])
    for child in descendants(pid):
        if (below := _stat(child)) is not None:
            total += int(below[11]) + int(below[12])
    return total / os.sysconf("SC_CLK_TCK")


async def open_loop(
    url: str,
    headers: dict[str, str],
    paths: Callable[[int], str],
    rate: float,
    seconds: float,
    *,
    pid: int,
    connections: int = 64,
) -> dict[str, Any]:
    """GET ``paths(i)`` at ``rate`` requests/s for ``seconds`` over up to ``connections``
    keep-alive connections. Request *i* is due at ``t0 + i / rate``; its latency runs from
    then, so time spent waiting for a free connection or a busy server counts."""
    host, port = url.removeprefix("http://").split(":")
    total = int(rate * seconds)
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    latencies: list[float] = []
    waits: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()

    async def worker(conn: Connection) -> None:
        nonlocal errors
        while (item := await queue.get()) is not None:
            i, due = item
            waits.append(loop.time() - due)
            try:
                ok = await conn.get(paths(i)) == 200
            except (OSError, asyncio.IncompleteReadError, ValueError):
                ok = False
                await conn.close()
            latencies.append(loop.time() - due)
            errors += not ok
        await conn.close()

    pool = [Connection(host, int(port), headers) for _ in range(connections)]
    for conn in pool:  # connected before the clock starts
        await conn.get(paths(0))
    cpu_before = server_cpu_s(pid)
    workers = [asyncio.create_task(worker(conn)) for conn in pool]
    t0 = loop.time() + 0.1
    for i in range(total):
        due = t0 + i / rate
        if (delay := due - loop.time()) > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, due))
    for _ in pool:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    wall = loop.time() - t0
    cpu_after = server_cpu_s(pid)
    cpu = None
    if cpu_before is not None and cpu_after is not None:
        cpu = round((cpu_after - cpu_before) / total * 1000, 2)
    waits.sort()
    return summary(
        latencies,
        errors,
        rate_per_s=rate,
        seconds=seconds,
        connections=connections,
        achieved_per_s=round(total / wall, 1),
        server_cpu_ms_per_request=cpu,
        send_wait_p99_ms=round(waits[math.ceil(0.99 * len(waits)) - 1] * 1000, 2),
    )


def audit_shapes(run_ids: list[str]) -> dict[str, Callable[[int], str]]:
    rng = random.Random(3)
    picks = [rng.choice(run_ids) for _ in range(100_000)]
    return {
        "by_run": lambda i: f"/audit?run_id={picks[i % len(picks)]}&limit=100",
        "first_page": lambda i: "/audit?limit=50",
        "by_table_agent": lambda i: "/audit?table=decisions&agent=evaluator&limit=50",
        "by_agent": lambda i: "/audit?agent=cicd&limit=50",
        "by_model": lambda i: "/audit?model=flights&limit=50",
    }


def stopped(client: httpx.Client, run_id: str, max_s: float = 300.0) -> str:
    """Wait until the run has stopped (ended, or waits for a person); its status."""
    deadline = time.monotonic() + max_s
    while True:
        status = str(client.get(f"/runs/{run_id}").raise_for_status().json()["status"])
        if status not in ("pending", "running") or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


RUN_BODY: dict[str, Any] = {
    "model": "flights",
    "multitask_strategy": "enqueue",
    "input": {"batch": {"dataset": "flights:2013-07", "max_rows": 500, "seed": 0}},
}


def create_runs(client: httpx.Client, seeds: range) -> tuple[dict[str, Any], list[str]]:
    """One run per seed (distinct 500-row samples of a month), one after the other, 50 ms
    apart: their latency summary and the created run ids."""
    latencies, errors, ids = [], 0, []
    for seed in seeds:
        body = {**RUN_BODY, "input": {"batch": {**RUN_BODY["input"]["batch"], "seed": seed}}}
        start = time.perf_counter()
        response = client.post("/runs", json=body)
        latencies.append(time.perf_counter() - start)
        if response.status_code == 202:
            ids.append(response.json()["run_id"])
        else:
            errors += 1
        time.sleep(0.05)
    return summary(latencies, errors, batch_rows=500), ids


def run_creation(client: httpx.Client, n: int, pid: int) -> dict[str, Any]:
    """Run creation in two phases of ``n`` runs each, after a first (cold) request that
    loads the dataset into the server:

    - ``first``: at once, while the executor runs the server's first run (its first-run
      costs, and with run processes their spawning and imports); measured so since issue 23;
    - ``steady``: once those runs stopped or were cancelled and the server (with its run
      processes) is idle again, while the executor runs the first of the new ones.

    Returns both summaries, the cold request's ms, the settling s and every run id."""
    start = time.perf_counter()
    cold = client.post("/runs", json=RUN_BODY)
    cold_ms = (time.perf_counter() - start) * 1000
    cold.raise_for_status()
    first, ids = create_runs(client, range(1, n + 1))
    ids.insert(0, cold.json()["run_id"])
    for run_id in ids:  # the queue behind the first run: cancelled (a running one answers 409)
        client.post(f"/runs/{run_id}/cancel")
    for run_id in ids:
        stopped(client, run_id)
    settled = wait_idle(pid)
    steady, more = create_runs(client, range(n + 1, 2 * n + 1))
    return {
        "first": first,
        "steady": steady,
        "cold_first_ms": round(cold_ms, 1),
        "settled_s": round(settled, 1),
        "ids": ids + more,
    }


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


# What the API's numbers depend on, recorded with the machine's facts.
PACKAGES = ("fastapi", "starlette", "uvicorn", "sse-starlette", "httpx", "sqlalchemy")


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="audit requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="per audit phase")
    parser.add_argument(
        "--sweep",
        default="50,100,150",
        help="lower rates (comma-separated, 5 s each) for queries by run: where the knee is",
    )
    parser.add_argument("--rows", type=int, default=10_000, help="synthetic audit rows")
    parser.add_argument("--runs", type=int, default=50, help="runs created")
    parser.add_argument("--streams", type=int, default=50, help="streams opened")
    parser.add_argument(
        "--run-processes",
        type=int,
        default=None,
        help="the server's api.run_processes (0: runs in its threads; default: the setting's)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_api.json")
    parser.add_argument(
        "--before", type=Path, default=None, help="an earlier results file to compare with"
    )
    args = parser.parse_args(argv)
    before = json.loads(args.before.read_text()) if args.before is not None else None
    console = Console()
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="driftpilot-bench-api-") as tmp:
        console.print(f"preparing a home with {args.rows} audit rows ...")
        home = prepare(Path(tmp) / "home", args.rows, args.streams)
        console.print(
            f"{home.audit_rows} audit rows ({args.rows} synthetic, written in "
            f"{home.seed_s:.1f} s); serving ..."
        )
        headers = {"X-Api-Key": home.admin_key}
        results: dict[str, Any] = {"audit_query": {}, "audit_query_by_run_sweep": []}
        with serve(home.path, Path(tmp) / "serve.log", args.run_processes) as (url, pid):
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                for path in ("/audit?limit=1", "/models", "/runs?limit=1"):  # warm up
                    client.get(path).raise_for_status()
                results["server_start_settled_s"] = round(wait_idle(pid), 1)
                results["sse_first_event"] = first_event(client, home.ended_runs)
            shapes = audit_shapes(home.run_ids)
            for name, paths in shapes.items():
                console.print(f"audit query {name}: {args.rate:g}/s for {args.seconds:g} s ...")
                results["audit_query"][name] = asyncio.run(
                    open_loop(url, headers, paths, args.rate, args.seconds, pid=pid)
                )
            for rate in [float(r) for r in args.sweep.split(",") if r.strip()]:
                console.print(f"audit query by_run: {rate:g}/s for 5 s ...")
                point = asyncio.run(open_loop(url, headers, shapes["by_run"], rate, 5, pid=pid))
                results["audit_query_by_run_sweep"].append(point)
            console.print(f"creating {args.runs} runs ...")
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                created = run_creation(client, args.runs, pid)
                ids = created["ids"][-args.runs :]
                results["run_create"] = created["steady"] | {
                    "cold_first_ms": created["cold_first_ms"],
                    "settled_after_first_s": created["settled_s"],
                }
                results["run_create_beside_first_run"] = created["first"]
                results["sse_first_event_live"] = first_event(client, ids[:10])
                for run_id in ids:  # leave nothing to execute at shutdown
                    client.post(f"/runs/{run_id}/cancel")

    results |= {
        "audit_rows": home.audit_rows,
        "run_processes": (
            ApiSettings().run_processes if args.run_processes is None else args.run_processes
        ),
        "synthetic_runs": len(home.run_ids),
        "targets_ms": TARGETS_MS,
        "met": {
            "audit_query_p99": {
                k: v["p99_ms"] <= TARGETS_MS["audit_query_p99"]
                for k, v in results["audit_query"].items()
            },
            "run_create_p99": results["run_create"]["p99_ms"] <= TARGETS_MS["run_create_p99"],
            "run_create_beside_first_run_p99": (
                results["run_create_beside_first_run"]["p99_ms"] <= TARGETS_MS["run_create_p99"]
            ),
        },
        "method": (
            "driftpilot serve (uvicorn, one process) on 127.0.0.1 over a temporary home. Audit "
            "queries: open loop at a fixed arrival rate over up to 64 keep-alive connections "
            "(a minimal asyncio HTTP/1.1 client on the same machine); each latency runs from "
            "the request's scheduled send time, so queueing in the client or the server "
            "counts (no coordinated omission). Server CPU per request from /proc. Measured "
            "once the server is idle after its start (recovery and warm-up done: "
            "server_start_settled_s). Run creation and streams: one request at a time "
            "(httpx.Client), while the executor runs the first created run and the rest wait for "
            "the model (enqueue): run_create once a first run executed and the server (with "
            "its run processes) is idle again; run_create_beside_first_run right after the "
            "server's first (cold) request, beside its first run (as measured before)."
        ),
        "machine": machine(PACKAGES)
        | {"commit": git_commit(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if before is not None:
        results["before"] = compared(before)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, results)
    print_table(console, results)
    print_targets(console, results)
    console.print(f"wrote {args.out}")
    return results


def compared(before: dict[str, Any]) -> dict[str, Any]:
    """The p50/p99 and server CPU of an earlier results file, with its commit and load."""
    keep = ("p50_ms", "p99_ms", "server_cpu_ms_per_request")
    return {
        "commit": before["machine"]["commit"],
        "at": before.get("at"),
        "loadavg_before": before["machine"].get("loadavg_before"),
        "audit_query": {
            name: {k: r[k] for k in keep if k in r} for name, r in before["audit_query"].items()
        },
    } | _run_create_before(before, keep)


def _run_create_before(before: dict[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
    """An earlier file's run creation; before the steady phase existed, its ``run_create``
    was measured beside the server's first run."""
    split = "run_create_beside_first_run" in before
    first = before["run_create_beside_first_run"] if split else before["run_create"]
    found = {"run_create_beside_first_run": {k: first[k] for k in keep if k in first}}
    if split:
        steady = before["run_create"]
        found["run_create"] = {k: steady[k] for k in keep if k in steady}
    return found


def print_targets(console: Console, results: dict[str, Any]) -> None:
    """Each target, met or missed, with the earlier p99 when there is one, and the machine's
    load (other work on it delays the server as much as its own)."""
    earlier = results.get("before", {})
    checks: list[tuple[str, float, float, tuple[str, ...]]] = [
        (
            f"GET /audit {name} p99",
            r["p99_ms"],
            TARGETS_MS["audit_query_p99"],
            ("audit_query", name),
        )
        for name, r in results["audit_query"].items()
    ]
    checks.append(
        (
            "POST /runs p99",
            results["run_create"]["p99_ms"],
            TARGETS_MS["run_create_p99"],
            ("run_create",),
        )
    )
    if "run_create_beside_first_run" in results:
        checks.append(
            (
                "POST /runs beside the server's first run p99",
                results["run_create_beside_first_run"]["p99_ms"],
                TARGETS_MS["run_create_p99"],
                ("run_create_beside_first_run",),
            )
        )
    for label, p99, target, where in checks:
        was = earlier
        for part in where:
            was = was.get(part, {})
        then = f" (before: {was['p99_ms']:g} ms)" if "p99_ms" in was else ""
        verdict = "[green]met[/]" if p99 <= target else "[red]missed[/]"
        console.print(f"{label} {p99:g} ms <= {target:g} ms: {verdict}{then}")
    machine_facts = results["machine"]
    console.print(
        f"load average before/after: {machine_facts['loadavg_before'][0]:.2f}/"
        f"{machine_facts['loadavg_after'][0]:.2f} on {machine_facts['cores']} cores"
    )


def print_table(console: Console, results: dict[str, Any]) -> None:
    table = Table(title=f"REST API on loopback ({results['audit_rows']} audit rows)")
    columns = ("measure", "n", "err", "p50 ms", "p90 ms", "p99 ms", "max ms", "cpu ms", "target")
    for column in columns:
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
            f"{r['server_cpu_ms_per_request']}" if "server_cpu_ms_per_request" in r else "",
            mark,
        )

    for name, r in results["audit_query"].items():
        row(f"GET /audit {name} @{r['rate_per_s']:g}/s", r, TARGETS_MS["audit_query_p99"])
    for r in results["audit_query_by_run_sweep"]:
        row(f"GET /audit by_run @{r['rate_per_s']:g}/s (5 s)", r, TARGETS_MS["audit_query_p99"])
    row("POST /runs (enqueue)", results["run_create"], TARGETS_MS["run_create_p99"])
    row(
        "POST /runs beside the first run",
        results["run_create_beside_first_run"],
        TARGETS_MS["run_create_p99"],
    )
    row("SSE first event (ended runs)", results["sse_first_event"])
    row("SSE first event (live runs)", results["sse_first_event_live"])
    console.print(table)


if __name__ == "__main__":
    main()
