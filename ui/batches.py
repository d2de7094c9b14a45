"""The built-in datasets' batches as the chat names them (``DATASET:BATCH``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import polars as pl

from driftpilot.core.errors import NotFound

if TYPE_CHECKING:
    from driftpilot.runs.plane import ControlPlane


def model_source(cp: ControlPlane, model: str) -> str | None:
    """The built-in dataset a model was made from (its source, or the dataset whose target,
    time column and features it has), if any.

    STOP-GAP: ``ModelView`` has no ``source``; this reads the façade's store (façade need:
    ``ModelView.source``)."""
    from driftpilot.store.models import ManagedModel
    from tools.datasets import SPECS

    row = cp.store.get(ManagedModel, model)
    if row.source in SPECS:
        return str(row.source)
    features = set(json.loads(row.numeric)) | set(json.loads(row.categorical))
    for name, spec in SPECS.items():  # a model added from a frame of a built-in dataset
        same = (spec.target, spec.time_col) == (row.target, row.time_col)
        if same and features == set(spec.numeric) | set(spec.categorical):
            return name
    return None


def batches(cp: ControlPlane, dataset: str) -> dict[str, pl.DataFrame]:
    """A built-in dataset cut into its natural batches (read once per process: the one
    resolver, ``driftpilot.sources.resolver``; an unknown dataset is ``NotFound``)."""
    from driftpilot.sources import resolver

    return resolver.frames(dataset, cp.settings)


def _frame(cp: ControlPlane, ref: str) -> pl.DataFrame:
    dataset, _, batch_id = ref.partition(":")
    found = batches(cp, dataset)
    if batch_id not in found:
        raise NotFound(f"{dataset} has no batch {batch_id!r}; e.g. {', '.join(list(found)[:6])}")
    return found[batch_id]


def batch_size(cp: ControlPlane, ref: str) -> int:
    """The rows of the built-in batch ``DATASET:BATCH``."""
    return _frame(cp, ref).height


def batch_hash(cp: ControlPlane, ref: str) -> str:
    """The content hash of the whole built-in batch (before any sampling): what schedules
    compare to know a batch was seen."""
    from tools.data import content_hash

    return content_hash(_frame(cp, ref))


def dataset_batch(cp: ControlPlane, ref: str, rows: int) -> tuple[pl.DataFrame, str]:
    """The built-in batch ``DATASET:BATCH``, a seeded sample of at most ``rows`` rows."""
    from tools.datasets import SPECS

    dataset, _, batch_id = ref.partition(":")
    frame = _frame(cp, ref)
    if frame.height > rows:
        frame = frame.sample(n=rows, seed=0).sort(SPECS[dataset].time_col)
    return frame, batch_id


def source_of(text: str) -> dict[str, Any]:
    """A schedule's source as the chat writes it: ``gdelt``, ``glob:PATTERN`` or
    ``DATASET[:START]``."""
    if text == "gdelt":
        return {"gdelt": {}}
    if text.startswith("glob:"):
        return {"glob": text[5:]}
    dataset, _, start = text.partition(":")
    return {"dataset": dataset, **({"start": start} if start else {})}
