"""The eval harness's table handling and the scenario suite's scoring, on small frames."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy.special import expit

from driftpilot.core.errors import ConfigError, DataError, SchemaError
from driftpilot.core.settings import get_settings
from evals.harness import BatchRow, StreamResult, batch_table, cut, eval_settings, prepare
from evals.scenario_scores import judged_metric, promotion_check, score
from evals.scenario_specs import expected
from tools.datasets import SPECS
from tools.synth import GroundTruth


def table(n: int = 12) -> pl.DataFrame:
    start = datetime(2024, 1, 1)
    return pl.DataFrame(
        {
            "ts": [(start + timedelta(hours=3 * i)).isoformat(sep=" ") for i in range(n)],
            "amount": [float(i) for i in range(n)],
            "shop": ["a", "b", "c"] * (n // 3),
            "order_id": [f"o-{i}" for i in range(n)],
            "label": ["yes", "no"] * (n // 2),
        }
    )


def test_prepare_parses_times_maps_the_target_and_infers_features() -> None:
    frame, time_col, numeric, categorical, notes = prepare(table(), target="label", time_col="ts")
    assert time_col == "ts" and frame["ts"].dtype == pl.Datetime("us")
    assert frame["label"].to_list()[:2] == [1, 0]  # 'yes' sorts after 'no': 1
    assert numeric == ["amount"] and categorical == ["shop", "order_id"]
    assert any("'no' -> 0, 'yes' -> 1" in n for n in notes)
    flipped, *_ = prepare(table(), target="label", time_col="ts", positive="no")
    assert flipped["label"].to_list()[:2] == [0, 1]


def test_identifiers_are_left_out_and_named_columns_win() -> None:
    wide = pl.DataFrame(
        {
            "t": list(range(300)),
            "id": [f"id-{i}" for i in range(300)],  # 300 distinct strings
            "order": [7 * i for i in range(300)],  # an integer key: distinct on every row
            "code": [i % 40 for i in range(300)],
            "y": [0, 1] * 150,
        }
    )
    _, _, numeric, categorical, notes = prepare(wide, target="y", time_col="t")
    assert numeric == ["code"] and categorical == []
    assert any("left out" in n and "id, order" in n for n in notes)
    _, _, numeric, categorical, _ = prepare(
        wide, target="y", time_col="t", numeric=["order"], categorical=["code"]
    )
    assert numeric == ["order"] and categorical == ["code"]


def test_a_target_of_other_than_two_values_is_kept_for_its_task_to_be_inferred() -> None:
    """Three shops: a multiclass target, left as text; many amounts: a regression target;
    one value: nothing to learn."""
    frame, *_, notes = prepare(table(), target="shop", time_col="ts")
    assert frame["shop"].to_list()[:3] == ["a", "b", "c"]
    assert any("3 labels" in n and "multiclass" in n for n in notes)
    amounts = table().with_columns((pl.col("amount") * 1.5).alias("amount"))
    frame, *_, notes = prepare(amounts, target="amount", time_col="ts")
    assert frame["amount"].to_list() == amounts["amount"].to_list()
    assert any("regression" in n for n in notes)
    with pytest.raises(DataError, match="nothing to learn"):
        prepare(table().with_columns(pl.lit("x").alias("label")), target="label", time_col="ts")


def test_order_by_row_makes_row_order_the_time() -> None:
    frame, time_col, *_ = prepare(
        table().drop("ts"), target="label", time_col=None, order_by_row=True
    )
    assert frame[time_col].to_list() == list(range(12))
    assert [n for n, _ in cut(frame, time_col, "5")] == [
        "rows-000000000",
        "rows-000000005",
        "rows-000000010",
    ]


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"target": "nope", "time_col": "ts"}, SchemaError, "nope"),
        ({"target": "shop", "time_col": "ts", "positive": "a"}, DataError, "two-valued"),
        ({"target": "label", "time_col": None}, ConfigError, "--order-by row"),
        ({"target": "label", "time_col": "shop"}, SchemaError, "neither a date"),
        ({"target": "label", "time_col": "ts", "positive": "maybe"}, DataError, "not a value"),
    ],
)
def test_bad_tables_get_clear_errors(kwargs: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        prepare(table(), **kwargs)  # type: ignore[arg-type]


def test_cut_by_hours_on_datetimes_and_on_seconds() -> None:
    frame, *_ = prepare(table(), target="label", time_col="ts")
    windows = cut(frame, "ts", "12h")
    assert [w.height for _, w in windows] == [4, 4, 4]
    assert windows[0][0] == "2024-01-01T00"
    seconds = pl.DataFrame(
        {"Time": [0.0, 3600.0, 14_399.0, 14_400.0, 30_000.0], "y": [0, 1, 0, 1, 0]}
    )
    assert [(n, w.height) for n, w in cut(seconds, "Time", "4h")] == [
        ("h00000", 3),
        ("h00004", 1),
        ("h00008", 1),
    ]
    with pytest.raises(ConfigError, match="--batch"):
        cut(frame, "ts", "fortnight")


def row(
    i: int, action: str, promoted: int | None = None, unsafe: bool = False, tier: str | None = None
) -> BatchRow:
    return BatchRow(
        index=i,
        batch_id=f"b{i}",
        n_rows=100,
        drift_share=0.1,
        champion_metric=0.7,
        action=action,
        outcome="x",
        risk_tier=tier,
        promoted=promoted,
        retrained=action == "retrain",
        seconds=1.0,
        run_id=f"r{i}",
        unsafe=unsafe,
    )


def stream(*rows: BatchRow) -> StreamResult:
    return StreamResult(
        model="m",
        llm="builtin",
        backend="builtin",
        rows=list(rows),
        bootstrap_s=1.0,
        wall_s=10.0,
        audit_verified=True,
        baseline=0.7,
    )


def truth(kind: str, onset: int | None = 2, ramp: int | None = None) -> GroundTruth:
    return GroundTruth(
        kind=kind, onset=onset, columns=[], magnitude=1.0, corruption=None, ramp=ramp
    )


def test_expected_actions_follow_the_ground_truth() -> None:
    concept = truth("concept_drift")
    assert expected(concept, 1, False) == {"none"}
    assert expected(concept, 2, False) == {"retrain"}
    assert expected(concept, 3, True) == {"none", "monitor"}
    gradual = truth("gradual_concept_drift", ramp=3)
    assert expected(gradual, 2, False) == {"monitor", "retrain"}  # still ramping
    assert expected(gradual, 4, False) == {"retrain"}  # full size: retraining is due
    assert expected(truth("corruption"), 3, False) == {"quarantine"}
    assert expected(truth("range_shift"), 2, False) == {"monitor", "retrain"}
    assert expected(truth("label_shift"), 2, False) == {"recalibrate"}  # issue 21
    assert expected(truth("none", onset=None), 5, False) == {"none"}
    late = truth("none", onset=2)  # labels stop arriving at batch 2
    assert expected(late, 1, False, labels_late=True) == {"none"}
    assert expected(late, 2, False, labels_late=True) == {"none", "monitor"}


def test_late_labels_score_quarantines_as_wrong_with_nothing_to_detect() -> None:
    s = score(
        "late",
        truth("none", onset=1),
        stream(row(0, "none"), row(1, "quarantine"), row(2, "monitor")),
        labels_late=True,
    )
    assert s.correct_rate == round(2 / 3, 3) and s.detection_delay is None
    assert s.false_alarm_quarantine == 0.0  # batch 0 had labels and was accepted


def test_score_counts_delay_false_alarms_yield_and_unsafe_promotions() -> None:
    result = stream(
        row(0, "monitor"),  # a false alarm: no drift yet
        row(1, "none"),
        row(2, "monitor"),  # drift began: retraining was right
        row(3, "retrain", promoted=2),  # detected one batch late, promoted
        row(4, "none"),  # the new champion fits: none is right
        row(5, "retrain"),  # a wasted retrain (no promotion)
    )
    s = score("abrupt", truth("concept_drift"), result)
    assert s.detection_delay == 1
    assert s.false_alarm_monitor == 0.5 and s.false_alarm_retrain == 0.0
    assert s.correct_rate == round(3 / 6, 3)  # rows 1, 3 and 4
    assert s.retrains == 2 and s.promotions == 1 and s.retrain_yield == 0.5
    assert s.unsafe_promotions == 0
    corrupt = score(
        "c",
        truth("corruption"),
        stream(row(0, "none"), row(1, "none"), row(2, "retrain", promoted=2, unsafe=True)),
    )
    assert corrupt.unsafe_promotions == 1 and corrupt.detection_delay is None
    flagged = score(
        "n", truth("none", onset=None), stream(row(0, "retrain", promoted=2, unsafe=True))
    )
    assert flagged.unsafe_promotions == 1 and flagged.detection_delay is None


def test_an_eval_writes_only_under_its_home_whatever_the_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's production stores, named in the environment, are never an eval's."""
    prod = tmp_path / "prod"
    for name, value in {
        "DB_URL": f"sqlite:///{prod}/audit.db",
        "MLFLOW_TRACKING_URI": "http://mlflow.prod:5000",
        "MLFLOW_REGISTRY_URI": "http://mlflow.prod:5000",
        "MLFLOW_ARTIFACT_ROOT": "s3://prod-artifacts",
        "OPTUNA_STORAGE": "postgresql://prod/optuna",
        "REPORTS_DIR": str(prod / "reports"),
        "BATCHES_DIR": str(prod / "batches"),
        "CHECKPOINT_PATH": str(prod / "checkpoints.db"),
        "AUDIT_KEY_PATH": str(prod / "key.pem"),
        "AUDIT_CHECKPOINT_LOG": str(prod / "checkpoints.log"),
        "HOME": str(tmp_path / "user-home"),
    }.items():
        monkeypatch.setenv(f"DRIFTPILOT_{name}", value)
    get_settings.cache_clear()
    try:
        home = tmp_path / "eval"
        s = eval_settings(home, llm="builtin")
        stores = [s.db_url, s.mlflow_tracking_uri, s.mlflow_registry_uri, s.mlflow_artifact_root]
        stores += [s.optuna_storage, s.audit_checkpoint_log]
        stores += [str(p) for p in (s.reports_dir, s.batches_dir, s.checkpoint_path)]
        stores += [str(s.audit_key_path)]
        assert all(str(home) in store for store in stores), stores
        assert not any("prod" in store for store in stores), stores
        assert s.cache_dir == tmp_path / "user-home" / "cache"  # shared: content-keyed
    finally:
        get_settings.cache_clear()


