"""A run's drift episode where people read it: the CLI's runs table and run line, the API's
run, the chat's run reply and the webhook's text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from api.schemas import Run as ApiRun
from driftpilot.alerts.webhooks import WebhookSpec
from driftpilot.alerts.webhooks import summary as alert_text
from driftpilot.cli import app
from driftpilot.cli.common import _episode_lines
from driftpilot.core.episodes import episode_for
from driftpilot.runs.views import PlaneEvent, RunView
from driftpilot.store import AuditStore
from driftpilot.store.engine import now
from driftpilot.store.models import Run
from ui import markup
from ui.replies import episode_lines

SEVERE = {"action": "monitor", "significant_drop": True, "metric_drop": 0.2, "metric_drop_low": 0.1}


def lost(run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "drift": {**SEVERE, "action": "retrain"},
        "retraining": {"family": "lightgbm", "kind": "retrain"},
        "evaluation": {"action": "reject", "gain": -0.29, "ci_low": -0.41, "metric": "roc_auc"},
    }


def escalating_run() -> dict[str, Any]:
    """The summary of the run whose challenger was the second to lose: its episode was
    retrying 1/2 at the drift decision and ends escalated 2/2."""
    past = [lost("r1")]
    run = lost("r2")
    stored = episode_for(past, SEVERE)
    assert stored is not None and stored.state == "retrying"
    run["drift"]["episode"] = stored.model_dump(mode="json")
    run.pop("run_id")  # the control graph's summaries hold only the slices
    return run


def view(summary: dict[str, Any], run_id: str = "e" * 32) -> RunView:
    return RunView(
        run_id=run_id,
        model="m",
        batch_id="2013-07",
        status="completed",
        outcome="rejected",
        requested_by="ann",
        created_at=now(),
        summary=summary,
    )


def test_the_runs_table_has_an_episode_column(settings: Any) -> None:
    store = AuditStore(settings.db_url)
    for run_id, summary in (("a" * 32, escalating_run()), ("b" * 32, {"drift": {}})):
        at = now()
        store.add(
            Run(
                id=run_id,
                model="m",
                batch_id="2013-07",
                trigger="cli",
                requested_by="ann",
                status="completed",
                outcome="rejected",
                summary=json.dumps(summary),
                created_at=at,
                updated_at=at,
            )
        )
    store.engine.dispose()
    printed = CliRunner().invoke(app, ["runs"], terminal_width=250)
    assert printed.exit_code == 0, printed.output
    header = next(line for line in printed.output.splitlines() if "requested by" in line)
    assert "episode" in header
    rows = {line[2:4]: line for line in printed.output.splitlines() if line[2:4] in ("aa", "bb")}
    assert set(rows) == {"aa", "bb"}
    assert "escalated 2/2" in rows["aa"] and "/2" not in rows["bb"]


def test_a_run_line_prints_the_diagnosis_when_escalated() -> None:
    lines = _episode_lines(escalating_run(), "r2")
    assert lines[0] == "episode r1: escalated 2/2 (2 batches)"
    assert "escalated: 2 of 2 challengers lost" in lines[-1] and "gain -0.290 roc_auc" in lines[-1]
    assert "in run r1: rejected" in lines[-1] and "in run r2: rejected" in lines[-1]
    retrying = {"drift": {**SEVERE, "episode": lost("r1") | {"id": "r1", "state": "retrying"}}}
    assert not any("escalated" in line for line in _episode_lines(retrying))
    assert _episode_lines({"drift": SEVERE}) == []


def test_the_api_run_carries_the_episode() -> None:
    shown = ApiRun.of(view(escalating_run()))
    assert shown.episode is not None
    assert (shown.episode.state, shown.episode.failed_retrains, shown.episode.id) == (
        "escalated",
        2,
        "r1",
    )
    assert shown.episode.diagnosis and "interval lower bound -0.410" in shown.episode.diagnosis
    assert ApiRun.of(view({"drift": SEVERE})).episode is None
    documented = ApiRun.model_json_schema()
    assert "episode" in documented["properties"]


def test_the_chat_says_it_as_text() -> None:
    summary = escalating_run()
    summary["drift"]["episode"]["id"] = "r1*[x](y)"  # data never becomes markup
    lines = episode_lines(summary)
    said = markup.plain("\n".join(lines))
    assert "Drift episode r1*[x](y): escalated 2/2" in said
    assert "Escalated: 2 of 2 challengers lost in 2 batches" in said
    assert episode_lines({}) == []


def test_escalations_are_an_alert_kind() -> None:
    assert WebhookSpec(url="https://example.org/h", events=["episode_escalated"]).events == [
        "episode_escalated"
    ]
    # PlaneEvent's kinds gain it in driftpilot.runs.views; built as the dispatcher gets it
    fields: dict[str, Any] = {"kind": "episode_escalated", "model": "m", "run_id": "r2"}
    event = PlaneEvent.model_construct(**fields, detail={"diagnosis": "2 of 2 lost"}, at="")
    said = "DriftPilot: m escalated a drift episode: retrains held (run r2): 2 of 2 lost"
    assert alert_text(event) == said


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_retrain_request_needs_a_reason(reason: str) -> None:
    done = CliRunner().invoke(app, ["run", "m", "--retrain", reason])
    assert done.exit_code == 2 and "say why" in done.output


def test_what_lifted_the_hold_is_said_after_the_retrain_lost_again() -> None:
    past = [lost("r1"), lost("r2")]
    stored = episode_for(past, SEVERE, requested_by="ann")
    assert stored is not None and stored.state == "retrying"
    run = lost("r3")
    run["drift"]["episode"] = stored.model_dump(mode="json")
    lines = _episode_lines(run)
    assert lines[0] == "episode r1: escalated 3/2 (3 batches)"
    assert lines[1] == "  evidence changed: ann asked for a retrain"
    assert "Evidence changed: ann asked for a retrain." in markup.plain(
        "\n".join(episode_lines(run))
    )


class _Plane:
    """A stand-in for the control plane: records the run asked for, returns a finished one."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self.summary = summary
        self.asked: dict[str, Any] = {}

    def model_view(self, model: str) -> None:
        return None

    def start_run(self, model: str, batch: Any, batch_id: str, **kw: Any) -> RunView:
        self.asked = {"model": model, "batch_id": batch_id, **kw}
        return view(self.summary)


def test_run_retrain_asks_the_plane_and_prints_the_episode(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from contextlib import nullcontext

    from driftpilot.cli import runs

    batch = tmp_path / "b7.csv"
    batch.write_text("x,y\n1,0\n")
    plane = _Plane(escalating_run())
    monkeypatch.setattr(runs, "_plane", lambda: plane)
    monkeypatch.setattr(runs, "_alerting", lambda _plane: nullcontext())
    args = ["run", "m", "--batch", str(batch), "--by", "ann", "--retrain", "new pricing"]
    done = CliRunner().invoke(app, args, terminal_width=300)
    assert done.exit_code == 0, done.output
    assert plane.asked["retrain_reason"] == "new pricing" and plane.asked["requested_by"] == "ann"
    assert "episode r1: escalated 2/2" in done.output and "2 of 2 challengers lost" in done.output
