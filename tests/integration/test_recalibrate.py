"""A label-shifted batch through the real control graph: real flights, MLflow, SQLite; the
builtin backend. The batch keeps January's flights (each class looks as it did) but half of
them are delayed instead of 23 %: the drift analyst reads a label shift, the champion is
recalibrated (not retrained), judged on log loss, and promoted as a new version of the same
model and family."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from langgraph.runtime import Runtime

from agents import recalibration
from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Decision, ToolCall
from tools import registry
from tools.calibrate import CalibratedModel
from tools.metrics import value

pytestmark = pytest.mark.integration

LOW_RISK = {"risk": {"min_gain_to_halfwidth": 0.0, "max_divergence": 1.0}}


@pytest.fixture(scope="module")
def halves(months: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """January flights the champion did not see (tests/conftest.py: jan_initial holds the
    first 9,000 of this shuffle): every delayed one and as many on time, in two batches of
    the same shares, each in time order."""
    jan = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=7)
    rest = jan.tail(jan.height - 9000)
    delayed = rest.filter(pl.col("delayed") == 1)
    on_time = rest.filter(pl.col("delayed") == 0).head(delayed.height)
    mixed = pl.concat([delayed, on_time]).sample(fraction=1.0, shuffle=True, seed=1)
    half = mixed.height // 2
    return mixed.head(half).sort("time_hour"), mixed.tail(mixed.height - half).sort("time_hour")


def plane(
    trained_home: Callable[[str], Settings],
    tmp_path: Path,
    policy: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> ControlPlane:
    trained_home("flights")
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(path))
    get_settings.cache_clear()
    return ControlPlane(get_settings(), None)


def test_a_label_shift_is_recalibrated_and_promoted(
    settings: Settings,
    trained_home: Any,
    tmp_path: Path,
    halves: tuple[pl.DataFrame, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cp = plane(trained_home, tmp_path, LOW_RISK, monkeypatch)
    shifted, same_shares = halves
    assert shifted["delayed"].mean() == pytest.approx(0.5, abs=0.02)
    view = cp.start_run("flights", shifted, "jan-half-delayed")
    summary = view.summary
    drift, rt, ev = summary["drift"], summary["retraining"], summary["evaluation"]
    assert drift["action"] == "recalibrate", drift.get("signals")
    assert summary.get("optimizer") is None  # no study, no retrain
    assert rt["kind"] == "recalibrate" and rt["family"] == "lightgbm" and rt["base_version"] == 1
    calibration = rt["calibration"]
    assert calibration["log_loss_after"] < calibration["log_loss_before"]
    # fitted on the batch's earliest rows (the latest judge it): their share, near the batch's
    fit_rows = shifted.head(calibration["rows"])
    assert calibration["prevalence"]["1"] == pytest.approx(fit_rows["delayed"].mean(), abs=0.01)
    assert calibration["prevalence"]["1"] > 0.35  # against 0.23 in the champion's January
    # Judged on log loss, which improves on the holdout; the ROC AUC cannot move.
    assert ev["judged_on"] == "log_loss" == ev["metric"] and ev["action"] == "promote"
    assert ev["gain"] > 0 and ev["ci_low"] > 0 and "training_defect" not in ev
    assert ev["primary"]["metric"] == "roc_auc" and ev["primary"]["gain"] == 0
    assert ev["challenger_score"] == pytest.approx(ev["primary"]["challenger"])
    # Promoted like any challenger: low risk here, no family change.
    assert view.outcome == "promoted" and summary["cicd"]["reasons"] == []
    assert summary["promotion"]["version"] == 2 == registry.current_champion("flights", settings)
    champion = registry.load_version("flights", 2, settings)
    assert isinstance(champion, CalibratedModel) and champion.family == "lightgbm"
    holdout = pl.read_parquet(rt["holdout_path"])
    y = holdout["delayed"].to_numpy()
    old = champion.base.predict_scores(holdout)
    new = champion.predict_scores(holdout)
    assert np.mean(new) > np.mean(old) + 0.1  # the probabilities follow the new share
    assert value("log_loss", "binary", y, new) == pytest.approx(ev["challenger"])
    # Audited once: the node's decision, its fit and its logged model.
    made = cp.store.list_rows(Decision, Decision.run_id == view.run_id)
    [decision] = [d for d in made if d.agent == "recalibrate"]
    assert decision.action == "calibrate:platt"
    assert json.loads(decision.evidence)["calibration"]["rows"] == rt["rows"]
    calls = cp.store.list_rows(ToolCall, ToolCall.run_id == view.run_id)
    assert [c.tool for c in calls if c.agent == "recalibrate"] == [
        "calibrate.calibrate_model",
        "registry.log_model",
    ]
    # A node run again (a replay after a crash) returns the recorded slice: no second fit.
    state = {"run_id": view.run_id, "model": "flights", "drift": drift}
    assert recalibration.node(state, Runtime(context=cp.ctx)) == {"retraining": rt}
    assert len(cp.store.list_rows(ToolCall, ToolCall.run_id == view.run_id)) == len(calls)
    # The calibration rows are the new reference: the next batch at the same shares is no
    # label shift any more (recalibrating every batch forever would be).
    after = cp.start_run("flights", same_shares, "jan-half-delayed-b")
    assert after.summary["drift"]["action"] in ("none", "monitor"), after.summary["drift"]
    assert cp.verify().ok
