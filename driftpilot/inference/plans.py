"""What an inference window is, without I/O: a model's window setting (``WindowSetting``),
the views the API and the CLI show (``WindowView``, ``WindowsView``), the id of the run a
window becomes (``window_run_id``) and the pure plan of the next window at a moment
(``plan``: rows, minutes, whichever comes first, or a flush). ``driftpilot.inference.windows``
closes and drives windows with them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from driftpilot.store.engine import stamp
from driftpilot.store.models import InferenceWindow, ManagedModel

MIN_ROWS = 10  # fewer rows than this say nothing about drift
MAX_MINUTES = 7 * 24 * 60
_NAMESPACE = uuid.UUID("6f1c1c4e-4b7a-4d55-9f55-2d1f0b1e7a22")
Reason = Literal["rows", "minutes", "flush"]


class WindowSetting(BaseModel):
    """How a model's inference log closes windows: after ``rows`` rows, after ``minutes``
    minutes from a window's first row, or whichever comes first. Both null: no windows."""

    rows: int | None = Field(None, ge=MIN_ROWS, description="Close after this many rows.")
    minutes: float | None = Field(
        None, gt=0, le=MAX_MINUTES, description="Close this long after a window's first row."
    )

    @model_validator(mode="after")
    def _one_at_least(self) -> WindowSetting:
        if self.rows is None and self.minutes is None:
            raise ValueError("a window needs rows, minutes or both (to stop windows: --off)")
        return self


class WindowView(BaseModel):
    """One closed window: its rows (by arrival id), why and when it closed, its run."""

    model: str
    number: int
    n_rows: int
    first_id: int
    last_id: int
    reason: str
    opened_at: str
    closed_at: str
    batch_id: str
    run_id: str | None = Field(description="Null until its run is made (then never again).")


class WindowsView(BaseModel):
    """A model's window setting, its closed windows (newest first) and its open rows."""

    model: str
    setting: WindowSetting | None
    open_rows: int = Field(description="Rows logged and not in a window yet.")
    windows: list[WindowView]


@dataclass(frozen=True)
class Plan:
    """What one closing takes: the open rows' ids (arrival order), why, when the first of
    them came, and the number of the window it was planned after (0: the first)."""

    ids: list[int]
    reason: Reason
    opened_at: str
    after: int = 0


def window_run_id(model: str, number: int, closed_at: str) -> str:
    """The id of the run a window becomes: the same for every attempt to make it."""
    return uuid.uuid5(_NAMESPACE, f"{model}/{number}/{closed_at}").hex


def setting_of(row: ManagedModel) -> WindowSetting | None:
    """The model's window setting (None: it has none)."""
    if not row.windowing:
        return None
    raw = json.loads(row.windowing)
    if raw.get("rows") is None and raw.get("minutes") is None:
        return None
    return WindowSetting.model_validate(raw)


def view_of(row: InferenceWindow) -> WindowView:
    return WindowView(
        model=row.model,
        number=row.number,
        n_rows=row.n_rows,
        first_id=row.first_id,
        last_id=row.last_id,
        reason=row.reason,
        opened_at=row.opened_at,
        closed_at=row.closed_at,
        batch_id=row.batch_id,
        run_id=row.run_id,
    )


def _deadline(first_at: str, minutes: float) -> str:
    return stamp(datetime.fromisoformat(first_at) + timedelta(minutes=minutes))


def minutes_due(first_at: str, setting: WindowSetting, moment: datetime) -> bool:
    """Whether a window whose first row was received at ``first_at`` is due by its minutes."""
    return setting.minutes is not None and stamp(moment) >= _deadline(first_at, setting.minutes)


def plan(
    open_rows: list[tuple[int, str]],
    setting: WindowSetting,
    moment: datetime,
    cap: int,
    *,
    flush: bool = False,
) -> Plan | None:
    """The next window at ``moment``, from the first open rows ((id, received_at) in id order,
    at least ``min(rows, cap)`` of them when there are as many); None when none is due."""
    if not open_rows:
        return None
    limit = min(setting.rows or cap, cap)
    first_at = open_rows[0][1]
    if flush:
        return Plan([i for i, _ in open_rows[:limit]], "flush", first_at)
    if setting.minutes is not None and minutes_due(first_at, setting, moment):
        deadline = _deadline(first_at, setting.minutes)
        taken: list[int] = []  # the first row is always in: it came before its deadline
        for row_id, received in open_rows:
            if received >= deadline or len(taken) == limit:
                break
            taken.append(row_id)
        full = setting.rows is not None and len(taken) == limit
        return Plan(taken, "rows" if full else "minutes", first_at)
    if setting.rows is not None and len(open_rows) >= limit:
        return Plan([i for i, _ in open_rows[:limit]], "rows", first_at)
    return None
