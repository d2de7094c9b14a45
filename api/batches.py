"""Turn a run request's batch into a frame: a file under an allowed root, an upload, or a
built-in dataset batch.

Paths are untrusted: only relative paths that resolve (symlinks followed) inside one of the
allowed roots are read. Files and uploads are bounded before they are parsed: size, the
longest line and the number of columns (a CSV bomb is refused, not parsed), then rows while
parsing. Nothing is written here; the façade stores the batch.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import polars as pl

from api.problems import Problem

if TYPE_CHECKING:
    from driftpilot.core.settings import Settings

SUFFIXES = (".csv", ".parquet")
CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one batch may be: rows, columns, bytes, and (CSV) the longest line."""

    max_rows: int
    max_columns: int
    max_bytes: int
    max_line_bytes: int


def _path_refused(detail: str) -> Problem:
    return Problem(422, detail, slug="path-not-allowed", title="Path not allowed")


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
        or relative.startswith("~")
    ):
        raise _path_refused(
            "batch path must be relative to an allowed batch root, without '..', '~' or '\\'"
        )
    if pure.suffix.lower() not in SUFFIXES:
        raise Problem(422, f"unsupported batch file type {pure.suffix!r}: use .csv or .parquet")
    for root in roots:
        base = root.expanduser().resolve()
        candidate = (base / pure).resolve()
        if not candidate.is_relative_to(base):
            raise _path_refused("batch path leaves the allowed batch root")
        if candidate.is_file():
            return candidate
    raise Problem(422, f"no batch file {relative!r} under the allowed batch roots")


def read_file(path: Path, limits: Limits) -> pl.DataFrame:
    """A CSV or Parquet file under a batch root as a frame (dates parsed in CSVs)."""
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise Problem(413, f"the batch file has {size} bytes; the limit is {limits.max_bytes}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open("rb") as f:
            _check_csv(iter(lambda: f.read(CHUNK), b""), limits, path.name)
    return _read(path, suffix, limits, path.name)


def read_upload(data: bytes, filename: str, limits: Limits) -> pl.DataFrame:
    """An uploaded CSV or Parquet file as a frame; its type comes from its name."""
    suffix = PurePosixPath(filename or "").suffix.lower()
    if suffix not in SUFFIXES:
        raise Problem(
            415, f"unsupported upload type {suffix or '(none)'!r}: upload a .csv or .parquet file"
        )
    if suffix == ".csv":
        _check_csv((data[i : i + CHUNK] for i in range(0, len(data), CHUNK)), limits, "the upload")
    return _read(io.BytesIO(data), suffix, limits, "the upload")


def _check_csv(chunks: Iterable[bytes], limits: Limits, label: str) -> None:
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
                    raise Problem(
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
        raise Problem(413, f"{label} has too many columns; the limit is {limits.max_columns}")


def _long_line(label: str, limits: Limits) -> Problem:
    return Problem(413, f"{label} has a line longer than {limits.max_line_bytes} bytes")


def _parquet_bounds(source: Path | io.BytesIO, limits: Limits, label: str) -> None:
    """Refuse a Parquet file with too many rows, columns or uncompressed bytes, from its
    footer alone (a small file can expand into a huge table)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(source).metadata
    if meta.num_columns > limits.max_columns:
        raise Problem(
            413, f"{label} has {meta.num_columns} columns; the limit is {limits.max_columns}"
        )
    if meta.num_rows > limits.max_rows:
        raise Problem(413, f"{label} has {meta.num_rows} rows; the limit is {limits.max_rows}")
    expanded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if expanded > limits.max_bytes * 8:
        raise Problem(413, f"{label} expands to {expanded} bytes; too large")
    if isinstance(source, io.BytesIO):
        source.seek(0)


def _read(source: Path | io.BytesIO, suffix: str, limits: Limits, label: str) -> pl.DataFrame:
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
    except Problem:
        raise
    except Exception as exc:  # polars, pyarrow and OS errors: the data is unusable
        raise Problem(
            422, f"cannot read {label}: {type(exc).__name__}", slug="invalid-data"
        ) from exc
    if frame.height > limits.max_rows:
        raise Problem(413, f"{label} has more than {limits.max_rows} rows")
    if frame.width > limits.max_columns:
        raise Problem(413, f"{label} has {frame.width} columns; the limit is {limits.max_columns}")
    if frame.height == 0:
        raise Problem(422, f"{label} has no rows", slug="invalid-data")
    return frame


# -- built-in dataset batches -------------------------------------------------------------------

_DATASETS: dict[tuple[str, str], dict[str, pl.DataFrame]] = {}
_DATASETS_LOCK = threading.Lock()


def dataset_batches(name: str, settings: Settings) -> dict[str, pl.DataFrame]:
    """A built-in dataset cut into its natural batches (read once per process).

    Raises:
        Problem: 404 for an unknown dataset.
    """
    from tools.data import split_batches
    from tools.datasets import SPECS, load_dataset

    if name not in SPECS:
        raise Problem(404, f"unknown dataset {name!r}; built-in datasets: {', '.join(SPECS)}")
    key = (name, str(settings.cache_dir))
    with _DATASETS_LOCK:  # one load at a time: a second request waits for the first
        if key not in _DATASETS:
            spec = SPECS[name]
            frame = load_dataset(name, settings)  # type: ignore[arg-type]
            _DATASETS[key] = {
                b.info.batch_id: b.frame
                for b in split_batches(frame, spec.time_col, every=spec.batch_every)
            }
        return _DATASETS[key]


def dataset_batch(
    ref: str, settings: Settings, max_rows: int | None = None, seed: int = 0
) -> tuple[pl.DataFrame, str]:
    """The built-in batch ``NAME:BATCH_ID`` (optionally a seeded sample of ``max_rows`` rows,
    kept in time order) and its batch id.

    Raises:
        Problem: 404 for an unknown dataset or batch.
    """
    from tools.datasets import SPECS

    name, _, batch_id = ref.partition(":")
    batches = dataset_batches(name, settings)
    if batch_id not in batches:
        shown = ", ".join(list(batches)[:24])
        raise Problem(404, f"{name} has no batch {batch_id!r}; batches: {shown}")
    frame = batches[batch_id]
    if max_rows is not None and frame.height > max_rows:
        frame = frame.sample(n=max_rows, seed=seed).sort(SPECS[name].time_col)
    return frame, batch_id


def limits_of(conf: Any) -> Limits:
    """The batch limits of the API's settings."""
    return Limits(
        max_rows=conf.max_batch_rows,
        max_columns=conf.max_upload_columns,
        max_bytes=conf.max_file_bytes,
        max_line_bytes=conf.max_line_bytes,
    )
