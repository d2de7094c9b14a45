"""The chat's ``/runs`` table shows each run's drift episode (state, challengers lost against
the limit), read from the run's stored summary as the CLI's ``runs`` table reads it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from driftpilot.core.episodes import episode_for
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.engine import now
from driftpilot.store.models import Run
from ui.chat import Chat, sign_in
from ui.intents import parse

SEVERE = {"action": "monitor", "significant_drop": True, "metric_drop": 0.2, "metric_drop_low": 0.1}


def lost(run_id: str) -> dict[str, Any]:
    """A run whose retrain lost to the champion."""
    return {
        "run_id": run_id,
        "drift": {**SEVERE, "action": "retrain"},
        "retraining": {"family": "lightgbm", "kind": "retrain"},
        "evaluation": {"action": "reject", "gain": -0.29, "ci_low": -0.41, "metric": "roc_auc"},
    }


def escalating() -> dict[str, Any]:
    """The second losing run of an episode: retrying 1/2 at its drift decision, escalated 2/2
    once its own loss is folded in."""
    run = lost("r2")
    stored = episode_for([lost("r1")], SEVERE)
    assert stored is not None and stored.state == "retrying"
    run["drift"]["episode"] = stored.model_dump(mode="json")
    run.pop("run_id")  # the control graph's summaries hold only the slices
    return run


@pytest.fixture
def cp(settings: Settings) -> Iterator[ControlPlane]:
    plane = ControlPlane(settings)
    yield plane
    plane.close()


def add_run(cp: ControlPlane, run_id: str, summary: dict[str, Any]) -> None:
    at = now()
    cp.store.add(
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


def test_the_runs_table_has_an_episode_column(cp: ControlPlane) -> None:
    add_run(cp, "a" * 32, escalating())
    add_run(cp, "b" * 32, {"drift": {"action": "none"}})  # no episode recorded
    _, secret = cp.create_api_key("vic", "viewer")
    who = sign_in(cp, "vic", secret)
    assert who is not None
    table = Chat(cp, who).answer(parse("/runs")).text.splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[-1] == "episode" and table[1] == "|---" * len(header) + "|"
    rows = {line[3:5]: [c.strip() for c in line.strip("|").split("|")] for line in table[2:]}
    assert set(rows) == {"aa", "bb"}
    assert all(len(row) == len(header) for row in rows.values())
    assert rows["aa"][-1] == "escalated 2/2"
    assert rows["bb"][-1] == ""
