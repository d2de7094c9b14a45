"""Built-in dataset batches by name: ``NAME:BATCH`` (``flights:2013-03``), the one resolver
the CLI, the API, the chat and the scheduler share.

A dataset is loaded and cut into its natural batches (``DatasetSpec.batch_every``) once per
process and cache directory; a second caller waiting for the first load waits on one lock
rather than loading again. The batches keep their ``BatchInfo`` (id, rows, time span, content
hash of the whole batch), which schedules compare to know a batch was seen.

Errors are ``NotFound`` with the wording every caller shared: ``UnknownDataset`` ("unknown
dataset 'x'; built-in datasets: flights, creditcard") and ``UnknownBatch`` ("flights has no
batch 'x'; batches: <the first 24>"); each carries what it names, so a caller that words it
otherwise (the CLI lists every batch) can.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from driftpilot.core.errors import NotFound

if TYPE_CHECKING:
    import polars as pl

    from driftpilot.core.settings import Settings
    from tools.data import Batch
    from tools.datasets import DatasetSpec

SHOWN = 24  # batch ids an UnknownBatch message lists

_CACHE: dict[tuple[str, str], dict[str, Batch]] = {}
_LOCK = threading.Lock()


class UnknownDataset(NotFound):
    """No built-in dataset has this name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown dataset {name!r}; built-in datasets: {', '.join(known)}")
        self.name, self.known = name, known


class UnknownBatch(NotFound):
    """The dataset has no batch with this id."""

    def __init__(self, dataset: str, batch_id: str, batch_ids: list[str]) -> None:
        shown = ", ".join(batch_ids[:SHOWN])
        super().__init__(f"{dataset} has no batch {batch_id!r}; batches: {shown}")
        self.dataset, self.batch_id, self.batch_ids = dataset, batch_id, batch_ids


def split_ref(ref: str) -> tuple[str, str]:
    """``NAME:BATCH`` as (dataset name, batch id); no colon: an empty batch id."""
    name, _, batch_id = ref.partition(":")
    return name, batch_id


def spec(name: str) -> DatasetSpec:
    """The built-in dataset's spec.

    Raises:
        UnknownDataset: no such dataset.
    """
    from tools.datasets import BUILTIN_SPECS

    if name not in BUILTIN_SPECS:
        raise UnknownDataset(name, list(BUILTIN_SPECS))
    return BUILTIN_SPECS[name]


def dataset_batches(name: str, settings: Settings) -> dict[str, Batch]:
    """The built-in dataset ``name`` cut into its natural batches, in time order (read once
    per process and ``settings.cache_dir``; a live one, GDELT, at every call).

    Raises:
        UnknownDataset: no such dataset.
    """
    from tools.data import split_batches
    from tools.datasets import LIVE_SPECS, load_dataset

    dataset = spec(name)
    key = (name, str(settings.cache_dir))
    with _LOCK:  # one load at a time: a second caller waits for the first
        # A live dataset (GDELT) grows every 15 minutes: it is fetched again, never cached.
        if key not in _CACHE or name in LIVE_SPECS:
            frame = load_dataset(name, settings)  # type: ignore[arg-type]
            _CACHE[key] = {
                b.info.batch_id: b
                for b in split_batches(frame, dataset.time_col, every=dataset.batch_every)
            }
        return _CACHE[key]


def frames(name: str, settings: Settings) -> dict[str, pl.DataFrame]:
    """``dataset_batches`` as frames by batch id."""
    return {batch_id: b.frame for batch_id, b in dataset_batches(name, settings).items()}


def batch(name: str, batch_id: str, settings: Settings) -> Batch:
    """One batch of a built-in dataset.

    Raises:
        UnknownDataset: no such dataset.
        UnknownBatch: the dataset has no such batch.
    """
    batches = dataset_batches(name, settings)
    if batch_id not in batches:
        raise UnknownBatch(name, batch_id, list(batches))
    return batches[batch_id]


def sample(name: str, frame: pl.DataFrame, max_rows: int | None, seed: int = 0) -> pl.DataFrame:
    """``frame`` of dataset ``name``, or a seeded sample of ``max_rows`` of its rows kept in
    time order when it has more."""
    if max_rows is None or frame.height <= max_rows:
        return frame
    return frame.sample(n=max_rows, seed=seed).sort(spec(name).time_col)


def dataset_batch(
    ref: str, settings: Settings, max_rows: int | None = None, seed: int = 0
) -> tuple[pl.DataFrame, str]:
    """The built-in batch ``NAME:BATCH`` (optionally a seeded sample of ``max_rows`` rows,
    kept in time order) and its batch id.

    Raises:
        UnknownDataset: no such dataset.
        UnknownBatch: the dataset has no such batch.
    """
    name, batch_id = split_ref(ref)
    found = batch(name, batch_id, settings)
    return sample(name, found.frame, max_rows, seed), batch_id
