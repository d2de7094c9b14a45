"""A model retrained with its owner's code (``--trainer package.module:fit``), through the whole
control graph on real flights, real MLflow and real SQLite: a trainer that raises ends the run
as challenger_failed with the reason in the audit and the champion untouched; a good one gives
a challenger that is logged with the trainer's output, evaluated, and promoted or rejected
under the policy."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from driftpilot.cli import app
from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import ChampionChange, Decision, ManagedModel, ToolCall
from tests.conftest import jan_initial
from tools import registry
from tools.datasets import FLIGHTS, FLIGHTS_DELAY

pytestmark = pytest.mark.integration

RAISES = "tests.fixtures.trainers.raises:fit"
SKLEARN = "tests.fixtures.trainers.sklearn_fit:fit"
PYFUNC = "tests.fixtures.trainers.pyfunc_fit:fit"
FORCE_RETRAIN = {"drift": {"retrain": "always"}, "optimizer": {"default_trials": 2}}


def use_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: dict[str, Any]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(path))
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def july(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """4,000 July flights: the batch every run retrains on (a few thousand rows keep the
    owner's fit and the evaluator's holdout quick)."""
    return months["2013-07"].sample(n=4000, seed=3).sort("time_hour")


def retraining_decision(cp: ControlPlane, run_id: str) -> Decision:
    [made] = cp.store.list_rows(Decision, Decision.run_id == run_id, Decision.agent == "retraining")
    return made


def test_a_trainer_that_raises_ends_the_run_as_challenger_failed(
    settings: Settings,
    trained_home: Callable[[str], Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    months: dict[str, pl.DataFrame],
    july: pl.DataFrame,
) -> None:
    """``model add --trainer`` (the CLI), in a copy of the module's trained home (its MLflow
    store is made already): the model's first champion on 3,000 January flights."""
    trained_home("flights")
    use_policy(tmp_path, monkeypatch, FORCE_RETRAIN)
    initial = tmp_path / "january.parquet"
    jan_initial(months).head(3000).write_parquet(initial)
    add = [
        "model", "add", "fl", "--data", str(initial), "--target", FLIGHTS.target,
        "--time-col", FLIGHTS.time_col, "--numeric", ",".join(FLIGHTS.numeric),
        "--categorical", ",".join(FLIGHTS.categorical), "--by", "ann",
    ]  # fmt: skip
    added = CliRunner().invoke(app, [*add, "--trainer", RAISES], terminal_width=200)
    assert added.exit_code == 0, added.output
    assert "champion v1" in added.output
    cp = ControlPlane(get_settings())
    try:
        assert cp.store.get(ManagedModel, "fl").trainer == RAISES
        view = cp.start_run("fl", july, "2013-07")
        assert (view.status, view.outcome) == ("completed", "challenger_failed"), view.summary
        failed = view.summary["retraining"]
        assert failed["failed"] and failed["reason"] == "raised" and failed["trainer"] == RAISES
        assert "route_congestion" in failed["error"]
        assert "loading the feature store" in failed["log_tail"]
        # The audit says why: the decision, and the trainer's tool call that failed.
        made = retraining_decision(cp, view.run_id)
        assert made.action == "train_failed:raised"
        assert "route_congestion" in made.rationale
        assert json.loads(made.evidence)["reason"] == "raised"
        [call] = cp.store.list_rows(
            ToolCall, ToolCall.run_id == view.run_id, ToolCall.tool == "trainer.run_trainer"
        )
        assert not call.ok and "TrainerFailed" in call.result
        assert Path(failed["trainer_log"]).is_file()
        # Nothing after the retraining ran; the champion is untouched.
        agents = {d.agent for d in cp.store.list_rows(Decision, Decision.run_id == view.run_id)}
        assert agents == {"ingestion", "drift_analyst", "optimizer", "retraining"}
        assert registry.current_champion("fl", settings) == 1
        assert [v.version for v in registry.list_versions("fl", settings)] == [1]
        changes = cp.store.list_rows(ChampionChange, ChampionChange.model == "fl")
        assert [c.action for c in changes] == ["bootstrap"]
        assert cp.model_view("fl").champion == 1
        assert cp.verify().ok
    finally:
        cp.close()


