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
    assert out["rows"] == 90 and ctx.calls == ["calibrate.calibrate_model"]
    assert ctx.decisions[0][0] == "calibrate_failed"


def test_the_map_fits_the_earliest_rows_and_the_latest_rest_judge_it(tmp_path: Path) -> None:
    """A map fits a few numbers; its log-loss gain is small per row: 30 % of the batch fits
    it, the latest 70 % hold out (the retrain's split turned round), unlabelled rows left
    out, and at least the 50 rows a map needs when the batch has them."""
    batch = tmp_path / "batch.parquet"
    n = 1000
    pl.DataFrame(
        {
            "x": [float(i) for i in range(n)],
            "y": [None if i % 10 == 0 else i % 2 for i in range(n)],
            "t": list(range(n))[::-1],  # written newest first: the split sorts by time
            "id": range(n),  # a column outside the schema: kept in the holdout only
        }
    ).write_parquet(batch)
    ctx = context("binary")
    whole, fit, holdout = recalibration.calibration_split(ctx, "m", str(batch))
    assert (whole.height, fit.height, holdout.height) == (900, 270, 630)
    assert fit["t"].to_list()[-1] < holdout["t"].to_list()[0]  # the holdout is the latest
    assert fit.columns == ["x", "y", "t"] and "id" in holdout.columns
    small = tmp_path / "small.parquet"
    pl.DataFrame({"x": [0.0] * 80, "y": [0, 1] * 40, "t": range(80)}).write_parquet(small)
    _, fit, holdout = recalibration.calibration_split(ctx, "m", str(small))
    assert (fit.height, holdout.height) == (50, 30)
