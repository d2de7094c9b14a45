"""Late labels for a regression and a multiclass model, on real flights: the arrival delay in
minutes (``flights_delay``) and its delay class (``flights_delay_class``). A February batch
comes without its target, is accepted and filed; its labels come later and the champion that
scored it is scored on them in the model's own metric (RMSE, macro one-vs-rest ROC AUC),
checked here against scikit-learn on the champion's own predictions. Before its labels the
batch is estimated in the model's metric (DLE, CBPE) and never retrains. Each test's home is a
copy of the session's trained home of its dataset (the model on 6,000 January flights, default
policy, builtin LLM), built once per pytest run."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import mean_squared_error, roc_auc_score
from typer.testing import CliRunner

from driftpilot.cli import app
from driftpilot.core.errors import DataError
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Decision, ToolCall
from tools import registry
from tools.datasets import FLIGHT_TARGETS, FLIGHTS_DELAY, FLIGHTS_DELAY_CLASS, DatasetSpec

pytestmark = pytest.mark.integration


@pytest.fixture
def plane(
    trained_home: Callable[[str], Settings],
) -> Iterator[Callable[[DatasetSpec], ControlPlane]]:
    """``plane(spec)``: a ControlPlane on a copy of the trained home of ``spec`` (its model
    named ``spec.name``, champion v1)."""
    opened: list[ControlPlane] = []

    def open_home(spec: DatasetSpec) -> ControlPlane:
        opened.append(ControlPlane(trained_home(spec.name)))
        return opened[-1]

    yield open_home
    for cp in opened:
        cp.close()


@pytest.fixture(scope="module")
def february(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """1,000 February flights with a known arrival delay (and so a delay class)."""
    rows = months["2013-02"].filter(pl.col(FLIGHTS_DELAY.target).is_not_null())
    return rows.sample(n=1000, seed=3).sort("time_hour")


def run_unlabelled(plane: ControlPlane, name: str, batch: pl.DataFrame) -> Any:
    """The batch without any target (none of the flights' targets: they are one event)."""
    view = plane.start_run(name, batch.drop(FLIGHT_TARGETS), "feb", requested_by="ann")
    assert view.status == "completed" and view.summary["ingestion"]["action"] == "accept"
    return view


def check_estimated(plane: ControlPlane, run: Any, metric: str, method: str, rows: int) -> None:
    """Before its labels the batch is estimated without them (DLE, CBPE) in the model's metric,
    and the champion is kept: an unlabelled batch never retrains (nothing to judge a
    challenger on)."""
    assert (run.outcome or "").startswith("no_retrain"), run.summary
    [made] = plane.store.list_rows(
        Decision, Decision.run_id == run.run_id, Decision.agent == "drift_analyst"
    )
    perf = json.loads(made.evidence)["performance"]
    assert "score" not in perf and perf["metric"] == metric, perf
    assert perf["estimate_method"] == method
    assert perf["estimated_low"] <= perf["estimated_score"] <= perf["estimated_high"]
    [call] = plane.store.list_rows(
        ToolCall,
        ToolCall.run_id == run.run_id,
        ToolCall.agent == "drift_analyst",
        ToolCall.tool == "estimate.estimate",
    )
    args = json.loads(call.args)
    assert args["metric"] == metric and args["rows"] == rows
    assert plane.model_view(run.model).champion == 1


def labels_file(batch: pl.DataFrame, spec: DatasetSpec, tmp_path: Path) -> Path:
    path = tmp_path / f"{spec.name}-labels.csv"
    batch.select(spec.target).write_csv(path)
    return path


def test_a_regressions_labels_score_its_rmse(
    plane: Callable[[DatasetSpec], ControlPlane], february: pl.DataFrame, tmp_path: Path
) -> None:
    cp = plane(FLIGHTS_DELAY)
    name = FLIGHTS_DELAY.name
    run = run_unlabelled(cp, name, february)
    check_estimated(cp, run, "rmse", "dle", february.height)
    version = run.summary["drift"]["champion_version"]
    with pytest.raises(DataError, match="must hold numbers"):
        bad = tmp_path / "words.csv"
        pl.DataFrame({"arr_delay": ["late"] * february.height}).write_csv(bad)
        cp.attach_labels(name, "feb", bad, "bob")
    view = cp.attach_labels(name, "feb", labels_file(february, FLIGHTS_DELAY, tmp_path), "bob")
    champion = registry.load_version(name, version, cp.settings)
    truth = february[FLIGHTS_DELAY.target].to_numpy()
    rmse = float(np.sqrt(mean_squared_error(truth, champion.predict_scores(february))))
    assert (view.metric, view.higher_is_better) == ("rmse", False)
    assert view.rows_labelled == 1000 and view.realised_score == pytest.approx(rmse, rel=1e-9)
    drift = run.summary["drift"]
    estimated = drift.get("estimated_score")  # DLE's, made without the labels
    assert estimated is not None and drift["estimate_method"] == "dle", drift
    assert view.estimated_score == estimated
    assert view.estimation_error == pytest.approx(estimated - rmse, rel=1e-9)
    [decision] = cp.store.list_rows(
        Decision, Decision.run_id == run.run_id, Decision.agent == "labels"
    )
    assert f"realised RMSE {rmse:.4g} (lower is better)" in decision.rationale
    evidence = json.loads(decision.evidence)
    assert evidence["metric"] == "rmse" and evidence["realised_score"] == view.realised_score


def test_a_multiclass_models_labels_score_its_macro_roc_auc(
    plane: Callable[[DatasetSpec], ControlPlane], february: pl.DataFrame, tmp_path: Path
) -> None:
    cp = plane(FLIGHTS_DELAY_CLASS)
    name = FLIGHTS_DELAY_CLASS.name
    run = run_unlabelled(cp, name, february)
    check_estimated(cp, run, "roc_auc", "cbpe", february.height)
    version = run.summary["drift"]["champion_version"]
    file = labels_file(february, FLIGHTS_DELAY_CLASS, tmp_path)
    args = ["labels", name, "feb", "--file", str(file), "--as", "dora"]
    done = CliRunner().invoke(app, args, terminal_width=200)
    assert done.exit_code == 0, done.output
    champion = registry.load_version(name, version, cp.settings)
    truth = february[FLIGHTS_DELAY_CLASS.target].to_list()
    auc = roc_auc_score(
        truth,
        champion.predict_scores(february),
        multi_class="ovr",
        average="macro",
        labels=list(champion.classes),
    )
    assert "ROC AUC (higher is better)" in done.output and f"{auc:.4f}" in done.output
    again = cp.attach_labels(name, "feb", file, "dora")  # the same labels: one answer
    assert again.metric == "roc_auc" and again.realised_score == pytest.approx(auc, abs=1e-9)
