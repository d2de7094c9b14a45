"""The CLI delivers alerts too: a run started from the terminal that waits for approval posts
the webhook before the command exits (the API is not the only process that alerts). The
webhook is made with ``driftpilot webhooks add`` (an internal host refused unless allowed; the
secret printed once, never listed), its secret rotated, and the receiver verifies the
delivery's signature with the rotated secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from driftpilot.alerts.webhooks import Webhooks, verify_signature
from driftpilot.cli import app
from driftpilot.core.settings import get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import ToolCall
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
    runner = CliRunner()
    try:
        refused = runner.invoke(
            app, ["webhooks", "add", "flights", "http://169.254.169.254/x", "--by", "ann"]
        )
        assert refused.exit_code == 1, refused.output
        assert "link-local (cloud metadata service)" in refused.output
        url = f"{receiver.url}/ops?token=t0ken"
        added = runner.invoke(
            app,
            ["webhooks", "add", "flights", url, "--by", "ann", "--event", "approval_waiting"],
        )
        assert added.exit_code == 0, added.output
        first = added.stdout.strip()  # stdout: the secret alone; the rest went to stderr
        assert len(first) >= 43 and "signing secret, shown once" in added.stderr
        [hook] = Webhooks(cp.store).of_model("flights")
        rotated = runner.invoke(
            app, ["webhooks", "rotate-secret", "flights", hook.webhook_id, "--by", "ann"]
        )
        assert rotated.exit_code == 0, rotated.output
        secret = rotated.stdout.strip()
        assert len(secret) >= 43 and secret != first
        listed = runner.invoke(app, ["webhooks", "list", "flights", "--json"])
        assert listed.exit_code == 0, listed.output
        assert [h["webhook_id"] for h in json.loads(listed.stdout)] == [hook.webhook_id]
        assert secret not in listed.output and first not in listed.output
        assert "t0ken" not in listed.output
        receiver.secrets["/ops"] = secret  # 401 unless signed with the rotated secret

        batch = tmp_path / "july.parquet"
        months["2013-07"].sample(n=6000, seed=5).sort("time_hour").write_parquet(batch)
        result = runner.invoke(app, ["run", "flights", "--batch", str(batch), "--by", "ann"])
        assert result.exit_code == 0, result.output
        assert "waiting for approval" in result.output
        [body] = receiver.bodies("/ops")  # delivered before the command returned
        assert body["event"] == "approval_waiting" and body["model"] == "flights"
        [(_, headers, raw)] = receiver.requests
        assert verify_signature(secret, headers["X-DriftPilot-Signature"], raw)
        assert not verify_signature(first, headers["X-DriftPilot-Signature"], raw)
        [posted] = cp.store.list_rows(ToolCall, ToolCall.tool == "webhook.post")
        assert json.loads(posted.result)["status"] == 200  # the receiver verified it
        audited = " ".join(c.args + c.result for c in cp.store.list_rows(ToolCall))
        assert secret not in audited and first not in audited and "t0ken" not in audited

        removed = runner.invoke(
            app, ["webhooks", "remove", "flights", hook.webhook_id, "--by", "ann"]
        )
        assert removed.exit_code == 0, removed.output
        assert Webhooks(cp.store).of_model("flights") == []
    finally:
        receiver.close()
