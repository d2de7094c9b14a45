"""``driftpilot restore SRC``: a backup (``driftpilot.runs.backup``) into an empty home.

Order: the manifest is checked first (its signature, then every file's size and sha256, no
file added, no symbolic link anywhere), so a tampered backup is refused, the file named, before
anything is written. Then every target must be free (the home's folder and each tree's folder
kept outside it without files, each SQLite file, the checkpoint log, the key and the policy
absent, each PostgreSQL database without tables), and each store of the same kind as the
backup's. Only the files the manifest lists are copied; the databases are put in place, the
source's paths rewritten to the target's (``backup_stores``), and the audit checked against the
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

import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

from driftpilot.core.errors import BackupError, IntegrityError
from driftpilot.core.settings import Settings
from driftpilot.runs import backup as backup_
from driftpilot.runs import backup_stores as stores_
from driftpilot.runs.backup import LOG, MANIFEST, PUBLIC_KEY, SIGNATURE, TREES, Progress, silent

PREVIOUS_KEY = "audit-key.previous.pub"
OWN_KEY_ONLY = "checked against the backup's own key only"
UNSIGNED = "unsigned backup: not checked against any key"
KINDS = ("sqlite", "postgresql", "external")


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
    trust = _trust(audit_key, expect_key, trust_backup)
    manifest = verify_backup(source, audit_key, expect_key, trust_backup=trust_backup)
    if not (source / PUBLIC_KEY).exists():
        trust = UNSIGNED
    found, holder = stores_.stores(settings)
    _check_target(source, manifest, settings, found, holder)
    pairs = _pairs(manifest, settings)
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


# -- the backup ---------------------------------------------------------------------------------


def _trust(audit_key: Path | None, expect_key: str | None, trust_backup: bool) -> str:
    """What the backup is checked against, as the restore's audit row says it.

    Raises:
        BackupError: none of the three is given.
    """
    if audit_key is not None:
        return "checked against --audit-key"
    if expect_key is not None:
        return f"checked against --expect-key {expect_key}"
    if trust_backup:
        return OWN_KEY_ONLY
    raise BackupError(
        "restore needs a key it can trust: --audit-key KEY (the private key kept apart), "
        "--expect-key FINGERPRINT (printed by `driftpilot backup`), or --trust-backup to "
        "accept the backup's own key (anyone who can write the backup can replace it)"
    )


def verify_backup(
    source: Path,
    audit_key: Path | None = None,
    expect_key: str | None = None,
    *,
    trust_backup: bool = False,
) -> dict[str, Any]:
    """The manifest of the backup in ``source``, after checking it: its signature by the
    backup's public key (which must be ``audit_key``'s, or have the fingerprint
    ``expect_key``, when given), its roles, kinds and tree names, every listed file's size
    and sha256, no file that is not listed and no symbolic link.

    Raises:
        IntegrityError: any of these fails (the file is named); the backup is unsigned and
            not ``trust_backup``.
    """
    manifest_file = source / MANIFEST
    if not manifest_file.is_file() or manifest_file.is_symlink():
        raise IntegrityError(f"{source} is not a DriftPilot backup: no {MANIFEST}")
    present = _walk(source)
    data = manifest_file.read_bytes()
    _check_signature(source, data, audit_key, expect_key, trust_backup)
    try:
        manifest: dict[str, Any] = json.loads(data)
        if manifest.get("format") != backup_.FORMAT:
            raise IntegrityError(f"{MANIFEST}: unknown backup format {manifest.get('format')!r}")
        listed = {f["path"]: f for f in manifest["files"]}
        named = [r["file"] for r in manifest["stores"].values() if "file" in r]
        _check_names(manifest)
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
    extra = present - set(listed) - {MANIFEST, SIGNATURE}
    if extra:
        raise IntegrityError(f"backup file {sorted(extra)[0]} is not in {MANIFEST}")
    return manifest


def _walk(source: Path) -> set[str]:
    """Every file of the backup (relative, POSIX), without following links.

    Raises:
        IntegrityError: a symbolic link (to a file or a folder) or a special file: a backup
            holds none, and one would let a restore read files from outside the backup.
    """
    present: set[str] = set()
    for folder, dirs, files in os.walk(source, followlinks=False):
        for name in sorted([*dirs, *files]):
            path = Path(folder, name)
            mode = path.lstat().st_mode
            relative = path.relative_to(source).as_posix()
            if stat.S_ISLNK(mode):
                raise IntegrityError(f"backup entry {relative} is a symbolic link: refused")
            if stat.S_ISREG(mode):
                present.add(relative)
            elif not stat.S_ISDIR(mode):
                raise IntegrityError(f"backup entry {relative} is not a regular file: refused")
    return present


def _check_names(manifest: dict[str, Any]) -> None:
    """The manifest's roles, store kinds and tree names are ones a backup writes (a name
    such as "../.ssh" would put files outside the home).

    Raises:
        IntegrityError: an unknown one, named.
    """
    for role, record in manifest["stores"].items():
        if role not in stores_.ROLES:
            raise IntegrityError(f"{MANIFEST} names an unknown store role {role!r}")
        if record["kind"] not in KINDS:
            raise IntegrityError(f"{MANIFEST} names an unknown store kind {record['kind']!r}")
    for role, held in manifest["roles"].items():
        if role not in stores_.ROLES or held not in stores_.ROLES:
            raise IntegrityError(f"{MANIFEST} names an unknown store role {role!r} -> {held!r}")
    for name in manifest["source"]["trees"]:
        if name not in TREES:
            raise IntegrityError(f"{MANIFEST} names an unknown tree {name!r}")


def _check_signature(
    source: Path,
    data: bytes,
    audit_key: Path | None,
    expect_key: str | None,
    trust_backup: bool,
) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public_file, signature_file = source / PUBLIC_KEY, source / SIGNATURE
    if not public_file.exists():
        if audit_key is not None or expect_key is not None or not trust_backup:
            raise IntegrityError(
                f"the backup is unsigned (no {PUBLIC_KEY}): refused (--trust-backup accepts "
                "it unchecked)"
            )
        if signature_file.exists():
            raise IntegrityError(f"{SIGNATURE} without {PUBLIC_KEY}: altered")
        return
    try:
        public: Any = serialization.load_pem_public_key(public_file.read_bytes())
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"{PUBLIC_KEY} is not a PEM public key: altered") from exc
    if not isinstance(public, Ed25519PublicKey):
        raise IntegrityError(f"{PUBLIC_KEY} is not an Ed25519 key: altered")
    if audit_key is not None and _raw(_load_private(audit_key).public_key()) != _raw(public):
        raise IntegrityError(f"--audit-key {audit_key} is not the key of this backup")
    found = backup_.fingerprint(public)
    if expect_key is not None and expect_key.strip().removeprefix("SHA256:").lower() != (
        found.removeprefix("SHA256:")
    ):
        raise IntegrityError(f"the backup is signed by key {found}, not --expect-key {expect_key}")
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
    source: Path,
    manifest: dict[str, Any],
    settings: Settings,
    found: list[stores_.Store],
    holder: dict[str, str],
) -> None:
    """Refuse, before anything is written, a target that is not free or whose stores do not
    match the backup's: the home and every tree's folder, the checkpoint log, the key, the
    policy and the databases.

    Raises:
        BackupError: what does not fit, and how to fix it.
    """
    home = settings.home
    if not is_empty(home):
        raise BackupError(f"{home} is not empty: restore goes into a new or empty home")
    _check_revision(manifest.get("alembic_revision"))
    _check_tree_targets(manifest, settings)
    _check_files_free(source, settings)
    _policy_target(source, settings)
    if holder != manifest["roles"]:
        raise BackupError(
            f"the target's databases are shared differently ({holder}) than the backup's "
            f"({manifest['roles']}): point the target's URLs like the source's"
        )
    _check_stores(manifest, found)


def _check_tree_targets(manifest: dict[str, Any], settings: Settings) -> None:
    """Each tree goes under the home or the folder the target's settings name for it, and
    that folder holds no file (a merge would overwrite another home's artifacts)."""
    configured = backup_.tree_roots(settings)
    for name, target in _tree_targets(manifest, settings).items():
        resolved = target.resolve()
        if not (
            resolved.is_relative_to(settings.home.resolve()) or resolved == configured.get(name)
        ):
            raise BackupError(f"tree {name!r} would go to {resolved}, outside the target's home")
        if not is_empty(resolved):
            raise BackupError(
                f"{resolved} (where the backup's {name} go) is not empty: restore needs it empty"
            )


def _check_files_free(source: Path, settings: Settings) -> None:
    """The checkpoint log and the audit key are absent where the target keeps them (either
    may be outside the home): restore neither overwrites nor signs with another's."""
    from driftpilot.store.checkpoint import log_path

    assert settings.audit_key_path is not None
    log = log_path(settings.audit_checkpoint_log)
    if (source / LOG).exists() and (log.exists() or log.is_symlink()):
        raise BackupError(f"the checkpoint log {log} exists: restore needs its place free")
    key = settings.audit_key_path.expanduser()
    if key.exists() or key.is_symlink():
        raise BackupError(
            f"an audit key exists at {key}: restore needs its place free (it installs "
            "--audit-key there, or makes a new key)"
        )


def _check_stores(manifest: dict[str, Any], found: list[stores_.Store]) -> None:
    by_role = {s.role: s for s in found}
    for role, record in manifest["stores"].items():
        target = by_role.get(role)
        if target is None:
            raise BackupError(f"the backup's store role {role!r} is not one of the target's")
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
    targets = _tree_targets(manifest, settings)
    pairs = [(manifest["source"]["home"], str(settings.home))]
    for name, old in manifest["source"]["trees"].items():
        pairs.append((old, str(targets[name])))
    return sorted(set(pairs), key=lambda p: -len(p[0]))


def _tree_targets(manifest: dict[str, Any], settings: Settings) -> dict[str, Path]:
    """Where each of the backup's trees goes: the folder the target's settings name for it
    (the home for "home"), else its default place in the home."""
    targets = backup_.tree_roots(settings)
    target_artifacts = backup_.local_artifact_root(settings.mlflow_artifact_root)
    found: dict[str, Path] = {}
    for name in manifest["source"]["trees"]:
        new = targets.get(name) or (target_artifacts if name == "artifacts" else None)
        found[name] = Path(new or _default_tree(name, settings))
    return found


def _default_tree(name: str, settings: Settings) -> Path:
    """Where a tree the source kept outside its home goes when the target keeps it inside.

    Raises:
        BackupError: ``name`` is not a tree a backup writes.
    """
    defaults = {
        "home": settings.home,
        "artifacts": settings.home / "mlartifacts",
        "batches": settings.batches_dir,
        "reports": settings.reports_dir,
    }
    if name not in defaults:
        raise BackupError(f"the backup names an unknown tree {name!r}")
    return defaults[name] or settings.home / name


# -- putting things in place --------------------------------------------------------------------


def _put_trees(source: Path, manifest: dict[str, Any], settings: Settings) -> None:
    """Copy the files the manifest lists under ``trees/<name>/`` into each tree's target
    (only those: checked, and nothing a link could reach)."""
    targets = _tree_targets(manifest, settings)
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
        # O_EXCL: _check_target found the place free; a key put there since is not replaced.
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
    target = _policy_target(source, settings)
    if target is None:
        return None
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / backup_.POLICY, target)
    return str(target)


def _policy_target(source: Path, settings: Settings) -> Path | None:
    """Where the backup's policy goes (None: the backup has none kept outside its home).

    Raises:
        BackupError: a policy file is there and differs from the backup's.
    """
    policy = source / backup_.POLICY
    if not policy.exists():
        return None
    target = (settings.policy_path or settings.home / "policy.yaml").expanduser()
    if target.exists() and target.read_bytes() != policy.read_bytes():
        raise BackupError(
            f"the target's policy {target} differs from the backup's: move it away, "
            "or restore it yourself from the backup's policy/policy.yaml"
        )
    return target


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
