"""What every eval and benchmark records beside its numbers, written once.

``machine`` says where and on what the numbers were measured (cores, load, Python, the
versions of the libraries that do the work); ``write_json`` writes a results file
atomically. The runs' progress bar is ``driftpilot.stream.progress_bar`` (the demo shows
it too).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

# Versions recorded with every result: what the numbers depend on.
PACKAGES = (
    "polars",
    "pandas",
    "numpy",
    "evidently",
    "mlflow",
    "optuna",
    "lightgbm",
    "catboost",
    "langgraph",
    "langgraph-checkpoint-sqlite",
    "sqlalchemy",
    "pydantic",
)


def versions(packages: tuple[str, ...] | list[str]) -> dict[str, str | None]:
    """Each package's installed version (None if it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for package in packages:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def machine(packages: tuple[str, ...] | list[str] = PACKAGES) -> dict[str, Any]:
    """Where and on what the numbers were measured: cores (and those usable here), load,
    Python and the versions of ``packages``."""
    import polars as pl

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "polars_threads": pl.thread_pool_size(),
        "loadavg": os.getloadavg(),
        "versions": versions(packages),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def git_commit() -> str:
    """The short commit of the code that measured ('' outside a git work tree)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=False,
        )
    except OSError:
        return ""
    return done.stdout.strip()


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write results atomically (a reader never sees half a file); values JSON does not know
    (paths, times) are written as text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def synthetic_tool_call(store: Any, run_id: str, agent: str, tool: str, rng: Any) -> None:
    """One audited tool call shaped like a control run's (the API and CLI benchmarks' trails)."""
    store.record_tool_call(
        run_id,
        agent,
        tool,
        {"batch": f"2013-{rng.randint(1, 12):02d}", "rows": rng.randint(500, 5000)},
        {"ok": True, "share": round(rng.random(), 4)},
        ok=True,
        latency_ms=rng.uniform(1, 900),
    )


def synthetic_decision(
    store: Any, run_id: str, agent: str, n_tools: int, rng: Any, metric: str = "roc_auc"
) -> None:
    """One audited agent decision after ``n_tools`` tool calls (see ``synthetic_tool_call``)."""
    store.record_decision(
        run_id,
        agent,
        rng.choice(["accept", "retrain", "monitor", "promote", "reject"]),
        f"{agent} decided on the evidence of {n_tools} tool calls",
        {"drift_share": round(rng.random(), 4), "metric": metric, "value": 0.7},
        backend="builtin",
        latency_ms=rng.uniform(1, 50),
    )
