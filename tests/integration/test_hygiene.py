"""MLflow and disk hygiene (issue 17, item 13), on real flights, real MLflow, real SQLite.

A challenger is an MLflow run with its logged model; it becomes a registered version only when
it is promoted or put to an approver, once per run even when the step runs again. Evidently
reports (rendered after the decision) are stored gzip, their sha256 is in the audit, and a
retention keeps the newest N per model plus the reports of the runs that moved the champion."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from agents import cicd
from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import ChampionChange, Mutation, ToolCall
from tests.conftest import jan_initial
from tests.integration.test_control_graph import FORCE_RETRAIN, HIGH_RISK, LOW_RISK, merge, plane
from tools import registry
from tools.drift_report import prune_reports, readable_report, report_html
from ui.chat import Chat, Identity

pytestmark = pytest.mark.integration
WATCH_ONLY = {"drift": {"retrain": "never"}}


@pytest.fixture(scope="module")
def data(months: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    jan = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=7)
    return {
        "initial": jan_initial(months),  # the trained home's champion's rows
        "jan_other": jan.tail(6000).sort("time_hour"),
        "july": months["2013-07"].sample(n=16000, seed=3).sort("time_hour"),
        "march": months["2013-03"].sample(n=4000, seed=5).sort("time_hour"),
    }


def run_versions(settings: Settings, run_id: str) -> list[int]:
    return [
        v.version
        for v in registry.list_versions("flights", settings)
        if v.tags.get("driftpilot.run_id") == run_id
    ]


def phases(cp: ControlPlane, run_id: str, step: str) -> list[str]:
    rows = cp.store.list_rows(Mutation, Mutation.run_id == run_id, order=Mutation.id)
    return [m.phase for m in rows if m.step == step]


def report_record(cp: ControlPlane, run_id: str) -> dict[str, Any]:
    """The audited result of the run's report render (its path and sha256)."""
    [row] = cp.store.list_rows(
        ToolCall, ToolCall.run_id == run_id, ToolCall.tool == "drift.render_report"
    )
    result: dict[str, Any] = json.loads(row.result)
    return result


def stored_reports(settings: Settings) -> set[Path]:
    folder = (settings.reports_dir or Path()).joinpath("flights")
    return {p for p in folder.iterdir() if not p.name.startswith(".")}  # not the render locks


