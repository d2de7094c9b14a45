"""Real MLflow: SQLite tracking + registry, file artifacts, under a temporary home."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from driftpilot.core.errors import AliasNotFound, RegistryError
from driftpilot.core.settings import Settings
from tools import registry
from tools.datasets import FLIGHTS
from tools.registry import RegisterRequest
from tools.train import TrainedModel, TrainSpec, train_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(jan_sample: pl.DataFrame) -> TrainedModel:
    spec = TrainSpec(
        target=FLIGHTS.target,
        numeric=FLIGHTS.numeric,
        categorical=FLIGHTS.categorical,
        time_col=FLIGHTS.time_col,
        max_rounds=60,
    )
    return train_model(jan_sample, spec)


def test_register_is_idempotent_per_key(
    model: TrainedModel, settings: Settings, tmp_path: Path
) -> None:
    report = tmp_path / "drift.html"
    report.write_text("<html>drift</html>")
    req = RegisterRequest(
        name="flights-delay",
        key="run-1:retraining",
        metrics={"drift_share": 0.6},
        artifacts=[str(report)],
    )
    first = registry.register_model(model, req, settings)
    again = registry.register_model(model, req, settings)
    assert first.version == again.version == 1
    assert len(registry.list_versions("flights-delay", settings)) == 1
    other = registry.register_model(
        model, req.model_copy(update={"key": "run-2:retraining"}), settings
    )
    assert other.version == 2
    import mlflow

    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(first.run_id)
    assert run.data.metrics["drift_share"] == 0.6 and "valid_roc_auc" in run.data.metrics
    assert run.data.params["family"] == "lightgbm"
    assert [a.path for a in client.list_artifacts(first.run_id, "reports")] == [
        "reports/drift.html"
    ]
    assert str(settings.home) in run.info.artifact_uri  # artifacts live under the home


def test_alias_round_trip_loads_the_same_model(
    model: TrainedModel, settings: Settings, months: dict[str, pl.DataFrame]
) -> None:
    version = registry.register_model(model, RegisterRequest(name="m", key="k"), settings)
    registry.set_alias("m", registry.CHALLENGER, version.version, settings)
    assert registry.get_alias("m", registry.CHALLENGER, settings).version == version.version
    loaded = registry.load_by_alias("m", registry.CHALLENGER, settings)
    march = months["2013-03"].head(500)
    assert np.array_equal(loaded.predict_scores(march), model.predict_scores(march))
    assert registry.load_version("m", version.version, settings).family == "lightgbm"


def test_promote_and_rollback_keep_champion_history(
    model: TrainedModel, settings: Settings
) -> None:
    v1, v2 = (
        registry.register_model(model, RegisterRequest(name="p", key=k), settings)
        for k in ("a", "b")
    )
    with pytest.raises(AliasNotFound):
        registry.get_alias("p", registry.CHAMPION, settings)
    assert registry.promote("p", v1.version, settings).previous is None
    assert not registry.promote("p", v1.version, settings).changed  # idempotent
    moved = registry.promote("p", v2.version, settings)
    assert (moved.previous, moved.current, moved.changed) == (1, 2, True)
    assert registry.champion_history("p", settings) == [1, 2]
    back = registry.rollback("p", key="r1", settings=settings)
    assert (back.previous, back.current) == (2, 1)
    assert registry.get_alias("p", registry.CHAMPION, settings).version == 1
    replay = registry.rollback("p", key="r1", settings=settings)
    assert replay.current == 1 and not replay.changed
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback("p", key="r2", settings=settings)


def test_unknown_alias_and_missing_artifact(model: TrainedModel, settings: Settings) -> None:
    with pytest.raises(AliasNotFound, match="no version with alias"):
        registry.load_by_alias("never-registered", "champion", settings)
    with pytest.raises(RegistryError, match="does not exist"):
        registry.register_model(
            model, RegisterRequest(name="x", key="k", artifacts=["/no/such.html"]), settings
        )


def test_half_applied_promote_and_rollback_are_finished_by_their_replay(
    model: TrainedModel, settings: Settings
) -> None:
    v1, v2, v3 = (
        registry.register_model(model, RegisterRequest(name="h", key=k), settings)
        for k in ("a", "b", "c")
    )
    registry.promote("h", v1.version, settings)
    registry.promote("h", v2.version, settings)
    # Crash after the alias move, before the history tag: the replay finishes the history.
    registry.set_alias("h", registry.CHAMPION, v3.version, settings)
    replay = registry.promote("h", v3.version, settings, expected=2)
    assert replay.current == 3 and not replay.changed
    assert registry.champion_history("h", settings) == [1, 2, 3]
    # A rollback that died after shortening the history, before its key was written, is
    # finished by its replay with the plan from its intent: it does not roll back twice.
    registry.set_alias("h", registry.CHAMPION, v2.version, settings)
    client = registry.mlflow_client(settings)
    client.set_registered_model_tag("h", registry.HISTORY_TAG, "[1, 2]")
    done = registry.rollback("h", "op-1", settings, plan=(3, 2))
    assert (done.previous, done.current) == (3, 2)
    assert registry.current_champion("h", settings) == 2
    assert registry.champion_history("h", settings) == [1, 2]


def test_a_logged_model_is_a_run_not_a_version_until_registered(
    model: TrainedModel, settings: Settings, months: dict[str, pl.DataFrame]
) -> None:
    req = RegisterRequest(name="c", key="run-9:retraining", metrics={"drift_share": 0.4})
    logged = registry.log_model(model, req, settings)
    assert registry.log_model(model, req, settings) == logged  # idempotent per key
    assert registry.list_versions("c", settings) == []  # nothing in the registry
    import mlflow

    client = mlflow.MlflowClient(settings.mlflow_tracking_uri)
    run = client.get_run(logged.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["drift_share"] == 0.4
    experiment = client.get_experiment_by_name("driftpilot/c")
    assert len(client.search_runs([experiment.experiment_id])) == 1  # logged once
    march = months["2013-03"].head(500)
    loaded = registry.load_logged(logged.model_uri, settings)
    assert np.array_equal(loaded.predict_scores(march), model.predict_scores(march))

    # Registered later (promotion, approval request): one version, of that very run.
    key = RegisterRequest(name="c", key="run-9:cicd", tags={"driftpilot.run_id": "run-9"})
    version = registry.register_model(logged, key, settings)
    assert registry.register_model(logged, key, settings) == version  # a replay: the same
    assert [v.version for v in registry.list_versions("c", settings)] == [1]
    assert (version.run_id, version.tags["driftpilot.run_id"]) == (logged.run_id, "run-9")
    assert len(client.search_runs([experiment.experiment_id])) == 1  # no second run logged
    again = registry.load_version("c", version.version, settings)
    assert np.array_equal(again.predict_scores(march), model.predict_scores(march))


def test_a_run_whose_logging_died_is_not_found_and_is_logged_again(
    model: TrainedModel, settings: Settings
) -> None:
    import mlflow

    req = RegisterRequest(name="d", key="run-3:retraining")
    experiment = registry.experiment_id(registry.mlflow_client(settings), "d", settings)
    with mlflow.start_run(experiment_id=experiment, tags={registry.KEY_TAG: req.key}):
        pass  # a process killed before the model was logged leaves such a run
    assert registry.find_logged("d", req.key, settings) is None
    logged = registry.log_model(model, req, settings)
    assert registry.find_logged("d", req.key, settings) == logged
