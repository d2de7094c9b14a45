"""Governance invariants on real flights, real MLflow, real SQLite, real processes.

Each test fails without the rule it names: a stale approval cannot replace a newer champion,
nobody approves their own run under another spelling, truncated audit rows are caught, a
crashed run is recovered exactly once, one run per model at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from driftpilot.core.errors import ApprovalError, InvalidPrincipal, ModelBusy
from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.plane import ControlPlane, holder
from driftpilot.store.engine import utc_now
from driftpilot.store.models import (
    Approval,
    BatchRecord,
    ChampionChange,
    Decision,
    Mutation,
    Run,
)
from tests.conftest import add_flights, jan_initial
from tests.integration.test_control_graph import FORCE_RETRAIN, HIGH_RISK, LOW_RISK, merge
from tools import registry

pytestmark = pytest.mark.integration
TTL = 2.0  # lease time to live in these tests: a killed run is recoverable after it


@pytest.fixture(scope="module")
def data(months: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    return {
        "initial": jan_initial(months),  # the trained home's champion's rows
        "july": months["2013-07"].sample(n=12000, seed=3).sort("time_hour"),
        "october": months["2013-10"].sample(n=12000, seed=4).sort("time_hour"),
    }


@pytest.fixture
def plane_for(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trained_home: Callable[[str], Settings],
) -> Any:
    """A ControlPlane with a policy, a short lease and the flights model added by alice (a
    copy of the session's trained home: tests/conftest.py)."""

    def make(policy: dict[str, Any], *, add: bool = True) -> ControlPlane:
        if add:
            trained_home("flights")
        path = tmp_path / "policy.yaml"
        path.write_text(yaml.safe_dump(policy))
        monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(path))
        monkeypatch.setenv("DRIFTPILOT_LEASE_TTL_S", str(TTL))
        get_settings.cache_clear()
        return ControlPlane(get_settings())

    return make


def later(cp: ControlPlane) -> ControlPlane:
    """``cp`` with its store reading the time TTL + 0.5 s ahead (the store's injectable clock,
    driftpilot/store/engine.py): the lease of a process killed just now has expired for it,
    as it would after waiting."""
    cp.store.clock = lambda: utc_now() + timedelta(seconds=TTL + 0.5)
    return cp


def champions(cp: ControlPlane) -> list[tuple[str, int]]:
    return [
        (c.action, c.version) for c in cp.store.list_rows(ChampionChange, order=ChampionChange.id)
    ]


def assert_consistent(cp: ControlPlane) -> None:
    """MLflow's champion equals the audit's champion history, and verify passes."""
    history = champions(cp)
    assert registry.current_champion("flights", cp.settings) == history[-1][1]
    result = cp.verify()
    assert result.ok, (result.first_broken, result.problems)


# -- 1. promotion is a compare-and-swap ---------------------------------------------------------


def test_a_stale_approval_cannot_replace_a_newer_champion(plane_for: Any, data: Any) -> None:
    cp = plane_for(merge(FORCE_RETRAIN, HIGH_RISK))
    april = cp.start_run("flights", data["july"], "2013-07", requested_by="alice")
    october = cp.start_run("flights", data["october"], "2013-10", requested_by="alice")
    assert april.status == october.status == "waiting_approval"
    for view in (april, october):
        args = view.approval_request["action_request"]["args"]
        assert args["replaces"] == 1  # both were compared against v1
    first = cp.decide(april.run_id, "approve", "bob")
    assert first.outcome == "promoted" and registry.current_champion("flights") == 2
    second = cp.decide(october.run_id, "approve", "bob")
    assert second.outcome == "superseded", second.summary
    assert registry.current_champion("flights") == 2  # v3 never replaced v2
    made = cp.store.list_rows(Decision, Decision.run_id == october.run_id)
    assert made[-1].action == "superseded" and "now v2" in made[-1].rationale
    assert champions(cp) == [("bootstrap", 1), ("promote", 2)]
    assert_consistent(cp)
    metrics = cp.metrics()
    assert metrics.runs == {"completed:promoted": 1, "completed:superseded": 1}
    assert metrics.pending_approvals == 0 and len(metrics.run_seconds) == 2
    assert 0 <= metrics.drift_share["flights"] <= 1


# -- 2. one identity rule ------------------------------------------------------------------------


def test_the_requester_cannot_approve_under_another_spelling(plane_for: Any, data: Any) -> None:
    """Each spelling against one waiting run (the rule on the store: tests/unit/test_audit.py)."""
    cp = plane_for(merge(FORCE_RETRAIN, HIGH_RISK))
    view = cp.start_run("flights", data["july"], "2013-07", requested_by="ann")
    for who in ("ann\u200b", "ANN", " Ann ", "\u200b", "   "):
        with pytest.raises((ApprovalError, InvalidPrincipal)):
            cp.decide(view.run_id, "approve", who)
        assert len(cp.store.approval_rows(view.run_id)) == 1, who  # nothing was recorded
        assert cp.get_run(view.run_id).status == "waiting_approval", who
    assert registry.current_champion("flights") == 1


# -- 5. an audit that catches truncation --------------------------------------------------------


def test_deleting_the_newest_approval_is_detected(plane_for: Any, data: Any) -> None:
    import sqlite3

    from sqlalchemy import text as sql_text

    cp = plane_for(merge(FORCE_RETRAIN, HIGH_RISK))
    view = cp.start_run("flights", data["july"], "2013-07", requested_by="alice")
    cp.decide(view.run_id, "approve", "bob")
    assert_consistent(cp)
    if cp.store.engine.dialect.name == "postgresql":  # a superuser: the trigger off
        with cp.store.engine.begin() as pg:
            pg.execute(sql_text("ALTER TABLE approvals DISABLE TRIGGER approvals_no_delete"))
            pg.execute(sql_text("DELETE FROM approvals WHERE id = (SELECT max(id) FROM approvals)"))
    else:
        conn = sqlite3.connect(cp.store.url.removeprefix("sqlite:///"))
        conn.execute("DROP TRIGGER approvals_no_delete")  # an attacker with file access
        conn.execute("DELETE FROM approvals WHERE id = (SELECT max(id) FROM approvals)")
        conn.commit()
        conn.close()
    assert cp.store.verify().ok  # the chain walk alone cannot see a missing tail
    result = cp.verify()
    assert not result.ok
    text = "\n".join(result.problems)
    assert "approvals" in text and "deleted" in text  # against the signed checkpoint
    assert "rated risk:high but is not approved: no approval decision" in text


def test_checkpoints_are_signed_after_every_run(plane_for: Any, data: Any) -> None:
    cp = plane_for({})
    log = Path(cp.settings.audit_checkpoint_log)
    before = len(log.read_text().splitlines())
    cp.start_run("flights", data["july"].head(3000), "2013-07")
    assert len(log.read_text().splitlines()) == before + 1
    latest = cp.latest_checkpoint()
    assert latest.startswith(cp.settings.audit_origin) and "\u2014 driftpilot-audit " in latest
    key = cp.settings.audit_key_path
    assert key is not None and oct(key.stat().st_mode & 0o777) == "0o600"


# -- 3. recovery after kill -9 inside nodes -----------------------------------------------------

CHILD = """
import sys, polars as pl
from driftpilot.runs.plane import ControlPlane
cp = ControlPlane()
if sys.argv[1] == "run":
    view = cp.start_run("flights", pl.read_parquet(sys.argv[2]), "2013-07", requested_by="alice")
else:
    view = cp.decide(sys.argv[2], "approve", "bob")
print(view.run_id, view.status, view.outcome, flush=True)
"""


