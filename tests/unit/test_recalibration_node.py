"""agents.recalibration.node's refusals and its replay, on a stand-in run context (the fit
itself runs on the real stack in tests/integration/test_recalibrate.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
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
    calls: list[str] = []

    def call(run_id: str, agent: str, tool: str, fn: Any, args: Any, summarize: Any) -> Any:
        calls.append(tool)
        return fn()

    spec = SimpleNamespace(task=task, target="y", time_col="t", features=["x"])
    return SimpleNamespace(
        store=store or Store(),
        spec=lambda model: spec,
        champion=lambda model: (champion, 4) if champion is not None else None,
        record=lambda run_id, agent, outcome, action, rationale, evidence: decisions.append(
            (action, rationale)
        ),
        policy=SimpleNamespace(retraining=SimpleNamespace(holdout_fraction=0.3)),
        accepted_batches=lambda model: [],
        call=call,
        decisions=decisions,
        calls=calls,
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


def test_a_batch_with_one_class_ends_as_a_failed_challenger(tmp_path: Path) -> None:
    batch = tmp_path / "batch.parquet"
    pl.DataFrame(
        {"x": [0.1 * i for i in range(300)], "y": [0] * 300, "t": range(300)}
    ).write_parquet(batch)
    champion = SimpleNamespace(
        family="lightgbm", task="binary", classes=[], predict_scores=lambda f: [0.3] * f.height
    )
    ctx = context("binary", champion)
    state = {**STATE, "ingestion": {"path": str(batch)}}
    out = recalibration.node(state, Runtime(context=ctx))["retraining"]
    assert out["failed"] and out["reason"] == "unfit" and "single class" in out["error"]
    assert out["rows"] == 210 and ctx.calls == ["calibrate.calibrate_model"]
    assert ctx.decisions[0][0] == "calibrate_failed"
