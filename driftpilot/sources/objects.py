"""Batch files in S3-compatible object stores (AWS S3, MinIO, Ceph, ...), read with bounds.

URLs are ``s3://bucket/key``; a glob may use ``*``, ``?``, ``[...]`` within a path segment
and ``**`` as a whole segment (any depth). Only URLs under one of
``settings.sources.object_roots`` are read: the glob's fixed part (up to its first wildcard)
must begin with a root, so no pattern reaches past it. Credentials come from the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ...), the endpoint
and region from ``s3_endpoint_url``/``s3_region`` (else the environment's); every request is
bounded by ``object_timeout_s``.

An object's size is checked against the limit before its download (the listing or a HEAD
gives it), and the download stops past the limit whatever the object says. The object read is
the one listed (``If-Match`` its ETag): one replaced in between is an error, not a mix.

Errors: ``ObjectNotAllowed`` (a ``ConfigError``) for a URL that is malformed or outside the
roots; ``BucketNotFound``, ``AccessDenied``, ``ObjectNotFound`` and ``ObjectStoreError`` (a
``DataError``) for what the store answers; ``BatchRefused`` (``driftpilot.sources.files``) for
an object too large or unreadable as CSV/Parquet. Messages name the URL, never a credential.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from driftpilot.core.errors import ConfigError, DataError
from driftpilot.core.settings import ApiSettings
from driftpilot.sources import files
from driftpilot.sources.files import SUFFIXES, BatchRefused, Limits, check_csv, limits_of

if TYPE_CHECKING:
    import polars as pl
    from obstore import ObjectMeta
    from obstore.store import S3Store

    from driftpilot.core.settings import SourceSettings

SCHEME = "s3://"
WILDCARDS = "*?["
MAX_LISTED = 100_000  # objects scanned for one glob: a pattern over a huge prefix is refused
MAX_RETRIES = 2
KEY_LIMIT = 500  # schedule_batches.batch_key
# S3's bucket naming rules (3-63 lower-case letters, digits, '.' and '-').
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CODE = re.compile(r"<Code>([A-Za-z.]+)</Code>")
_STATUS = re.compile(r"status code: (\d{3})")
_CREDENTIALS_HINT = (
    "check the credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
    "AWS_SESSION_TOKEN) and the bucket's policy"
)


class ObjectNotAllowed(ConfigError):
    """An object URL or glob that is malformed or not under an allowed object root."""


class ObjectStoreError(DataError):
    """The object store failed or refused a request (unreachable, timed out, ...)."""


class BucketNotFound(ObjectStoreError):
    """The URL's bucket does not exist on the store."""


class AccessDenied(ObjectStoreError):
    """The store refused the credentials (unknown key, bad signature) or the access."""


class ObjectNotFound(ObjectStoreError):
    """No object at the URL (its bucket exists)."""


