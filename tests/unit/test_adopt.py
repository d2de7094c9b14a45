"""tools.adopt's pure parts on real flights rows: the input check (every mismatch named in
one error), a classifier read through its flavour, URIs and credentials. How a foreign
model's output is read is tests/unit/test_foreign.py's; MLflow itself is exercised in
tests/integration/test_adopt.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from driftpilot.core.errors import ConfigError, SchemaError
from tools import adopt


@pytest.fixture(scope="module")
def rows(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return months["2013-02"].head(400)


def test_check_inputs_names_every_mismatch_at_once(rows: pl.DataFrame) -> None:
    signature = {"distance": "double", "hour": "long", "carrier": "double", "gone": "string"}
    with pytest.raises(SchemaError) as caught:
        adopt.check_inputs(rows, "arr_delay", signature, ["distance", "temp"], ["carrier"])
    message = str(caught.value)
    assert "missing columns ['gone']" in message
    assert "extra columns ['temp']" in message
    assert "columns ['hour'] are inputs of the model but named in neither list" in message
    assert "retyped columns ['carrier (model: double, reference: String)']" in message


def test_check_inputs_from_a_signature_and_from_names(rows: pl.DataFrame) -> None:
    signature = {"distance": "double", "hour": "long", "carrier": "string"}
    inputs, num, cat = adopt.check_inputs(rows, "delayed", signature, [], [])
    assert (inputs, num, cat) == (signature, ["distance", "hour"], ["carrier"])
    # The owner's names say which inputs are categorical (an integer code, here).
    _, num, cat = adopt.check_inputs(rows, "delayed", signature, ["distance"], ["hour", "carrier"])
    assert (num, cat) == (["distance"], ["hour", "carrier"])
    inputs, _, _ = adopt.check_inputs(rows, "delayed", None, ["distance"], ["origin"])
    assert inputs == {"distance": "double", "origin": "string"}
    with pytest.raises(SchemaError, match="the target 'delayed' is one of the model's inputs"):
        adopt.check_inputs(rows, "delayed", {"delayed": "long"}, [], [])
    with pytest.raises(SchemaError, match="no input signature"):
        adopt.check_inputs(rows, "delayed", None, [], [])


def test_uris(tmp_path: Path) -> None:
    assert (
        adopt.redact("https://ann:secret@mlflow.example:5000/x") == "https://mlflow.example:5000/x"
    )
    assert adopt.redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    with pytest.raises(ConfigError, match="not an MLflow model directory"):
        adopt.fetch(str(tmp_path), "sqlite:///unused.db", tmp_path / "dst")
    with pytest.raises(ConfigError, match="give models:/NAME@ALIAS"):
        adopt.fetch("models:/a/b/c", f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "dst")


def test_a_classifier_with_predict_proba_is_read_through_its_flavour(rows: pl.DataFrame) -> None:
    """LightGBM's and CatBoost's sklearn classifiers: their predict_proba, in classes_ order."""
    from catboost import CatBoostClassifier
    from lightgbm import LGBMClassifier

    inputs = {c: "double" for c in ("distance", "hour", "dewp", "visib")}
    x = adopt.model_input(rows, inputs)
    labels = rows["delay_class"]
    for clf in (
        LGBMClassifier(n_estimators=20, verbose=-1),
        CatBoostClassifier(iterations=20, verbose=False, allow_writing_files=False),
    ):
        clf.fit(x, labels.to_numpy())
        read = adopt.choose_scoring(None, clf, x, "multiclass", labels, "lightgbm")
        assert (read.output, read.classes) == ("native_proba", sorted(labels.unique().to_list()))
        spec = adopt.AdoptedSpec(
            task="multiclass",
            target="delay_class",
            numeric=list(inputs),
            categorical=[],
            inputs=inputs,
            flavour="lightgbm",
            output=read.output,
            classes=read.classes,
            columns=read.columns,
        )
        model = adopt.AdoptedModel(spec, pyfunc=None, native=clf)
        assert np.allclose(model.predict_scores(rows), clf.predict_proba(x))
        assert model.encode(labels).min() >= 0


def test_metrics_of_a_label_only_model() -> None:
    assert adopt.metrics_of("multiclass", True) == (["macro_f1"], ["roc_auc", "log_loss"])
    assert adopt.primary_metric("multiclass", ["macro_f1"]) == "macro_f1"
    assert adopt.primary_metric("regression", adopt.metrics_of("regression", False)[0]) == "rmse"


@pytest.mark.parametrize(
    ("uri", "said"),
    [
        ("runs:/" + "a" * 32 + "/model/../../mlruns", "climb out of its run"),
        ("runs:/not-a-run-id/model", "give models:/NAME@ALIAS"),
        ("runs:/" + "a" * 32 + "/m' OR name != 'x", "give models:/NAME@ALIAS"),
    ],
)
def test_a_runs_uri_is_a_run_id_and_a_plain_artifact_path(
    tmp_path: Path, uri: str, said: str
) -> None:
    with pytest.raises(ConfigError, match=said):  # refused before any store is touched
        adopt.fetch(uri, f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "dst")
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "dst").exists()


def test_the_api_takes_a_tracking_server_over_http_only() -> None:
    from pydantic import ValidationError

    from api.routes.adopt import ModelAdopt

    body = {
        "name": "m",
        "model_uri": "models:/m@prod",
        "input": {"batch": {"dataset": "flights:2013-01"}},
    }
    ModelAdopt.model_validate({**body, "target": "y", "tracking_uri": "https://mlflow:5000"})
    for local in ("file:///srv/mlruns", "sqlite:////srv/mlflow.db", "/srv/mlruns"):
        with pytest.raises(ValidationError, match="tracking_uri"):
            ModelAdopt.model_validate({**body, "target": "y", "tracking_uri": local})
