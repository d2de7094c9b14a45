"""Small batches complete: a column too sparse to test is skipped with its reason, and a batch
too small for any drift test ends in a clear verdict, through the real control graph on real
flights."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from driftpilot.core.settings import get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Decision, ToolCall
from tests.conftest import TrainedHomes
from tools.datasets import FLIGHTS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def jan(months: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    rows = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=7)
    others = [c for c in FLIGHTS.features if c != "wind_gust"]
    # Calm hours: no gust recorded (the column is null), everything else present.
    calm = rows.tail(6000).filter(pl.col("wind_gust").is_null()).drop_nulls(others)
    return {"calm": calm}


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, trained_homes: TrainedHomes
) -> Iterator[ControlPlane]:
    """One home with a flights champion for the module (a copy of the session's trained home:
    tests/conftest.py), default policy, builtin LLM."""
    with pytest.MonkeyPatch.context() as env:
        home = tmp_path_factory.mktemp("small") / "home"
        env.setenv("DRIFTPILOT_HOME", str(home))
        env.delenv("DRIFTPILOT_POLICY_PATH", raising=False)
        get_settings.cache_clear()
        trained_homes.copy_into("flights", home)
        get_settings.cache_clear()
        cp = ControlPlane(get_settings())
        yield cp
        cp.close()
    get_settings.cache_clear()


def analyst(cp: ControlPlane, run_id: str) -> Decision:
    [decision] = cp.store.list_rows(
        Decision, Decision.run_id == run_id, Decision.agent == "drift_analyst"
    )
    return decision


def test_seven_rows_with_an_all_null_sparse_column_complete(
    plane: ControlPlane, jan: dict[str, pl.DataFrame]
) -> None:
    batch = jan["calm"].head(7)
    view = plane.start_run("flights", batch, "seven-calm")
    assert view.status == "completed", view.summary
    assert view.outcome in ("no_retrain:none", "no_retrain:monitor")
    drift = view.summary["drift"]
    assert drift["skipped_columns"] == {
        "wind_gust": "every value is null in the batch (a drift test needs 5)"
    }
    decision = analyst(plane, view.run_id)
    evidence = json.loads(decision.evidence)
    assert evidence["evidently"]["n_tested"] == len(FLIGHTS.features) - 1
    assert "1 column not tested (too few values)" in decision.rationale


def test_a_batch_too_small_for_any_drift_test_is_watched(
    plane: ControlPlane, jan: dict[str, pl.DataFrame]
) -> None:
    batch = jan["calm"].tail(3)
    view = plane.start_run("flights", batch, "three")
    assert view.status == "completed", view.summary
    assert view.outcome == "no_retrain:monitor"  # never 'none': nothing was measured
    drift = view.summary["drift"]
    assert drift["drift_share"] == 0.0 and set(drift["skipped_columns"]) == set(FLIGHTS.features)
    assert "prediction_drifted" not in drift  # three scores are not tested either
    decision = analyst(plane, view.run_id)
    assert "no drift test possible on 3 rows" in decision.rationale
    assert "Policy: monitor" in decision.rationale


def test_a_batch_without_labels_is_accepted_and_filed_for_them(
    plane: ControlPlane, months: dict[str, pl.DataFrame]
) -> None:
    batch = months["2013-02"].head(2000).drop(FLIGHTS.target)
    view = plane.start_run("flights", batch, "feb-unlabelled")
    assert view.status == "completed", view.summary
    assert view.outcome.startswith("no_retrain:"), view.outcome  # never quarantined for it
    ingestion = view.summary["ingestion"]
    assert any("no 'delayed' labels yet" in w for w in ingestion["warnings"])
    filed = pl.read_parquet(ingestion["path"])
    assert filed[FLIGHTS.target].null_count() == filed.height  # a place for the labels
    # No labels, yet the champion is checked: CBPE from its calibrated probabilities.
    drift = view.summary["drift"]
    realised = plane.ctx.champion("flights")[0]  # type: ignore[index]
    truth = months["2013-02"].head(2000)
    from tools.drift import model_performance

    actual = model_performance(realised, truth, FLIGHTS.target).get("roc_auc")
    assert drift.get("score") is None and drift["estimated_score"] is not None
    assert drift["metric"] == "roc_auc" and drift["estimate_method"] == "cbpe"
    assert drift["estimated_low"] <= drift["estimated_score"] <= drift["estimated_high"]
    assert abs(drift["estimated_score"] - actual) < 0.05, (drift["estimated_score"], actual)
    assert "metric_drop" in drift and "metric_drop_low" in drift


def test_values_far_beyond_the_reference_range_are_checked_not_quarantined(
    plane: ControlPlane, months: dict[str, pl.DataFrame]
) -> None:
    """A range that moved (a recalibrated sensor: +500 hPa, no unit factor, which would be a
    pipeline defect) is a shift: the batch is accepted, the champion's performance on it is
    measured, and the drift analyst sees the shift."""
    moved = months["2013-03"].head(2000).with_columns(pl.col("pressure") + 500)
    view = plane.start_run("flights", moved, "march-rescaled")
    # The rescaled column costs the champion dearly: a retrain, waiting for its approval.
    assert view.status in ("completed", "waiting_approval"), view.summary
    assert view.outcome != "quarantined"
    ingestion, drift = view.summary["ingestion"], view.summary["drift"]
    assert any("outside the reference range" in w for w in ingestion["warnings"]), ingestion
    assert drift["score"] is not None and drift["score_low"] <= drift["score"]
    assert "pressure" in drift["drifted_columns"]


def test_a_holdout_too_small_to_judge_on_trains_nothing_and_rejects_what_is_forced(
    plane: ControlPlane, months: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    """200 labelled July rows: the holdout (their latest 30 %) holds 60, under the 100 a gain
    needs to count (evaluator.min_holdout_rows). The quick retrain is not measured and the
    policy trains nothing; a policy that retrains always gets its challenger rejected with
    the reason."""
    july = months["2013-07"].sample(n=400, seed=3, shuffle=True)
    view = plane.start_run("flights", july.head(200), "july-200")
    assert view.status == "completed", view.summary
    drift = view.summary["drift"]
    assert drift["holdout_too_small"] == "60 labelled holdout rows (needs at least 100)"
    assert drift["skipped"]["quick_retrain"].startswith("no gain on it would count: 60")
    assert "fresh_gain" not in drift and drift["action"] != "retrain"
    policy = tmp_path / "always.yaml"
    policy.write_text("drift:\n  retrain: always\noptimizer:\n  default_trials: 3\n")
    forced = ControlPlane(plane.settings.model_copy(update={"policy_path": policy}))
    try:
        view = forced.start_run("flights", july.tail(200), "july-200-forced")
    finally:
        forced.close()
    assert view.status == "completed" and view.outcome == "challenger_rejected", view.summary
    evaluation = view.summary["evaluation"]
    assert evaluation["holdout_too_small"] == "60 labelled holdout rows (needs at least 100)"


def test_the_champions_predictions_are_measured_without_labels(
    plane: ControlPlane, months: dict[str, pl.DataFrame], jan: dict[str, pl.DataFrame]
) -> None:
    """Label-free: the January champion's predictions on July's evening flights against those
    on its holdout move by more than drift.prediction_threshold, surely; on all of July's
    rows they move significantly but less than the threshold; on January's own rows, not."""
    # July's hours without a pressure reading: with them the batch is quarantined for a
    # burst of nulls (32 % against January's 11 %) before any drift is measured.
    july = months["2013-07"].drop(FLIGHTS.target).drop_nulls("pressure")
    threshold = plane.policy.drift.prediction_threshold
    evening = plane.start_run("flights", july.filter(pl.col("hour") >= 17), "july-evening")
    assert evening.status == "completed", evening.summary
    drift = evening.summary["drift"]
    assert drift["prediction_shift"] >= threshold and drift["prediction_p_value"] < 1e-6
    assert drift["predictions_moved"] is True and drift["action"] == "monitor"
    assert any(s.startswith("the champion's predictions moved: ") for s in drift["signals"])
    [call] = plane.store.list_rows(
        ToolCall, ToolCall.run_id == evening.run_id, ToolCall.tool == "shift.prediction_shift"
    )
    assert call.ok and json.loads(call.args)["holdout_rows"] > 1000
    whole = plane.start_run("flights", july.head(4000), "july-unlabelled").summary["drift"]
    assert whole["prediction_p_value"] < 0.05 and whole["prediction_shift"] < threshold
    assert whole["predictions_moved"] is False
    calm = plane.start_run("flights", jan["calm"].drop(FLIGHTS.target), "january-unlabelled")
    assert calm.summary["drift"]["predictions_moved"] is False
    assert calm.summary["drift"]["prediction_shift"] < whole["prediction_shift"]
