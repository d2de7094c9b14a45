"""Restore's second step: is the target free, and are its stores of the backup's kinds?
And where does each of the backup's trees and its policy go in the target.

Checked before anything is written (``check_target``): the home and each tree's folder kept
outside it hold no file, the SQLite files, the checkpoint log, the audit key and a differing
policy are absent, each PostgreSQL database has no table, the databases are shared between
roles as the backup's were, and the backup's audit schema revision is one this DriftPilot
knows. ``tree_targets`` and ``tree_pairs`` say where the trees go and which source paths
``driftpilot.runs.restore`` rewrites to which target paths.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from driftpilot.core.errors import BackupError
from driftpilot.core.settings import Settings
from driftpilot.runs import backup as backup_
from driftpilot.runs import backup_stores as stores_
from driftpilot.runs.backup import LOG


def check_target(
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
    policy_target(source, settings)
    if holder != manifest["roles"]:
        raise BackupError(
            f"the target's databases are shared differently ({holder}) than the backup's "
            f"({manifest['roles']}): point the target's URLs like the source's"
        )
    check_stores(manifest, found)


def _check_tree_targets(manifest: dict[str, Any], settings: Settings) -> None:
    """Each tree goes under the home or the folder the target's settings name for it, and
    that folder holds no file (a merge would overwrite another home's artifacts)."""
    configured = backup_.tree_roots(settings)
    for name, target in tree_targets(manifest, settings).items():
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


def check_stores(manifest: dict[str, Any], found: list[stores_.Store]) -> None:
    """Each of the backup's store roles is one of the target's (``found``), of the same kind,
    and free: no SQLite file at its place, no table in its PostgreSQL database.

    Raises:
        BackupError: the first that does not fit, with the setting to change.
    """
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
    """The environment variable that points ``role``'s store (named in refusals)."""
    return {
        "audit": "DRIFTPILOT_DB_URL",
        "checkpoints": "DRIFTPILOT_CHECKPOINT_URL",
        "mlflow": "DRIFTPILOT_MLFLOW_TRACKING_URI",
        "mlflow_registry": "DRIFTPILOT_MLFLOW_REGISTRY_URI",
        "optuna": "DRIFTPILOT_OPTUNA_STORAGE",
    }[role]


def tree_pairs(manifest: dict[str, Any], settings: Settings) -> stores_.Pairs:
    """(source path, target path) of every tree, longest source first (a tree inside
    another is rewritten before its parent's prefix could take it)."""
    targets = tree_targets(manifest, settings)
    pairs = [(manifest["source"]["home"], str(settings.home))]
    for name, old in manifest["source"]["trees"].items():
        pairs.append((old, str(targets[name])))
    return sorted(set(pairs), key=lambda p: -len(p[0]))


def tree_targets(manifest: dict[str, Any], settings: Settings) -> dict[str, Path]:
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


def policy_target(source: Path, settings: Settings) -> Path | None:
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
