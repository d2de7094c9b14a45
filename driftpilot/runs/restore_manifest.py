"""Restore's first step: is the backup in a folder the one it claims to be, signed by a key
the operator trusts? (``driftpilot.runs.restore`` calls it before anything is written.)

The manifest's signature is checked with the backup's public key, and that key against one
trusted from elsewhere: the private key kept apart (``audit_key``), the fingerprint ``backup``
printed (``expect_key``), or nothing but the backup's own key when ``trust_backup`` is said
explicitly (the only way to accept an unsigned backup). Then every listed file's size and
sha256, no file added, no symbolic link or special file, and only the store roles, kinds and
tree names a backup writes, so a tampered backup is refused, the file named.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from driftpilot.core.errors import BackupError, IntegrityError
from driftpilot.runs import backup as backup_
from driftpilot.runs import backup_stores as stores_
from driftpilot.runs.backup import MANIFEST, PUBLIC_KEY, SIGNATURE, TREES

OWN_KEY_ONLY = "checked against the backup's own key only"
UNSIGNED = "unsigned backup: not checked against any key"
KINDS = ("sqlite", "postgresql", "external")


def trust_label(audit_key: Path | None, expect_key: str | None, trust_backup: bool) -> str:
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
    """The manifest bytes ``data`` are signed by the backup's public key, and that key is
    ``audit_key``'s or has the fingerprint ``expect_key`` when either is given; an unsigned
    backup passes only with ``trust_backup`` alone.

    Raises:
        IntegrityError: any of these fails.
    """
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
    """The Ed25519 private key in ``path`` (``--audit-key``); BackupError if it is absent."""
    from driftpilot.store.checkpoint import load_or_create_key

    if not path.is_file():
        raise BackupError(f"--audit-key {path} does not exist")
    return load_or_create_key(path)


def _raw(public: Any) -> bytes:
    """The raw bytes of a public key, to compare two keys."""
    from cryptography.hazmat.primitives import serialization

    raw: bytes = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw
