"""Signed checkpoints of the audit chain heads, kept outside the database.

The hash chains catch an edited or removed row in the middle of a table, but not the loss of
the newest rows: a truncated chain is still a valid chain. A checkpoint records, for every
chained table, its size and the hash of its last row, signed with an Ed25519 key that does not
live in the database. Verifying the database against the newest checkpoint catches deleted
(fewer rows) and rewritten (another hash at the recorded size) newest rows.

Checkpoint text
---------------
A checkpoint is a C2SP signed note (https://c2sp.org/signed-note) whose body follows C2SP
``tlog-checkpoint`` (https://c2sp.org/tlog-checkpoint), so generic tooling can parse it::

    driftpilot/5d41402abc4b2a76              origin: the log's name
    12                                       total size: the sum of the table sizes
    3q2+7w...=                               base64(SHA-256(the table lines, newlines included))
    decisions 7 9f86d081884c7d65...          one extension line per chained table:
    tool_calls 2 60303ae22b998861...             <table> <size> <head: 64 lowercase hex>
    approvals 2 fd61a03af4f77d87...          (head = hash of the row with id == size,
    champion_history 1 a4e624d686e03ed2...      GENESIS "000…0" when the table is empty)
    mutations 0 0000000000000000...
    time 2025-06-01T12:00:00Z                the signing time, UTC, RFC 3339 to the second

    — driftpilot/5d41402abc4b2a76 <base64(key hash || signature)>

Lines end with a single LF; the body ends with LF and is what is signed. After one blank line
come the signature lines, each ``U+2014 SP <key name> SP base64(4-byte key hash || 64-byte
Ed25519 signature of the body) LF``. The key hash is ``SHA-256(key name || 0x0A || 0x01 ||
32-byte public key)[:4]`` (0x01: the Ed25519 signature type). The line-2/3 "tree" is not a
Merkle tree: the size is the total row count and the "root hash" a digest of the table lines;
the table lines are the authority and a verifier checks both agree.

The signing key is an unencrypted PKCS#8 PEM file, created with mode 0600 and refused when
group or others may read it. Its public half is published as a signed-note verifier key,
``<key name>+<8 hex key hash>+base64(0x01 || public key)`` (:func:`public_key_line`).

Checkpoint log
--------------
Checkpoints are appended to a JSON-lines file outside the database, one object per line,
``{"checkpoint": "<signed note text>"}``, oldest first; the last complete line is the newest.
The file is only ever appended to (O_APPEND, an exclusive flock, fsync). A line torn by a crash
(no final newline) is ignored when reading and terminated before the next append. A log is a
local path or a ``file://`` URL; other schemes (http POST to a witness, object stores) are not
supported yet and raise ConfigError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from driftpilot.core.errors import ConfigError, IntegrityError
from driftpilot.store.audit import GENESIS, AuditStore
from driftpilot.store.models import CHAINED

ED25519 = 0x01  # signed-note signature type of Ed25519
SIG_PREFIX = "\u2014 "  # em dash, space: starts every signature line
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[^\s+]+")  # signed-note key names: no spaces, no '+'

# -- data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainHead:
    """One chain's state: how many rows it has and the hash of its last row."""

    size: int
    head: str


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint body."""

    origin: str
    heads: dict[str, ChainHead]
    timestamp: datetime
    body: str


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint as read from the log: signed note text, not verified yet."""

    text: str

    def verify(self, public_key: Ed25519PublicKey | str) -> Checkpoint:
        return parse_and_verify(self.text, public_key)


# -- chain heads --------------------------------------------------------------------------------


def chain_heads(store: AuditStore) -> dict[str, ChainHead]:
    """Size and last hash of every chained table, read in one transaction (a consistent cut)."""
    heads: dict[str, ChainHead] = {}
    with store.reading() as session:
        for model in CHAINED:
            size = session.scalar(select(func.count()).select_from(model)) or 0
            last = session.scalar(select(model.hash).order_by(model.id.desc()).limit(1))
            heads[model.__tablename__] = ChainHead(size=size, head=last or GENESIS)
    return heads


def default_origin(url: str) -> str:
    """``driftpilot/<16 hex>``: a stable name for the log of the database at ``url`` (the
    password is left out, so rotating it keeps the origin)."""
    safe = make_url(url).set(password=None).render_as_string(hide_password=False)
    return f"driftpilot/{hashlib.sha256(safe.encode()).hexdigest()[:16]}"


# -- checkpoint body ----------------------------------------------------------------------------


def _table_lines(heads: dict[str, ChainHead]) -> str:
    return "".join(f"{name} {h.size} {h.head}\n" for name, h in heads.items())


def _root(table_lines: str) -> str:
    return base64.b64encode(hashlib.sha256(table_lines.encode()).digest()).decode()


def checkpoint_body(origin: str, heads: dict[str, ChainHead], at: datetime) -> str:
    """The note text of a checkpoint (see the module docstring for the format)."""
    _check_name(origin, "origin", allow_plus=True)
    lines = _table_lines(heads)
    total = sum(h.size for h in heads.values())
    stamp = at.astimezone(UTC).strftime(_TIME_FORMAT)
    return f"{origin}\n{total}\n{_root(lines)}\n{lines}time {stamp}\n"


def _parse_body(body: str) -> Checkpoint:
    lines = body.removesuffix("\n").split("\n")
    if len(lines) < 4 or not body.endswith("\n"):
        raise IntegrityError("checkpoint body is malformed: too few lines")
    origin, total, root, *table_lines, time_line = lines
    heads = dict(_parse_table_line(line) for line in table_lines)
    if len(heads) != len(table_lines):
        raise IntegrityError("checkpoint body is malformed: a table appears twice")
    if not origin or not _DECIMAL.fullmatch(total):
        raise IntegrityError("checkpoint body is malformed: bad origin or size line")
    if int(total) != sum(h.size for h in heads.values()) or root != _root(_table_lines(heads)):
        raise IntegrityError("checkpoint body is inconsistent: size or root hash do not match")
    return Checkpoint(origin=origin, heads=heads, timestamp=_parse_time(time_line), body=body)


def _parse_table_line(line: str) -> tuple[str, ChainHead]:
    parts = line.split(" ")
    if len(parts) != 3 or not _DECIMAL.fullmatch(parts[1]) or not _HEX64.fullmatch(parts[2]):
        raise IntegrityError(f"checkpoint body is malformed: bad table line {line[:80]!r}")
    return parts[0], ChainHead(size=int(parts[1]), head=parts[2])


