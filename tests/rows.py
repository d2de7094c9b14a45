"""Rows the unit tests file directly through the store's real API."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sqlalchemy import select

from driftpilot.inference.log import horizon, windows_of
from driftpilot.store.audit import now
from driftpilot.store.models import InferenceRow, ManagedModel

if TYPE_CHECKING:
    from driftpilot.store.engine import Database


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


def window_of_rows(db: Database, model: str) -> dict[str, int | None]:
    """{row id: the number of the window holding it (None: open)} of the model's logged rows,
    in arrival order. Fails on a row in no window before the newest window's end: lost, in
    no batch and never open again."""
    with db.reading() as session:
        found = session.execute(
            select(InferenceRow.row_id, InferenceRow.id)
            .where(InferenceRow.model == model)
            .order_by(InferenceRow.id)
        ).all()
        numbers = windows_of(session, model, [int(i) for _, i in found])
        _, last = horizon(session, model)
    lost = [r for (r, i), n in zip(found, numbers, strict=True) if n is None and i <= last]
    assert not lost, f"rows in no window before the newest window's end: {lost[:5]}"
    return {row_id: n for (row_id, _), n in zip(found, numbers, strict=True)}
