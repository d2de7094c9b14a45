"""Rows the unit tests file directly through the store's real API."""

from __future__ import annotations

import json

from driftpilot.store.audit import now
from driftpilot.store.models import ManagedModel


def model_without_champion(name: str = "m") -> ManagedModel:
    """A managed binary model with one numeric input ``x`` and no champion yet: its runs fail
    in ingestion's model lookup, enough to see where they execute and what they record."""
    return ManagedModel(
        name=name,
        source="test",
        target="y",
        time_col="t",
        numeric=json.dumps(["x"]),
        categorical=json.dumps([]),
        family="lightgbm",
        metric="roc_auc",
        created_at=now(),
    )