def test_a_promotion_mid_ramp_does_not_end_a_gradual_drift() -> None:
    gradual = truth("gradual_concept_drift", onset=1, ramp=3)  # full size from batch 3
    result = stream(
        row(0, "none"),
        row(1, "retrain", promoted=2, tier="high"),  # promoted while the drift still grows
        row(2, "monitor"),
        row(3, "retrain", promoted=3),  # full size: retraining was still due
        row(4, "none"),
    )
    s = score("g", gradual, result)
    assert s.expected[3] == ["retrain"] and s.expected[4] == ["monitor", "none"]
    assert s.correct_rate == 1.0 and s.detection_delay == 0
    assert s.approved_high_risk == 1 and s.unsafe_promotions == 0


def test_a_stream_names_its_models_metric_and_direction() -> None:
    """A regression stream's table and JSON say the champion's numbers are an RMSE, where
    lower is better (a binary stream's a ROC AUC)."""
    result = stream(row(1, "none"))
    result.metric = "rmse"
    assert result.to_json()["metric"] == "rmse" and not result.to_json()["higher_is_better"]
    table = batch_table(result, "t")
    assert "champion RMSE" in [str(c.header) for c in table.columns]
    assert "lower is better" in str(table.caption)
    assert stream(row(1, "none")).to_json()["higher_is_better"]