def test_rejected_challenger_stays_a_run_promoted_one_registers_once_reports_are_pruned(
    settings: Settings,
    trained_home: Any,
    tmp_path: Path,
    data: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRIFTPILOT_REPORT_RETENTION", "1")
    cp = plane(trained_home, tmp_path, merge(FORCE_RETRAIN, LOW_RISK), monkeypatch=monkeypatch)

    rejected = cp.start_run("flights", data["jan_other"], "jan-b")
    assert rejected.outcome == "challenger_rejected", rejected.summary["evaluation"]
    assert [v.version for v in registry.list_versions("flights", settings)] == [1]
    with pytest.raises(registry.AliasNotFound):
        registry.get_alias("flights", registry.CHALLENGER, settings)
    logged = rejected.summary["retraining"]
    import mlflow

    run = mlflow.MlflowClient(settings.mlflow_tracking_uri).get_run(logged["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["driftpilot.run_id"] == rejected.run_id
    assert registry.load_logged(logged["model_uri"], settings).family == logged["family"]
    assert rejected.summary["drift"]["report"] is None  # rendered after the decision:
    first_report = Path(cp.run_report(rejected.run_id).path or "")  # here, on request
    assert first_report.is_file()
    assert settings.cache_dir is not None
    attached = settings.cache_dir / "reports"  # where the chat puts plain copies it attaches
    old_copy = readable_report(first_report, attached)
    assert old_copy.read_bytes() == report_html(first_report)

    time.sleep(1.1)  # report mtimes order the retention: one second apart on every filesystem
    promoted = cp.start_run("flights", data["july"], "2013-07")
    assert promoted.outcome == "promoted", promoted.summary
    assert run_versions(settings, promoted.run_id) == [2]
    [v2] = [v for v in registry.list_versions("flights", settings) if v.version == 2]
    assert v2.run_id == promoted.summary["retraining"]["mlflow_run_id"]  # the evaluated model
    assert registry.CHALLENGER in v2.aliases and registry.CHAMPION in v2.aliases
    assert phases(cp, promoted.run_id, "cicd:register") == ["intent", "applied"]

    # The registration step run again (a resume runs a node from its top): no second version.
    state = {key: getattr(promoted, key) for key in ("run_id", "model")}
    state["retraining"] = promoted.summary["retraining"]
    assert cicd.register_challenger(cp.ctx, state) == 2
    assert [v.version for v in registry.list_versions("flights", settings)] == [2, 1]
    assert phases(cp, promoted.run_id, "cicd:register") == ["intent", "applied", "reconciled"]
    assert cp.verify().ok, cp.verify().problems

    # Retention 1: the rejected run's report went when the promoting run's was written.
    assert first_report.exists()  # the promoting run ended with no report of its own yet
    new_report = cp.run_report(promoted.run_id).path or ""
    assert not first_report.exists()
    assert report_record(cp, rejected.run_id)["sha256"]  # its hash stays audited
    cp.close()
    time.sleep(1.1)
    new_copy = readable_report(new_report, attached)
    watch = plane(trained_home, tmp_path, WATCH_ONLY, monkeypatch=monkeypatch)
    last = watch.start_run("flights", data["march"], "2013-03")
    assert last.outcome is not None and last.outcome.startswith("no_retrain"), last.summary
    assert watch.run_report(last.run_id).status == "ready"
    promotions = watch.store.list_rows(ChampionChange, ChampionChange.action == "promote")
    assert [c.run_id for c in promotions] == [promoted.run_id]
    # The newest report (the last run's) stays, and the champion mover's, though older.
    audited = {run_id: report_record(watch, run_id) for run_id in (promoted.run_id, last.run_id)}
    assert stored_reports(settings) == {Path(record["path"]) for record in audited.values()}
    for record in audited.values():
        report = Path(record["path"])
        raw = report.read_bytes()
        assert report.name.endswith(".html.gz") and raw[:2] == b"\x1f\x8b"  # gzip magic
        html = gzip.decompress(raw)
        assert b"<html" in html[:1000].lower()
        assert hashlib.sha256(html).hexdigest() == record["sha256"]
        assert report_html(report) == html
    # The chat's plain copies are bounded by the same retention (made again when asked for).
    assert sorted(attached.iterdir()) == [new_copy] and not old_copy.exists()
    watch.close()


def test_high_risk_challenger_is_registered_before_the_approval_and_once_after_a_resume(
    settings: Settings,
    trained_home: Any,
    tmp_path: Path,
    data: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cp = plane(trained_home, tmp_path, merge(FORCE_RETRAIN, HIGH_RISK), monkeypatch=monkeypatch)
    view = cp.start_run("flights", data["july"], "2013-07", requested_by="alice")
    assert view.status == "waiting_approval"
    # The approver is shown a registered version, and the approval is bound to it.
    assert run_versions(settings, view.run_id) == [2]
    assert view.approval_request is not None
    assert view.approval_request["action_request"]["args"]["version"] == 2
    assert registry.get_alias("flights", registry.CHALLENGER, settings).version == 2
    assert registry.current_champion("flights", settings) == 1
    # The approver's chat posts the run's report once rendered, as HTML a browser opens
    # (stored gzip); the waiting run's view then attaches it too.
    chat = Chat(cp, Identity("bob", "approver", "password"))
    assert view.report_status == "pending" and chat.run_visuals(view)[1] == []
    posted = chat.report_reply(view)
    assert posted is not None
    [(name, attached)] = posted.files
    assert chat.run_visuals(view)[1] == posted.files
    stored = Path(report_record(cp, view.run_id)["path"])
    assert name.endswith(".html") and stored.suffix == ".gz"
    assert attached.read_bytes() == gzip.decompress(stored.read_bytes())
    assert (
        hashlib.sha256(attached.read_bytes()).hexdigest()
        == (report_record(cp, view.run_id)["sha256"])
    )
    cp.close()

    fresh = ControlPlane(get_settings())  # as a new process after a restart would build it
    done = fresh.decide(view.run_id, "approve", "bob", "read the report")
    assert done.outcome == "promoted"
    assert run_versions(settings, view.run_id) == [2]
    assert [v.version for v in registry.list_versions("flights", settings)] == [2, 1]
    assert phases(fresh, view.run_id, "cicd:register") == ["intent", "applied"]
    assert len([c for c in fresh.store.list_rows(ChampionChange) if c.run_id == view.run_id]) == 1
    assert fresh.verify().ok
    fresh.close()


def test_retention_keeps_the_newest_and_the_protected_and_gzip_reads_back(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "reports" / "m"
    folder.mkdir(parents=True)
    made = []
    for i in range(5):
        path = folder / f"b{i}.html.gz"
        path.write_bytes(gzip.compress(f"<html>{i}</html>".encode(), mtime=0))
        os.utime(path, (1_000_000 + i, 1_000_000 + i))  # b4 is the newest
        made.append(path)
    (folder / ".b5.html.gz.partial").write_bytes(b"half")  # being written: never pruned
    gone = prune_reports(folder, 2, protected=[str(made[1])])
    assert gone == [made[0], made[2]]  # oldest first; b1 protected, b3 and b4 the newest 2
    assert sorted(p.name for p in folder.iterdir()) == [
        ".b5.html.gz.partial",
        "b1.html.gz",
        "b3.html.gz",
        "b4.html.gz",
    ]
    assert prune_reports(folder, 0, protected=[]) == []  # 0 keeps every report
    plain = readable_report(made[3], tmp_path / "cache")
    assert plain.name == "b3.html" and plain.read_text() == "<html>3</html>"
    assert readable_report(plain, tmp_path / "cache") == plain  # plain HTML is used as it is
