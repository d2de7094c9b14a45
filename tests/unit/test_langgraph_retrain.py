"""A retrain asked for through the LangGraph-compatible API: ``input.retrain_reason`` on a
thread's run does what ``POST /runs``'s ``retrain_reason`` does (the key's principal and the
reason in the run's initial state and its audit); a reason that is not a short string is a
422, and nothing is written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from driftpilot.core.settings import ApiSettings, Settings
from driftpilot.runs.lifecycle import REASON_MAX_CHARS
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Decision, Run
from tests.rows import model_without_champion
from tests.unit.test_retrain_request import REASON, batch, initial_state, requests


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    # Runs in the API's threads: what is tested is the request, not where the run executes.
    settings = Settings(home=tmp_path / "home", api=ApiSettings(run_processes=0)).ensure_dirs()
    cp = ControlPlane(settings)
    cp.store.add(model_without_champion())
    yield cp
    cp.close()


@pytest.fixture
def client(plane: ControlPlane) -> Iterator[TestClient]:
    inbox = plane.settings.home / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    batch().write_csv(inbox / "b1.csv")
    conf = ApiSettings(workers=1, recover_on_start=False, run_processes=0)  # the API's threads
    with TestClient(create_app(plane, conf)) as c:
        yield c


def thread_run(client: TestClient, key: str, **input_extra: Any) -> Any:
    headers = {"X-Api-Key": key}
    thread = client.post("/threads", json={}, headers=headers)
    assert thread.status_code == 200, thread.text
    return client.post(
        f"/threads/{thread.json()['thread_id']}/runs",
        json={
            "assistant_id": "m",
            "input": {"batch": {"path": "b1.csv"}, **input_extra},
            "multitask_strategy": "enqueue",
        },
        headers=headers,
    )


def test_a_thread_run_carries_the_keys_principal_and_reason(
    plane: ControlPlane, client: TestClient
) -> None:
    plane.lifecycle.acquire("m", "other-run", wait=False)  # the run stays pending, as written
    key = plane.create_api_key("ops", "operator")[1]
    answer = thread_run(client, key, retrain_reason=REASON)
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["run_id"]
    assert initial_state(plane, run_id)["request"] == {"retrain_by": "ops", "reason": REASON}
    [row] = requests(plane, run_id)
    assert row.rationale.startswith("ops asked for a retrain")
    plain = thread_run(client, key)
    assert plain.status_code == 200, plain.text
    assert "request" not in initial_state(plane, plain.json()["run_id"])


@pytest.mark.parametrize("reason", ["x" * (REASON_MAX_CHARS + 1), 42, "   "])
def test_a_thread_run_refuses_a_reason_that_is_not_a_short_text(
    plane: ControlPlane, client: TestClient, reason: Any
) -> None:
    key = plane.create_api_key("ops", "operator")[1]
    answer = thread_run(client, key, retrain_reason=reason)
    assert answer.status_code == 422, answer.text
    assert plane.store.list_rows(Run) == []
    assert plane.store.list_rows(Decision, Decision.action == "request:retrain") == []