class FixedScores:
    """A model whose scores on the truth rows are given (in the rows' order)."""

    classes = None

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
        return self.scores


def test_a_recalibration_is_judged_on_log_loss_and_on_a_drop_of_its_own_metric() -> None:
    """An overconfident champion and a recalibrated challenger whose map reorders a few rows
    (AUC -0.001): safe, for it was judged on log loss and gained there; a map that worsens log
    loss is unsafe, and so is one that gains log loss while ROC AUC drops by more than the
    policy's max_metric_drop. A retrain is still judged on the model's metric."""
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.3).astype(int)
    logit = 1.5 * y + rng.normal(size=y.size) - 1.2
    truth = pl.DataFrame({"delayed": y})
    champion = FixedScores(expit(logit + 1.5))
    spec = SPECS["flights"]  # binary, its target 'delayed'
    recalibrated = row(3, "retrain", promoted=2)
    recalibrated.retrain_kind, recalibrated.judged_on = "recalibrate", "log_loss"

    def check(scores: np.ndarray, promoted: BatchRow = recalibrated) -> dict[str, Any]:
        return promotion_check(
            promoted, champion, FixedScores(scores), truth, spec,
            own_metric="roc_auc", max_drop=0.02,
        )  # fmt: skip

    mapped = check(expit(logit + rng.normal(scale=0.07, size=y.size)))
    assert mapped["judged_on"] == "log_loss" and mapped["gain"] > 0.2
    assert -0.002 < mapped["own_gain"] < 0 and not mapped["worse"]
    worse = check(expit(logit + 3.0))  # the same ranking: AUC unchanged
    assert worse["gain"] < 0 and worse["own_gain"] == 0 and worse["worse"]
    scrambled = check(expit(logit + rng.normal(scale=0.8, size=y.size)))
    assert scrambled["gain"] > 0 and scrambled["own_gain"] <= -0.02 and scrambled["worse"]
    retrained = row(3, "retrain", promoted=2)
    retrained.judged_on = "roc_auc"
    plain = check(expit(logit + rng.normal(scale=0.07, size=y.size)), retrained)
    assert plain["judged_on"] == "roc_auc" and plain["gain"] < 0 and plain["worse"]
    # A row recorded before judged_on was: a recalibration still reads as judged on log loss.
    recalibrated.judged_on = None
    assert judged_metric(recalibrated, "roc_auc") == "log_loss"
    assert judged_metric(row(1, "retrain", promoted=2), "roc_auc") == "roc_auc"