@dataclass(frozen=True)
class ObjectUrl:
    """``s3://bucket/key``, parsed; ``key`` may be a glob."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    @property
    def fixed(self) -> str:
        """The key up to its first wildcard (all of it when it has none)."""
        cut = min((i for i, c in enumerate(self.key) if c in WILDCARDS), default=len(self.key))
        return self.key[:cut]


def is_object_url(text: str) -> bool:
    """Whether ``text`` names an object-store location (``s3://...``) rather than a path."""
    return text[: len(SCHEME)].lower() == SCHEME


def parse_object_url(url: str) -> ObjectUrl:
    """The bucket and key of ``s3://bucket/key``.

    Raises:
        ObjectNotAllowed: not ``s3://``, a bucket name S3 would refuse, an empty key, or a key
            with ``..``, ``.`` or empty segments, a backslash or a control character.
    """
    if not is_object_url(url):
        raise ObjectNotAllowed(f"not an object-store URL (s3://bucket/key): {url[:200]!r}")
    bucket, _, key = url[len(SCHEME) :].partition("/")
    if not BUCKET.match(bucket):
        raise ObjectNotAllowed(f"{url[:200]!r}: {bucket[:70]!r} is not a valid bucket name")
    parts = key.split("/")
    if (
        not key
        or "\\" in key
        or any(ord(c) < 32 for c in key)
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ObjectNotAllowed(
            f"{url[:200]!r}: the key must be a path without '..', '.', '//' or '\\' "
            "(e.g. s3://bucket/batches/*.parquet)"
        )
    return ObjectUrl(bucket, key)


def _roots(conf: SourceSettings) -> list[ObjectUrl]:
    """The allowed roots as (bucket, key prefix ending in '/' or empty)."""
    roots = []
    for root in conf.object_roots:
        if not is_object_url(root):
            raise ObjectNotAllowed(f"object root {root!r} is not an s3:// URL")
        bucket, _, prefix = root[len(SCHEME) :].partition("/")
        prefix = prefix.strip("/")
        roots.append(ObjectUrl(bucket, f"{prefix}/" if prefix else ""))
    return roots


def _check_allowed(parsed: ObjectUrl, conf: SourceSettings) -> None:
    roots = _roots(conf)
    if not roots:
        raise ObjectNotAllowed(
            f"{parsed}: no object-store root is allowed "
            "(settings: DRIFTPILOT_SOURCES_OBJECT_ROOTS='[\"s3://bucket/prefix/\"]')"
        )
    if not any(parsed.bucket == r.bucket and parsed.fixed.startswith(r.key) for r in roots):
        listed = ", ".join(str(r) for r in roots)
        raise ObjectNotAllowed(f"{parsed} is not under an allowed object root ({listed})")


def check_object_glob(url: str, conf: SourceSettings) -> str:
    """``url`` itself when it is an ``s3://`` glob that may be read: well formed (``**`` only
    as a whole segment) and under one of ``conf.object_roots``.

    Raises:
        ObjectNotAllowed: (a ConfigError) otherwise, saying which rule it breaks.
    """
    parsed = parse_object_url(url)
    if any("**" in part and part != "**" for part in parsed.key.split("/")):
        raise ObjectNotAllowed(f"{url[:200]!r}: '**' must be a whole path segment")
    _check_allowed(parsed, conf)
    return url


def matches(key: str, pattern: str) -> bool:
    """Whether an object key matches a glob: wildcards stay inside a segment, ``**`` spans
    any number of segments (none included)."""
    return _match_parts(key.split("/"), pattern.split("/"))


def _match_parts(parts: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match_parts(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return (
        bool(parts) and fnmatchcase(parts[0], pattern[0]) and _match_parts(parts[1:], pattern[1:])
    )


def _store(bucket: str, conf: SourceSettings) -> S3Store:
    """A client of one bucket: credentials from the environment, requests bounded in time and
    retried at most ``MAX_RETRIES`` times within the timeout."""
    from obstore.store import S3Store

    timeout = timedelta(seconds=conf.object_timeout_s)
    options: dict[str, Any] = {}
    if conf.s3_endpoint_url:
        options["endpoint"] = conf.s3_endpoint_url
    if conf.s3_region:
        options["region"] = conf.s3_region
    return S3Store(
        bucket,
        client_options={
            "timeout": timeout,
            "connect_timeout": min(timeout, timedelta(seconds=10)),
            # An http:// endpoint is the operator's explicit choice (a store on a private net).
            "allow_http": (conf.s3_endpoint_url or "").startswith("http://"),
        },
        retry_config={"max_retries": MAX_RETRIES, "retry_timeout": timeout},
        **options,
    )


def _summary(exc: BaseException) -> str:
    """The first line of a store error, without obstore's debug dump."""
    text = str(exc).split("\n\nDebug source:", 1)[0]
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:300]


def _translate(exc: Exception, url: str) -> DataError:
    """A store error as the DataError that says what went wrong with ``url``."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    text = str(exc)
    code_match, status_match = _CODE.search(text), _STATUS.search(text)
    code = code_match.group(1) if code_match else None
    status = status_match.group(1) if status_match else None
    if code == "NoSuchBucket":
        return BucketNotFound(f"{url}: the bucket does not exist on the object store")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
        return AccessDenied(
            f"{url}: the object store refused the credentials ({code}); " + _CREDENTIALS_HINT
        )
    if (
        isinstance(exc, PermissionDeniedError | UnauthenticatedError)
        or code == "AccessDenied"
        or status in ("401", "403")
    ):
        return AccessDenied(f"{url}: access denied by the object store; " + _CREDENTIALS_HINT)
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFound(f"{url}: no such object")
    return ObjectStoreError(f"{url}: the object store failed: {_summary(exc)}")


def _errors() -> tuple[type[Exception], ...]:
    from obstore.exceptions import BaseError

    return (BaseError, OSError)


def _list_matching(store: S3Store, glob: ObjectUrl) -> list[ObjectMeta]:
    """The CSV/Parquet objects whose keys match the glob, listed under its fixed part's
    folder: only that folder's own objects when wildcards are in the last segment alone
    (older data in subfolders is not scanned), else recursively. More than ``MAX_LISTED``
    objects listed is an error."""
    import obstore

    folder = glob.fixed.rpartition("/")[0]
    flat = "/" not in glob.key[len(folder) + 1 if folder else 0 :]
    try:
        if flat:
            chunks: Iterable[Sequence[ObjectMeta]] = [
                obstore.list_with_delimiter(store, prefix=folder or None)["objects"]
            ]
        else:
            chunks = obstore.list(store, prefix=folder or None, chunk_size=1000)
        return _matching(chunks, glob, folder)
    except _errors() as exc:
        raise _translate(exc, str(glob)) from exc


def _matching(
    chunks: Iterable[Sequence[ObjectMeta]], glob: ObjectUrl, folder: str
) -> list[ObjectMeta]:
    found: list[ObjectMeta] = []
    scanned = 0
    for chunk in chunks:
        scanned += len(chunk)
        if scanned > MAX_LISTED:
            raise ObjectStoreError(
                f"{glob}: more than {MAX_LISTED} objects under s3://{glob.bucket}/{folder}; "
                "narrow the glob's fixed part"
            )
        found.extend(
            meta
            for meta in chunk
            if PurePosixPath(meta["path"]).suffix.lower() in SUFFIXES
            and matches(meta["path"], glob.key)
        )
    return found


def ledger_key(bucket: str, meta: ObjectMeta) -> str:
    """A schedule's ledger key of one version of an object: its URL, modification time, size
    and ETag, so an object rewritten in place is a new batch (hashed past the column's
    length)."""
    etag = (meta.get("e_tag") or "").strip('"')
    stamp = int(meta["last_modified"].timestamp() * 1_000_000)
    key = f"glob:{SCHEME}{bucket}/{meta['path']}:{stamp}:{meta['size']}:{etag}"
    if len(key) <= KEY_LIMIT:
        return key
    return "glob:s3-sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _download(store: S3Store, meta: ObjectMeta, url: str, max_bytes: int) -> bytes:
    """The bytes of the listed version of an object, refused past ``max_bytes``: by its
    listed size before any byte is fetched, and while reading (a store may lie)."""
    import obstore
    from obstore.exceptions import PreconditionError

    if meta["size"] > max_bytes:
        raise BatchRefused(413, f"{url} has {meta['size']} bytes; the limit is {max_bytes}")
    if meta["size"] == 0:
        raise BatchRefused(422, f"{url} is empty", slug="invalid-data")
    etag = meta.get("e_tag")
    data = bytearray()
    try:
        result = obstore.get(store, meta["path"], options={"if_match": etag} if etag else None)
        for chunk in result.stream(min_chunk_size=files.CHUNK):
            data += memoryview(chunk)
            if len(data) > max_bytes:
                raise BatchRefused(413, f"{url} is larger than the limit of {max_bytes} bytes")
    except PreconditionError as exc:
        raise ObjectStoreError(
            f"{url} changed while it was being read; the next read takes the new version"
        ) from exc
    except _errors() as exc:
        raise _translate(exc, url) from exc
    return bytes(data)


def _parse(data: bytes, url: str, limits: Limits) -> pl.DataFrame:
    """The frame of a CSV/Parquet object's bytes (its type from its name), with the bounds
    and refusals of uploads; a broken file is refused with what the reader said."""
    suffix = PurePosixPath(url).suffix.lower()
    if suffix == ".parquet" and not (data[:4] == b"PAR1" and data[-4:] == b"PAR1"):
        raise BatchRefused(
            422,
            f"{url} is not a Parquet file (it lacks the PAR1 marks at its start and end)",
            slug="invalid-data",
        )
    if suffix == ".csv":
        check_csv(
            (data[i : i + files.CHUNK] for i in range(0, len(data), files.CHUNK)), limits, url
        )
    try:
        return files._read(io.BytesIO(data), suffix, limits, url)
    except BatchRefused as exc:
        if exc.slug != "invalid-data" or exc.__cause__ is None:
            raise
        detail = f"{exc.detail} ({_summary(exc.__cause__)})"
        raise BatchRefused(exc.status, detail, slug=exc.slug, title=exc.title) from exc


def default_limits(max_bytes: int) -> Limits:
    """The batch limits of uploads (rows, columns, line length) with ``max_bytes``."""
    return replace(limits_of(ApiSettings()), max_bytes=max_bytes)


def pick_newest(
    url_glob: str,
    consumed: set[str],
    conf: SourceSettings,
    max_bytes: int,
    *,
    limits: Limits | None = None,
) -> tuple[pl.DataFrame, str, str, str] | None:
    """The newest CSV/Parquet object (by modification time, then key) that ``url_glob``
    matches, as ``(frame, batch_id, ledger key, detail)``; None when nothing matches or the
    newest version's ledger key is in ``consumed`` (older unconsumed objects are passed over
    and counted in ``detail``: a schedule follows the newest data).

    The batch id is the object's file name without suffix; the key changes whenever the
    object does (``ledger_key``). ``limits`` (default: the upload limits) bound rows, columns
    and lines; ``max_bytes`` the object's size, checked before it is downloaded.

    Raises:
        ObjectNotAllowed: the glob is malformed or outside ``conf.object_roots``.
        BucketNotFound, AccessDenied, ObjectStoreError: the store's answer.
        BatchRefused: the newest object is too large or not readable as its type.
    """
    check_object_glob(url_glob, conf)
    glob = parse_object_url(url_glob)
    store = _store(glob.bucket, conf)
    found = _list_matching(store, glob)
    if not found:
        return None
    newest = max(found, key=lambda m: (m["last_modified"], m["path"]))
    key = ledger_key(glob.bucket, newest)
    if key in consumed:
        return None
    url = f"{SCHEME}{glob.bucket}/{newest['path']}"
    data = _download(store, newest, url, max_bytes)
    frame = _parse(data, url, limits or default_limits(max_bytes))
    passed = sum(1 for m in found if m is not newest and ledger_key(glob.bucket, m) not in consumed)
    detail = f"{url}, newest of {len(found)} matching objects"
    if passed:
        detail += f"; {passed} older unconsumed object(s) passed over"
    return frame, PurePosixPath(newest["path"]).stem[:200], key, detail


def read_object(url: str, conf: SourceSettings, limits: Limits) -> pl.DataFrame:
    """One CSV/Parquet object under ``conf.object_roots`` as a frame, bounded by ``limits``
    (its size read with a HEAD before the download).

    Raises:
        ObjectNotAllowed: a malformed URL, a glob, or a URL outside the roots.
        BucketNotFound, ObjectNotFound, AccessDenied, ObjectStoreError: the store's answer.
        BatchRefused: an unsupported type (422), too large (413), or unreadable (422).
    """
    import obstore

    parsed = parse_object_url(url)
    if any(c in parsed.key for c in WILDCARDS):
        raise ObjectNotAllowed(f"{url[:200]!r}: one object, not a glob, is read here")
    _check_allowed(parsed, conf)
    suffix = PurePosixPath(parsed.key).suffix.lower()
    if suffix not in SUFFIXES:
        raise BatchRefused(422, f"unsupported batch file type {suffix!r}: use .csv or .parquet")
    store = _store(parsed.bucket, conf)
    try:
        meta = obstore.head(store, parsed.key)
    except FileNotFoundError as exc:
        # A HEAD's 404 has no body: a listing tells a missing bucket from a missing object.
        _list_matching(store, ObjectUrl(parsed.bucket, parsed.key))
        raise ObjectNotFound(f"{url}: no such object") from exc
    except _errors() as exc:
        raise _translate(exc, url) from exc
    return _parse(_download(store, meta, url, limits.max_bytes), url, limits)