def test_a_good_trainer_gives_a_challenger_evaluated_under_the_policy(
    settings: Settings,
    trained_home: Callable[[str], Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    july: pl.DataFrame,
) -> None:
    """On the session's trained flights home (LightGBM champion v1), the owner's sklearn
    trainer fits the challenger. Low risk, family change allowed: the evaluator's verdict
    alone decides, so promote means promoted and reject means challenger_rejected."""
    trained_home("flights")
    low_risk = {"min_gain_to_halfwidth": 0.0, "max_divergence": 1.0, "family_change_is_high": False}
    use_policy(tmp_path, monkeypatch, {**FORCE_RETRAIN, "risk": low_risk})
    cp = ControlPlane(get_settings())
    try:
        cp.store.update_model("flights", trainer=SKLEARN)
        view = cp.start_run("flights", july, "2013-07")
        assert view.status == "completed", view.summary
        retrained, evaluation = view.summary["retraining"], view.summary["evaluation"]
        assert not retrained.get("failed") and retrained["trainer"] == SKLEARN
        assert retrained["family"] == "trainer"
        assert "owner's sklearn trainer" in Path(retrained["trainer_log"]).read_text()
        # Logged like any challenger, with the trainer's output on its MLflow run.
        client = registry.mlflow_client(settings)
        logged = [a.path for a in client.list_artifacts(retrained["mlflow_run_id"], "reports")]
        assert "reports/trainer.log" in logged
        # Evaluated on the holdout against the champion, like any challenger.
        assert evaluation["metric"] == "roc_auc" and evaluation["champion_version"] == 1
        assert 0.5 < evaluation["challenger"] <= 1.0
        expected = {"promote": "promoted", "reject": "challenger_rejected"}[evaluation["action"]]
        assert view.outcome == expected, evaluation
        champion = registry.current_champion("flights", settings)
        if view.outcome == "promoted":
            assert champion == 2 and cp.store.get(ManagedModel, "flights").family == "trainer"
            scores = registry.load_version("flights", 2, settings).predict_scores(july.head(50))
            assert scores.shape == (50,)
        else:
            assert champion == 1
        assert cp.verify().ok
    finally:
        cp.close()


def test_a_regression_retrained_by_an_owners_pyfunc(
    settings: Settings,
    trained_home: Callable[[str], Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    months: dict[str, pl.DataFrame],
    july: pl.DataFrame,
) -> None:
    """A regression (flights' arrival delay in minutes, RMSE; added on 3,000 January flights
    to a copy of the module's trained home) whose owner's trainer returns an MLflow
    PythonModel: the pyfunc travels inside the challenger's MLflow run, the evaluator loads it
    back and compares RMSE (lower is better) with the champion's."""
    trained_home("flights")
    low_risk = {"min_gain_to_halfwidth": 0.0, "max_divergence": 1.0, "family_change_is_high": False}
    use_policy(tmp_path, monkeypatch, {**FORCE_RETRAIN, "risk": low_risk})
    cp = ControlPlane(get_settings())
    try:
        cp.add_model(
            "delay",
            jan_initial(months).head(3000),
            target=FLIGHTS_DELAY.target,
            time_col=FLIGHTS_DELAY.time_col,
            numeric=FLIGHTS_DELAY.numeric,
            categorical=FLIGHTS_DELAY.categorical,
            task="regression",
            trainer=PYFUNC,
            principal="ann",
        )
        view = cp.start_run("delay", july, "2013-07")
        assert view.status == "completed", view.summary
        retrained, evaluation = view.summary["retraining"], view.summary["evaluation"]
        assert retrained["trainer"] == PYFUNC and not retrained.get("failed")
        assert (evaluation["metric"], evaluation["higher_is_better"]) == ("rmse", False)
        assert evaluation["challenger"] > 0 and evaluation["champion"] > 0
        expected = {"promote": "promoted", "reject": "challenger_rejected"}[evaluation["action"]]
        assert view.outcome == expected, evaluation
        if view.outcome == "promoted":
            model = registry.load_version("delay", 2, settings)
            assert model.predict_scores(july.head(50)).shape == (50,)
        assert cp.verify().ok
    finally:
        cp.close()
