"""Consecutive quarantines escalate through the approval path, on real flights, real MLflow,
real SQLite and the builtin LLM.

After ``policy.ingestion.max_consecutive_quarantines`` (2) quarantines in a row, a batch that
fails only on its values (here: ``pressure`` beyond the policy's hard limits) is put to a
person as an ``escalation`` approval bound to the batch's content hash. Approved (by someone
other than the requester) it is filed as accepted and the loop goes on; rejected it stays
quarantined. A schema break never escalates, a clean batch restarts the count, and the wait
survives a restart of the control plane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from driftpilot.core.errors import ApprovalError
from driftpilot.core.settings import get_settings
from driftpilot.runs.plane import ControlPlane, PlaneEvent, RunView
from driftpilot.store.engine import utc_now
from driftpilot.store.models import Approval, BatchRecord, Decision
from tests.fakes import say, scripted
from tests.integration.test_control_graph import FORCE_RETRAIN, HIGH_RISK, merge
from tools.datasets import FLIGHTS

pytestmark = pytest.mark.integration

ROWS = 1500  # rows of February per batch: small, so the module stays fast
LIMITS = {"pressure": [900.0, 1100.0]}  # millibars: 1,013,000 is impossible, not shifted
# Each test works on its own model of the one module home (a streak is counted per model).
MODELS = (
    "flights",
    "esc_reject",
    "esc_schema",
    "esc_reset",
    "esc_restart",
    "esc_warn",
    "esc_crash",
    "esc_judged",
)


def hard_limits(*models: str) -> dict[str, Any]:
    return {"ingestion": {"hard_limits": {m: LIMITS for m in models}}}


def open_plane(env: pytest.MonkeyPatch, root: Path, policy: dict[str, Any]) -> ControlPlane:
    """A control plane whose home and policy file live under ``root``."""
    path = root / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    env.setenv("DRIFTPILOT_HOME", str(root / "home"))
    env.setenv("DRIFTPILOT_POLICY_PATH", str(path))
    get_settings.cache_clear()
    return ControlPlane(get_settings())


def add_model(cp: ControlPlane, name: str, initial: pl.DataFrame) -> None:
    """A managed model with the built-in flights spec and its first champion (by alice)."""
    cp.add_model(
        name,
        initial,
        target=FLIGHTS.target,
        time_col=FLIGHTS.time_col,
        numeric=FLIGHTS.numeric,
        categorical=FLIGHTS.categorical,
        principal="alice",
    )


@pytest.fixture(scope="module")
def data(months: dict[str, pl.DataFrame]) -> dict[str, Any]:
    jan = months["2013-01"].sample(n=6000, seed=1).sort("time_hour")
    feb = months["2013-02"].sample(fraction=1.0, shuffle=True, seed=11)
    slices = [feb.slice(i * ROWS, ROWS).sort("time_hour") for i in range(8)]
    # A larger batch for the run that retrains: a holdout big enough to show a real gain.
    big = feb.slice(8 * ROWS, 6000).sort("time_hour").with_columns(pl.col("pressure") * 1000)
    return {"initial": jan, "feb": slices, "feb_big": big}


def clean(data: dict[str, Any], i: int) -> pl.DataFrame:
    """Slice ``i`` of February as it came: every value possible."""
    frame: pl.DataFrame = data["feb"][i]
    return frame


def impossible(data: dict[str, Any], i: int) -> pl.DataFrame:
    """Slice ``i`` of February with ``pressure`` in the wrong unit (x1000): beyond the hard
    limits on every row that has one. Distinct slices: never a duplicate batch."""
    return clean(data, i).with_columns(pl.col("pressure") * 1000)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any]) -> Iterator[ControlPlane]:
    """One home for the module: hard limits on pressure for every model of it, the default
    max_consecutive_quarantines (2), builtin LLM."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("DRIFTPILOT_POLICY_PATH", raising=False)
        cp = open_plane(env, tmp_path_factory.mktemp("escalation"), hard_limits(*MODELS))
        assert cp.policy.ingestion.max_consecutive_quarantines == 2  # the shipped default
        for name in MODELS:
            add_model(cp, name, data["initial"])
        yield cp
        cp.close()
    get_settings.cache_clear()


# -- helpers -------------------------------------------------------------------------------------


