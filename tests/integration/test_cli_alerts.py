"""The CLI delivers alerts too: a run started from the terminal that waits for approval posts
the webhook before the command exits (the API is not the only process that alerts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from driftpilot.alerts.webhooks import Webhooks, WebhookSpec
from driftpilot.cli import app
from driftpilot.core.settings import get_settings
from driftpilot.runs.plane import ControlPlane
from tests.conftest import add_flights
from tests.integration.test_alerts import Receiver
from tests.integration.test_control_graph import FORCE_RETRAIN, HIGH_RISK, merge

pytestmark = pytest.mark.integration


def test_a_cli_run_waiting_for_approval_posts_its_webhook(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    jan_sample: pl.DataFrame,
    months: dict[str, pl.DataFrame],
    settings: Any,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(merge(FORCE_RETRAIN, HIGH_RISK)))
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(policy))
    monkeypatch.setenv("DRIFTPILOT_ALERTS_ALLOW_HOSTS", "127.0.0.1")  # the receiver's
    get_settings.cache_clear()
    cp = ControlPlane(get_settings())
    add_flights(cp, jan_sample)
    receiver = Receiver()
    try:
        Webhooks(cp.store, cp.settings.alerts).add(
            "flights", WebhookSpec(url=f"{receiver.url}/ops", events=["approval_waiting"]), "ann"
        )
        batch = tmp_path / "july.parquet"
        months["2013-07"].sample(n=6000, seed=5).sort("time_hour").write_parquet(batch)
        result = CliRunner().invoke(app, ["run", "flights", "--batch", str(batch), "--by", "ann"])
        assert result.exit_code == 0, result.output
        assert "waiting for approval" in result.output
        [body] = receiver.bodies("/ops")  # delivered before the command returned
        assert body["event"] == "approval_waiting" and body["model"] == "flights"
    finally:
        receiver.close()
