"""``driftpilot restore SRC``: a backup (``driftpilot.runs.backup``) into an empty home.

Order: the manifest is checked first (its signature, then every file's size and sha256, and
no file added), so a tampered backup is refused, the file named, before anything is written.
Then the target must be empty (the home's folder, each SQLite file absent, each PostgreSQL
database without tables), and each store of the same kind as the backup's. The files and
databases are put in place, the source's paths rewritten to the target's
(``backup_stores``), and the audit checked against the backup's newest signed checkpoint with
the backup's public key.

The signing key: a backup holds its public half only. Given the private key (``audit_key``,
kept by the operator apart from backups), restore checks it is the backup's and installs it;
the restored home signs on with it. Without it, a new key is made and signs the restored
heads at once, after the check above: the log's older checkpoints stay verifiable with the
backup's public key, kept as ``audit-key.previous.pub`` in the home.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from driftpilot.core.errors import BackupError, IntegrityError
from driftpilot.core.settings import Settings
from driftpilot.runs import backup as backup_
from driftpilot.runs import backup_stores as stores_
from driftpilot.runs.backup import LOG, MANIFEST, PUBLIC_KEY, SIGNATURE, Progress, silent

PREVIOUS_KEY = "audit-key.previous.pub"


def restore(
    source: Path,
    settings: Settings,
    *,
    audit_key: Path | None = None,
    progress: Progress = silent,
) -> dict[str, Any]:
    """Restore the backup in ``source`` into the (empty) home of ``settings``; returns what
    was done: ``{"home", "key": "kept" | "new", "rewritten": [...], "checked": {...}}``.

    Raises:
        IntegrityError: the backup was altered (the file is named), or the restored audit
            contradicts the backup's newest signed checkpoint.
        BackupError: the target is not empty, a store is of another kind, pg_restore failed.
    """
    source = source.expanduser().resolve()
    progress("checking the backup", 0, 1)
    manifest = verify_backup(source, audit_key)
    found, holder = stores_.stores(settings)
    _check_target(manifest, settings, found, holder)
    pairs = _pairs(manifest, settings)
    steps = [
        ("files", lambda: _put_trees(source, manifest, settings)),
        ("databases", lambda: _put_stores(source, manifest, found)),
        ("checkpoint log and key", lambda: _put_log_and_key(source, settings, audit_key)),
        ("policy", lambda: _put_policy(source, settings)),
        ("paths", lambda: _rewrite(found, manifest, settings, pairs)),
        ("leases", lambda: _free_leases(settings, manifest.get("operation"))),
        ("audit check", lambda: _check_audit(source, settings, audit_key is not None)),
        ("audit record", lambda: _record(source, manifest, settings, audit_key is not None)),
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
        "rewritten": results["paths"],
        "checked": results["audit check"],
    }


# -- the backup ---------------------------------------------------------------------------------


def verify_backup(source: Path, audit_key: Path | None = None) -> dict[str, Any]:
    """The manifest of the backup in ``source``, after checking it: its signature by the
    backup's public key (which must be ``audit_key``'s when given), every listed file's size
    and sha256, and no file that is not listed.

    Raises:
        IntegrityError: any of these fails (the file is named).
    """
    manifest_file = source / MANIFEST
    if not manifest_file.is_file():
        raise IntegrityError(f"{source} is not a DriftPilot backup: no {MANIFEST}")
    data = manifest_file.read_bytes()
    _check_signature(source, data, audit_key)
    try:
        manifest: dict[str, Any] = json.loads(data)
        if manifest.get("format") != backup_.FORMAT:
            raise IntegrityError(f"{MANIFEST}: unknown backup format {manifest.get('format')!r}")
        listed = {f["path"]: f for f in manifest["files"]}
        named = [r["file"] for r in manifest["stores"].values() if "file" in r]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"{MANIFEST} is malformed: {exc!r}") from exc
    for path in [*listed, *named]:
        if Path(path).is_absolute() or ".." in Path(path).parts:
            raise IntegrityError(f"{MANIFEST} names {path!r}, outside the backup")
    for path in named:
        if path not in listed:
            raise IntegrityError(f"{MANIFEST} names {path} for a database but does not list it")
    for path, entry in listed.items():
        file = source / path
        if not file.is_file():
            raise IntegrityError(f"backup file {path} is missing")
        if file.stat().st_size != entry["size"] or backup_.sha256(file) != entry["sha256"]:
            raise IntegrityError(f"backup file {path} does not match its sha256 in {MANIFEST}")
    present = {f.relative_to(source).as_posix() for f in source.rglob("*") if f.is_file()}
    extra = present - set(listed) - {MANIFEST, SIGNATURE}
    if extra:
        raise IntegrityError(f"backup file {sorted(extra)[0]} is not in {MANIFEST}")
    return manifest


def _check_signature(source: Path, data: bytes, audit_key: Path | None) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    public_file, signature_file = source / PUBLIC_KEY, source / SIGNATURE
    if not public_file.exists():
        if audit_key is not None:
            raise IntegrityError(f"the backup has no {PUBLIC_KEY} to check --audit-key against")
        return  # a home that never signed anything has no key: nothing to check against
    try:
        public: Any = serialization.load_pem_public_key(public_file.read_bytes())
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"{PUBLIC_KEY} is not a PEM public key: altered") from exc
    if audit_key is not None and _raw(_load_private(audit_key).public_key()) != _raw(public):
        raise IntegrityError(f"--audit-key {audit_key} is not the key of this backup")
    if not signature_file.exists():
        raise IntegrityError(f"{SIGNATURE} is missing: the manifest cannot be checked")
    try:
        public.verify(bytes.fromhex(signature_file.read_text().strip()), data)
    except (InvalidSignature, ValueError) as exc:
        raise IntegrityError(f"{MANIFEST} does not match its signature: altered") from exc


def _load_private(path: Path) -> Any:
    from driftpilot.store.checkpoint import load_or_create_key

    if not path.is_file():
        raise BackupError(f"--audit-key {path} does not exist")
    return load_or_create_key(path)


def _raw(public: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    raw: bytes = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


# -- the target ---------------------------------------------------------------------------------


def _check_target(
    manifest: dict[str, Any],
    settings: Settings,
    found: list[stores_.Store],
    holder: dict[str, str],
) -> None:
    """Refuse a target that is not empty or whose stores do not match the backup's.

    Raises:
        BackupError: what does not fit, and how to fix it.
    """
    home = settings.home
    if not is_empty(home):
        raise BackupError(f"{home} is not empty: restore goes into a new or empty home")
    _check_revision(manifest.get("alembic_revision"))
    if holder != manifest["roles"]:
        raise BackupError(
            f"the target's databases are shared differently ({holder}) than the backup's "
            f"({manifest['roles']}): point the target's URLs like the source's"
        )
    by_role = {s.role: s for s in found}
    for role, record in manifest["stores"].items():
        target = by_role[role]
        if target.kind != record["kind"]:
            raise BackupError(
                f"the backup's {role} database is {record['kind']}, the target's is "
                f"{target.kind} ({_setting(role)}): point it at an empty {record['kind']} one"
            )
        if target.kind == "sqlite" and target.path.exists():
            raise BackupError(f"{target.path} exists: restore needs its place free")
        if target.kind == "postgresql":
            stores_.refuse_non_empty_pg(target.url)


def is_empty(home: Path) -> bool:
    """No file under ``home`` (folders alone, as ``Settings.ensure_dirs`` makes them, are
    still an empty home)."""
    if home.exists() and not home.is_dir():
        return False
    return not any(p.is_file() or p.is_symlink() for p in home.rglob("*"))


def _check_revision(revision: str | None) -> None:
    """A backup made by a newer DriftPilot (an audit revision this code does not know)."""
    from driftpilot.store import engine

    versions = Path(engine.__file__).parent / "migrations" / "versions"
    known = set()
    for script in versions.glob("*.py"):
        match = re.search(r'^revision\b[^=\n]*=\s*"([^"]+)"', script.read_text(), re.MULTILINE)
        if match:
            known.add(match.group(1))
    if revision is not None and revision not in known:
        raise BackupError(
            f"the backup's audit schema is revision {revision}, unknown to this DriftPilot: "
            "restore it with the version that made it (or a newer one)"
        )


def _setting(role: str) -> str:
    return {
        "audit": "DRIFTPILOT_DB_URL",
        "checkpoints": "DRIFTPILOT_CHECKPOINT_URL",
        "mlflow": "DRIFTPILOT_MLFLOW_TRACKING_URI",
        "mlflow_registry": "DRIFTPILOT_MLFLOW_REGISTRY_URI",
        "optuna": "DRIFTPILOT_OPTUNA_STORAGE",
    }[role]


def _pairs(manifest: dict[str, Any], settings: Settings) -> stores_.Pairs:
    """(source path, target path) of every tree, longest source first (a tree inside
    another is rewritten before its parent's prefix could take it)."""
    targets = backup_.tree_roots(settings)
    target_artifacts = backup_.local_artifact_root(settings.mlflow_artifact_root)
    pairs = [(manifest["source"]["home"], str(settings.home))]
    for name, old in manifest["source"]["trees"].items():
        new = targets.get(name) or (target_artifacts if name == "artifacts" else None)
        new = new or _default_tree(name, settings)
        pairs.append((old, str(new)))
    return sorted(set(pairs), key=lambda p: -len(p[0]))


def _default_tree(name: str, settings: Settings) -> Path:
    """Where a tree the source kept outside its home goes when the target keeps it inside."""
    return {
        "artifacts": settings.home / "mlartifacts",
        "batches": settings.batches_dir,
        "reports": settings.reports_dir,
    }.get(name) or settings.home / name


# -- putting things in place --------------------------------------------------------------------


def _put_trees(source: Path, manifest: dict[str, Any], settings: Settings) -> None:
    targets = dict(_pairs(manifest, settings))
    for name, old in manifest["source"]["trees"].items():
        folder = source / "trees" / name
        if folder.exists():
            shutil.copytree(folder, Path(targets[old]), dirs_exist_ok=True)
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
        target = settings.audit_key_path
        target.parent.mkdir(parents=True, exist_ok=True)
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
    policy = source / backup_.POLICY
    if not policy.exists():
        return None
    target = (settings.policy_path or settings.home / "policy.yaml").expanduser()
    if target.exists():
        if target.read_bytes() != policy.read_bytes():
            raise BackupError(
                f"the target's policy {target} differs from the backup's: move it away, "
                "or restore it yourself from the backup's policy/policy.yaml"
            )
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(policy, target)
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


def _check_audit(source: Path, settings: Settings, key_kept: bool) -> dict[str, int]:
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


def _record(source: Path, manifest: dict[str, Any], settings: Settings, key_kept: bool) -> None:
    """Append the restore to the restored audit (which backup, by its manifest's sha256,
    made when, from where, by whom) and sign the heads: with the kept key, or a new one."""
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
            {"home": str(settings.home), "key": "kept" if key_kept else "new"},
            ok=True,
            latency_ms=0.0,
        )
        Trust(store, settings).checkpoint()
    finally:
        store.engine.dispose()
