"""Late labels for a regression and a multiclass model, on real flights: the arrival delay in
minutes (``flights_delay``) and its delay class (``flights_delay_class``). A February batch
comes without its target, is accepted and filed; its labels come later and the champion that
scored it is scored on them in the model's own metric (RMSE, macro one-vs-rest ROC AUC),
checked here against scikit-learn on the champion's own predictions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import mean_squared_error, roc_auc_score
from typer.testing import CliRunner

from driftpilot.cli import app
from driftpilot.core.errors import DataError
from driftpilot.core.settings import get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Decision
from tools import registry
from tools.datasets import FLIGHTS_DELAY, FLIGHTS_DELAY_CLASS, DatasetSpec

pytestmark = pytest.mark.integration

SPECS = {"delays": FLIGHTS_DELAY, "classes": FLIGHTS_DELAY_CLASS}


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, months: dict[str, pl.DataFrame]
) -> Iterator[ControlPlane]:
    """A regression and a multiclass champion on 4,000 January flights each (default policy,
    builtin LLM)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DRIFTPILOT_HOME", str(tmp_path_factory.mktemp("labels-tasks") / "home"))
        env.delenv("DRIFTPILOT_POLICY_PATH", raising=False)
        get_settings.cache_clear()
        cp = ControlPlane(get_settings())
        january = months["2013-01"].sample(n=4000, seed=1).sort("time_hour")
        for name, spec in SPECS.items():
            cp.add_model(
                name,
                january.filter(pl.col(spec.target).is_not_null()),
                target=spec.target,
                time_col=spec.time_col,
                numeric=spec.numeric,
                categorical=spec.categorical,
                task=spec.task,
                principal="alice",
            )
        yield cp
        cp.close()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def february(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """1,000 February flights with a known arrival delay (and so a delay class)."""
    rows = months["2013-02"].filter(pl.col(FLIGHTS_DELAY.target).is_not_null())
    return rows.sample(n=1000, seed=3).sort("time_hour")


def run_unlabelled(plane: ControlPlane, name: str, batch: pl.DataFrame) -> Any:
    """The batch without any target (none of the flights' targets: they are one event)."""
    targets = [s.target for s in SPECS.values()] + ["late"]
    view = plane.start_run(name, batch.drop(targets, strict=False), "feb", requested_by="ann")
    assert view.status == "completed" and view.summary["ingestion"]["action"] == "accept"
    return view


def labels_file(batch: pl.DataFrame, spec: DatasetSpec, tmp_path: Path) -> Path:
    path = tmp_path / f"{spec.name}-labels.csv"
    batch.select(spec.target).write_csv(path)
    return path


def test_a_regressions_labels_score_its_rmse(
    plane: ControlPlane, february: pl.DataFrame, tmp_path: Path
) -> None:
    run = run_unlabelled(plane, "delays", february)
    version = run.summary["drift"]["champion_version"]
    with pytest.raises(DataError, match="must hold numbers"):
        bad = tmp_path / "words.csv"
        pl.DataFrame({"arr_delay": ["late"] * february.height}).write_csv(bad)
        plane.attach_labels("delays", "feb", bad, "bob")
    view = plane.attach_labels(
        "delays", "feb", labels_file(february, FLIGHTS_DELAY, tmp_path), "bob"
    )
    champion = registry.load_version("delays", version, plane.settings)
    truth = february[FLIGHTS_DELAY.target].to_numpy()
    rmse = float(np.sqrt(mean_squared_error(truth, champion.predict_scores(february))))
    assert (view.metric, view.higher_is_better) == ("rmse", False)
    assert view.rows_labelled == 1000 and view.realised_score == pytest.approx(rmse, rel=1e-9)
    drift = run.summary["drift"]
    estimated = drift.get("estimated_score")  # DLE's, made without the labels
    assert estimated is not None and drift["estimate_method"] == "dle", drift
    assert view.estimated_score == estimated
    assert view.estimation_error == pytest.approx(estimated - rmse, rel=1e-9)
    [decision] = plane.store.list_rows(
        Decision, Decision.run_id == run.run_id, Decision.agent == "labels"
    )
    assert f"realised RMSE {rmse:.4g} (lower is better)" in decision.rationale
    evidence = json.loads(decision.evidence)
    assert evidence["metric"] == "rmse" and evidence["realised_score"] == view.realised_score


def test_a_multiclass_models_labels_score_its_macro_roc_auc(
    plane: ControlPlane, february: pl.DataFrame, tmp_path: Path
) -> None:
    run = run_unlabelled(plane, "classes", february)
    version = run.summary["drift"]["champion_version"]
    file = labels_file(february, FLIGHTS_DELAY_CLASS, tmp_path)
    args = ["labels", "classes", "feb", "--file", str(file), "--as", "dora"]
    done = CliRunner().invoke(app, args, terminal_width=200)
    assert done.exit_code == 0, done.output
    champion = registry.load_version("classes", version, plane.settings)
    truth = february[FLIGHTS_DELAY_CLASS.target].to_list()
    auc = roc_auc_score(
        truth,
        champion.predict_scores(february),
        multi_class="ovr",
        average="macro",
        labels=list(champion.classes),
    )
    assert "ROC AUC (higher is better)" in done.output and f"{auc:.4f}" in done.output
    again = plane.attach_labels("classes", "feb", file, "dora")  # the same labels: one answer
    assert again.metric == "roc_auc" and again.realised_score == pytest.approx(auc, abs=1e-9)
