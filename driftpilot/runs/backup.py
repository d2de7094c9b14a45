"""``driftpilot backup DEST``: a consistent snapshot of a home, and its manifest.

What a backup holds (DEST, a new or empty folder)::

    manifest.json            every other file with its sha256 and size; the DriftPilot
                             version, the audit's Alembic revision, the source's locations,
                             the time; which store is where; signed by the audit key
    manifest.sig             Ed25519 signature of manifest.json by the audit key
    audit-key.pub            the audit key's PUBLIC half (PEM); the private key is not copied
    audit-checkpoints.log    the signed checkpoints of the audit's chain heads
    db/<role>.db | .dump     each database: a SQLite online-backup copy, or a pg_dump
    trees/home/...           the home's other files (MLflow artifacts, batches, reports,
                             inbox, policy), without the databases, the key and cache/
    trees/<name>/...         artifacts, batches or reports kept outside the home
    policy/policy.yaml       the risk policy, when DRIFTPILOT_POLICY_PATH names a file
                             outside the home

Only the owner reads a backup (folders 0700, files 0600): it holds webhook secrets and
the hashes of passwords and API keys. The key's fingerprint (``fingerprint``) is returned
and printed, so that a restore can be checked against it (``restore --expect-key``).

Consistency: the models' leases are taken for the whole backup, so no run, rollback or label
attachment changes the audit or the registry meanwhile (a run in flight: refused, or waited
for with ``wait``); a run waiting for an approval is a checkpoint at rest and is copied as
such. The checkpoint log is copied before the audit, so the copy of the audit holds at least
every row the newest checkpoint records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

from driftpilot.core.errors import BackupError, ModelBusy
from driftpilot.core.settings import Settings
from driftpilot.runs import backup_stores as stores_
from driftpilot.runs import leases
from driftpilot.store import AuditStore
from driftpilot.store.models import ManagedModel

FORMAT = 1
MANIFEST, SIGNATURE, PUBLIC_KEY, LOG = (
    "manifest.json",
    "manifest.sig",
    "audit-key.pub",
    "audit-checkpoints.log",
)
POLICY = "policy/policy.yaml"
# The trees a backup writes (trees/<name>/); restore accepts no other name.
TREES = ("home", "artifacts", "batches", "reports")
Progress = Callable[[str, int, int], None]  # (step, done, total)
_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def silent(step: str, done: int, total: int) -> None:
    """The default progress: none."""


def backup(
    settings: Settings,
    dest: Path,
    *,
    wait: bool = False,
    reports: bool = True,
    progress: Progress = silent,
) -> dict[str, Any]:
    """Snapshot the home of ``settings`` into ``dest`` (created; must be empty) and return
    its manifest.

    Raises:
        BackupError: ``dest`` is not empty or lies inside the home; a dump failed.
        ModelBusy: a run holds a model's lease (with ``wait``: waits for it instead).
    """
    dest = dest.expanduser().resolve()
    created = not dest.exists()
    _check_dest(dest, settings)
    store = AuditStore(settings.db_url)
    operation = f"backup-{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
    started = time.monotonic()
    try:
        try:
            with _leases_held(store, settings, operation, wait=wait):
                manifest = _snapshot(store, settings, dest, reports, progress)
            manifest["operation"] = operation
            manifest["key_fingerprint"] = write_manifest(dest, manifest, settings)
        except BaseException:
            # A half backup has no manifest, so restore refuses it; a folder we made is
            # removed (one the user made is emptied of what we put there).
            _discard(dest, created)
            raise
        _audit_backup(store, settings, dest, manifest, (time.monotonic() - started) * 1000)
        return manifest
    finally:
        store.engine.dispose()


def _audit_backup(
    store: AuditStore, settings: Settings, dest: Path, manifest: dict[str, Any], ms: float
) -> None:
    """Append the backup to the source's audit (after the snapshot: the copy does not hold
    it): where it went, its manifest's sha256, what it holds, by whom."""
    store.record_tool_call(
        manifest["operation"],
        "operator",
        "backup",
        {"dest": str(dest), "by": settings.principal},
        {
            "manifest_sha256": sha256(dest / MANIFEST),
            "key_fingerprint": manifest["key_fingerprint"],
            "files": len(manifest["files"]),
            "bytes": sum(f["size"] for f in manifest["files"]),
            "alembic_revision": manifest["alembic_revision"],
        },
        ok=True,
        latency_ms=ms,
    )


