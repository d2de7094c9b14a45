"""Turn a run request's batch into a frame: a file under an allowed root, or an upload.

Paths are untrusted: only relative paths that resolve (symlinks followed) inside one of the
allowed roots are read. Nothing is written here; the façade stores the batch.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import polars as pl

from api.problems import Problem

SUFFIXES = (".csv", ".parquet")


def resolve_under(roots: list[Path], relative: str) -> Path:
    """The file ``relative`` names inside one of ``roots``.

    Raises:
        Problem: 422 for an absolute path, a path leaving the roots (``..``, a symlink out),
            a missing file or an unsupported type.
    """
    pure = PurePosixPath(relative)
    if (
        "\x00" in relative
        or "\\" in relative
        or pure.is_absolute()
        or ".." in pure.parts
        or Path(relative).drive
    ):
        raise Problem(
            422,
            "batch path must be relative to an allowed batch root, without '..' or '\\'",
            slug="path-not-allowed",
            title="Path not allowed",
        )
    if pure.suffix.lower() not in SUFFIXES:
        raise Problem(422, f"unsupported batch file type {pure.suffix!r}: use .csv or .parquet")
    for root in roots:
        base = root.expanduser().resolve()
        candidate = (base / pure).resolve()
        if not candidate.is_relative_to(base):
            raise Problem(
                422,
                "batch path leaves the allowed batch root",
                slug="path-not-allowed",
                title="Path not allowed",
            )
        if candidate.is_file():
            return candidate
    raise Problem(422, f"no batch file {relative!r} under the allowed batch roots")


def read_file(path: Path, max_rows: int) -> pl.DataFrame:
    """A CSV or Parquet file as a frame (dates parsed in CSVs, like the CLI)."""
    return _read(path, path.suffix.lower(), max_rows, path.name)


def read_upload(data: bytes, filename: str, max_rows: int) -> pl.DataFrame:
    """An uploaded CSV or Parquet file as a frame; its type comes from its name."""
    suffix = PurePosixPath(filename or "").suffix.lower()
    if suffix not in SUFFIXES:
        raise Problem(
            415, f"unsupported upload type {suffix or '(none)'!r}: upload a .csv or .parquet file"
        )
    return _read(io.BytesIO(data), suffix, max_rows, "the upload")


def _read(source: Path | io.BytesIO, suffix: str, max_rows: int, label: str) -> pl.DataFrame:
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(source, n_rows=max_rows + 1)
        else:
            frame = pl.read_csv(
                source, try_parse_dates=True, infer_schema_length=10_000, n_rows=max_rows + 1
            )
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise Problem(
            422, f"cannot read {label}: {type(exc).__name__}", slug="invalid-data"
        ) from exc
    if frame.height > max_rows:
        raise Problem(413, f"{label} has more than {max_rows} rows")
    if frame.height == 0:
        raise Problem(422, f"{label} has no rows", slug="invalid-data")
    return frame
