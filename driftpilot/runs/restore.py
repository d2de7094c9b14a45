"""``driftpilot restore SRC``: a backup (``driftpilot.runs.backup``) into an empty home.

Order: the manifest is checked first (``restore_manifest``: its signature, then every file's
size and sha256, no file added, no symbolic link anywhere), so a tampered backup is refused,
the file named, before anything is written. Then every target must be free and each store of
the same kind as the backup's (``restore_target``). This module then puts things in place:
only the files the manifest lists are copied; the databases are put in place, the source's
paths rewritten to the target's (``backup_stores``), and the audit checked against the
backup's newest signed checkpoint with the backup's public key.

The signing key: a backup holds its public half only, and whoever can write the backup can
replace it, re-sign the manifest and edit the audit. So restore needs a key it trusts from
elsewhere: the private key (``audit_key``, kept by the operator apart from backups; restore
checks it is the backup's, installs it, and the restored home signs on with it), or the
fingerprint ``backup`` printed (``expect_key``); or ``trust_backup``, said explicitly and
written in the restore's audit row. Without the private key a new key is made and signs the
restored heads at once, after the checks: the log's older checkpoints stay verifiable with the
backup's public key, kept as ``audit-key.previous.pub`` in the home.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from driftpilot.core.errors import IntegrityError
from driftpilot.core.settings import Settings
from driftpilot.runs import backup as backup_
from driftpilot.runs import backup_stores as stores_
from driftpilot.runs.backup import LOG, MANIFEST, PUBLIC_KEY, Progress, silent
from driftpilot.runs.restore_manifest import OWN_KEY_ONLY, UNSIGNED, trust_label, verify_backup
from driftpilot.runs.restore_target import check_stores as _check_stores
from driftpilot.runs.restore_target import (
    check_target,
    is_empty,
    policy_target,
    tree_pairs,
    tree_targets,
)

# Importable from here, where the CLI and the tests look for them.
__all__ = ["OWN_KEY_ONLY", "UNSIGNED", "_check_stores", "is_empty", "restore", "verify_backup"]

PREVIOUS_KEY = "audit-key.previous.pub"


def restore(
    source: Path,
    settings: Settings,
    *,
    audit_key: Path | None = None,
    expect_key: str | None = None,
    trust_backup: bool = False,
    progress: Progress = silent,
) -> dict[str, Any]:
    """Restore the backup in ``source`` into the (empty) home of ``settings``; returns what
    was done: ``{"home", "key": "kept" | "new", "trust", "rewritten": [...], "checked"}``.
    One of ``audit_key`` (the private key), ``expect_key`` (the fingerprint ``backup``
    printed) or ``trust_backup`` is required: the backup's own key proves nothing alone.

    Raises:
        IntegrityError: the backup was altered (the file is named), is signed by another key
            than the one given, is unsigned (without ``trust_backup``), or the restored audit
            contradicts the backup's newest signed checkpoint.
        BackupError: no key and no ``trust_backup``; a target is not free; a store is of
            another kind; pg_restore failed.
    """
    source = source.expanduser().resolve()
    progress("checking the backup", 0, 1)
    trust = trust_label(audit_key, expect_key, trust_backup)
    manifest = verify_backup(source, audit_key, expect_key, trust_backup=trust_backup)
    if not (source / PUBLIC_KEY).exists():
        trust = UNSIGNED
    found, holder = stores_.stores(settings)
    check_target(source, manifest, settings, found, holder)
    pairs = tree_pairs(manifest, settings)
    steps = [
        ("files", lambda: _put_trees(source, manifest, settings)),
        ("databases", lambda: _put_stores(source, manifest, found)),
        ("checkpoint log and key", lambda: _put_log_and_key(source, settings, audit_key)),
        ("policy", lambda: _put_policy(source, settings)),
        ("paths", lambda: _rewrite(found, manifest, settings, pairs)),
        ("leases", lambda: _free_leases(settings, manifest.get("operation"))),
        ("audit check", lambda: _check_audit(source, settings)),
        ("audit record", lambda: _record(source, manifest, settings, audit_key, trust)),
    ]
    results: dict[str, Any] = {}
    for done, (step, work) in enumerate(steps):
        progress(step, done, len(steps))
        results[step] = work()
    progress("done", len(steps), len(steps))
    return {
        "home": str(settings.home),
        "policy": results["policy"],
        "key": "kept" if audit_key is not None else "new",
        "trust": trust,
        "rewritten": results["paths"],
        "checked": results["audit check"],
    }


# -- putting things in place --------------------------------------------------------------------


def _put_trees(source: Path, manifest: dict[str, Any], settings: Settings) -> None:
    """Copy the files the manifest lists under ``trees/<name>/`` into each tree's target
    (only those: checked, and nothing a link could reach)."""
    targets = tree_targets(manifest, settings)
    for entry in manifest["files"]:
        parts = Path(entry["path"]).parts
        if len(parts) < 3 or parts[0] != "trees":
            continue
        if parts[1] not in targets:
            raise IntegrityError(f"backup file {entry['path']} is in an unknown tree")
        root = targets[parts[1]].resolve()
        copy = root.joinpath(*parts[2:])
        if not copy.resolve().is_relative_to(root):
            raise IntegrityError(f"backup file {entry['path']} would go outside {root}")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / entry["path"], copy)
    settings.ensure_dirs()


def _put_stores(source: Path, manifest: dict[str, Any], found: list[stores_.Store]) -> None:
    by_role = {s.role: s for s in found}
    for role, record in manifest["stores"].items():
        target = by_role[role]
        if record.get("absent") or record["kind"] == "external":
            continue
        dump = source / record["file"]
        if record["kind"] == "sqlite":
            target.path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(dump, target.path)
        else:
            stores_.pg_restore(dump, target.url)


def _put_log_and_key(source: Path, settings: Settings, audit_key: Path | None) -> None:
    from driftpilot.store.checkpoint import log_path

    if (source / LOG).exists():
        log = log_path(settings.audit_checkpoint_log)
        log.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / LOG, log)
    if (source / PUBLIC_KEY).exists():
        shutil.copyfile(source / PUBLIC_KEY, settings.home / PREVIOUS_KEY)
    if audit_key is not None:
        assert settings.audit_key_path is not None
        target = settings.audit_key_path.expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: check_target found the place free; a key put there since is not replaced.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(audit_key.read_bytes())


def _put_policy(source: Path, settings: Settings) -> str | None:
    """Put the backup's risk policy (one kept outside the source's home) where the target's
    settings name it, or at ``<home>/policy.yaml`` (then DRIFTPILOT_POLICY_PATH must name it:
    the returned path). A policy file already there is left alone, when it is the same.

    Raises:
        BackupError: the target's policy file exists and differs from the backup's.
    """
    target = policy_target(source, settings)
    if target is None:
        return None
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / backup_.POLICY, target)
    return str(target)


def _rewrite(
    found: list[stores_.Store], manifest: dict[str, Any], settings: Settings, pairs: Any
) -> list[str]:
    """Rewrite the source's paths in the restored databases and text files; what changed."""
    changed = [p for p in pairs if p[0] != p[1]]
    if not changed:
        return []
    for store in found:
        record = manifest["stores"].get(store.role)
        if record is None or record.get("absent") or store.kind == "external":
            continue
        keep = stores_.KEEP if store.role == "audit" else set()
        if store.kind == "sqlite":
            stores_.rewrite_sqlite(store.path, changed, keep)
        else:
            stores_.rewrite_postgres(store.url, changed, keep)
    files: list[str] = []
    for root in {Path(new) for _, new in changed}:
        if root.exists():
            files += [str(f) for f in stores_.rewrite_files(root, changed)]
    return [f"{old} -> {new}" for old, new in changed] + files


