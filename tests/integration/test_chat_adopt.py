"""Adopting a model from the chat: ``/adopt`` is a proposal that changes nothing until the
signed-in admin presses Confirm; then the owner's model (an sklearn regression registered in
DriftPilot's own MLflow, as a team sharing the server has it) becomes champion v1 with its
baseline, and the audit holds the confirmation. A viewer and an operator are refused, and a
local directory is never loaded from the chat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import polars as pl
import pytest
from mlflow.models import infer_signature

from driftpilot.core.errors import NotFound
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Decision, ManagedModel
from tests.integration.test_adopt import (
    SKLEARN_REQS,
    TRUSTED,
    features,
    owner_log,
    pinned,
    sklearn_pipeline,
)
from tools.datasets import FLIGHT_CATEGORICAL, FLIGHT_NUMERIC, FLIGHTS_CACHE
from ui.chat import Chat, sign_in
from ui.intents import parse
from ui.markup import plain

pytestmark = pytest.mark.integration


def test_adopt_from_the_chat_waits_for_the_admins_confirm(
    settings: Settings, flights_df: pl.DataFrame, months: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    from sklearn.linear_model import Ridge

    assert settings.cache_dir is not None
    flights_df.write_parquet(settings.cache_dir / FLIGHTS_CACHE)  # no CSV parse here
    train = months["2013-01"].sample(n=3000, seed=5)
    pipe = sklearn_pipeline(Ridge(), FLIGHT_NUMERIC, FLIGHT_CATEGORICAL)
    x = features(train, FLIGHT_NUMERIC, FLIGHT_CATEGORICAL)
    pipe.fit(x, train["arr_delay"].to_pandas())

    def log() -> Any:
        return mlflow.sklearn.log_model(
            pipe, name="model", signature=infer_signature(x, pipe.predict(x)),
            registered_model_name="owner-delay", skops_trusted_types=TRUSTED,
            pip_requirements=pinned(*SKLEARN_REQS),  # not inferred in a subprocess (seconds)
        )  # fmt: skip

    uri = settings.mlflow_tracking_uri
    info = owner_log(uri, tmp_path / "owner-artifacts", log)
    mlflow.MlflowClient(uri, uri).set_registered_model_alias(
        "owner-delay", "prod", info.registered_model_version
    )
    cp = ControlPlane(settings)
    try:
        people = (("olga", "admin"), ("otto", "operator"), ("vic", "viewer"))
        keys = {n: cp.create_api_key(n, r)[1] for n, r in people}

        def chat(name: str) -> Chat:
            who = sign_in(cp, name, keys[name])
            assert who is not None
            return Chat(cp, who)

        message = "/adopt delay models:/owner-delay@prod flights_delay:2013-02 arr_delay time_hour"
        for name in ("vic", "otto"):  # adopting runs the model's code in the server: admin only
            refused = chat(name).answer(parse(message), message)
            assert "admin role" in plain(refused.text) and refused.proposal is None
        local = message.replace("models:/owner-delay@prod", "/tmp/m")
        refused = chat("olga").answer(parse(local), local)
        assert "registered models only" in plain(refused.text) and refused.proposal is None

        olga = chat("olga")
        card = olga.answer(parse(message), message)
        assert card.proposal is not None and card.proposal.kind == "adopt"
        assert "champion v1" in plain(card.text) and "arr_delay" in plain(card.text)
        with pytest.raises(NotFound):  # a proposal changes nothing
            cp.model_view("delay")

        done = olga.confirm(card.proposal)
        assert "Task regression" in plain(done.text) and "rmse" in plain(done.text)
        view = cp.model_view("delay")
        assert view.champion == 1 and view.task == "regression" and view.metric == "rmse"
        assert view.baseline_low is not None and view.baseline_high is not None
        assert view.baseline_low <= (view.baseline or 0) <= view.baseline_high
        assert "models:/owner-delay@prod" in (cp.store.get(ManagedModel, "delay").lineage or "")
        confirmed = cp.store.list_rows(Decision, Decision.agent == "chat")
        assert [d.action for d in confirmed] == ["confirm:adopt"]
    finally:
        cp.close()
