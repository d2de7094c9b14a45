"""Every route of the control graph on real flights, real MLflow, real Optuna, real SQLite.

Routes are steered by the policy file (as an operator would), never by patching code. The LLM
is either the builtin policy backend or a scripted chat model (the only fake)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from driftpilot.core.errors import ApprovalError
from driftpilot.core.llm import Backend
from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import BatchRecord, ChampionChange, Decision
from tests.conftest import jan_initial
from tests.fakes import say, scripted
from tools import registry

pytestmark = pytest.mark.integration

FORCE_RETRAIN = {
    "drift": {"retrain": "always"},
    "optimizer": {"default_trials": 3},
}
LOW_RISK = {"risk": {"min_gain_to_halfwidth": 0.0, "max_divergence": 1.0}}
HIGH_RISK = {"risk": {"min_gain_to_halfwidth": 1000.0}}


def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = {**out.get(key, {}), **value}
    return out


@pytest.fixture(scope="module")
def data(months: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    jan = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=7)
    return {
        "initial": jan_initial(months),  # the trained home's champion's rows
        "jan_other": jan.tail(6000).sort("time_hour"),
        "july": months["2013-07"].sample(n=16000, seed=3).sort("time_hour"),
    }


def plane(
    trained_home: Callable[[str], Settings],
    tmp_path: Path,
    policy: dict[str, Any],
    backend: Backend | None = None,
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> ControlPlane:
    """A ControlPlane with ``policy`` on a copy of the session's trained home: the flights
    model and its champion v1, added by alice on ``data["initial"]`` (tests/conftest.py)."""
    trained_home("flights")
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    assert monkeypatch is not None
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(path))
    get_settings.cache_clear()
    return ControlPlane(get_settings(), backend)


def decisions(cp: ControlPlane, run_id: str) -> dict[str, Decision]:
    """Each agent's first decision of the run (cicd also records the promotion it made)."""
    made: dict[str, Decision] = {}
    for d in cp.store.list_rows(Decision, Decision.run_id == run_id, order=Decision.id):
        made.setdefault(d.agent, d)
    return made


def test_no_drift_stops_at_the_analyst(
    settings: Settings, trained_home: Any, tmp_path: Path, data: Any, monkeypatch: Any
) -> None:
    cp = plane(trained_home, tmp_path, {}, monkeypatch=monkeypatch)
    view = cp.start_run("flights", data["jan_other"], "jan-b")
    assert view.status == "completed" and view.outcome in ("no_retrain:none", "no_retrain:monitor")
    made = decisions(cp, view.run_id)
    assert set(made) == {"ingestion", "drift_analyst"}
    analyst = made["drift_analyst"]
    assert analyst.backend == "builtin" and "drift_share=" in analyst.rationale
    assert json.loads(analyst.flags) == []  # the template cites correctly
    # The decision did not wait for Evidently's report: it is rendered after, on request.
    assert view.summary["drift"]["report"] is None and view.report_status == "pending"
    report = cp.run_report(view.run_id)
    assert report.status == "ready" and report.path is not None and Path(report.path).exists()
    assert cp.get_run(view.run_id).report_status == "ready"
    assert cp.verify().ok


def test_bad_batch_is_quarantined_with_its_reason(
    settings: Settings, trained_home: Any, tmp_path: Path, data: Any, monkeypatch: Any
) -> None:
    cp = plane(trained_home, tmp_path, {}, monkeypatch=monkeypatch)
    storm = data["jan_other"].with_columns(
        pl.when(pl.int_range(pl.len()) % 3 > 0).then(None).otherwise(pl.col("temp")).alias("temp")
    )
    view = cp.start_run("flights", storm, "storm")
    assert view.outcome == "quarantined"
    [record] = cp.store.list_rows(BatchRecord, BatchRecord.status == "quarantined")
    assert "temp" in record.reason and Path(record.path).exists()  # kept, not dropped
    assert pl.read_parquet(record.path).height == storm.height
    again = cp.start_run("flights", data["jan_other"], "jan-b")
    dup = cp.start_run("flights", data["jan_other"].reverse(), "jan-b-again")
    assert again.outcome != "quarantined" and dup.outcome == "quarantined"
    assert "already ingested" in dup.summary["ingestion"]["reason"]


def test_retrain_and_low_risk_promotion(
    settings: Settings, trained_home: Any, tmp_path: Path, data: Any, monkeypatch: Any
) -> None:
    cp = plane(trained_home, tmp_path, merge(FORCE_RETRAIN, LOW_RISK), monkeypatch=monkeypatch)
    view = cp.start_run("flights", data["july"], "2013-07")
    assert view.outcome == "promoted", view.summary
    assert view.summary["promotion"]["approved_by"] == "policy:low-risk"
    assert registry.get_alias("flights", "champion", settings).version == 2
    assert set(decisions(cp, view.run_id)) == {
        "ingestion",
        "drift_analyst",
        "optimizer",
        "retraining",
        "evaluator",
        "cicd",
    }
    assert cp.model_view("flights").champion == 2
    assert cp.champion_at("flights", "2999-01-01") == 2