def _free_leases(settings: Settings, operation: str | None) -> None:
    """Release the leases the backup held while it copied (they are in the copy)."""
    from driftpilot.store import AuditStore
    from driftpilot.store.models import Lease

    if operation is None:
        return
    store = AuditStore(settings.db_url)
    try:
        for lease in store.list_rows(Lease, Lease.run_id == operation):
            store.release_lease(lease.model, operation)
    finally:
        store.engine.dispose()


def _check_audit(source: Path, settings: Settings) -> dict[str, int]:
    """The restored audit's chains, and its heads against the backup's newest signed
    checkpoint by the backup's public key.

    Raises:
        IntegrityError: a chain is broken or the heads contradict the checkpoint.
    """
    from cryptography.hazmat.primitives import serialization

    from driftpilot.store import AuditStore
    from driftpilot.store.checkpoint import latest_checkpoint, verify_against_checkpoint

    store = AuditStore(settings.db_url)
    try:
        result = store.verify()
        if not result.ok:
            broken = result.first_broken
            raise IntegrityError(f"the restored audit's chains are broken: {broken}")
        latest = latest_checkpoint(settings.audit_checkpoint_log)
        if latest is not None and (source / PUBLIC_KEY).exists():
            public = serialization.load_pem_public_key((source / PUBLIC_KEY).read_bytes())
            problems = verify_against_checkpoint(store, latest, public)  # type: ignore[arg-type]
            if problems:
                raise IntegrityError(f"the restored audit fails its checkpoint: {problems[0]}")
        return result.checked
    finally:
        store.engine.dispose()


def _record(
    source: Path, manifest: dict[str, Any], settings: Settings, audit_key: Path | None, trust: str
) -> None:
    """Append the restore to the restored audit (which backup, by its manifest's sha256,
    made when, from where, by whom, checked against what key) and sign the heads: with the
    kept key, or a new one."""
    import uuid

    from driftpilot.runs.trust import Trust
    from driftpilot.store import AuditStore

    store = AuditStore(settings.db_url)
    try:
        store.record_tool_call(
            f"restore-{uuid.uuid4().hex[:24]}",
            "operator",
            "restore",
            {
                "backup": str(source),
                "manifest_sha256": backup_.sha256(source / MANIFEST),
                "backup_operation": manifest.get("operation"),
                "backup_created_at": manifest["created_at"],
                "source_home": manifest["source"]["home"],
                "by": settings.principal,
            },
            {
                "home": str(settings.home),
                "key": "kept" if audit_key is not None else "new",
                "trust": trust,
            },
            ok=True,
            latency_ms=0.0,
        )
        Trust(store, settings).checkpoint()
    finally:
        store.engine.dispose()