def quarantined_without_asking(cp: ControlPlane, view: RunView) -> None:
    assert (view.status, view.outcome) == ("completed", "quarantined"), view.summary
    assert view.approval_request is None
    assert cp.store.list_rows(Approval, Approval.run_id == view.run_id) == []
    assert view.summary["ingestion"]["action"] == "quarantine"
    assert view.summary.get("escalation") is None and view.summary.get("drift") is None


def two_quarantines(cp: ControlPlane, model: str, data: dict[str, Any]) -> None:
    for i in (0, 1):
        view = cp.start_run(model, impossible(data, i), f"feb-{i}", requested_by="alice")
        quarantined_without_asking(cp, view)
        assert "hard limits" in view.summary["ingestion"]["reason"]


def records(cp: ControlPlane, run_id: str) -> list[BatchRecord]:
    return cp.store.list_rows(BatchRecord, BatchRecord.run_id == run_id, order=BatchRecord.id)


def escalation_decisions(cp: ControlPlane, run_id: str) -> list[str]:
    made = cp.store.list_rows(
        Decision, Decision.run_id == run_id, Decision.agent == "escalation", order=Decision.id
    )
    return [d.action for d in made]


def pending_ids(cp: ControlPlane) -> list[str]:
    return [v.run_id for v in cp.pending_approvals()]


def assert_waits_for_escalation(cp: ControlPlane, view: RunView, model: str) -> None:
    """The run is paused on an ``accept_batch`` question bound to its quarantined batch."""
    assert (view.status, view.outcome) == ("waiting_approval", None), view.summary
    request = view.approval_request
    assert request is not None and request["step"] == "escalation"
    assert request["action_request"]["action"] == "accept_batch"
    [record] = records(cp, view.run_id)  # filed as quarantined while it waits
    assert record.status == "quarantined"
    action = request["action"]
    assert action == {
        "action": "accept_batch",
        "model": model,
        "batch_id": view.batch_id,
        "content_hash": record.content_hash,
    }
    assert request["action_request"]["args"]["run_id"] == view.run_id
    assert "2 batches quarantined in a row" in request["description"]
    assert view.summary["ingestion"]["action"] == "escalate"
    assert view.summary["ingestion"]["quarantine_streak"] == 2
    assert view.run_id in pending_ids(cp)


def assert_admitted(cp: ControlPlane, done: RunView, approver: str) -> None:
    """An approved escalation: a second (accepted) batch record, the loop went on."""
    assert done.status == "completed", done.summary
    assert done.outcome is not None and done.outcome != "quarantined", done.outcome
    escalation = done.summary["escalation"]
    assert escalation["accepted"] is True and escalation["decision"] == "approve"
    assert escalation["approver"] == approver
    assert done.summary["drift"] is not None  # the drift analyst ran on the accepted batch
    ingestion = done.summary["ingestion"]
    assert ingestion["action"] == "accept" and ingestion["accepted_by"] == approver
    quarantined, accepted = records(cp, done.run_id)
    assert (quarantined.status, accepted.status) == ("quarantined", "accepted")
    assert accepted.content_hash == quarantined.content_hash
    assert Path(accepted.path).parent.name == "accepted" and accepted.path == ingestion["path"]
    filed = pl.read_parquet(accepted.path)
    assert filed.height == ROWS and (filed["pressure"] > 1100).any()  # as the person accepted it
    assert escalation_decisions(cp, done.run_id) == ["accept_as_new_normal"]
    assert done.run_id not in pending_ids(cp)
    result = cp.verify()
    assert result.ok, (result.first_broken, result.problems)


# -- 1. approve ----------------------------------------------------------------------------------