def _discard(dest: Path, created: bool) -> None:
    """Remove what a failed backup wrote. Best effort (ignore_errors): a file that cannot be
    removed must not hide the failure that is being raised, and a leftover without its
    manifest is refused by restore anyway."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _check_dest(dest: Path, settings: Settings) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} is not an empty folder: a backup goes into a new one")
    if dest.is_relative_to(settings.home):
        raise BackupError(f"{dest} is inside the home {settings.home}: choose a folder outside")
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    # An existing empty folder keeps its mode otherwise: other users could read the copy.
    dest.chmod(0o700)


@contextmanager
def _leases_held(
    store: AuditStore, settings: Settings, operation: str, *, wait: bool
) -> Iterator[None]:
    """Hold every model's lease for ``operation`` (renewed while the backup lasts): nothing
    changes a model's audit rows or registry versions meanwhile. The copy holds these leases
    too: restore releases them (the manifest names the operation).

    Raises:
        ModelBusy: a run holds a lease (not waiting), named in the message.
    """
    with ExitStack() as held:
        for managed in store.list_rows(ManagedModel, order=ManagedModel.name):
            try:
                name = leases.acquire(
                    store, settings.lease_ttl_s, managed.name, operation, wait=wait
                )
            except ModelBusy as exc:
                raise ModelBusy(f"backup refused while a run is in flight: {exc}") from exc
            keeper = leases.LeaseKeeper(store, managed.name, operation, name, settings.lease_ttl_s)
            held.enter_context(keeper)
        yield


def _snapshot(
    store: AuditStore, settings: Settings, dest: Path, reports: bool, progress: Progress
) -> dict[str, Any]:
    found, holder = stores_.stores(settings)
    trees = tree_roots(settings, reports=reports)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("checkpoint log", lambda: _copy_log(settings, dest)),
        ("audit key (public half)", lambda: _public_key(settings, dest)),
    ]
    records: dict[str, dict[str, Any]] = {}
    for s in found:
        steps.append((f"{s.role} database", partial(_record, records, s, dest)))
    skip = _skipped(settings, found, reports=reports)
    for name, root in trees.items():
        steps.append((f"files: {name}", partial(_copy_tree, root, dest, name, skip)))
    policy = _policy_outside(settings)
    if policy is not None:
        steps.append(("policy", partial(_copy_policy, policy, dest)))
    steps.append(("manifest", lambda: None))
    for done, (step, work) in enumerate(steps):
        progress(step, done, len(steps))
        work()
    manifest = {
        "format": FORMAT,
        "driftpilot_version": package_version("driftpilot"),
        "alembic_revision": _revision(store),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {
            "home": str(settings.home),
            "trees": {name: str(root) for name, root in trees.items()},
            "artifact_root": redact(settings.mlflow_artifact_root),
            "policy": str(policy) if policy is not None else None,
        },
        "stores": records,
        "roles": holder,
        "files": file_list(dest),
    }
    progress("done", len(steps), len(steps))
    return manifest


def tree_roots(settings: Settings, *, reports: bool = True) -> dict[str, Path]:
    """The folders whose files a backup copies: the home, and the artifact root, batches and
    reports when they are kept outside it (a remote artifact root is not a folder)."""
    home = settings.home
    roots: dict[str, Path] = {"home": home}
    artifacts = local_artifact_root(settings.mlflow_artifact_root)
    candidates = {"artifacts": artifacts, "batches": settings.batches_dir}
    if reports:
        candidates["reports"] = settings.reports_dir
    for name, root in candidates.items():
        if root is not None and not Path(root).resolve().is_relative_to(home):
            roots[name] = Path(root).resolve()
    return roots


def local_artifact_root(uri: str) -> Path | None:
    """The folder of a ``file:`` artifact root (None: remote, e.g. s3:// or a server's)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(uri) if parsed.scheme == "" else None


def _skipped(settings: Settings, found: list[stores_.Store], *, reports: bool) -> set[Path]:
    """Files and folders the tree copy leaves out: what is copied on its own (databases,
    checkpoint log), the private key, the cache (downloads, fetched again), and the reports
    unless ``reports``."""
    from driftpilot.store.checkpoint import log_path

    skip = {log_path(settings.audit_checkpoint_log).resolve()}
    assert settings.audit_key_path is not None and settings.cache_dir is not None
    skip |= {settings.audit_key_path.resolve(), settings.cache_dir.resolve()}
    if not reports and settings.reports_dir is not None:
        skip.add(settings.reports_dir.resolve())
    for s in found:
        if s.kind == "sqlite":
            file = s.path.resolve()
            skip |= {file} | {file.with_name(file.name + x) for x in _SQLITE_SIDECARS}
    return skip


def _policy_outside(settings: Settings) -> Path | None:
    """The risk policy file when it is set and kept outside the home (inside, the home's
    copy holds it)."""
    path = settings.policy_path
    if path is None or not path.expanduser().is_file():
        return None
    path = path.expanduser().resolve()
    return None if path.is_relative_to(settings.home) else path


def _copy_policy(policy: Path, dest: Path) -> None:
    (dest / POLICY).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(policy, dest / POLICY)


def _copy_log(settings: Settings, dest: Path) -> None:
    from driftpilot.store.checkpoint import log_path

    source = log_path(settings.audit_checkpoint_log)
    if source.exists():
        shutil.copyfile(source, dest / LOG)


def _public_key(settings: Settings, dest: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    (dest / PUBLIC_KEY).write_bytes(
        _private_key(settings)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _private_key(settings: Settings) -> Any:
    """The home's audit key, created when the home has none yet: every backup is signed,
    so a restore can always check it against the key's fingerprint."""
    from driftpilot.store.checkpoint import load_or_create_key

    assert settings.audit_key_path is not None
    return load_or_create_key(settings.audit_key_path)


def fingerprint(public: Any) -> str:
    """``SHA256:<hex>`` of an Ed25519 public key's raw 32 bytes: what ``backup`` prints and
    ``restore --expect-key`` compares."""
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()


def redact(url: str) -> str:
    """``url`` without the user and password of its authority (an MLflow server's URL may
    carry them, and the manifest and the console are no place for them)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def _record(records: dict[str, dict[str, Any]], store: stores_.Store, dest: Path) -> None:
    records[store.role] = _dump(store, dest)


def _dump(store: stores_.Store, dest: Path) -> dict[str, Any]:
    """Copy one database into ``dest/db``; the manifest's record of it."""
    record: dict[str, Any] = {"kind": store.kind}
    if store.kind == "sqlite":
        if store.path.exists():
            record["file"] = f"db/{store.role}.db"
            stores_.copy_sqlite(store.path, dest / record["file"])
        else:
            record["absent"] = True  # never created (no tuning yet): nothing to restore
    elif store.kind == "postgresql":
        record["file"] = f"db/{store.role}.dump"
        stores_.pg_dump(store.url, dest / record["file"])
    else:
        record["url"] = redact(store.url)
        record["note"] = (
            "not included: an MLflow server keeps its store and artifacts itself; back it up "
            "with that server's tools, at the same time"
        )
    return record


def _copy_tree(root: Path, dest: Path, name: str, skip: set[Path]) -> None:
    target = dest / "trees" / name
    target.mkdir(parents=True, exist_ok=True)
    if not root.exists():
        return
    for source in sorted(root.rglob("*")):
        if any(source.resolve() == s or source.resolve().is_relative_to(s) for s in skip):
            continue
        if source.is_file() and not source.name.endswith(".tmp"):
            copy = target / source.relative_to(root)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)


def _revision(store: AuditStore) -> str | None:
    from sqlalchemy import text

    with store.reading() as session:
        return session.execute(text("SELECT version_num FROM alembic_version")).scalar()


# -- the manifest -------------------------------------------------------------------------------


def sha256(file: Path) -> str:
    """The hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def file_list(dest: Path) -> list[dict[str, Any]]:
    """Every file of the backup but the manifest and its signature: path, size, sha256."""
    listed = []
    for file in sorted(dest.rglob("*")):
        relative = file.relative_to(dest).as_posix()
        if file.is_file() and relative not in (MANIFEST, SIGNATURE):
            listed.append({"path": relative, "size": file.stat().st_size, "sha256": sha256(file)})
    return listed


def write_manifest(dest: Path, manifest: dict[str, Any], settings: Settings) -> str:
    """Write manifest.json and its signature by the home's audit key, make the backup the
    owner's alone (files 0600, folders 0700) and durable; returns the key's fingerprint."""
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    (dest / MANIFEST).write_bytes(data)
    key = _private_key(settings)
    (dest / SIGNATURE).write_bytes(key.sign(data).hex().encode() + b"\n")
    _seal_tree(dest)
    return fingerprint(key.public_key())


def _seal_tree(dest: Path) -> None:
    """Owner-only modes (copy2 keeps the source's, sqlite and pg_dump use the umask), and
    fsync every file before the backup is reported done."""
    for folder, _, files in os.walk(dest):
        os.chmod(folder, 0o700)
        for name in files:
            file = os.path.join(folder, name)
            os.chmod(file, 0o600)
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
