"""Adding a model of each task through the ControlPlane, the CLI and the API, on real data:
regression on flights' arrival delay in minutes, multiclass on its delay class, regression on
gapminder's life expectancy. Each first champion is trained, registered in a real MLflow
registry and promoted; its baseline is the task's metric with a bootstrap interval on the
out-of-time holdout. A wrong metric for the task is refused before anything is registered.
All the models share the module's home (one MLflow registry and audit store made, not
three)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from driftpilot.cli import app
from driftpilot.core.errors import ConfigError, NotFound, SchemaError
from driftpilot.core.settings import ApiSettings, get_settings
from driftpilot.runs.models import bootstrap_id, choose_task
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Decision, ManagedModel, ToolCall
from tools import metrics, registry
from tools.datasets import DELAY_CLASSES, FLIGHTS, FLIGHTS_DELAY, FLIGHTS_DELAY_CLASS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def initial(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """3,000 flights of January to March, time-ordered: the holdout is the latest 30 %."""
    parts = [months[m].sample(n=1000, seed=3) for m in ("2013-01", "2013-02", "2013-03")]
    return pl.concat(parts).sort(FLIGHTS.time_col)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DRIFTPILOT_HOME", str(tmp_path_factory.mktemp("tasks") / "home"))
        env.delenv("DRIFTPILOT_POLICY_PATH", raising=False)  # the shipped policy
        get_settings.cache_clear()
        cp = ControlPlane(get_settings())
        yield cp
        cp.close()
    get_settings.cache_clear()


def add(cp: ControlPlane, name: str, frame: pl.DataFrame, target: str, **kw: Any) -> Any:
    return cp.add_model(
        name,
        frame,
        target=target,
        time_col=FLIGHTS.time_col,
        numeric=FLIGHTS.numeric,
        categorical=FLIGHTS.categorical,
        principal="alice",
        **kw,
    )


def holdout_and_champion(cp: ControlPlane, name: str) -> tuple[pl.DataFrame, Any, int]:
    row = cp.store.get(ManagedModel, name)
    assert row.holdout_path is not None
    found = cp.ctx.champion(name)  # loaded back from the MLflow registry
    assert found is not None
    return pl.read_parquet(row.holdout_path), found[0], found[1]


def rationale(cp: ControlPlane, name: str) -> str:
    [decision] = cp.store.list_rows(Decision, Decision.run_id == bootstrap_id(name))
    return decision.rationale


def test_a_regression_model_on_the_delay_in_minutes(
    plane: ControlPlane, initial: pl.DataFrame
) -> None:
    view = add(plane, "delay-minutes", initial, FLIGHTS_DELAY.target, task="regression")
    assert (view.task, view.metric, view.higher_is_better) == ("regression", "rmse", False)
    assert view.champion == 1 and view.baseline is not None
    assert view.baseline_low is not None and view.baseline_high is not None
    assert view.baseline_low <= view.baseline <= view.baseline_high
    assert "task regression as given" in view.note and "lower is better" in view.note
    holdout, champion, version = holdout_and_champion(plane, "delay-minutes")
    assert version == 1 and champion.task == "regression"
    scores = champion.predict_scores(holdout)
    assert scores.shape == (holdout.height,)
    y = holdout["arr_delay"].to_numpy()
    # The baseline is the registered champion's RMSE on the holdout, in minutes ...
    assert view.baseline == pytest.approx(metrics.value("rmse", "regression", y, scores))
    # ... and it learned something: below the RMSE of always predicting the training mean.
    fit_mean = initial.head(initial.height - holdout.height)["arr_delay"].mean()
    assert view.baseline < float(np.sqrt(np.mean((y - fit_mean) ** 2)))
    text = rationale(plane, "delay-minutes")
    assert "rmse=" in text and "roc_auc" not in text and "a regression lightgbm" in text
    [call] = plane.store.list_rows(
        ToolCall,
        ToolCall.run_id == bootstrap_id("delay-minutes"),
        ToolCall.tool == "metrics.interval",
    )
    assert json.loads(call.args)["metric"] == "rmse"


def test_a_multiclass_model_on_the_delay_class_is_inferred(
    plane: ControlPlane, initial: pl.DataFrame
) -> None:
    view = add(plane, "delay-class", initial, FLIGHTS_DELAY_CLASS.target)
    assert (view.task, view.metric, view.higher_is_better) == ("multiclass", "roc_auc", True)
    assert "task multiclass inferred" in view.note and "4 labels" in view.note
    assert view.baseline_low <= view.baseline <= view.baseline_high
    assert 0.55 < view.baseline < 1  # better than chance (0.5)
    holdout, champion, _ = holdout_and_champion(plane, "delay-class")
    assert champion.classes == sorted(DELAY_CLASSES)
    scores = champion.predict_scores(holdout)
    assert scores.shape == (holdout.height, 4)
    assert np.allclose(scores.sum(axis=1), 1)
    y = champion.encode(holdout["delay_class"])
    assert view.baseline == pytest.approx(metrics.value("roc_auc", "multiclass", y, scores))
    assert "inferred" in rationale(plane, "delay-class")
    listed = {m.name: m for m in plane.list_models()}
    assert listed["delay-class"].task == "multiclass"
    assert plane.store.get(ManagedModel, "delay-class").task == "multiclass"


def test_a_metric_of_another_task_is_refused_with_nothing_registered(
    plane: ControlPlane, initial: pl.DataFrame
) -> None:
    with pytest.raises(ConfigError, match=r"\['rmse', 'mae', 'r2'\]"):
        add(plane, "wrong", initial, "arr_delay", task="regression", metric="roc_auc")
    with pytest.raises(ConfigError, match="rmse"):  # inferred regression, binary metric
        add(plane, "wrong", initial, "arr_delay", metric="pr_auc")
    with pytest.raises(ConfigError, match="unknown task"):
        add(plane, "wrong", initial, "arr_delay", task="ordinal")
    with pytest.raises(NotFound):
        plane.store.get(ManagedModel, "wrong")
    assert not plane.store.list_rows(ToolCall, ToolCall.run_id == bootstrap_id("wrong"))
    assert registry.list_versions("wrong", plane.settings) == []


def test_the_task_is_inferred_with_its_reason(initial: pl.DataFrame) -> None:
    binary = choose_task(initial, "delayed")
    assert (binary.task, binary.metric) == ("binary", "roc_auc")
    assert "two values, 0 and 1" in binary.note
    minutes = choose_task(initial, "arr_delay", metric="mae")
    assert (minutes.task, minutes.metric) == ("regression", "mae")
    assert "distinct numeric values" in minutes.note and "mae (as given" in minutes.note
    assert choose_task(initial, "delay_class", "multiclass", "macro_f1").metric == "macro_f1"
    with pytest.raises(SchemaError, match="no target column"):
        choose_task(initial, "no_such_column")


def test_cli_adds_a_regression_on_gapminder_and_lists_its_task(plane: ControlPlane) -> None:
    # The module's home (its env is the CLI's): the CLI opens a plane of its own on it.
    cli = CliRunner()

    def invoke(*args: str) -> Any:
        return cli.invoke(app, list(args), terminal_width=200)

    refused = invoke("model", "add", "life", "--dataset", "gapminder", "--initial", "1952-01",
                     "--task", "binary")  # fmt: skip
    assert refused.exit_code != 0 and "regression dataset" in refused.output
    added = invoke("model", "add", "life", "--dataset", "gapminder", "--initial", "1952-01",
                   "--metric", "mae", "--by", "ann")  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "(regression, lightgbm)" in added.output and "baseline mae" in added.output
    assert "lower is better" in added.output
    listed = invoke("model", "list")
    assert listed.exit_code == 0, listed.output
    [line] = [line for line in listed.output.splitlines() if "life" in line]
    assert "regression" in line and "mae" in line, listed.output
    rows = json.loads(invoke("model", "list", "--json").output)
    [row] = [r for r in rows if r["name"] == "life"]
    assert (row["task"], row["metric"], row["higher_is_better"]) == ("regression", "mae", False)


def test_api_adds_a_model_with_a_task_and_refuses_a_wrong_metric(plane: ControlPlane) -> None:
    # The module's plane: the app does not own it (the runtime leaves it open).
    key = plane.create_api_key("olga", "operator")[1]
    with TestClient(create_app(plane, ApiSettings(workers=1))) as client:
        client.app.state.executor.wait_started(30)  # type: ignore[attr-defined]

        def post(**body: Any) -> Any:
            batch = {"dataset": "gapminder:1952-01"}
            return client.post(
                "/models",
                json={"name": "life-r2", "input": {"batch": batch}, **body},
                headers={"X-Api-Key": key},
            )

        wrong = post(metric="log_loss")
        assert wrong.status_code == 422 and "rmse" in wrong.json()["detail"]
        assert post(task="multiclass").status_code == 422
        assert client.get("/jobs", headers={"X-Api-Key": key}).json() == []
        job = post(task="regression", metric="r2")
        assert job.status_code == 202, job.text
        done = wait_job(client, job.json()["job_id"], key)
        assert done["status"] == "success", done
        result = done["result"]
        assert (result["task"], result["metric"], result["higher_is_better"]) == (
            "regression",
            "r2",
            True,
        )
        assert result["baseline_low"] <= result["baseline"] <= result["baseline_high"]


def wait_job(client: TestClient, job_id: str, key: str, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}", headers={"X-Api-Key": key}).json()
        if job["status"] not in ("pending", "running"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s:.0f} s")
