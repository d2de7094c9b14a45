"""Benchmark of the read-only CLI, cold: each command in a fresh ``driftpilot`` process.

Over a temporary home with ``--runs`` synthetic control runs (each agent's tool calls and
decision in the audit chain, as a real run writes them; about 12 audit rows a run) and
``--waiting`` more waiting for approval, it times ``driftpilot --help``, ``runs``,
``approvals``, ``audit`` and ``audit --run PREFIX``: ``--repeats`` rounds, the commands
interleaved within a round so a burst of load on a shared machine spreads over all of them.
Each time runs from the process's start to its exit (so it includes the interpreter's
start-up and every import), stdout on a pipe as in a script, with the bytecode cached as
after ``pip install`` (an untimed first round fills a cache of the benchmark's own). The
CPU time the process used (user + system, of the reaped child) is recorded too: on a busy
machine it says what the command costs when the wall time does not.

Informational, not in the target: ``approvals --json``, which puts each waiting run's
checkpointed state in its JSON and so loads the control graph (LangGraph and the agents).

It prints a table, the target (each read-only command's median <= 1 s) met or missed with the
machine facts, and writes ``evals/results/bench_cli.json``. Target (issue 23): a read-only
command prints within 1 s on 2 cores.

    python -m evals.bench_cli [--repeats 9] [--runs 60] [--waiting 2]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from evals.common import (
    git_commit,
    machine,
    synthetic_decision,
    synthetic_tool_call,
    write_json,
)

RESULTS = Path(__file__).parent / "results"
DRIFTPILOT = Path(sys.executable).with_name("driftpilot")
TARGET_S = 1.0
AGENTS = {
    "ingestion": ["quality.check_batch", "data.batch_stats"],
    "drift_analyst": ["drift.data_drift", "evaluate.score_batch"],
    "optimizer": ["tune.run_study"],
    "retraining": ["train.train_model", "registry.register_model"],
    "evaluator": ["evaluate.compare"],
    "cicd": ["policy.assess_risk"],
}
OUTCOMES = ["no_retrain:none", "no_retrain:monitor", "promoted", "rejected:not_significant"]


@dataclass
class Home:
    path: Path
    run_ids: list[str]
    waiting: list[str]
    audit_rows: int


def _run_row(run_id: str, status: str, outcome: str | None, at: str) -> Any:
    from driftpilot.store.models import Run

    return Run(
        id=run_id,
        model="flights-bench",
        batch_id=f"2013-{int(run_id[-2:], 16) % 12 + 1:02d}",
        trigger="cli",
        requested_by="bench",
        status=status,
        outcome=outcome,
        summary="{}",
        created_at=at,
        updated_at=at,
    )


def _audit_rows(store: Any, run_id: str, rng: random.Random) -> int:
    """Each agent's tool calls and decision for ``run_id``; the rows written."""
    written = 0
    for agent, tools in AGENTS.items():
        for tool in tools:
            synthetic_tool_call(store, run_id, agent, tool, rng)
        synthetic_decision(store, run_id, agent, len(tools), rng)
        written += len(tools) + 1
    return written


def prepare(path: Path, runs: int, waiting: int, seed: int = 7) -> Home:
    """A home whose audit store holds ``runs`` ended runs and ``waiting`` newer ones waiting
    for approval (so ``runs`` and ``approvals`` show them), with their audit rows."""
    from driftpilot.store import AuditStore
    from driftpilot.store.audit import promotion_action
    from driftpilot.store.engine import now

    rng = random.Random(seed)
    store = AuditStore(f"sqlite:///{path / 'driftpilot.db'}")
    run_ids, held, rows = [], [], 0
    for i in range(runs + waiting):
        run_id = f"{rng.getrandbits(128):032x}"
        pending = i >= runs
        status, outcome = ("waiting_approval", None) if pending else ("completed", OUTCOMES[i % 4])
        store.add(_run_row(run_id, status, outcome, now()))
        rows += _audit_rows(store, run_id, rng)
        if pending:
            payload = {"description": f"Promote flights-bench v{i + 2} over v{i + 1}"}
            store.request_approval(
                run_id, "bench", payload, promotion_action("flights-bench", i + 2, i + 1)
            )
            held.append(run_id)
            rows += 1
        run_ids.append(run_id)
    store.engine.dispose()
    return Home(path, run_ids, held, rows)


