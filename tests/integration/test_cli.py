"""The CLI end to end: add a model, run a batch, approve from 'another shell', audit, tamper."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from driftpilot.cli import app
from driftpilot.settings import get_settings

pytestmark = pytest.mark.integration


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
    assert "waiting_approval" in ran and "driftpilot approve" in ran
    run_id = ran.split("run ", 1)[1].split(" ", 1)[0]
    assert run_id in ok("approvals")
    refused = cli.invoke(app, ["approve", run_id[:10], "--as", "ann"])
    assert refused.exit_code == 1 and "cannot approve" in refused.output
    approved = ok("approve", run_id[:10], "--as", "ben", "--comment", "summer model")
    assert "ben approved" in approved and "promoted" in approved
    assert "completed" in ok("runs")
    exported = [
        json.loads(line) for line in ok("audit", "--run", run_id, "--export", "jsonl").splitlines()
    ]
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

    db = sqlite3.connect(str(settings.home / "driftpilot.db"))
    db.execute("DROP TRIGGER decisions_no_update")
    db.execute("UPDATE decisions SET rationale = 'edited' WHERE id = 3")
    db.commit()
    broken = cli.invoke(app, ["audit", "--verify"], terminal_width=200)
    assert broken.exit_code == 1 and "decisions row 3" in broken.output