def test_high_risk_waits_and_is_approved_by_someone_else(
    settings: Settings, trained_home: Any, tmp_path: Path, data: Any, monkeypatch: Any
) -> None:
    cp = plane(trained_home, tmp_path, merge(FORCE_RETRAIN, HIGH_RISK), monkeypatch=monkeypatch)
    view = cp.start_run("flights", data["july"], "2013-07", requested_by="alice")
    assert view.status == "waiting_approval" and view.outcome is None
    request = view.approval_request
    assert request is not None and request["action_request"]["action"] == "promote"
    assert (
        request["config"]["allow_accept"] and "small against its interval" in request["description"]
    )
    assert [r.run_id for r in cp.pending_approvals()] == [view.run_id]
    with pytest.raises(ApprovalError, match="cannot approve"):
        cp.decide(view.run_id, "approve", "alice")
    done = cp.decide(view.run_id, "approve", "bob", "checked the report")
    assert done.outcome == "promoted" and done.summary["promotion"]["approved_by"] == "bob"
    assert registry.get_alias("flights", "champion", settings).version == 2
    with pytest.raises(ApprovalError, match="not waiting"):
        cp.decide(view.run_id, "approve", "carol")
    back = cp.rollback("flights", "carol", "bad feedback from ops")
    assert (back["from"], back["to"]) == (2, 1)
    assert registry.get_alias("flights", "champion", settings).version == 1
    assert [c.action for c in cp.store.list_rows(ChampionChange)] == [
        "bootstrap",
        "promote",
        "rollback",
    ]
    assert cp.verify().ok


def test_high_risk_rejected_keeps_the_champion(
    settings: Settings, trained_home: Any, tmp_path: Path, data: Any, monkeypatch: Any
) -> None:
    cp = plane(trained_home, tmp_path, merge(FORCE_RETRAIN, HIGH_RISK), monkeypatch=monkeypatch)
    view = cp.start_run("flights", data["july"], "2013-07")
    done = cp.decide(view.run_id, "reject", "bob", "not during peak season")
    assert (
        done.outcome == "approval_rejected"
        and done.summary["approval"]["comment"] == "not during peak season"
    )
    assert registry.get_alias("flights", "champion", settings).version == 1


def test_challenger_no_better_is_rejected(
    settings: Settings, trained_home: Any, tmp_path: Path, data: Any, monkeypatch: Any
) -> None:
    cp = plane(trained_home, tmp_path, merge(FORCE_RETRAIN, LOW_RISK), monkeypatch=monkeypatch)
    view = cp.start_run("flights", data["jan_other"], "jan-b")
    assert view.outcome == "challenger_rejected", view.summary["evaluation"]
    assert view.summary["evaluation"]["ci_low"] <= 0
    # Kept as an MLflow run with its model, not registered (tests/integration/test_hygiene.py)
    assert [v.version for v in registry.list_versions("flights", settings)] == [1]
    assert registry.get_alias("flights", "champion", settings).version == 1


def test_scripted_llm_drives_the_graph_and_garbage_falls_back(
    settings: Settings, trained_home: Any, tmp_path: Path, data: Any, monkeypatch: Any
) -> None:
    backend = scripted(
        say({"action": "accept", "reason": "", "rationale": "clean"}),
        say(
            {
                "action": "retrain",
                "severity": "high",
                "cited_metrics": {"drift_share": 0.99},
                "rationale": "drift_share=0.99 is huge",
            }
        ),
        say({"family": "lightgbm", "n_trials": 3, "timeout_s": 60, "rationale": "keep family"}),
        say({"window": 1, "rationale": "only the new regime"}),
        say({"action": "promote", "rationale": "better"}),
        say({"not": "a decision"}),
        say({"still": "not"}),  # cicd: garbage twice -> policy fallback
    )
    cp = plane(
        trained_home, tmp_path, merge(FORCE_RETRAIN, LOW_RISK), backend, monkeypatch=monkeypatch
    )
    view = cp.start_run("flights", data["july"], "2013-07")
    made = decisions(cp, view.run_id)
    assert made["drift_analyst"].backend == "scripted" and made["drift_analyst"].tokens_in == 100
    flags = json.loads(made["drift_analyst"].flags)
    assert any("citation mismatch: drift_share=0.99" in f for f in flags)  # cited a wrong value
    assert made["retraining"].action == "train:1"
    assert made["cicd"].fallback and any(
        "llm_fallback" in f for f in json.loads(made["cicd"].flags)
    )
    assert view.outcome == "promoted"  # the policy decided for the failed cicd agent


