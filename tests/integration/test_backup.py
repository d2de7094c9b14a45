"""``driftpilot backup`` / ``restore`` on real homes: SQLite files and a real PostgreSQL.

A home with a champion and a run waiting for approval is backed up through the CLI, its
source moved away (nothing may lead back to it), and restored into a new home at another
path (on PostgreSQL: into new, empty databases). Then ``audit --verify`` passes, the restored
registry's champion gives the same predictions bit for bit, and the waiting run is approved
and promotes. A run in flight refuses the backup; a tampered backup and a non-empty target
refuse the restore, naming what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from driftpilot.cli import app
from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs import backup as backup_
from driftpilot.runs.plane import ControlPlane
from driftpilot.runs.trust import Trust
from driftpilot.store import AuditStore
from driftpilot.store.checkpoint import load_or_create_key
from driftpilot.store.models import ManagedModel, ToolCall
from tests.conftest import DB_VARS, TrainedHomes
from tests.integration.test_control_graph import FORCE_RETRAIN, HIGH_RISK, merge
from tests.pg import PostgresServer
from tools import registry

pytestmark = pytest.mark.integration
cli = CliRunner()


def invoke(*args: str) -> Any:
    return cli.invoke(app, list(args), terminal_width=200)


def point_at(env: pytest.MonkeyPatch, home: Path, urls: dict[str, str]) -> None:
    """Make ``home`` (and ``urls``' databases, none: SQLite files) the current home."""
    env.setenv("DRIFTPILOT_HOME", str(home))
    for name in DB_VARS:
        env.delenv(name, raising=False)
    for name, url in urls.items():
        env.setenv(name, url)
    get_settings.cache_clear()


def databases(kind: str, server: PostgresServer | None) -> dict[str, str]:
    """Fresh databases for one home (audit, Optuna apart) on PostgreSQL; none on SQLite."""
    if kind == "sqlite":
        return {}
    assert server is not None
    return {name: server.create_database() for name in DB_VARS}


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_restored_home_verifies_predicts_the_same_and_approves_the_waiting_run(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    trained_homes: TrainedHomes,
    months: dict[str, pl.DataFrame],
) -> None:
    server = request.getfixturevalue("postgres") if kind == "postgres" else None
    source, target = tmp_path / "source", tmp_path / "restored" / "home"
    point_at(monkeypatch, source, databases(kind, server))
    if kind == "sqlite":
        trained_homes.copy_into("flights", source.resolve())
    else:
        trained_homes.build("flights")  # on the source's own databases
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(merge(FORCE_RETRAIN, HIGH_RISK)))
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(policy))
    get_settings.cache_clear()
    settings = get_settings()
    july = months["2013-07"].sample(n=12000, seed=3).sort("time_hour")
    cp = ControlPlane(settings)
    try:
        waiting = cp.start_run("flights", july, "2013-07", requested_by="alice")
        assert waiting.status == "waiting_approval"
        # A run in flight holds its model's lease: the backup refuses, naming the run.
        cp.store.acquire_lease("flights", "run-in-flight", "elsewhere", 60)
        refused = invoke("backup", str(tmp_path / "refused"))
        assert refused.exit_code == 1 and "run-in-fligh" in refused.output, refused.output
        assert not (tmp_path / "refused").exists(), "a refused backup left a folder"
    finally:
        cp.close()
    rows = july.head(2000)
    before = registry.load_by_alias("flights", "champion", settings).predict_scores(rows)
    # The operator keeps the private key apart: the backup holds only its public half.
    assert settings.audit_key_path is not None
    operator_key = tmp_path / "operator-key.pem"
    shutil.copy2(settings.audit_key_path, operator_key)

    # The run's lease now ends in 2 s (as when it finishes): --wait waits for it.
    store = AuditStore(settings.db_url)
    store.acquire_lease("flights", "run-in-flight", "elsewhere", 2.0)
    store.engine.dispose()
    dest = tmp_path / "backup"
    started = time.monotonic()
    done = invoke("backup", str(dest), "--wait")
    assert done.exit_code == 0, done.output
    assert time.monotonic() - started > 1.0, "the backup did not wait for the run's lease"
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["alembic_revision"] and manifest["source"]["home"] == str(settings.home)
    listed = {f["path"] for f in manifest["files"]}
    assert "audit-key.pub" in listed and "audit-checkpoints.log" in listed
    assert not any(p.endswith("audit-key.pem") for p in listed), "the private key was copied"
    assert b"PRIVATE" not in (dest / "audit-key.pub").read_bytes()
    manifest_sha = hashlib.sha256((dest / "manifest.json").read_bytes()).hexdigest()
    assert audited(settings, "backup")["manifest_sha256"] == manifest_sha
    source.rename(tmp_path / "moved-away")  # nothing restored may read the source's files
    kept_policy = policy.read_text()
    policy.unlink()  # the policy, outside the home, is in the backup too

    point_at(monkeypatch, target, databases(kind, server))
    new_policy = tmp_path / "restored" / "etc" / "policy.yaml"
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(new_policy))
    restored = invoke("restore", str(dest), "--home", str(target), "--audit-key", str(operator_key))
    assert restored.exit_code == 0, restored.output
    assert new_policy.read_text() == kept_policy
    verified = invoke("audit", "--verify")
    assert verified.exit_code == 0 and "audit verified" in verified.output, verified.output
    get_settings.cache_clear()
    restore_call = audited(get_settings(), "restore", args=True)
    assert restore_call["manifest_sha256"] == manifest_sha
    assert restore_call["source_home"] == str(settings.home)
    assert audited(get_settings(), "restore")["trust"] == "checked against --audit-key"
    if kind == "postgres":  # an empty home, but the databases are the restored ones now
        again = invoke("restore", str(dest), "--home", str(tmp_path / "again"), "--trust-backup")
        assert again.exit_code == 1 and "is not empty" in again.output, again.output
        assert not (tmp_path / "again").exists(), "restore wrote before refusing"

    get_settings.cache_clear()
    mine = get_settings()
    after = registry.load_by_alias("flights", "champion", mine).predict_scores(rows)
    assert before.dtype == after.dtype and np.array_equal(before, after), "predictions differ"
    cp = ControlPlane(mine)
    try:
        approved = cp.decide(waiting.run_id, "approve", "bob")
        assert approved.outcome == "promoted", approved.summary
        assert registry.current_champion("flights", mine) == 2
        [managed] = cp.store.list_rows(ManagedModel)
        assert managed.reference_path and managed.reference_path.startswith(str(mine.home))
        result = cp.verify()
        assert result.ok, (result.first_broken, result.problems)
    finally:
        cp.close()


