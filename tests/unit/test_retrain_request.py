"""A person asks for a retrain: the request (who, and why) goes into the run's initial state
and into the audit, through the plane (``start_run``, ``submit_run``) and ``POST /runs``;
a viewer may not ask, a blank or too long reason is refused, and a run nobody asked about
carries no request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from driftpilot.core.errors import AuditWriteError, ConfigError
from driftpilot.core.settings import ApiSettings, Settings
from driftpilot.runs.lifecycle import REASON_MAX_CHARS, retrain_request
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Decision, Run
from tests.rows import model_without_champion

REASON = "the supplier changed on 1 July; the old rows no longer describe it"


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(Settings(home=tmp_path / "home").ensure_dirs())
    cp.store.add(model_without_champion())
    yield cp
    cp.close()


def batch(n: int = 50) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    return pl.DataFrame({"t": np.arange(n), "x": rng.normal(0, 1, n), "y": rng.integers(0, 2, n)})


def initial_state(cp: ControlPlane, run_id: str) -> dict[str, Any]:
    """The run's graph input as kept with the run (what recovery restarts from)."""
    return dict(json.loads(cp.store.get(Run, run_id).summary)["input"])


def requests(cp: ControlPlane, run_id: str) -> list[Decision]:
    return cp.store.list_rows(
        Decision, Decision.run_id == run_id, Decision.action == "request:retrain"
    )


def test_a_submitted_run_carries_the_request_in_its_state_and_audit(
    plane: ControlPlane,
) -> None:
    view = plane.submit_run("m", batch(), "b1", requested_by=" Ann ", retrain_reason=REASON)
    assert initial_state(plane, view.run_id)["request"] == {"retrain_by": "ann", "reason": REASON}
    [row] = requests(plane, view.run_id)
    assert (row.agent, row.backend) == ("api", "person")
    assert row.rationale == f"ann asked for a retrain: {REASON}"
    assert json.loads(row.evidence) == {"retrain_by": "ann", "reason": REASON, "trigger": "api"}
    assert plane.store.verify().ok  # the chain walks (no signed heads in this home)


def test_a_run_nobody_asked_about_carries_no_request(plane: ControlPlane) -> None:
    view = plane.submit_run("m", batch(), "b1", requested_by="ann")
    assert "request" not in initial_state(plane, view.run_id)
    assert requests(plane, view.run_id) == []


class Recorder:
    """Stands in for the compiled control graph: keeps the input it was invoked with."""

    def __init__(self) -> None:
        self.inputs: list[Any] = []

    def invoke(self, graph_input: Any, config: dict[str, Any], **_: Any) -> None:
        self.inputs.append(graph_input)

    def get_state(self, config: dict[str, Any]) -> Any:
        return type("Snapshot", (), {"next": ()})()


def test_a_started_run_hands_the_request_to_the_graph(plane: ControlPlane) -> None:
    graph = Recorder()
    plane.lifecycle.graph = lambda: graph
    view = plane.start_run("m", batch(), "b1", requested_by="bob", retrain_reason=REASON)
    [state] = graph.inputs
    assert state["request"] == {"retrain_by": "bob", "reason": REASON}
    assert state["run_id"] == view.run_id
    [row] = requests(plane, view.run_id)
    assert row.agent == "cli"  # the trigger it came through


def refuse_request_audits(cp: ControlPlane) -> None:
    """The database itself refuses the request's audit row (as a full disk or a lock held
    past every try would): a trigger, no stand-in for the store."""
    with cp.store.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_requests BEFORE INSERT ON decisions "
            "WHEN NEW.action = 'request:retrain' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )


@pytest.mark.parametrize("how", ["submit", "start"])
def test_a_request_whose_audit_fails_leaves_no_run(plane: ControlPlane, how: str) -> None:
    """The run (whose request can lift an escalated episode's hold) and the person's audited
    decision commit together or not at all; a started run's lease is released."""
    refuse_request_audits(plane)
    plane.lifecycle.graph = lambda: Recorder()
    submit = plane.submit_run if how == "submit" else plane.start_run
    with pytest.raises(AuditWriteError, match="refused"):
        submit("m", batch(), "b1", requested_by="ann", retrain_reason=REASON)
    assert plane.store.list_rows(Run) == []
    assert plane.store.list_rows(Decision) == []
    assert plane.store.lease("m") is None
    with plane.store.engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM step_effects")).scalar() == 0
    # Without the request, the same submit writes its run.
    view = submit("m", batch(), "b2", requested_by="ann")
    assert plane.store.get(Run, view.run_id).batch_id == "b2"


@pytest.mark.parametrize(
    ("reason", "said"),
    [
        ("", "needs a reason"),
        (" \t\u200b\n", "needs a reason"),
        ("x" * (REASON_MAX_CHARS + 1), f"at most {REASON_MAX_CHARS}"),
    ],
)
def test_a_blank_or_long_reason_is_refused_before_anything_is_written(
    plane: ControlPlane, reason: str, said: str
) -> None:
    with pytest.raises(ConfigError, match=said):
        plane.submit_run("m", batch(), "b1", requested_by="ann", retrain_reason=reason)
    assert plane.store.list_rows(Run) == []


def test_invisible_characters_and_runs_of_space_leave_the_reason() -> None:
    got = retrain_request("ann", "drop\u200bthe\x1b[31m  old\n\nrows ")
    assert got == {"retrain_by": "ann", "reason": "drop the [31m old rows"}
    assert retrain_request("ann", None) is None


# -- POST /runs ---------------------------------------------------------------------------------


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[TestClient]:
    inbox = plane.settings.home / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    batch().write_csv(inbox / "b1.csv")
    # Runs in the app's threads: what a request puts into its run is the point here, not where
    # the run executes (a run child's ~9 CPU s of imports, waited for at shutdown).
    with TestClient(create_app(plane, ApiSettings(workers=1, run_processes=0))) as c:
        c.app.state.executor.wait_started(30)  # type: ignore[attr-defined]
        yield c


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "input": {"batch": {"path": "b1.csv"}}, **extra}


def test_post_runs_puts_the_keys_principal_and_reason_into_the_run(
    plane: ControlPlane, client: TestClient
) -> None:
    # Another run holds the model: the new one stays pending, its input as written.
    plane.lifecycle.acquire("m", "other-run", wait=False)
    key = plane.create_api_key("ops", "operator")[1]
    answer = client.post(
        "/runs",
        json=body(retrain_reason=REASON, multitask_strategy="enqueue"),
        headers={"X-Api-Key": key},
    )
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["run_id"]
    assert initial_state(plane, run_id)["request"] == {
        "retrain_by": "ops",
        "reason": REASON,
    }
    [row] = requests(plane, run_id)
    assert row.agent == "api" and row.rationale.startswith("ops asked for a retrain")


def test_post_runs_refuses_a_viewer_and_a_blank_reason(
    plane: ControlPlane, client: TestClient
) -> None:
    viewer = plane.create_api_key("watcher", "viewer")[1]
    refused = client.post("/runs", json=body(retrain_reason=REASON), headers={"X-Api-Key": viewer})
    assert refused.status_code == 403, refused.text
    operator = plane.create_api_key("ops", "operator")[1]
    blank = client.post("/runs", json=body(retrain_reason="   "), headers={"X-Api-Key": operator})
    assert blank.status_code == 422, blank.text
    assert "needs a reason" in blank.json()["detail"]
    long = client.post(
        "/runs",
        json=body(retrain_reason="x" * (REASON_MAX_CHARS + 1)),
        headers={"X-Api-Key": operator},
    )
    assert long.status_code == 422, long.text
    assert plane.store.list_rows(Run) == []
    assert plane.store.list_rows(Decision, Decision.action == "request:retrain") == []
