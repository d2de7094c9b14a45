"""Turn a run request's batch into a frame: a file under an allowed root, an upload, or a
built-in dataset batch.

The reading and its upload safety live in ``driftpilot.sources.files`` (paths are untrusted:
only relative paths inside an allowed root; size, longest line, columns and rows bounded), the
built-in batches in ``driftpilot.sources.resolver`` (cached per process). This module gives
them the API's errors: each refusal is a ``Problem`` with the status the source names (404
unknown dataset or batch, 413, 415, 422). Nothing is written here; the façade stores the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from api.problems import Problem
from driftpilot.core.errors import NotFound
from driftpilot.sources import files, resolver
from driftpilot.sources.files import CHUNK, SUFFIXES, Limits, limits_of

if TYPE_CHECKING:
    import polars as pl

    from driftpilot.core.settings import Settings

__all__ = [
    "CHUNK",
    "SUFFIXES",
    "Limits",
    "dataset_batch",
    "dataset_batches",
    "limits_of",
    "read_file",
    "read_upload",
    "resolve_under",
]


@contextmanager
def _as_problem() -> Iterator[None]:
    """A source's refusal as the API's Problem (its status, slug and title)."""
    try:
        yield
    except files.BatchRefused as exc:
        raise Problem(exc.status, exc.detail, slug=exc.slug, title=exc.title) from exc
    except NotFound as exc:  # an unknown built-in dataset or batch
        raise Problem(404, str(exc)) from exc


def resolve_under(roots: list[Path], relative: str) -> Path:
    """The file ``relative`` names inside one of ``roots``.

    Raises:
        Problem: 422 for an absolute path, a path leaving the roots (``..``, a symlink out),
            a missing file or an unsupported type.
    """
    with _as_problem():
        return files.resolve_under(roots, relative)


def read_file(path: Path, limits: Limits) -> pl.DataFrame:
    """A CSV or Parquet file under a batch root as a frame (dates parsed in CSVs)."""
    with _as_problem():
        return files.read_file(path, limits)


def read_upload(data: bytes, filename: str, limits: Limits) -> pl.DataFrame:
    """An uploaded CSV or Parquet file as a frame; its type comes from its name."""
    with _as_problem():
        return files.read_upload(data, filename, limits)


def dataset_batches(name: str, settings: Settings) -> dict[str, pl.DataFrame]:
    """A built-in dataset cut into its natural batches (read once per process).

    Raises:
        Problem: 404 for an unknown dataset.
    """
    with _as_problem():
        return resolver.frames(name, settings)


def dataset_batch(
    ref: str, settings: Settings, max_rows: int | None = None, seed: int = 0
) -> tuple[pl.DataFrame, str]:
    """The built-in batch ``NAME:BATCH_ID`` (optionally a seeded sample of ``max_rows`` rows,
    kept in time order) and its batch id.

    Raises:
        Problem: 404 for an unknown dataset or batch.
    """
    with _as_problem():
        return resolver.dataset_batch(ref, settings, max_rows, seed)