def test_third_impossible_batch_is_put_to_a_person_and_approved(
    plane: ControlPlane, data: dict[str, Any]
) -> None:
    two_quarantines(plane, "flights", data)
    events: list[PlaneEvent] = []
    plane.subscribe(events.append)
    try:
        third = plane.start_run("flights", impossible(data, 2), "feb-2", requested_by="alice")
    finally:
        plane.unsubscribe(events.append)
    assert_waits_for_escalation(plane, third, "flights")
    # Whoever is told that a run waits for a person is told what the question is.
    [told] = [e for e in events if e.kind == "approval_waiting"]
    assert told.run_id == third.run_id and told.detail["request"]["step"] == "escalation"
    assert plane.get_run(third.run_id).status == "waiting_approval"
    # The requester cannot answer their own question, under any spelling.
    for who in ("alice", " ALICE "):
        with pytest.raises(ApprovalError, match="cannot approve"):
            plane.decide(third.run_id, "approve", who)
    assert len(plane.store.approval_rows(third.run_id)) == 1  # nothing was recorded

    done = plane.decide(third.run_id, "approve", "bob", "the sensor now reports pascals")
    assert_admitted(plane, done, "bob")
    assert done.summary["escalation"]["comment"] == "the sensor now reports pascals"
    with pytest.raises(ApprovalError, match="not waiting"):
        plane.decide(third.run_id, "approve", "carol")

    # The accepted batch ended the streak: the next impossible batch is quarantined again
    # without a question.
    fourth = plane.start_run("flights", impossible(data, 3), "feb-3", requested_by="alice")
    quarantined_without_asking(plane, fourth)
    assert plane.verify().ok


def test_clean_batches_an_agent_keeps_quarantining_are_put_to_a_person(
    plane: ControlPlane, data: dict[str, Any]
) -> None:
    """The agent may quarantine a batch that passed every check, on its judgement alone; after
    two such quarantines in a row the third is put to a person, as for impossible values."""
    distrust = {"action": "quarantine", "reason": "temp looks wrong", "rationale": "odd"}
    judged = ControlPlane(plane.settings, scripted(*[say(distrust)] * 3))
    try:
        for i in (0, 1):
            view = judged.start_run("esc_judged", clean(data, i), f"feb-{i}", requested_by="alice")
            quarantined_without_asking(judged, view)
            assert view.summary["ingestion"]["reason"] == "temp looks wrong"
        third = judged.start_run("esc_judged", clean(data, 2), "feb-2", requested_by="alice")
    finally:
        judged.close()
    assert_waits_for_escalation(plane, third, "esc_judged")
    assert third.approval_request is not None
    description = third.approval_request["description"]
    assert "passed every check, but the ingestion agent quarantined it: temp looks wrong" in (
        description
    )
    done = plane.decide(third.run_id, "approve", "bob", "summer is the new normal")
    assert done.summary["escalation"]["accepted"] is True
    assert done.summary["ingestion"]["action"] == "accept" and done.summary["drift"] is not None
    # The loop went on with the batch (here it may retrain, and wait to promote).
    assert done.status == "completed" or done.approval_request["step"] != "escalation"
    assert plane.verify().ok


# -- 2. reject -----------------------------------------------------------------------------------


def test_a_rejected_escalation_keeps_the_batch_quarantined(
    plane: ControlPlane, data: dict[str, Any]
) -> None:
    two_quarantines(plane, "esc_reject", data)
    third = plane.start_run("esc_reject", impossible(data, 2), "feb-2", requested_by="alice")
    assert_waits_for_escalation(plane, third, "esc_reject")
    done = plane.decide(third.run_id, "reject", "bob", "the sensor is broken")
    assert (done.status, done.outcome) == ("completed", "quarantined"), done.summary
    escalation = done.summary["escalation"]
    assert escalation == {
        "decision": "reject",
        "approver": "bob",
        "comment": "the sensor is broken",
        "accepted": False,
    }
    assert done.summary.get("drift") is None  # never reached the analyst
    assert [r.status for r in records(plane, third.run_id)] == ["quarantined"]
    assert escalation_decisions(plane, third.run_id) == ["keep_quarantined"]
    assert third.run_id not in pending_ids(plane)
    assert plane.verify().ok

    # Still blind: the streak goes on, so the next such batch is put to a person again.
    fourth = plane.start_run("esc_reject", impossible(data, 3), "feb-3", requested_by="alice")
    assert (fourth.status, fourth.approval_request["step"]) == (  # type: ignore[index]
        "waiting_approval",
        "escalation",
    )
    assert fourth.summary["ingestion"]["quarantine_streak"] == 3
    again = plane.decide(fourth.run_id, "reject", "bob")
    assert again.outcome == "quarantined"
    assert plane.verify().ok


# -- 3. a schema break never escalates -----------------------------------------------------------


