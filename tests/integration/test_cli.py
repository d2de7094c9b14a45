"""The CLI end to end: add a model, run a batch, approve from 'another shell', audit, tamper."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from driftpilot.cli import app
from driftpilot.core.settings import get_settings
from driftpilot.runs.plane import ControlPlane

pytestmark = pytest.mark.integration
DRIFTPILOT = Path(sys.executable).with_name("driftpilot")


def piped(*args: str) -> str:
    """The installed CLI's stdout on a pipe, as a log or `| grep` gets it: no terminal and no
    COLUMNS, where rich would wrap at 80 columns."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run(
        [str(DRIFTPILOT), *args], capture_output=True, text=True, env=env, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def line_with(output: str, part: str) -> str:
    [line] = [line for line in output.splitlines() if part in line]
    return line


def test_cli_story(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "drift": {"retrain": "always"},
                "optimizer": {"default_trials": 3},
                "risk": {"min_gain_to_halfwidth": 1000.0},
            }
        )
    )
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(policy))
    get_settings.cache_clear()
    cli = CliRunner()

    def ok(*args: str) -> str:
        result = cli.invoke(app, list(args), terminal_width=200)
        assert result.exit_code == 0, result.output
        return result.output

    assert "champion v1" in ok(
        "model", "add", "fl", "--dataset", "flights", "--initial", "2013-01", "--by", "ann"
    )
    assert "fl" in ok("model", "list")
    ran = ok("run", "fl", "--from-dataset", "flights:2013-07", "--by", "ann")
    assert "waiting for approval" in ran and "driftpilot approve" in ran
    run_id = ran.split("run ", 1)[1].split(" ", 1)[0]
    assert run_id in ok("approvals")
    [waiting] = json.loads(ok("approvals", "--json"))
    assert (waiting["run_id"], waiting["status"], waiting["outcome"]) == (
        run_id,
        "waiting_approval",
        None,
    )
    assert waiting["approval_request"]["description"] in ran
    refused = cli.invoke(app, ["approve", run_id[:10], "--as", "ann"])
    assert refused.exit_code == 1 and "cannot approve" in refused.output
    approved = ok("approve", run_id[:10], "--as", "ben", "--comment", "summer model")
    assert "ben approved" in approved and "new champion promoted" in approved
    [listed] = json.loads(ok("runs", "--json"))  # machine names in JSON
    assert (listed["run_id"], listed["status"], listed["outcome"]) == (
        run_id,
        "completed",
        "promoted",
    )
    assert (listed["trigger"], listed["schedule_id"]) == ("cli", None)
    assert json.loads(ok("approvals", "--json")) == []
    assert [m["name"] for m in json.loads(ok("model", "list", "--json"))] == ["fl"]
    batches = json.loads(ok("data", "flights", "--json"))
    assert [b["batch_id"] for b in batches] == [f"2013-{m:02d}" for m in range(1, 13)]
    assert all(b["n_rows"] > 20_000 and 0 < b["target_rate"] < 1 for b in batches)
    added = cli.invoke(
        app, ["users", "add", "dee", "--role", "viewer", "--password-stdin"], "a long pw\n"
    )
    assert added.exit_code == 0, added.output
    [dee] = json.loads(ok("users", "list", "--json"))
    assert (dee["name"], dee["role"], dee["disabled"]) == ("dee", "viewer", False)
    secret = ok("keys", "create", "--name", "kay", "--role", "viewer").splitlines()[-1]
    keys = ok("keys", "list", "--json")
    [kay] = json.loads(keys)
    assert (kay["principal"], kay["role"], kay["revoked"]) == ("kay", "viewer", False)
    assert secret not in keys
    exported = [
        json.loads(line) for line in ok("audit", "--run", run_id, "--export", "jsonl").splitlines()
    ]
    assert json.loads(ok("audit", "--run", run_id[:8], "--json")) == exported  # a prefix will do
    assert {r["table"] for r in exported} == {
        "decisions",
        "tool_calls",
        "approvals",
        "champion_history",
        "mutations",
    }
    assert "audit verified" in ok("audit", "--verify")
    assert "nothing to recover" in ok("recover")
    signed = ok("audit", "checkpoint", "--export")
    assert signed.startswith("driftpilot/") and "\u2014 driftpilot-audit " in signed
    assert "verifier key: driftpilot-audit+" in ok("audit", "checkpoint")
    assert "v2 -> v1" in ok("rollback", "fl", "--as", "cy", "--reason", "ops complaint")
    assert_piped_tables_keep_one_row_per_line(run_id, exported)

    empty = tmp_path / "empty.csv"
    empty.write_text("year,month\n")
    assert "batch quarantined" in ok("run", "fl", "--batch", str(empty), "--by", "ann")
    prefix = shared_prefix([run_id], pl.read_csv(empty))
    for command in ("audit --run", "approve --as ben", "reject --as ben", "replay"):
        ambiguous = cli.invoke(app, [*command.split(), prefix])
        assert ambiguous.exit_code == 1, ambiguous.output
        assert f"error: several runs match {prefix!r}" in ambiguous.output

    db = sqlite3.connect(str(settings.home / "driftpilot.db"))
    db.execute("DROP TRIGGER decisions_no_update")
    db.execute("UPDATE decisions SET rationale = 'edited' WHERE id = 3")
    db.commit()
    broken = cli.invoke(app, ["audit", "--verify"], terminal_width=200)
    assert broken.exit_code == 1 and "decisions row 3" in broken.output


def shared_prefix(run_ids: list[str], batch: pl.DataFrame) -> str:
    """Queue runs (pending, never executed) until two ids share their first character (17
    hex ids must), and return it: a prefix of several runs."""
    plane = ControlPlane(get_settings())
    try:
        while len({i[0] for i in run_ids}) == len(run_ids):
            queued = plane.submit_run("fl", batch, "queued", multitask_strategy="enqueue")
            run_ids.append(queued.run_id)
    finally:
        plane.close()
    firsts = [i[0] for i in run_ids]
    return next(c for c in firsts if firsts.count(c) > 1)


def assert_piped_tables_keep_one_row_per_line(run_id: str, exported: list[dict[str, Any]]) -> None:
    """On a pipe, a table row is one line however long: the run's outcome and trigger in
    words beside its id, and the audit's longest rationale whole on its row."""
    row = line_with(piped("runs"), run_id[:12])
    assert "new champion promoted" in row and "command line" in row
    rationale = max((r.get("rationale") or "" for r in exported), key=len)
    rationale = " ".join(rationale.split())
    assert len(rationale) > 100  # rich wraps such a cell at 80 columns
    row = line_with(piped("audit", "--run", run_id[:8]), rationale)
    assert "decisions" in row and run_id[:12] in row, row