def _parse_time(line: str) -> datetime:
    try:
        return datetime.strptime(line.removeprefix("time "), _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise IntegrityError(f"checkpoint body is malformed: bad time line {line[:80]!r}") from exc


# -- signed notes -------------------------------------------------------------------------------


def _raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_name(name: str, what: str, *, allow_plus: bool = False) -> None:
    ok = bool(_NAME.fullmatch(name)) or (allow_plus and bool(re.fullmatch(r"\S+", name)))
    if not ok:
        raise ConfigError(f"{what} {name!r} must be non-empty, without spaces or '+'")


def key_hash(name: str, key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """signed-note key hash: SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    data = name.encode() + b"\n" + bytes([ED25519]) + _raw_public(key)
    return hashlib.sha256(data).digest()[:4]


def public_key_line(key: Ed25519PrivateKey | Ed25519PublicKey, name: str) -> str:
    """The signed-note verifier key to publish: ``<name>+<hex key hash>+<base64(0x01||key)>``."""
    _check_name(name, "key name")
    encoded = base64.b64encode(bytes([ED25519]) + _raw_public(key)).decode()
    return f"{name}+{key_hash(name, key).hex()}+{encoded}"


def parse_verifier_key(vkey: str) -> tuple[str, Ed25519PublicKey]:
    """The key name and public key of a verifier key made by :func:`public_key_line`."""
    try:
        name, hash_hex, encoded = vkey.strip().split("+", 2)
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ConfigError(f"not a signed-note verifier key: {vkey[:80]!r}") from exc
    if len(raw) != 33 or raw[0] != ED25519:
        raise ConfigError("verifier key is not an Ed25519 key")
    public = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_hash(name, public).hex() != hash_hex.lower():
        raise ConfigError("verifier key hash does not match its name and key")
    return name, public


def sign_note(body: str, key: Ed25519PrivateKey, key_name: str) -> str:
    """``body`` (ending in a newline), a blank line, and one signature line by ``key``."""
    _check_name(key_name, "key name")
    if not body.endswith("\n"):
        raise ConfigError("a note body must end with a newline")
    blob = key_hash(key_name, key) + key.sign(body.encode())
    return f"{body}\n{SIG_PREFIX}{key_name} {base64.b64encode(blob).decode()}\n"


def _split_note(text: str) -> tuple[str, list[tuple[str, bytes]]]:
    cut = text.rfind("\n\n")
    if cut < 0 or not text.endswith("\n"):
        raise IntegrityError("checkpoint is malformed: no signature block")
    body, block = text[: cut + 1], text[cut + 2 :]
    return body, [_parse_signature(line) for line in block.removesuffix("\n").split("\n")]


def _parse_signature(line: str) -> tuple[str, bytes]:
    parts = line.removeprefix(SIG_PREFIX).split(" ")
    if not line.startswith(SIG_PREFIX) or len(parts) != 2:
        raise IntegrityError(f"checkpoint is malformed: bad signature line {line[:80]!r}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error as exc:
        raise IntegrityError("checkpoint is malformed: signature is not base64") from exc
    if len(blob) < 5:
        raise IntegrityError("checkpoint is malformed: signature too short")
    return parts[0], blob


def parse_and_verify(text: str, public_key: Ed25519PublicKey | str) -> Checkpoint:
    """Check the note's signature by ``public_key`` (a key, or a verifier key string), then
    parse its body. Signature lines of other keys are ignored, as signed-note asks.

    Raises:
        IntegrityError: malformed text, no signature by this key, or a bad signature.
    """
    if isinstance(public_key, str):
        wanted: str | None
        wanted, public_key = parse_verifier_key(public_key)
    else:
        wanted = None
    body, signatures = _split_note(text)
    mine = [
        blob[4:]
        for name, blob in signatures
        if (wanted is None or name == wanted) and blob[:4] == key_hash(name, public_key)
    ]
    if not mine:
        raise IntegrityError("checkpoint is not signed by the audit key")
    for signature in mine:
        try:
            public_key.verify(signature, body.encode())
        except InvalidSignature as exc:
            raise IntegrityError("checkpoint signature is invalid: the text was altered") from exc
    return _parse_body(body)


def sign_heads(
    store: AuditStore,
    key: Ed25519PrivateKey,
    origin: str | None = None,
    key_name: str | None = None,
    at: datetime | None = None,
) -> str:
    """The signed checkpoint of ``store``'s chain heads now. ``origin`` defaults to
    :func:`default_origin` of the store's URL, ``key_name`` to the origin."""
    origin = origin or default_origin(store.url)
    body = checkpoint_body(origin, chain_heads(store), at or datetime.now(UTC))
    return sign_note(body, key, key_name or origin)


# -- verification against the database ----------------------------------------------------------


def verify_against_checkpoint(
    store: AuditStore,
    checkpoint: Checkpoint | SignedCheckpoint,
    public_key: Ed25519PublicKey | str | None = None,
) -> list[str]:
    """What in the database contradicts ``checkpoint`` (empty: consistent).

    Every table must still have at least the recorded number of rows, and the row with
    id == recorded size must still have the recorded hash. Rows added since are not checked
    here (the chain walk covers them). A ``SignedCheckpoint`` is first verified with
    ``public_key``; a bad or missing signature is reported as a problem."""
    if isinstance(checkpoint, SignedCheckpoint):
        if public_key is None:
            raise ConfigError("verifying a signed checkpoint needs the audit public key")
        try:
            checkpoint = checkpoint.verify(public_key)
        except IntegrityError as exc:
            return [f"the newest checkpoint cannot be trusted: {exc}"]
    models = {m.__tablename__: m for m in CHAINED}
    stamp = checkpoint.timestamp.strftime(_TIME_FORMAT)
    problems: list[str] = []
    with store.reading() as session:
        for name, recorded in checkpoint.heads.items():
            model = models.get(name)
            if model is None:
                problems.append(f"the checkpoint of {stamp} records unknown table {name!r}")
                continue
            problem = _table_problem(session, model, recorded, stamp)
            if problem:
                problems.append(problem)
    return problems


def _table_problem(session: Any, model: Any, recorded: ChainHead, stamp: str) -> str | None:
    name = model.__tablename__
    if recorded.size == 0:
        return None
    count = session.scalar(select(func.count()).select_from(model)) or 0
    if count < recorded.size:
        return (
            f"table {name} has {count} rows, the checkpoint of {stamp} recorded "
            f"{recorded.size}: newest rows were deleted"
        )
    found = session.scalar(select(model.hash).where(model.id == recorded.size))
    if found is None:
        return f"table {name} has no row #{recorded.size}, recorded in the checkpoint of {stamp}"
    if found != recorded.head:
        return (
            f"table {name} row #{recorded.size} does not match the checkpoint of {stamp} "
            f"(recorded {recorded.head[:12]}, found {found[:12]}): the row was rewritten"
        )
    return None


# -- keys ---------------------------------------------------------------------------------------


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 signing key in ``path`` (PKCS#8 PEM), created with mode 0600 if missing.

    Raises:
        ConfigError: the file is readable or writable by group or others, or is not an
            Ed25519 private key.
    """
    path = Path(path).expanduser()
    if not path.exists():
        _create_key(path)
    mode = path.stat().st_mode & 0o777
    if os.name == "posix" and mode & 0o077:
        raise ConfigError(
            f"audit key {path} is accessible by group or others (mode {mode:04o}); "
            f"run: chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"audit key {path} is not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"audit key {path} is not an Ed25519 key")
    return key


def _create_key(path: Path) -> None:
    """Write a new key to a private temporary file, then link it into place: the key appears
    whole or not at all, and a key another process created first is kept."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _write_all(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process won the race: use its key
    finally:
        tmp.unlink()


# -- the checkpoint log -------------------------------------------------------------------------


def log_path(target: str | Path) -> Path:
    """The local file of a checkpoint log given as a path or a ``file://`` URL.

    Raises:
        ConfigError: any other URL scheme (publishing over HTTP is not supported yet).
    """
    if isinstance(target, Path) or "://" not in target:
        return Path(target).expanduser()
    url = urlparse(target)
    if url.scheme != "file":
        raise ConfigError(
            f"checkpoint log {target!r}: only a local path or a file:// URL is supported "
            f"({url.scheme}:// is not)"
        )
    if url.netloc not in ("", "localhost"):
        raise ConfigError(f"checkpoint log {target!r}: a file:// URL must be on this host")
    return Path(unquote(url.path))


def append_checkpoint(target: str | Path, text: str) -> Path:
    """Append one signed checkpoint to the log (created if missing); durable on return."""
    path = log_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"checkpoint": text}, ensure_ascii=False) + "\n"
    created = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _lock(fd)
        # Two processes sign at different moments and may reach the lock in either order:
        # a checkpoint no newer than the log's newest would make it look like rows vanished.
        if created or not _covered(_last_line(path), text):
            size = os.fstat(fd).st_size
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
            _write_all(fd, (b"\n" if torn else b"") + line.encode())
            os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)
    return path