def test_a_schema_break_never_escalates(plane: ControlPlane, data: dict[str, Any]) -> None:
    for i in range(3):
        broken = clean(data, i).drop("wind_speed")
        view = plane.start_run("esc_schema", broken, f"feb-{i}", requested_by="alice")
        quarantined_without_asking(plane, view)
        assert "wind_speed" in view.summary["ingestion"]["reason"]
    # Broken schema AND impossible values: not only its values fail, so still no question.
    both = impossible(data, 3).drop("wind_speed")
    view = plane.start_run("esc_schema", both, "feb-3", requested_by="alice")
    quarantined_without_asking(plane, view)
    filed = plane.store.list_rows(BatchRecord, BatchRecord.model == "esc_schema")
    assert [r.status for r in filed] == ["quarantined"] * 4


# -- 4. a clean batch resets the streak ----------------------------------------------------------


def test_a_clean_batch_between_quarantines_resets_the_streak(
    plane: ControlPlane, data: dict[str, Any]
) -> None:
    two_quarantines(plane, "esc_reset", data)
    ok = plane.start_run("esc_reset", clean(data, 2), "feb-2", requested_by="alice")
    if ok.status == "waiting_approval":  # February may retrain; accepted either way
        assert json.loads(plane.store.approval_rows(ok.run_id)[0].payload)["step"] == "promotion"
        ok = plane.decide(ok.run_id, "reject", "bob")
    assert ok.status == "completed" and ok.outcome != "quarantined", ok.summary
    assert ok.summary["ingestion"]["action"] == "accept"
    for i in (3, 4):  # two more in a row: counted from the clean batch, no question yet
        view = plane.start_run("esc_reset", impossible(data, i), f"feb-{i}", requested_by="alice")
        quarantined_without_asking(plane, view)
    third = plane.start_run("esc_reset", impossible(data, 5), "feb-5", requested_by="alice")
    assert_waits_for_escalation(plane, third, "esc_reset")
    assert plane.decide(third.run_id, "reject", "bob").outcome == "quarantined"


# -- 5. the wait survives a restart --------------------------------------------------------------


def test_the_escalation_wait_survives_a_restart(plane: ControlPlane, data: dict[str, Any]) -> None:
    two_quarantines(plane, "esc_restart", data)
    first = ControlPlane(plane.settings)
    waiting = first.start_run("esc_restart", impossible(data, 2), "feb-2", requested_by="alice")
    assert_waits_for_escalation(first, waiting, "esc_restart")
    first.close()  # the process that asked is gone

    fresh = ControlPlane(plane.settings)  # a new process would build exactly this
    try:
        again = fresh.get_run(waiting.run_id)
        assert again.status == "waiting_approval"
        assert again.approval_request == waiting.approval_request
        assert waiting.run_id in pending_ids(fresh)
        with pytest.raises(ApprovalError, match="cannot approve"):
            fresh.decide(waiting.run_id, "approve", "Alice")
        done = fresh.decide(waiting.run_id, "approve", "bob", "after the restart")
        assert_admitted(fresh, done, "bob")
        assert len(records(fresh, waiting.run_id)) == 2  # filed as accepted exactly once
    finally:
        fresh.close()


# -- 6. escalation, then a promotion question in the same run ------------------------------------