def crash(fault: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DRIFTPILOT_FAULTS": fault}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == -9, done.stderr[-2000:]  # killed at the fault point
    return done


def one_run(cp: ControlPlane) -> Run:
    [run] = cp.store.list_rows(Run, Run.trigger == "cli")
    return run


def versions_of(run_id: str) -> list[int]:
    return [
        v.version
        for v in registry.list_versions("flights")
        if v.tags.get("driftpilot.run_id") == run_id
    ]


@pytest.mark.parametrize("fault", ["after_register", "after_alias"])
def test_kill_inside_a_low_risk_run_then_recover(
    plane_for: Any, data: Any, tmp_path: Path, fault: str
) -> None:
    cp = plane_for(merge(FORCE_RETRAIN, LOW_RISK))
    batch = tmp_path / "july.parquet"
    data["july"].write_parquet(batch)
    crash(fault, "run", str(batch))
    run = one_run(cp)
    assert run.status == "running"
    with pytest.raises(ModelBusy):  # the dead run's lease still holds the model for a moment
        cp.start_run("flights", data["october"], "2013-10")
    [done] = later(ControlPlane(get_settings())).recover()
    assert (done.run_id, done.status, done.outcome) == (run.id, "completed", "promoted")
    assert "expired lease" in done.found and done.did == "resumed from its checkpoint"
    assert versions_of(run.id) == [2]  # exactly one version for the run
    assert champions(cp) == [("bootstrap", 1), ("promote", 2)]
    phases = [
        (m.step, m.phase)
        for m in cp.store.list_rows(Mutation, Mutation.run_id == run.id, order=Mutation.id)
    ]
    step = "cicd:register" if fault == "after_register" else "promote"
    assert (step, "intent") in phases and (step, "reconciled") in phases
    assert_consistent(cp)
    assert cp.recover() == []  # nothing left to do


def test_kill_after_the_batch_was_filed_then_recover_files_it_once(
    plane_for: Any, data: Any, tmp_path: Path
) -> None:
    cp = plane_for({})
    batch = tmp_path / "july.parquet"
    data["july"].head(3000).write_parquet(batch)
    crash("after_filing", "run", str(batch))
    run = one_run(cp)
    [done] = later(cp).recover()
    assert (done.run_id, done.status) == (run.id, "completed")
    assert done.outcome != "quarantined"  # not taken for a duplicate of itself
    assert len(cp.store.list_rows(BatchRecord, BatchRecord.run_id == run.id)) == 1
    [decision] = cp.store.list_rows(
        Decision, Decision.run_id == run.id, Decision.agent == "ingestion"
    )
    assert decision.action == "accept"


def test_kill_before_the_interrupt_then_recover_and_approve(
    plane_for: Any, data: Any, tmp_path: Path
) -> None:
    cp = plane_for(merge(FORCE_RETRAIN, HIGH_RISK))
    batch = tmp_path / "july.parquet"
    data["july"].write_parquet(batch)
    crash("before_interrupt", "run", str(batch))
    run = one_run(cp)
    [done] = later(ControlPlane(get_settings())).recover()
    assert (done.status, done.outcome) == ("waiting_approval", None)
    assert "before ['approval']" in done.found  # finished nodes are not replayed
    made = cp.store.list_rows(Decision, Decision.run_id == run.id)
    assert [d.action for d in made if d.agent == "cicd"] == ["risk:high"]  # decided once
    crash("after_alias", "decide", run.id)  # the approved promotion dies after the alias move
    [again] = later(ControlPlane(get_settings())).recover()
    assert (again.status, again.outcome) == ("completed", "promoted")
    assert versions_of(run.id) == [2]
    assert champions(cp) == [("bootstrap", 1), ("promote", 2)]
    assert [r.kind for r in cp.store.list_rows(Approval)] == ["request", "decision"]
    assert_consistent(cp)


def test_a_recorded_decision_that_was_not_applied_is_applied_on_retry(
    plane_for: Any, data: Any
) -> None:
    cp = plane_for(merge(FORCE_RETRAIN, HIGH_RISK))
    view = cp.start_run("flights", data["july"], "2013-07", requested_by="alice")
    cp.store.decide_approval(view.run_id, "bob", "approve", "ok")  # then the process died
    with pytest.raises(ApprovalError, match="already decided: approve by bob"):
        cp.decide(view.run_id, "reject", "carol")
    done = cp.decide(view.run_id, "approve", "bob")
    assert done.outcome == "promoted" and done.summary["promotion"]["approved_by"] == "bob"
    assert_consistent(cp)


def test_recover_applies_a_recorded_decision(plane_for: Any, data: Any) -> None:
    cp = plane_for(merge(FORCE_RETRAIN, HIGH_RISK))
    view = cp.start_run("flights", data["july"], "2013-07", requested_by="alice")
    cp.store.decide_approval(view.run_id, "bob", "reject", "not now")
    [done] = cp.recover()
    assert done.did == "applied the recorded decision" and done.outcome == "approval_rejected"
    assert registry.current_champion("flights") == 1


# -- 4. one run per model, across processes ----------------------------------------------------

HOLDER = """
import sys, time
from driftpilot.runs.plane import ControlPlane, holder
from driftpilot.store.engine import utc_now
cp = ControlPlane()
cp.store.acquire_lease("flights", "other-run", holder(), ttl_s=30)
print("held", flush=True)
time.sleep(float(sys.argv[1]))
cp.store.release_lease("flights", "other-run")
"""


def test_a_second_run_on_a_busy_model_is_refused_or_waits(plane_for: Any, data: Any) -> None:
    cp = plane_for({})
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "1"], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with pytest.raises(ModelBusy, match="other-run"):
            cp.start_run("flights", data["july"].head(3000), "2013-07")
        assert cp.store.list_rows(Run, Run.trigger == "cli") == []  # refused before anything
        view = cp.start_run("flights", data["july"].head(3000), "2013-07", wait=True)
        assert view.status == "completed"
    finally:
        child.wait(timeout=60)
    assert cp.store.lease("flights") is None  # released at the end


