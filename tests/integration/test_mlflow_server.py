"""The registry tools and a whole control run against a real ``mlflow server`` over HTTP.

The server (SQLite backend store, artifacts proxied into a folder of its own) is started on a
free loopback port once per session (tests/mlflow_server.py; test_adopt uses it too, under
model names of its own) and stopped at its end. Nothing is faked: the client side only knows
the ``http://`` tracking URI, and a model registered by one DriftPilot home is loaded back by
another, so it can only have come from the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
import yaml

from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Decision
from tests.conftest import add_flights
from tests.mlflow_server import Server
from tools import registry
from tools.datasets import FLIGHTS
from tools.registry import RegisterRequest
from tools.train import TrainedModel, TrainSpec, train_model

pytestmark = pytest.mark.integration

# Retrain on every batch, and let a better challenger through as low risk, so that the run goes
# through every agent and promotes (the policy file steers it, as an operator would).
PROMOTING_POLICY = {
    "drift": {"retrain": "always"},
    "optimizer": {"default_trials": 2},
    "risk": {"min_gain_to_halfwidth": 0.0, "max_divergence": 1.0},
}


@pytest.fixture(scope="module")
def server(mlflow_server: Server) -> Server:
    """The session's ``mlflow server`` (tests/mlflow_server.py), shared with test_adopt:
    started by whichever module asks first, not waited for here (``remote`` waits)."""
    return mlflow_server


@pytest.fixture
def remote(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings of a fresh home whose MLflow is the server (tracking and registry), once the
    server answers."""
    server.wait()
    monkeypatch.setenv("DRIFTPILOT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRIFTPILOT_MLFLOW_TRACKING_URI", server.uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def other_home(server: Server, path: Path) -> Settings:
    """Another machine's view: a different home, the same server."""
    return Settings(home=path, mlflow_tracking_uri=server.uri).ensure_dirs()


@pytest.fixture(scope="module")
def flight_months(server: Server, request: pytest.FixtureRequest) -> dict[str, pl.DataFrame]:
    """The session's flight months, read after the server was started so that the two
    overlap (a session fixture asked for by name is set up then, not before this module's)."""
    months: dict[str, pl.DataFrame] = request.getfixturevalue("months")
    return months


@pytest.fixture(scope="module")
def model(flight_months: dict[str, pl.DataFrame]) -> TrainedModel:
    jan_sample = flight_months["2013-01"].sample(n=6000, seed=1)
    spec = TrainSpec(
        target=FLIGHTS.target,
        numeric=FLIGHTS.numeric,
        categorical=FLIGHTS.categorical,
        time_col=FLIGHTS.time_col,
        max_rounds=40,
    )
    return train_model(jan_sample, spec)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def rest(server: Server, endpoint: str, **params: str) -> dict[str, object]:
    """GET one endpoint of the server's REST API (what any MLflow client reads)."""
    response = httpx.get(f"{server.uri}/api/2.0/mlflow/{endpoint}", params=params, timeout=30)
    response.raise_for_status()
    body: dict[str, object] = response.json()
    return body


def test_registry_tools_over_http(
    server: Server,
    remote: Settings,
    model: TrainedModel,
    tmp_path: Path,
    flight_months: dict[str, pl.DataFrame],
) -> None:
    report = tmp_path / "drift.html"
    report.write_text("<html>drift</html>")
    request = RegisterRequest(
        name="srv-flights",
        key="run-1:retraining",
        metrics={"drift_share": 0.5},
        artifacts=[str(report)],
    )
    v1 = registry.register_model(model, request, remote)
    assert registry.register_model(model, request, remote).version == v1.version == 1
    v2 = registry.register_model(
        model, request.model_copy(update={"key": "run-2:retraining"}), remote
    )
    assert v2.version == 2

    # The artifacts went to the server's folder, through its proxy; none stayed in the home.
    landed = files_under(server.artifacts)
    [html] = [f for f in landed if f.endswith(f"{v1.run_id}/artifacts/reports/drift.html")]
    assert any(f.endswith("/artifacts/MLmodel") and "/models/m-" in f for f in landed), landed
    assert not (remote.home / "mlartifacts").exists()
    # ... and the server serves them back (its artifact proxy, as any client downloads).
    served = httpx.get(f"{server.uri}/api/2.0/mlflow-artifacts/artifacts/{html}", timeout=30)
    assert served.status_code == 200 and served.text == "<html>drift</html>"

    # Aliases and the champion history, as the server's REST API reports them.
    registry.set_alias("srv-flights", registry.CHALLENGER, 2, remote)
    assert registry.promote("srv-flights", 1, remote, expected=None).changed
    moved = registry.promote("srv-flights", 2, remote, expected=1)
    assert (moved.previous, moved.current) == (1, 2)
    champion = rest(server, "registered-models/alias", name="srv-flights", alias="champion")
    assert champion["model_version"]["version"] == "2"  # type: ignore[index]
    version = rest(server, "model-versions/get", name="srv-flights", version="2")
    tags = {t["key"]: t["value"] for t in version["model_version"]["tags"]}  # type: ignore[index]
    assert tags[registry.KEY_TAG] == "run-2:retraining"

    # Another home (another machine) loads the champion: the bytes come over HTTP.
    elsewhere = other_home(server, tmp_path / "elsewhere")
    loaded = registry.load_by_alias("srv-flights", registry.CHAMPION, elsewhere)
    march = flight_months["2013-03"].head(500)
    assert np.array_equal(loaded.predict_scores(march), model.predict_scores(march))
    assert registry.current_champion("srv-flights", elsewhere) == 2

    back = registry.rollback("srv-flights", key="r1", settings=remote)
    assert (back.previous, back.current) == (2, 1)
    assert registry.champion_history("srv-flights", elsewhere) == [1]


def write_policy(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path.write_text(yaml.safe_dump(PROMOTING_POLICY))
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(path))
    get_settings.cache_clear()


def test_control_run_over_http(
    server: Server,
    remote: Settings,
    tmp_path: Path,
    flight_months: dict[str, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_policy(tmp_path / "policy.yaml", monkeypatch)
    cp = ControlPlane(get_settings())
    try:
        assert cp.settings.mlflow_tracking_uri == server.uri
        add_flights(cp, flight_months["2013-01"].sample(n=4000, seed=2).sort(FLIGHTS.time_col))
        view = cp.start_run(
            "flights",
            flight_months["2013-07"].sample(n=6000, seed=3).sort(FLIGHTS.time_col),
            "2013-07",
        )
        assert view.outcome == "promoted", view.summary
        agents = {d.agent for d in cp.store.list_rows(Decision, Decision.run_id == view.run_id)}
        assert {"drift_analyst", "optimizer", "retraining", "evaluator", "cicd"} <= agents
        assert cp.model_view("flights").champion == 2
    finally:
        cp.close()

    # The server holds the promotion and the challenger's run with its training report (the
    # drift report is rendered after the decision, into the home: the audit names it).
    champion = rest(server, "registered-models/alias", name="flights", alias="champion")
    run_id = champion["model_version"]["run_id"]  # type: ignore[index]
    landed = files_under(server.artifacts)
    assert any(f.endswith(f"{run_id}/artifacts/train_report.json") for f in landed), landed
    assert not (remote.home / "mlartifacts").exists()
    elsewhere = other_home(server, tmp_path / "elsewhere")
    assert registry.load_by_alias("flights", registry.CHAMPION, elsewhere).family == "lightgbm"


def test_artifact_location_is_left_to_a_server_unless_set(tmp_path: Path) -> None:
    local = Settings(home=tmp_path)
    assert registry.artifact_location("m", local) == f"{(tmp_path / 'mlartifacts').as_uri()}/m"
    remote = Settings(home=tmp_path, mlflow_tracking_uri="https://mlflow.example:5000")
    assert registry.artifact_location("m", remote) is None  # the home is not the server's
    chosen = Settings(
        home=tmp_path,
        mlflow_tracking_uri="http://mlflow:5000",
        mlflow_artifact_root="s3://bucket/driftpilot/",
    )
    assert registry.artifact_location("m", chosen) == "s3://bucket/driftpilot/m"