def commands(home: Home) -> dict[str, list[str]]:
    """The read-only command lines timed (the target's), by name."""
    return {
        "--help": ["--help"],
        "runs": ["runs"],
        "approvals": ["approvals"],
        "audit": ["audit"],
        "audit --run": ["audit", "--run", home.run_ids[len(home.run_ids) // 2][:8]],
    }


INFORMATIONAL = {"approvals --json": ["approvals", "--json"]}


def cold(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """One fresh ``driftpilot`` process: its wall time and CPU time (user + system), s.

    Raises:
        RuntimeError: the command failed or printed nothing.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [str(DRIFTPILOT), *args], capture_output=True, env=env, timeout=120, check=False
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child is reaped: counted
    if done.returncode != 0 or not done.stdout:
        raise RuntimeError(f"driftpilot {' '.join(args)} failed: {done.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def summary(times: list[float]) -> dict[str, float]:
    return {
        "min": min(times),
        "median": statistics.median(times),
        "max": max(times),
    }


def measure(lines: dict[str, list[str]], repeats: int, env: dict[str, str]) -> dict[str, Any]:
    """``repeats`` rounds over ``lines`` (interleaved); per command the wall and CPU times."""
    wall: dict[str, list[float]] = {name: [] for name in lines}
    cpu: dict[str, list[float]] = {name: [] for name in lines}
    for _ in range(repeats):
        for name, args in lines.items():
            w, c = cold(args, env)
            wall[name].append(w)
            cpu[name].append(c)
    return {
        name: {
            "args": args,
            "wall_s": summary(wall[name]),
            "cpu_s": summary(cpu[name]),
            "wall_all_s": [round(t, 4) for t in wall[name]],
        }
        for name, args in lines.items()
    }


def python_start(repeats: int) -> float:
    """The median wall time of ``python -c pass``: the floor under every command."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def report(result: dict[str, Any], console: Console) -> None:
    table = Table("command", "wall min", "wall median", "wall max", "CPU median", "target")
    for name, row in {**result["commands"], **result["informational"]}.items():
        wall, cpu = row["wall_s"], row["cpu_s"]
        target = (
            ("met" if wall["median"] <= TARGET_S else "MISSED")
            if name in result["commands"]
            else "(info)"
        )
        table.add_row(
            name,
            f"{wall['min']:.3f}",
            f"{wall['median']:.3f}",
            f"{wall['max']:.3f}",
            f"{cpu['median']:.3f}",
            target,
        )
    console.print(table)
    m = result["machine"]
    console.print(
        f"python -c pass: {result['python_start_s']:.3f} s; {m['cores']} cores "
        f"({m['usable_cores']} usable), load {', '.join(f'{x:.2f}' for x in m['loadavg'])} "
        f"(after: {', '.join(f'{x:.2f}' for x in result['loadavg_after'])}); "
        f"Python {m['python']}; commit {result['commit']}"
    )
    busy = max(m["loadavg"][0], result["loadavg_after"][0]) / m["usable_cores"]
    if busy > 1:
        console.print(
            f"the machine was busy ({busy:.1f} runnable processes a core): a wall time includes "
            "waiting for a core; the CPU time is what the command itself cost"
        )
    verdict = "met" if result["target_met"] else "MISSED"
    console.print(
        f"target: every read-only command's median <= {TARGET_S:.0f} s cold: [bold]{verdict}[/] "
        f"(slowest median {result['slowest_median_s']:.3f} s)"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="Rounds over the commands.")
    parser.add_argument("--runs", type=int, default=60, help="Ended runs in the home.")
    parser.add_argument("--waiting", type=int, default=2, help="Runs waiting for approval.")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_cli.json")
    args = parser.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        home = prepare(Path(tmp), args.runs, args.waiting)
        # This home's own stores (no DRIFTPILOT_DB_URL from the shell); no COLUMNS: stdout
        # is a pipe, tables at their natural width, as in a script.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
        env = {**env, "DRIFTPILOT_HOME": tmp}
        env.pop("COLUMNS", None)
        # Bytecode cached, as after `pip install` (which compiles): in a cache of its own,
        # filled by an untimed first round, whatever the shell says (PYTHONDONTWRITEBYTECODE
        # would compile our modules on every start).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        measure({**commands(home), **INFORMATIONAL}, 1, env)
        facts = machine()
        timed = measure(commands(home), args.repeats, env)
        informational = measure(INFORMATIONAL, max(3, args.repeats // 3), env)
        start = python_start(args.repeats)
    slowest = max(row["wall_s"]["median"] for row in timed.values())
    result = {
        "commit": git_commit(),
        "machine": facts,
        "loadavg_after": os.getloadavg(),
        "home": {
            "runs": args.runs,
            "waiting": args.waiting,
            "audit_rows": home.audit_rows,
        },
        "repeats": args.repeats,
        "python_start_s": start,
        "target_s": TARGET_S,
        "commands": timed,
        "informational": informational,
        "slowest_median_s": slowest,
        "target_met": slowest <= TARGET_S,
    }
    report(result, console)
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
