"""An escalated drift episode is a plane event (alerts and webhooks get it), once per
escalation: the run that made it, not each held batch after it."""

from __future__ import annotations

from typing import Any

from driftpilot.core.episodes import episode_for
from driftpilot.runs.events import Events
from driftpilot.runs.views import PlaneEvent, RunView
from driftpilot.store.engine import now

SEVERE = {"action": "monitor", "significant_drop": True, "metric_drop": 0.2, "metric_drop_low": 0.1}


def lost(run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "drift": {**SEVERE, "action": "retrain"},
        "retraining": {"family": "lightgbm", "kind": "retrain"},
        "evaluation": {"action": "reject", "gain": -0.29, "ci_low": -0.41, "metric": "roc_auc"},
    }


def view(summary: dict[str, Any], outcome: str) -> RunView:
    return RunView(
        run_id="r",
        model="m",
        batch_id="b",
        status="completed",
        outcome=outcome,
        requested_by="ann",
        created_at=now(),
        summary=summary,
    )


def test_the_run_that_escalates_emits_it_once() -> None:
    events = Events(store=None)  # type: ignore[arg-type]  # announce reads no store here
    heard: list[PlaneEvent] = []
    events.subscribe(heard.append)
    second = lost("r2")
    stored = episode_for([lost("r1")], SEVERE)
    assert stored is not None
    second["drift"]["episode"] = stored.model_dump(mode="json")
    events.announce(view(second, "challenger_rejected"))
    [event] = heard
    assert event.kind == "episode_escalated" and event.detail["state"] == "escalated"
    assert "2 of 2 challengers lost" in event.detail["diagnosis"]
    held = {"drift": {**SEVERE, "episode": event.detail}}
    events.announce(view(held, "no_retrain:monitor"))
    assert len(heard) == 1
