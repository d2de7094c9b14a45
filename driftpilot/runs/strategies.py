"""The multitask strategy each run was submitted with (``reject`` or ``enqueue``), as the
API shows it on a run. Meant to become ``ControlPlane.run_strategies``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from driftpilot.store.models import StepEffect

if TYPE_CHECKING:
    from driftpilot.runs.plane import ControlPlane

STEP = "multitask_strategy"  # the step-effect row submit_run records: {"multitask_strategy": ...}


def run_strategies(cp: ControlPlane, run_ids: list[str]) -> dict[str, str]:
    """The strategy of each run in ``run_ids`` that recorded one (one query for a page of
    runs); a run submitted before strategies were recorded has none."""
    if not run_ids:
        return {}
    rows = cp.store.list_rows(StepEffect, StepEffect.step == STEP, StepEffect.run_id.in_(run_ids))
    return {r.run_id: json.loads(r.result)["multitask_strategy"] for r in rows}
