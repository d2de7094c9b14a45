"""Crash drill: kill -9 a control run at each fault point, then ``recover``, on real flights.

For each point a fresh home gets a flights champion (January), a child process runs July
through the loop with ``DRIFTPILOT_FAULTS`` set and dies by SIGKILL at that point; after the
lease expires, ``ControlPlane.recover()`` finishes the run. Printed and written to
``evals/results/crash_recovery.json``: what recover found and did, the run's outcome, the
versions the run registered (must be one), MLflow's champion against the audit's, verify, and
the seconds recovery took.

    python -m evals.crash_recovery [--ttl 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from evals.common import write_json

RESULTS = Path(__file__).parent / "results"
POLICY = {
    "drift": {"retrain": "always"},
    "optimizer": {"default_trials": 3},
}
LOW, HIGH = (
    {"risk": {"min_gain_to_halfwidth": 0.0, "max_divergence": 1.0}},
    {"risk": {"min_gain_to_halfwidth": 1000.0}},
)
CHILD = """
import sys, polars as pl
from driftpilot.runs.plane import ControlPlane
cp = ControlPlane()
if sys.argv[1] == "run":
    cp.start_run("flights", pl.read_parquet(sys.argv[2]), "2013-07", requested_by="alice")
else:
    cp.decide(sys.argv[2], "approve", "bob")
"""
# (fault point, risk rules, what the child does)
DRILLS = [
    ("after_filing", LOW, "run"),
    ("after_register", LOW, "run"),
    ("after_alias", LOW, "run"),
    ("before_interrupt", HIGH, "run"),
    ("after_alias", HIGH, "decide"),
]


def _home(root: Path, name: str, risk: dict[str, Any], ttl: float) -> dict[str, str]:
    home = root / name
    home.mkdir()
    policy = home / "policy.yaml"
    policy.write_text(yaml.safe_dump({**POLICY, **risk}))
    return {
        "DRIFTPILOT_HOME": str(home),
        "DRIFTPILOT_POLICY_PATH": str(policy),
        "DRIFTPILOT_LEASE_TTL_S": str(ttl),
    }


def _plane(env: dict[str, str]) -> Any:
    from driftpilot.core import settings as settings_module
    from driftpilot.runs.plane import ControlPlane

    # The drill's home only: a DRIFTPILOT_DB_URL (or any store) the user set is not its.
    for name in [k for k in os.environ if k.startswith("DRIFTPILOT_") and k not in env]:
        del os.environ[name]
    os.environ.update(env)
    settings_module.get_settings.cache_clear()
    return ControlPlane(settings_module.get_settings())


def _kill(env: dict[str, str], fault: str, *args: str) -> int:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
    child_env = {**inherited, **env, "DRIFTPILOT_FAULTS": fault}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], env=child_env, capture_output=True, timeout=600
    )
    return done.returncode


def drill(
    root: Path,
    index: int,
    fault: str,
    risk: dict[str, Any],
    mode: str,
    ttl: float,
    data: dict[str, Any],
) -> dict[str, Any]:
    from driftpilot.store.models import ChampionChange, Run
    from driftpilot.stream import add_builtin_model
    from tools import registry

    env = _home(root, f"drill-{index}", risk, ttl)
    cp = _plane(env)
    add_builtin_model(cp, "flights", data["initial"], "flights", principal="alice")
    batch = root / f"july-{index}.parquet"
    data["july"].write_parquet(batch)
    if mode == "decide":  # reach the approval first, then kill the approved resume
        view = cp.start_run("flights", data["july"], "2013-07", requested_by="alice")
        code = _kill(env, fault, "decide", view.run_id)
    else:
        code = _kill(env, fault, "run", str(batch))
    [run] = cp.store.list_rows(Run, Run.trigger == "cli")
    left = run.status
    time.sleep(ttl + 0.5)
    started = time.perf_counter()
    reports = _plane(env).recover()
    seconds = time.perf_counter() - started
    versions = [
        v.version
        for v in registry.list_versions("flights", cp.settings)
        if v.tags.get("driftpilot.run_id") == run.id
    ]
    history = cp.store.list_rows(ChampionChange, order=ChampionChange.id)
    result = cp.verify()
    return {
        "fault": fault,
        "child": mode,
        "exit_code": code,
        "left_as": left,
        "recovered": [r.model_dump() for r in reports],
        "recover_s": round(seconds, 2),
        "versions_of_run": versions,
        "mlflow_champion": registry.current_champion("flights", cp.settings),
        "audit_champion": history[-1].version,
        "verify_ok": result.ok,
        "problems": result.problems,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttl", type=float, default=2.0, help="Lease time to live (s).")
    args = parser.parse_args()
    from tools.data import split_batches
    from tools.datasets import FLIGHTS, flights

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = _home(root, "data", {}, args.ttl)
        frame = flights(_plane(env).settings)
        months = {
            b.info.batch_id: b.frame for b in split_batches(frame, FLIGHTS.time_col, every="month")
        }
        data = {
            "initial": months["2013-01"].sample(n=9000, seed=7).sort("time_hour"),
            "july": months["2013-07"].sample(n=12000, seed=3).sort("time_hour"),
        }
        rows = [drill(root, i, *spec, args.ttl, data) for i, spec in enumerate(DRILLS)]
    _print(rows)
    out = RESULTS / "crash_recovery.json"
    write_json(out, {"at": datetime.now(UTC).isoformat(), "drills": rows})
    print(f"written {out}")


def _print(rows: list[dict[str, Any]]) -> None:
    table = Table(
        "kill point",
        "left as",
        "recover found",
        "recover did",
        "then",
        "versions",
        "champion mlflow/audit",
        "verify",
        "s",
    )
    for r in rows:
        for rec in r["recovered"]:
            table.add_row(
                f"{r['fault']} ({r['child']})",
                r["left_as"],
                rec["found"],
                rec["did"],
                f"{rec['status']} {rec['outcome'] or ''}",
                str(r["versions_of_run"]),
                f"v{r['mlflow_champion']} / v{r['audit_champion']}",
                "ok" if r["verify_ok"] else "; ".join(r["problems"]),
                str(r["recover_s"]),
            )
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
