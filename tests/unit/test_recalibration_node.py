"""agents.recalibration.node's refusals and its replay, on a stand-in run context (the fit
itself runs on the real stack in tests/integration/test_recalibrate.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from langgraph.runtime import Runtime

from agents import recalibration
from driftpilot.core.errors import PolicyViolation


class Store:
    """Effects by (run, step), and the decisions and effects recorded."""

    def __init__(self, effects: dict[tuple[str, str], Any] | None = None) -> None:
        self.effects = dict(effects or {})

    def effect(self, run_id: str, step: str) -> Any:
        return self.effects.get((run_id, step))

    def record_effect(self, run_id: str, step: str, result: Any) -> None:
        self.effects[(run_id, step)] = result


def context(task: str, champion: Any = None, store: Store | None = None) -> Any:
    decisions: list[tuple[str, str]] = []
    return SimpleNamespace(
        store=store or Store(),
        spec=lambda model: SimpleNamespace(task=task),
        champion=lambda model: (champion, 4) if champion is not None else None,
        record=lambda run_id, agent, outcome, action, rationale, evidence: decisions.append(
            (action, rationale)
        ),
        decisions=decisions,
    )


STATE = {"run_id": "r1", "model": "m", "drift": {"action": "recalibrate"}}


def test_regression_is_refused_with_a_clear_error() -> None:
    with pytest.raises(PolicyViolation, match="classifiers only"):
        recalibration.node(STATE, Runtime(context=context("regression")))


def test_no_champion_is_refused() -> None:
    with pytest.raises(PolicyViolation, match="no champion"):
        recalibration.node(STATE, Runtime(context=context("binary")))


def test_an_adopted_champion_ends_as_a_failed_challenger() -> None:
    adopted = SimpleNamespace(family="adopted:sklearn", label_only=False)
    ctx = context("binary", adopted)
    out = recalibration.node(STATE, Runtime(context=ctx))["retraining"]
    assert out["failed"] and out["reason"] == "unsupported" and out["kind"] == "recalibrate"
    assert ctx.decisions[0][0] == "calibrate_failed" and "v4" in ctx.decisions[0][1]
    assert ctx.store.effect("r1", "recalibrate") == out  # recorded: a replay returns it


def test_a_recorded_effect_is_returned_untouched() -> None:
    done = {"kind": "recalibrate", "model_uri": "models:/m-1"}
    ctx = context("regression", store=Store({("r1", "recalibrate"): done}))
    assert recalibration.node(STATE, Runtime(context=ctx)) == {"retraining": done}