def audited(settings: Settings, tool: str, *, args: bool = False) -> dict[str, Any]:
    """The result (or the arguments) of the one ``tool`` call in the audit of ``settings``."""
    store = AuditStore(settings.db_url)
    try:
        [call] = store.list_rows(ToolCall, ToolCall.tool == tool)
    finally:
        store.engine.dispose()
    return dict(json.loads(call.args if args else call.result))


@pytest.fixture
def small_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The backup of a home with an audit database, a signed checkpoint and a file."""
    home = tmp_path / "small"
    point_at(monkeypatch, home, {})
    settings = get_settings()
    store = AuditStore(settings.db_url)
    Trust(store, settings).checkpoint()
    store.engine.dispose()
    (home / "batches" / "note.txt").write_text("a batch file\n")
    (home / "reports" / "r.html").write_text("<html>a report</html>\n")
    dest = tmp_path / "small-backup"
    done = invoke("backup", str(dest))
    assert done.exit_code == 0, done.output
    assert settings.audit_key_path is not None
    printed = backup_.fingerprint(load_or_create_key(settings.audit_key_path).public_key())
    assert f"signed by audit key {printed}" in done.output, done.output
    (tmp_path / "fingerprint").write_text(printed)
    return dest


def test_no_reports_leaves_the_reports_out(small_backup: Path, tmp_path: Path) -> None:
    lean = tmp_path / "lean-backup"
    done = invoke("backup", str(lean), "--no-reports")
    assert done.exit_code == 0, done.output
    listed = {f["path"] for f in json.loads((lean / "manifest.json").read_text())["files"]}
    assert "trees/home/batches/note.txt" in listed
    assert not any("reports" in p for p in listed), listed
    assert (small_backup / "trees" / "home" / "reports" / "r.html").exists()


def restore_into(home: Path, backup: Path, env: pytest.MonkeyPatch, *trust: str) -> Any:
    """``restore`` into ``home``; ``trust`` (default --trust-backup): the key options."""
    point_at(env, home, {})
    return invoke("restore", str(backup), "--home", str(home), *(trust or ("--trust-backup",)))


def test_a_tampered_backup_is_refused_naming_the_file(
    small_backup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    altered = small_backup / "trees" / "home" / "batches" / "note.txt"
    altered.write_text("a changed batch file\n")
    refused = restore_into(tmp_path / "t1", small_backup, monkeypatch)
    assert refused.exit_code == 1, refused.output
    assert "trees/home/batches/note.txt" in refused.output and "sha256" in refused.output
    assert not (tmp_path / "t1" / "driftpilot.db").exists(), "restored before checking"
    altered.write_text("a batch file\n")
    (small_backup / "db" / "extra.db").write_bytes(b"x")
    refused = restore_into(tmp_path / "t2", small_backup, monkeypatch)
    assert refused.exit_code == 1 and "db/extra.db" in refused.output, refused.output
    (small_backup / "db" / "extra.db").unlink()
    # A backup re-signed by another key: only the operator's own key tells.
    other = tmp_path / "other-key.pem"
    load_or_create_key(other)
    point_at(monkeypatch, tmp_path / "t3", {})
    refused = invoke("restore", str(small_backup), "--audit-key", str(other))
    assert refused.exit_code == 1 and "not the key of this backup" in refused.output
    manifest = small_backup / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format": 1', '"format": 1 '))
    refused = restore_into(tmp_path / "t4", small_backup, monkeypatch)
    assert refused.exit_code == 1 and "signature" in refused.output, refused.output


def test_a_restore_into_a_non_empty_home_is_refused_and_a_new_key_signs_on(
    small_backup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("mine")
    refused = restore_into(busy, small_backup, monkeypatch)
    assert refused.exit_code == 1 and "not empty" in refused.output, refused.output
    assert (busy / "something").read_text() == "mine" and len(list(busy.iterdir())) == 1
    fresh = tmp_path / "fresh"
    # Without a key from outside the backup (or an explicit --trust-backup): refused.
    point_at(monkeypatch, fresh, {})
    refused = invoke("restore", str(small_backup), "--home", str(fresh))
    assert refused.exit_code == 1 and "--expect-key" in refused.output, refused.output
    assert not (fresh / "driftpilot.db").exists()
    printed = (tmp_path / "fingerprint").read_text()
    done = restore_into(fresh, small_backup, monkeypatch, "--expect-key", printed)
    assert done.exit_code == 0 and "new audit key" in done.output, done.output
    get_settings.cache_clear()
    assert audited(get_settings(), "restore")["trust"] == f"checked against --expect-key {printed}"
    assert (fresh / "batches" / "note.txt").read_text() == "a batch file\n"
    verified = invoke("audit", "--verify")
    assert verified.exit_code == 0 and "audit verified" in verified.output, verified.output