APPENDER = """
import sys
from driftpilot.store import AuditStore
store = AuditStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    store.record_decision(sys.argv[3], "test", "none", f"row {i}", {"i": i}, backend="builtin")
"""


def test_two_processes_appending_at_once_keep_one_valid_chain(tmp_path: Path) -> None:
    from driftpilot.store import AuditStore

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    AuditStore(url)  # migrate once, so the race is on the appends
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, url, "150", name],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    store = AuditStore(url)
    result = store.verify()
    assert result.ok and result.checked["decisions"] == 300
    runs = [d.run_id for d in store.list_rows(Decision, order=Decision.id)]
    assert runs.count("p1") == runs.count("p2") == 150
    assert json.loads(store.list_rows(Decision, order=Decision.id)[-1].evidence)["i"] == 149


# -- runs submitted now, executed by a worker (the API path) -------------------------------


def test_reject_refuses_a_second_run_and_enqueue_waits_its_turn(plane_for: Any, data: Any) -> None:
    cp = plane_for({})
    first = cp.submit_run("flights", data["july"].head(2000), "2013-07", requested_by="ann")
    assert first.status == "pending" and first.summary == {}
    with pytest.raises(ModelBusy, match=first.run_id[:12]):
        cp.submit_run("flights", data["october"].head(2000), "2013-10", multitask_strategy="reject")
    second = cp.submit_run(
        "flights", data["october"].head(2000), "2013-10", multitask_strategy="enqueue"
    )
    workers = [threading.Thread(target=cp.execute_run, args=(r.run_id,)) for r in (second, first)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    views = [cp.get_run(r.run_id) for r in (first, second)]
    assert [v.status for v in views] == ["completed", "completed"], views
    # The second worker started first, yet the runs went in the order they were submitted.
    started = [
        cp.store.list_rows(Decision, Decision.run_id == r.run_id, order=Decision.id)[0].id
        for r in (first, second)
    ]
    assert started[0] < started[1]
    assert cp.execute_run(first.run_id).status == "completed"  # executing twice does nothing
    assert cp.store.lease("flights") is None


def test_a_decision_is_recorded_now_and_applied_by_a_worker(plane_for: Any, data: Any) -> None:
    cp = plane_for(merge(FORCE_RETRAIN, HIGH_RISK))
    run = cp.submit_run("flights", data["july"], "2013-07", requested_by="ann")
    assert cp.execute_run(run.run_id).status == "waiting_approval"
    with pytest.raises(ApprovalError, match="cannot approve"):
        cp.record_decision(run.run_id, "approve", "Ann")
    recorded = cp.record_decision(run.run_id, "approve", "bob", "fine")
    # Recording takes nothing: the worker that applies it takes the lease (and heartbeats it).
    assert recorded.status == "waiting_approval" and cp.store.lease("flights") is None
    done = cp.resume_run(run.run_id)
    assert done.outcome == "promoted" and registry.current_champion("flights") == 2
    assert cp.resume_run(run.run_id).status == "completed"  # a second worker does nothing


def test_a_decision_for_a_busy_model_stays_recorded_until_it_is_free(
    plane_for: Any, data: Any
) -> None:
    cp = plane_for(merge(FORCE_RETRAIN, HIGH_RISK))
    run = cp.start_run("flights", data["july"], "2013-07", requested_by="ann")
    cp.store.acquire_lease("flights", "other-run", holder(), ttl_s=30)
    with pytest.raises(ModelBusy, match=r"approve of run \w+ is recorded"):
        cp.decide(run.run_id, "approve", "bob")
    assert cp.get_run(run.run_id).status == "waiting_approval"
    cp.store.release_lease("flights", "other-run")
    [done] = cp.recover()
    assert (done.did, done.outcome) == ("applied the recorded decision", "promoted")
    assert_consistent(cp)


# -- recover comes before anything new on a model a dead process left mid-way ---------------


def test_a_rollback_after_a_crash_waits_for_recover_and_is_not_undone(
    plane_for: Any, data: Any, tmp_path: Path
) -> None:
    cp = plane_for(merge(FORCE_RETRAIN, LOW_RISK))
    batch = tmp_path / "july.parquet"
    data["july"].write_parquet(batch)
    crash("after_alias", "run", str(batch))
    later(cp)
    for attempt in (
        lambda: cp.rollback("flights", "bob", "bad model"),
        lambda: cp.start_run("flights", data["october"], "2013-10"),
        lambda: cp.submit_run("flights", data["october"], "2013-10"),
    ):
        with pytest.raises(ModelBusy, match="driftpilot recover"):
            attempt()
    [done] = cp.recover()
    assert done.outcome == "promoted"
    cp.rollback("flights", "bob", "bad model")
    assert cp.recover() == []  # the finished run is not promoted again
    assert champions(cp) == [("bootstrap", 1), ("promote", 2), ("rollback", 1)]
    assert_consistent(cp)


def test_a_replayed_promotion_is_void_if_the_champion_changed_hands_since(
    plane_for: Any, data: Any, tmp_path: Path
) -> None:
    """Defence in depth: even a rollback made behind the guard's back (an older client, the
    MLflow UI and a hand-written audit row) is not undone by the replay."""
    cp = plane_for(merge(FORCE_RETRAIN, LOW_RISK))
    batch = tmp_path / "july.parquet"
    data["july"].write_parquet(batch)
    crash("after_alias", "run", str(batch))
    run = one_run(cp)
    moved = registry.rollback("flights", "by-hand", cp.settings)
    cp.store.record_champion("flights", moved.current, moved.previous, "rollback", "by-hand", "ops")
    [done] = later(cp).recover()
    assert (done.run_id, done.outcome) == (run.id, "superseded")
    assert registry.current_champion("flights") == 1
    [void] = cp.store.list_rows(Mutation, Mutation.run_id == run.id, Mutation.phase == "void")
    assert void.step == "promote"


ROLLBACK = """
from driftpilot.runs.plane import ControlPlane
ControlPlane().rollback("flights", "bob", "regression")
"""


def test_kill_inside_a_rollback_then_recover_finishes_it_once(plane_for: Any, data: Any) -> None:
    cp = plane_for(merge(FORCE_RETRAIN, LOW_RISK))
    assert cp.start_run("flights", data["july"], "2013-07").outcome == "promoted"
    env = {**os.environ, "DRIFTPILOT_FAULTS": "after_rollback"}
    child = subprocess.run(
        [sys.executable, "-c", ROLLBACK], env=env, capture_output=True, text=True, timeout=300
    )
    assert child.returncode == -9, child.stderr[-2000:]
    assert registry.current_champion("flights") == 1  # moved in MLflow, not yet in the audit
    later(cp)
    with pytest.raises(ModelBusy, match="driftpilot recover"):
        cp.start_run("flights", data["october"], "2013-10")
    [done] = cp.recover()
    assert done.did == "finished: champion v1" and done.model == "flights"
    assert champions(cp) == [("bootstrap", 1), ("promote", 2), ("rollback", 1)]
    assert registry.champion_history("flights") == [1]
    rollback = cp.store.list_rows(ChampionChange, ChampionChange.action == "rollback")
    assert rollback[0].actor == "bob"
    assert cp.recover() == []
    assert_consistent(cp)


BOOTSTRAP = """
import sys, polars as pl
from driftpilot.runs.plane import ControlPlane
from tests.conftest import add_flights
add_flights(ControlPlane(), pl.read_parquet(sys.argv[1]))
"""


def test_a_bootstrap_killed_after_register_is_finished_by_adding_the_model_again(
    plane_for: Any, data: Any, tmp_path: Path
) -> None:
    cp = plane_for({}, add=False)
    initial = tmp_path / "initial.parquet"
    data["initial"].write_parquet(initial)
    env = {**os.environ, "DRIFTPILOT_FAULTS": "after_register"}
    child = subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, str(initial)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == -9, child.stderr[-2000:]
    later(cp)
    assert any("add the model again" in p for p in cp.verify().problems)
    add_flights(cp, data["initial"])
    assert [v.version for v in registry.list_versions("flights")] == [1]  # not registered twice
    assert champions(cp) == [("bootstrap", 1)]
    assert_consistent(cp)
