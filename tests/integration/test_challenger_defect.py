"""A training defect through the real control graph (real flights, MLflow, Optuna, SQLite;
the builtin backend): the cause of the below-chance challengers of issue 21, reproduced.

A lasting concept change: the current batch's labels follow the inverse of the old relation
(the flights the champion ranks least likely to be delayed are the delayed ones; the share of
delays is unchanged, so it is no label shift). The retrain's window holds an earlier batch of
the old concept and the current batch's first rows of the new one, so the old concept
dominates what it learns, while the holdout is the current batch's latest rows, of the new
concept: the challenger ranks them backwards, below chance. The evaluator flags it
``training_defect`` with the numbers, audits it and rejects it.

Measured: holdout ROC AUC 0.295 (0.256-0.341) against 0.480 in validation (its window's
latest rows, of the new concept: early stopping kept the old one); the champion scores 0.0 on
the inverted rows, so without the check the challenger's gain (+0.29, CI from +0.25) would
have promoted it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml

from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Decision

pytestmark = pytest.mark.integration

FORCE_RETRAIN = {"drift": {"retrain": "always"}, "optimizer": {"default_trials": 3}}


def plane(
    trained_home: Callable[[str], Settings],
    tmp_path: Path,
    policy: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> ControlPlane:
    trained_home("flights")
    path = tmp_path / "policy.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(path))
    get_settings.cache_clear()
    return ControlPlane(get_settings(), None)


def inverted(cp: ControlPlane, rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` with the champion's relation inverted at the same share of delays: the rows it
    scores lowest are the delayed ones."""
    champion = cp.ctx.champion("flights")
    assert champion is not None
    scores = champion[0].predict_scores(rows)
    share = rows["delayed"].cast(pl.Float64).mean()
    assert isinstance(share, float)
    cut = np.quantile(scores, share)
    return rows.with_columns(pl.Series("delayed", (scores <= cut).astype(np.int64)))


def test_a_window_of_the_old_concept_is_a_training_defect(
    trained_home: Any,
    tmp_path: Path,
    months: dict[str, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jan = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=7)
    # Not the champion's rows (tests/conftest.py); as on a stream, the new concept's batch
    # comes after the old one's, so the window's validation split (its latest rows) is new.
    rest = jan.tail(jan.height - 9000).sort("time_hour")
    old, new = rest.head(6000), rest.tail(3000)
    cp = plane(trained_home, tmp_path / "a", {}, monkeypatch)
    kept = cp.start_run("flights", old, "jan-old")
    assert (kept.outcome or "").startswith("no_retrain"), kept.summary["drift"]
    flipped = inverted(cp, new)
    cp.close()

    cp = plane(trained_home, tmp_path / "b", FORCE_RETRAIN, monkeypatch)
    view = cp.start_run("flights", flipped, "jan-new-concept")
    summary = view.summary
    assert summary["drift"]["action"] == "retrain", summary["drift"].get("signals")
    assert summary["retraining"]["window"] == 2  # the old batch and the new one's first rows
    ev = summary["evaluation"]
    defect = ev.get("training_defect")
    assert defect is not None, (ev, summary["retraining"])
    assert defect["metric"] == "roc_auc" and defect["chance"] == 0.5
    assert defect["holdout"] < 0.5 and defect["holdout_high"] < 0.5, defect
    assert "worse than chance" in defect["why"]
    assert ev["action"] == "reject" and view.outcome == "challenger_rejected"
    [decision] = cp.store.list_rows(
        Decision, Decision.run_id == view.run_id, Decision.agent == "evaluator"
    )
    assert decision.action == "reject" and "training defect" in decision.rationale
    assert any(f.startswith("training_defect:") for f in json.loads(decision.flags))
    assert json.loads(decision.evidence)["training_defect"] == defect
    assert cp.model_view("flights").champion == 1
    assert cp.verify().ok
    cp.close()