@pytest.mark.usefixtures("own_databases")  # a home of its own (tests/conftest.py)
def test_an_escalated_run_can_ask_again_to_promote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: dict[str, Any]
) -> None:
    policy = merge(FORCE_RETRAIN, HIGH_RISK, hard_limits("flights"))
    cp = open_plane(monkeypatch, tmp_path, policy)
    try:
        add_model(cp, "flights", data["initial"])
        two_quarantines(cp, "flights", data)
        view = cp.start_run("flights", data["feb_big"], "feb-big", requested_by="alice")
        assert_waits_for_escalation(cp, view, "flights")
        second = cp.decide(view.run_id, "approve", "bob", "new normal", step="escalation")
        # The policy retrains always and rates every promotion high: the accepted batch (its
        # pressure in the wrong unit, the champion's most important column) makes a
        # challenger that wins on its holdout, so the run asks its second question.
        assert second.status == "waiting_approval", (
            second.outcome,
            second.summary.get("drift", {}).get("action"),
            second.summary.get("evaluation"),
        )
        # The same run asks its second question: promote the challenger?
        request = second.approval_request
        assert request is not None and request["step"] == "promotion"
        assert request["action_request"]["action"] == "promote"
        assert second.summary["escalation"]["accepted"] is True
        assert pending_ids(cp).count(view.run_id) == 1
        with pytest.raises(ApprovalError, match="cannot approve"):
            cp.decide(view.run_id, "approve", "alice")
        # A late answer to the first question (a stale card, a retried request) must not
        # authorise the second: it is refused and nothing is recorded.
        with pytest.raises(ApprovalError, match="now asks about its promotion"):
            cp.decide(view.run_id, "approve", "dave", step="escalation")
        assert len(cp.store.approval_rows(view.run_id)) == 1
        done = cp.decide(view.run_id, "approve", "carol", "checked the report", step="promotion")
        assert done.status == "completed" and done.outcome == "promoted", done.summary
        assert done.summary["promotion"]["approved_by"] == "carol"
        assert done.summary["escalation"]["approver"] == "bob"
        rows = cp.store.list_rows(Approval, Approval.run_id == view.run_id, order=Approval.id)
        asked = [(r.kind, r.decision, r.principal, json.loads(r.payload).get("step")) for r in rows]
        assert asked == [
            ("request", "pending", "alice", "escalation"),
            ("decision", "approve", "bob", None),
            ("request", "pending", "alice", "promotion"),
            ("decision", "approve", "carol", None),
        ]
        assert view.run_id not in pending_ids(cp)
        result = cp.verify()
        assert result.ok, (result.first_broken, result.problems)
    finally:
        cp.close()
        get_settings.cache_clear()


# -- the accepted copy keeps the batch's risky warnings ------------------------------------------


def test_an_admitted_batch_keeps_its_risky_warnings(
    plane: ControlPlane, data: dict[str, Any]
) -> None:
    two_quarantines(plane, "esc_warn", data)
    # One carrier nobody has seen: constant_column and new_categories warnings, both risky.
    odd = impossible(data, 2).with_columns(pl.lit("ZZ").alias("carrier"))
    view = plane.start_run("esc_warn", odd, "feb-2", requested_by="alice")
    assert_waits_for_escalation(plane, view, "esc_warn")
    risky = view.summary["ingestion"]["risky_warnings"]
    assert risky == ["constant_column", "new_categories"]
    done = plane.decide(view.run_id, "approve", "bob")
    assert done.status == "completed" and done.summary["escalation"]["accepted"] is True
    accepted = records(plane, view.run_id)[-1]
    assert accepted.status == "accepted"
    # As for any accepted batch (a window with it is a risky window).
    assert json.loads(accepted.reason) == risky


# -- 8. kill -9 between the admission and its record: recover admits once --------------------------

CHILD = """
import sys
from driftpilot.runs.plane import ControlPlane
view = ControlPlane().decide(sys.argv[1], "approve", "bob")
print(view.status, flush=True)
"""


def test_kill_after_the_admission_then_recover_admits_once(
    plane: ControlPlane, data: dict[str, Any]
) -> None:
    two_quarantines(plane, "esc_crash", data)
    waiting = plane.start_run("esc_crash", impossible(data, 2), "feb-2", requested_by="alice")
    assert_waits_for_escalation(plane, waiting, "esc_crash")
    env = {**os.environ, "DRIFTPILOT_FAULTS": "after_admission_record"}
    env["DRIFTPILOT_LEASE_TTL_S"] = "2"  # the dead child's lease expires soon
    done = subprocess.run(
        [sys.executable, "-c", CHILD, waiting.run_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr[-2000:]  # killed after the accepted record
    assert [r.status for r in records(plane, waiting.run_id)] == ["quarantined", "accepted"]
    # The dead child's lease (2 s) has expired for a store reading the time 2.5 s ahead.
    clock = plane.store.clock
    plane.store.clock = lambda: utc_now() + timedelta(seconds=2.5)
    try:
        recovered = [v for v in plane.recover() if v.run_id == waiting.run_id]
    finally:
        plane.store.clock = clock
    assert [v.status for v in recovered] == ["completed"], recovered
    # One accepted record, one admission decision: the replayed node did not file it again.
    assert [r.status for r in records(plane, waiting.run_id)] == ["quarantined", "accepted"]
    assert escalation_decisions(plane, waiting.run_id) == ["accept_as_new_normal"]
    assert plane.verify().ok