def test_llm_cannot_lower_risk(
    settings: Settings, trained_home: Any, tmp_path: Path, data: Any, monkeypatch: Any
) -> None:
    backend = scripted(
        say({"action": "accept", "reason": "", "rationale": "ok"}),
        say({"action": "retrain", "severity": "high", "cited_metrics": {}, "rationale": "go"}),
        say({"family": "lightgbm", "n_trials": 3, "timeout_s": 60, "rationale": "k"}),
        say({"window": 2, "rationale": "k"}),
        say({"action": "promote", "rationale": "k"}),
        say({"risk_tier": "low", "request_summary": "ship it", "rationale": "trust me"}),
    )
    cp = plane(
        trained_home, tmp_path, merge(FORCE_RETRAIN, HIGH_RISK), backend, monkeypatch=monkeypatch
    )
    view = cp.start_run("flights", data["july"], "2013-07")
    assert view.status == "waiting_approval"  # policy said high; the LLM's 'low' changes nothing


RESUME_SCRIPT = """
import sys, time, polars as pl
from driftpilot.runs.plane import ControlPlane
batch = pl.read_parquet(sys.argv[1])
view = ControlPlane().start_run("flights", batch, "2013-07", requested_by="alice")
print(view.run_id, view.status, flush=True)
time.sleep(120)
"""


def test_paused_run_survives_kill_9_and_registers_once(
    settings: Settings, trained_home: Any, tmp_path: Path, data: Any, monkeypatch: Any
) -> None:
    cp = plane(trained_home, tmp_path, merge(FORCE_RETRAIN, HIGH_RISK), monkeypatch=monkeypatch)
    cp.close()
    batch = tmp_path / "july.parquet"
    data["july"].write_parquet(batch)
    proc = subprocess.Popen(
        [sys.executable, "-c", RESUME_SCRIPT, str(batch)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert proc.stdout is not None
    run_id, status = proc.stdout.readline().split()
    assert status == "waiting_approval"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    fresh = ControlPlane(get_settings())  # a new process would build exactly this
    done = fresh.decide(run_id, "approve", "bob", "after the restart")
    assert done.outcome == "promoted"
    versions = [
        v
        for v in registry.list_versions("flights", settings)
        if v.tags.get("driftpilot.run_id") == run_id
    ]
    assert len(versions) == 1
    assert len([c for c in fresh.store.list_rows(ChampionChange) if c.run_id == run_id]) == 1
    assert fresh.verify().ok


def test_scripted_llm_may_quarantine_a_clean_batch(
    settings: Settings, trained_home: Any, tmp_path: Path, data: Any, monkeypatch: Any
) -> None:
    backend = scripted(
        say(
            {
                "action": "quarantine",
                "reason": "source system under maintenance",
                "rationale": "the data owner asked to hold this batch",
            }
        )
    )
    cp = plane(trained_home, tmp_path, {}, backend, monkeypatch=monkeypatch)
    view = cp.start_run("flights", data["jan_other"], "jan-b")
    assert view.outcome == "quarantined"
    [record] = cp.store.list_rows(BatchRecord, BatchRecord.status == "quarantined")
    assert record.reason == "source system under maintenance"


def test_scripted_llm_cannot_retrain_without_two_signals(
    settings: Settings, trained_home: Any, tmp_path: Path, data: Any, monkeypatch: Any
) -> None:
    retrain = {
        "action": "retrain",
        "severity": "high",
        "cited_metrics": {},
        "rationale": "retrain!",
    }
    backend = scripted(
        say({"action": "accept", "reason": "", "rationale": "ok"}), say(retrain), say(retrain)
    )
    cp = plane(trained_home, tmp_path, {}, backend, monkeypatch=monkeypatch)
    view = cp.start_run("flights", data["jan_other"], "jan-b")  # same month: no drift
    assert view.outcome in ("no_retrain:none", "no_retrain:monitor")
    analyst = decisions(cp, view.run_id)["drift_analyst"]
    assert analyst.fallback and "outside the policy bounds" in json.loads(analyst.flags)[-1]
    assert len(json.loads(analyst.flags)) == 1  # the policy's own verdict cites correctly


def test_rollback_without_a_previous_champion_changes_nothing(
    settings: Settings, trained_home: Any, tmp_path: Path, data: Any, monkeypatch: Any
) -> None:
    from driftpilot.core.errors import RegistryError

    cp = plane(trained_home, tmp_path, {}, monkeypatch=monkeypatch)
    with pytest.raises(RegistryError, match="no previous champion"):
        cp.rollback("flights", "carol")
    assert registry.get_alias("flights", "champion", settings).version == 1
    assert [c.action for c in cp.store.list_rows(ChampionChange)] == ["bootstrap"]