def _covered(newest_line: str | None, text: str) -> bool:
    """Whether the log's newest entry already covers checkpoint ``text``: same origin, and
    every chain at least as long (an unreadable entry covers nothing)."""
    if newest_line is None:
        return False
    try:
        newest = _parse_body(_split_note(json.loads(newest_line)["checkpoint"])[0])
    except (IntegrityError, ValueError, KeyError, TypeError):
        return False
    candidate = _parse_body(_split_note(text)[0])
    return newest.origin == candidate.origin and all(
        newest.heads.get(name, ChainHead(-1, "")).size >= head.size
        for name, head in candidate.heads.items()
    )


def latest_checkpoint(target: str | Path) -> SignedCheckpoint | None:
    """The newest checkpoint in the log, unverified (None: no log or no complete entry).

    Raises:
        IntegrityError: the newest entry is not a checkpoint log line.
    """
    path = log_path(target)
    if not path.exists():
        return None
    line = _last_line(path)
    if line is None:
        return None
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"checkpoint log {path}: newest entry is not JSON") from exc
    if not isinstance(entry, dict) or not isinstance(entry.get("checkpoint"), str):
        raise IntegrityError(f"checkpoint log {path}: newest entry has no checkpoint")
    return SignedCheckpoint(text=entry["checkpoint"])


def _last_line(path: Path, block: int = 8192) -> str | None:
    """The last non-blank newline-terminated line, read from the end of the file (a torn,
    unterminated tail is ignored)."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        while True:
            start = max(0, size - block)
            handle.seek(start)
            data = handle.read()
            complete = data[: data.rfind(b"\n") + 1].rstrip(b"\n")
            cut = complete.rfind(b"\n")
            if cut >= 0 or start == 0:
                return complete[cut + 1 :].decode() or None
            block *= 2


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _lock(fd: int) -> None:
    if os.name == "posix":
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes


def _fsync_dir(directory: Path) -> None:
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
