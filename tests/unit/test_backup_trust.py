"""What a restore trusts and where it writes: no link in a backup, only the trees a backup
writes, a key from outside the backup, every target free before the first write, an
owner-only backup, no credentials in the manifest (issue 20, item 6 review)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from driftpilot.core.errors import BackupError, IntegrityError
from driftpilot.core.settings import Settings
from driftpilot.runs import backup as backup_
from driftpilot.runs import backup_stores, restore
from driftpilot.store.checkpoint import load_or_create_key

OLD = "/data/old-home"


def home_settings(home: Path, **extra: Any) -> Settings:
    """Settings of a SQLite home at ``home`` whatever the environment's database URLs."""
    urls: dict[str, Any] = dict.fromkeys(
        (
            "db_url",
            "checkpoint_url",
            "mlflow_tracking_uri",
            "mlflow_registry_uri",
            "optuna_storage",
        ),
        "",
    )
    return Settings(home=home, **urls, **extra)


def make_backup(
    tmp_path: Path,
    key: Path,
    *,
    trees: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
    stores: dict[str, Any] | None = None,
) -> Path:
    """A backup signed by ``key``: the given files, trees and store records (default: one
    batch file in the home's tree, an audit database that was never created)."""
    dest = tmp_path / "backup"
    files = files or {"trees/home/batches/note.txt": b"a batch file\n"}
    for path, data in files.items():
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_bytes(data)
    signer = home_settings(tmp_path / "signer", audit_key_path=key)
    backup_._public_key(signer, dest)
    # A SQLite home's roles: the registry in MLflow's store, each other role its own file.
    roles = {role: role for role in backup_stores.ROLES} | {"mlflow_registry": "mlflow"}
    never_made = {"kind": "sqlite", "absent": True}
    manifest = {
        "format": backup_.FORMAT,
        "created_at": "2026-12-07T00:00:00+00:00",
        "alembic_revision": None,
        "source": {"home": OLD, "trees": trees or {"home": OLD}, "policy": None},
        "stores": stores or {role: never_made for role in set(roles.values())},
        "roles": roles,
        "files": backup_.file_list(dest),
    }
    backup_.write_manifest(dest, manifest, signer)
    return dest


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "audit-key.pem"
    load_or_create_key(path)
    return path


def fingerprint_of(key: Path) -> str:
    return backup_.fingerprint(load_or_create_key(key).public_key())


def no_file_under(folder: Path) -> bool:
    return not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


def test_a_linked_folder_or_file_in_a_backup_is_refused_naming_it(
    tmp_path: Path, key: Path
) -> None:
    dest = make_backup(tmp_path, key)
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "model.pkl").write_bytes(b"not ours")
    # The signed manifest is unchanged: the link adds files that rglob never walked.
    (dest / "trees" / "home" / "mlartifacts").symlink_to(Path("../../../payload"))
    with pytest.raises(IntegrityError, match="trees/home/mlartifacts is a symbolic link"):
        restore.verify_backup(dest, expect_key=fingerprint_of(key))
    target = home_settings(tmp_path / "target")
    with pytest.raises(IntegrityError, match="symbolic link"):
        restore.restore(dest, target, expect_key=fingerprint_of(key))
    assert no_file_under(target.home)
    (dest / "trees" / "home" / "mlartifacts").unlink()
    (dest / "trees" / "home" / "batches" / "link.txt").symlink_to(payload / "model.pkl")
    with pytest.raises(IntegrityError, match=r"batches/link\.txt is a symbolic link"):
        restore.verify_backup(dest, trust_backup=True)


def test_a_tree_name_a_backup_does_not_write_is_refused_before_any_write(
    tmp_path: Path, key: Path
) -> None:
    # Signed by the attacker's own key: only --trust-backup would accept it, and still not.
    dest = make_backup(
        tmp_path,
        key,
        trees={"home": OLD, "../.ssh": f"{OLD}/.ssh"},
        files={".ssh/authorized_keys": b"ssh-ed25519 AAAA attacker\n"},
    )
    target = home_settings(tmp_path / "target" / "home")
    with pytest.raises(IntegrityError, match=r"unknown tree '\.\./\.ssh'"):
        restore.restore(dest, target, trust_backup=True)
    assert not (tmp_path / "target" / ".ssh").exists()


def test_an_unknown_store_role_is_named_not_a_key_error(tmp_path: Path, key: Path) -> None:
    dest = make_backup(tmp_path, key, stores={"evil": {"kind": "sqlite", "absent": True}})
    with pytest.raises(IntegrityError, match="unknown store role 'evil'"):
        restore.verify_backup(dest, trust_backup=True)
    with pytest.raises(BackupError, match="store role 'evil'"):
        restore._check_stores({"stores": {"evil": {"kind": "sqlite"}}}, [])


def test_restore_needs_a_key_from_outside_the_backup(tmp_path: Path, key: Path) -> None:
    dest = make_backup(tmp_path, key)
    target = home_settings(tmp_path / "target")
    with pytest.raises(BackupError, match="--expect-key FINGERPRINT"):
        restore.restore(dest, target)
    assert no_file_under(target.home)
    right = fingerprint_of(key)
    assert restore.verify_backup(dest, expect_key=right)["source"]["home"] == OLD
    assert restore.verify_backup(dest, expect_key=right.removeprefix("SHA256:").upper())
    # Re-signed with a new key (its public half replaced): the fingerprint tells.
    manifest = json.loads((dest / "manifest.json").read_text())
    forger = home_settings(tmp_path / "forger", audit_key_path=tmp_path / "forger.pem")
    backup_._public_key(forger, dest)
    manifest["files"] = backup_.file_list(dest)
    backup_.write_manifest(dest, manifest, forger)
    with pytest.raises(IntegrityError, match="not --expect-key"):
        restore.verify_backup(dest, expect_key=right)
    with pytest.raises(IntegrityError, match="not the key of this backup"):
        restore.verify_backup(dest, audit_key=key)
    restore.verify_backup(dest, trust_backup=True)  # said explicitly: the audit row says so


def test_an_unsigned_backup_is_refused_unless_trusted_explicitly(tmp_path: Path, key: Path) -> None:
    dest = make_backup(tmp_path, key)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if f["path"] != "audit-key.pub"]
    (dest / "audit-key.pub").unlink()
    (dest / "manifest.sig").unlink()
    (dest / "manifest.json").write_text(json.dumps(manifest))
    for given in ({}, {"expect_key": fingerprint_of(key)}, {"audit_key": key}):
        with pytest.raises(IntegrityError, match="unsigned"):
            restore.verify_backup(dest, **given)
    assert restore.verify_backup(dest, trust_backup=True)["format"] == backup_.FORMAT


def test_every_target_is_checked_before_anything_is_written(tmp_path: Path, key: Path) -> None:
    art = f"{OLD}-artifacts"
    dest = make_backup(
        tmp_path,
        key,
        trees={"home": OLD, "artifacts": art},
        files={
            "trees/home/batches/note.txt": b"a batch file\n",
            "trees/artifacts/1/model.pkl": b"restored model\n",
            "audit-checkpoints.log": b"{}\n",
        },
    )
    elsewhere = tmp_path / "shared-artifacts"
    (elsewhere / "1").mkdir(parents=True)
    (elsewhere / "1" / "model.pkl").write_bytes(b"another home's model\n")
    target = home_settings(tmp_path / "t1", mlflow_artifact_root=elsewhere.as_uri())
    with pytest.raises(BackupError, match=r"shared-artifacts .*not empty"):
        restore.restore(dest, target, audit_key=key)
    assert (elsewhere / "1" / "model.pkl").read_bytes() == b"another home's model\n"
    assert no_file_under(target.home)

    log = tmp_path / "logs" / "checkpoints.log"
    log.parent.mkdir()
    log.write_text("another home's checkpoints\n")
    target = home_settings(tmp_path / "t2", audit_checkpoint_log=str(log))
    with pytest.raises(BackupError, match=r"checkpoint log .* exists"):
        restore.restore(dest, target, audit_key=key)
    assert log.read_text() == "another home's checkpoints\n"
    assert no_file_under(target.home)

    target = home_settings(tmp_path / "t3", audit_key_path=tmp_path / "keys" / "other.pem")
    load_or_create_key(tmp_path / "keys" / "other.pem")
    with pytest.raises(BackupError, match="an audit key exists"):
        restore.restore(dest, target, audit_key=key)
    assert no_file_under(target.home)


def test_a_backup_is_readable_by_its_owner_only(tmp_path: Path, key: Path) -> None:
    given = tmp_path / "given"
    given.mkdir(mode=0o755)
    given.chmod(0o755)
    backup_._check_dest(given, home_settings(tmp_path / "home"))
    assert stat.S_IMODE(given.stat().st_mode) == 0o700
    (tmp_path / "batches").mkdir()
    dest = make_backup(tmp_path, key)
    for folder, _, files in os.walk(dest):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder
        for name in files:
            assert stat.S_IMODE(os.stat(Path(folder, name)).st_mode) == 0o600, name


def test_an_mlflow_servers_credentials_are_not_written(tmp_path: Path) -> None:
    url = "https://alice:s3cret@mlflow.internal:5000/api"
    assert backup_.redact(url) == "https://***@mlflow.internal:5000/api"
    assert backup_.redact("s3://bucket/artifacts") == "s3://bucket/artifacts"
    record = backup_._dump(backup_stores.Store("mlflow", url, "external"), tmp_path)
    assert "s3cret" not in json.dumps(record) and "alice" not in json.dumps(record)


def test_trust_backup_restores_and_says_so_in_the_audit(tmp_path: Path, key: Path) -> None:
    from driftpilot.store import AuditStore
    from driftpilot.store.models import ToolCall

    dest = make_backup(tmp_path, key)
    target = home_settings(tmp_path / "target")
    done = restore.restore(dest, target, trust_backup=True)
    assert done["trust"] == restore.OWN_KEY_ONLY == "checked against the backup's own key only"
    assert (target.home / "batches" / "note.txt").read_bytes() == b"a batch file\n"
    store = AuditStore(target.db_url)
    try:
        [call] = store.list_rows(ToolCall, ToolCall.tool == "restore")
    finally:
        store.engine.dispose()
    assert json.loads(call.result)["trust"] == restore.OWN_KEY_ONLY
