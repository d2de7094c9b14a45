"""Batch files: a path under an allowed root, or an upload, read into a frame with bounds.

Paths are untrusted: only relative paths that resolve (symlinks followed) inside one of the
allowed roots are read (no absolute path, ``..``, ``~``, backslash or NUL; a symlink leading
out is refused). Files and uploads are bounded before they are parsed: size, the longest line
and the number of columns (a CSV bomb is refused, not parsed), then rows while parsing.
Nothing is written here.

Every refusal is a ``BatchRefused`` (a ``DataError``) carrying the HTTP status the API answers
with (413 too large, 415 unsupported upload type, 422 unusable or not allowed) and, for some,
the problem type's slug and title; ``api.batches`` turns it into its ``Problem``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from driftpilot.core.errors import DataError

if TYPE_CHECKING:
    import polars as pl

SUFFIXES = (".csv", ".parquet")
CHUNK = 8 * 1024 * 1024


class BatchRefused(DataError):
    """A batch path, file or upload that is not read: ``status`` is the HTTP status that
    says why (413, 415 or 422); ``slug`` and ``title`` name the problem type, if special."""

    def __init__(
        self, status: int, detail: str, *, slug: str | None = None, title: str | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.slug, self.title = status, detail, slug, title


@dataclass(frozen=True)
class Limits:
    """What one batch may be: rows, columns, bytes, and (CSV) the longest line."""

    max_rows: int
    max_columns: int
    max_bytes: int
    max_line_bytes: int


def limits_of(conf: Any) -> Limits:
    """The batch limits of the API's settings (``Settings.api``)."""
    return Limits(
        max_rows=conf.max_batch_rows,
        max_columns=conf.max_upload_columns,
        max_bytes=conf.max_file_bytes,
        max_line_bytes=conf.max_line_bytes,
    )


def _path_refused(detail: str) -> BatchRefused:
    return BatchRefused(422, detail, slug="path-not-allowed", title="Path not allowed")


def resolve_under(roots: list[Path], relative: str) -> Path:
    """The file ``relative`` names inside one of ``roots``.

    Raises:
        BatchRefused: 422 for an absolute path, a path leaving the roots (``..``, a symlink
            out), a missing file or an unsupported type.
    """
    pure = PurePosixPath(relative)
    if (
        "\x00" in relative
        or "\\" in relative
        or pure.is_absolute()
        or ".." in pure.parts
        or Path(relative).drive
        or relative.startswith("~")
    ):
        raise _path_refused(
            "batch path must be relative to an allowed batch root, without '..', '~' or '\\'"
        )
    if pure.suffix.lower() not in SUFFIXES:
        raise BatchRefused(
            422, f"unsupported batch file type {pure.suffix!r}: use .csv or .parquet"
        )
    for root in roots:
        base = root.expanduser().resolve()
        candidate = (base / pure).resolve()
        if not candidate.is_relative_to(base):
            raise _path_refused("batch path leaves the allowed batch root")
        if candidate.is_file():
            return candidate
    raise BatchRefused(422, f"no batch file {relative!r} under the allowed batch roots")


def read_file(path: Path, limits: Limits) -> pl.DataFrame:
    """A CSV or Parquet file under a batch root as a frame (dates parsed in CSVs)."""
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise BatchRefused(413, f"the batch file has {size} bytes; the limit is {limits.max_bytes}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open("rb") as f:
            check_csv(iter(lambda: f.read(CHUNK), b""), limits, path.name)
    return _read(path, suffix, limits, path.name)


def read_upload(data: bytes, filename: str, limits: Limits) -> pl.DataFrame:
    """An uploaded CSV or Parquet file as a frame; its type comes from its name."""
    suffix = PurePosixPath(filename or "").suffix.lower()
    if suffix not in SUFFIXES:
        raise BatchRefused(
            415, f"unsupported upload type {suffix or '(none)'!r}: upload a .csv or .parquet file"
        )
    if suffix == ".csv":
        check_csv((data[i : i + CHUNK] for i in range(0, len(data), CHUNK)), limits, "the upload")
    return _read(io.BytesIO(data), suffix, limits, "the upload")


def check_csv(chunks: Iterable[bytes], limits: Limits, label: str) -> None:
    """Refuse a CSV whose header has too many columns or with a line longer than the limit,
    before polars parses (and allocates for) it. Linear in the size, in bounded memory."""
    import numpy as np

    line = 0  # length of the line running across chunks
    header: bytes | None = None
    head = b""
    for chunk in chunks:
        if header is None:
            head += chunk[: limits.max_line_bytes + 1]
            cut = head.find(b"\n")
            if cut >= 0 or len(head) > limits.max_line_bytes:
                header = head[: cut if cut >= 0 else None]
                columns = header.count(b",") + 1
                if columns > limits.max_columns:
                    raise BatchRefused(
                        413,
                        f"{label} has {columns} columns; the limit is {limits.max_columns}",
                    )
        newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
        if newlines.size == 0:
            line += len(chunk)
        else:
            longest = line + int(newlines[0])
            if newlines.size > 1:
                longest = max(longest, int(np.diff(newlines).max()) - 1)
            if longest > limits.max_line_bytes:
                raise _long_line(label, limits)
            line = len(chunk) - int(newlines[-1]) - 1
        if line > limits.max_line_bytes:
            raise _long_line(label, limits)
    if header is None and head.count(b",") + 1 > limits.max_columns:
        raise BatchRefused(413, f"{label} has too many columns; the limit is {limits.max_columns}")


def _long_line(label: str, limits: Limits) -> BatchRefused:
    return BatchRefused(413, f"{label} has a line longer than {limits.max_line_bytes} bytes")


def _parquet_bounds(source: Path | io.BytesIO, limits: Limits, label: str) -> None:
    """Refuse a Parquet file with too many rows, columns or uncompressed bytes, from its
    footer alone (a small file can expand into a huge table)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(source).metadata
    if meta.num_columns > limits.max_columns:
        raise BatchRefused(
            413, f"{label} has {meta.num_columns} columns; the limit is {limits.max_columns}"
        )
    if meta.num_rows > limits.max_rows:
        raise BatchRefused(413, f"{label} has {meta.num_rows} rows; the limit is {limits.max_rows}")
    expanded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if expanded > limits.max_bytes * 8:
        raise BatchRefused(413, f"{label} expands to {expanded} bytes; too large")
    if isinstance(source, io.BytesIO):
        source.seek(0)


def _read(source: Path | io.BytesIO, suffix: str, limits: Limits, label: str) -> pl.DataFrame:
    import polars as pl

    try:
        if suffix == ".parquet":
            _parquet_bounds(source, limits, label)
            frame = pl.read_parquet(source, n_rows=limits.max_rows + 1)
        else:
            frame = pl.read_csv(
                source,
                try_parse_dates=True,
                infer_schema_length=10_000,
                n_rows=limits.max_rows + 1,
            )
    except BatchRefused:
        raise
    except Exception as exc:  # polars, pyarrow and OS errors: the data is unusable
        raise BatchRefused(
            422, f"cannot read {label}: {type(exc).__name__}", slug="invalid-data"
        ) from exc
    if frame.height > limits.max_rows:
        raise BatchRefused(413, f"{label} has more than {limits.max_rows} rows")
    if frame.width > limits.max_columns:
        raise BatchRefused(
            413, f"{label} has {frame.width} columns; the limit is {limits.max_columns}"
        )
    if frame.height == 0:
        raise BatchRefused(422, f"{label} has no rows", slug="invalid-data")
    return frame
