"""The read-only commands import no heavy library: ``driftpilot runs``, ``approvals``,
``audit`` and ``--help`` print within a second (issue 23; the timings are measured by
``evals/bench_cli.py``, not here). Each check runs a fresh interpreter: in this one, other
tests have imported everything already."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from driftpilot.store import AuditStore
from driftpilot.store.audit import promotion_action
from driftpilot.store.engine import now
from driftpilot.store.models import Run

# What takes a read-only command from a tenth of a second to seconds: the ML and data stack,
# LangGraph, the servers, Alembic (the schema is checked with one query), and our own
# layers that import them (agents, tools, the control graph, the plane). Not pygments: typer's
# help loads rich.markdown, and with it pygments' name tables (a few milliseconds).
HEAVY = (
    "agents",
    "alembic",
    "catboost",
    "chainlit",
    "ctgan",
    "driftpilot.runs.plane",
    "evidently",
    "fastapi",
    "graphs.control",
    "langchain_core",
    "langgraph",
    "langsmith",
    "lightgbm",
    "mlflow",
    "numpy",
    "optuna",
    "pandas",
    "polars",
    "procrastinate",
    "pyarrow",
    "scipy",
    "sklearn",
    "tools",
    "torch",
    "uvicorn",
)

# Runs each command line in one interpreter, as `driftpilot ...` would, and writes the
# modules loaded after importing the app and after each command to the file argv[1] names.
DRIVER = """
import json, sys
from driftpilot.cli import app
loaded = {"import driftpilot.cli": sorted(sys.modules)}
for args in json.loads(sys.argv[2]):
    try:
        app(args, prog_name="driftpilot")
    except SystemExit as done:
        if done.code:
            raise
    loaded[" ".join(args)] = sorted(sys.modules)
with open(sys.argv[1], "w") as out:
    json.dump(loaded, out)
"""

READ_ONLY = [
    ["--help"],
    ["runs", "--help"],
    ["audit", "--help"],
    ["runs"],
    ["approvals"],
    ["audit"],
    ["audit", "--run", "a1b2"],
    ["audit", "--export", "jsonl"],
    ["audit", "checkpoint"],
]


def heavy_in(modules: list[str]) -> list[str]:
    """The modules of ``modules`` that are, or are inside, a heavy package."""
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def run_commands(commands: list[list[str]], tmp_path: Path) -> tuple[dict[str, Any], str]:
    """The modules loaded after each command (a fresh interpreter), and what it printed."""
    record = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(record), json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(record.read_text()), done.stdout


def waiting_run(settings: Any) -> str:
    """A run waiting for approval in the test's home (its audit store migrated), its id."""
    store = AuditStore(settings.db_url)
    run_id = "a1b2" + "0" * 28
    at = now()
    store.add(
        Run(
            id=run_id,
            model="m",
            batch_id="2013-07",
            trigger="cli",
            requested_by="ann",
            status="waiting_approval",
            outcome=None,
            summary="{}",
            created_at=at,
            updated_at=at,
        )
    )
    payload = {"description": "Promote m v2 over v1"}
    store.request_approval(run_id, "ann", payload, promotion_action("m", 2, 1))
    store.engine.dispose()
    return run_id


def test_read_only_commands_import_no_heavy_library(settings: Any, tmp_path: Path) -> None:
    run_id = waiting_run(settings)
    loaded, printed = run_commands(READ_ONLY, tmp_path)
    assert run_id in printed and "Promote m v2 over v1" in printed  # the waiting run is shown
    assert list(loaded) == ["import driftpilot.cli", *(" ".join(c) for c in READ_ONLY)]
    for step, modules in loaded.items():
        assert heavy_in(modules) == [], f"after {step!r}"


def test_the_guard_sees_a_heavy_import(settings: Any, tmp_path: Path) -> None:
    """A command that needs the plane (a run's checkpointed state, for --json) loads what the
    guard looks for: the check above can fail."""
    waiting_run(settings)
    loaded, _ = run_commands([["approvals", "--json"]], tmp_path)
    assert heavy_in(loaded["import driftpilot.cli"]) == []
    assert {"langgraph", "numpy", "driftpilot.runs.plane"} <= set(loaded["approvals --json"])
