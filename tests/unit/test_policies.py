"""The policy comparison's bookkeeping on tiny synthetic streams (no real data; real MLflow
under the test's home for the champions the eval scores with)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from driftpilot.core.settings import Settings
from evals.baselines import (
    PolicyRow,
    PolicyRun,
    Stream,
    prequential_score,
    run_baseline,
    schedules,
    training_window,
)
from evals.harness import BatchRow, StreamResult
from evals.policies import equal_batches, fill_unscored
from evals.policy_report import (
    LOOP,
    MIN_YIELD,
    framing_check,
    framing_line,
    plot_policies,
    target_check,
    target_line,
)
from tools.train import TrainSpec

ROWS = 600
FLIP_AT = 3  # batches 0-2: label = x > 0; batches 3-5: label = x < 0


def _batch(index: int, *, flipped: bool, rng: np.random.Generator) -> pl.DataFrame:
    x = rng.uniform(-1, 1, ROWS)
    noise = rng.random(ROWS) < 0.05
    label = ((x < 0) if flipped else (x > 0)) ^ noise
    return pl.DataFrame(
        {
            "t": np.arange(index * ROWS, (index + 1) * ROWS),
            "x": x,
            "z": rng.normal(size=ROWS),
            "y": label.astype(np.int8),
        }
    )


def _stream(frames: list[pl.DataFrame]) -> Stream:
    return Stream(
        dataset="synthetic",
        batching=f"{ROWS}",
        target="y",
        time_col="t",
        numeric=["x", "z"],
        categorical=[],
        batches=[(f"b{i}", frame) for i, frame in enumerate(frames)],
    )


@pytest.fixture(scope="module")
def flip() -> Stream:
    rng = np.random.default_rng(7)
    return _stream([_batch(i, flipped=i >= FLIP_AT, rng=rng) for i in range(6)])


@pytest.fixture(scope="module")
def spec() -> TrainSpec:
    return TrainSpec(target="y", numeric=["x", "z"], time_col="t", max_rounds=60, seed=42)


def _aucs(run: PolicyRun) -> dict[int, float]:
    """The scored batches' ROC AUC by index (a single-class batch, unscored, is absent)."""
    return {row.index: row.score for row in run.rows if row.score is not None}


def test_every_batch_recovers_after_the_flip_and_never_does_not(
    flip: Stream, spec: TrainSpec
) -> None:
    never = run_baseline("never", flip, schedules(3)["never"], spec, window=1, holdout_fraction=0.3)
    every = run_baseline(
        "every batch", flip, schedules(3)["every batch"], spec, window=1, holdout_fraction=0.3
    )
    assert [r.index for r in never.rows] == [1, 2, 3, 4, 5]  # batch 0 trains, is not scored
    n, e = _aucs(never), _aucs(every)
    assert all(n[i] > 0.85 for i in (1, 2)) and all(n[i] < 0.15 for i in (3, 4, 5))
    # Prequential: batch 3 is scored by the model trained *before* it (the old relation); a
    # policy that trained on batch 3 first would score it high here.
    assert e[3] < 0.15
    assert e[4] > 0.85 and e[5] > 0.85
    assert never.totals()["retrains"] == 0 and every.totals()["retrains"] == 5
    assert every.totals()["promotions"] == 5
    assert every.totals()["mean_score"] > never.totals()["mean_score"]


def test_default_window_recovers_once_it_holds_only_new_batches(
    flip: Stream, spec: TrainSpec
) -> None:
    every = run_baseline(
        "every batch", flip, schedules(3)["every batch"], spec, window=2, holdout_fraction=0.3
    )
    aucs = _aucs(every)
    assert aucs[3] < 0.15  # still the old relation
    assert aucs[5] > 0.85  # trained on batches 3 and 4 (minus 4's holdout)


def test_every_k_retrains_after_every_kth_batch(flip: Stream, spec: TrainSpec) -> None:
    run = run_baseline(
        "every 2", flip, schedules(2)["every 2"], spec, window=1, holdout_fraction=0.3
    )
    assert [r.index for r in run.rows if r.retrained] == [2, 4]
    assert run.compute_s >= sum(r.train_s + r.score_s for r in run.rows)
    assert run.totals()["training_s"] > 0


def test_initial_batches_train_the_first_model_and_stay_out_of_windows(
    flip: Stream, spec: TrainSpec
) -> None:
    """``driftpilot eval --initial 2``: batches 0 and 1 train the first model of every policy,
    are never scored, and no retrain window reaches back into them (as in the loop)."""
    two = Stream(**{**flip.__dict__, "initial": 2})
    run = run_baseline("every batch", two, schedules(3)["every batch"], spec, window=3,
                       holdout_fraction=0.3)  # fmt: skip
    assert [r.index for r in run.rows] == [2, 3, 4, 5] and run.totals()["yield"] == 1.0
    frames = [frame for _, frame in flip.batches]
    window = training_window(frames, 3, 3, 0.3, "t", initial=2)
    assert window["t"].min() == frames[2]["t"].min()  # batch 1 is the bootstrap's
    assert training_window(frames, 3, 3, 0.3, "t")["t"].min() == frames[1]["t"].min()


def test_training_window_mirrors_the_loop(flip: Stream) -> None:
    frames = [frame for _, frame in flip.batches]
    hold = int(ROWS * 0.3)
    first = training_window(frames, 1, 2, 0.3, "t")  # batch 0 trained the first champion only
    assert first.height == ROWS - hold
    assert first["t"].max() < frames[1]["t"].sort()[ROWS - hold]
    later = training_window(frames, 3, 2, 0.3, "t")
    assert later.height == 2 * ROWS - hold
    assert later["t"].min() == frames[2]["t"].min()
    assert later["t"].max() == frames[3]["t"].sort()[ROWS - hold - 1]  # latest 30 % held out


def test_a_single_class_batch_has_no_auc_and_is_left_out_of_means(spec: TrainSpec) -> None:
    rng = np.random.default_rng(3)
    frames = [_batch(i, flipped=False, rng=rng) for i in range(4)]
    frames[2] = frames[2].with_columns(pl.lit(0, dtype=pl.Int8).alias("y"))
    stream = _stream(frames)
    run = run_baseline(
        "every batch", stream, schedules(3)["every batch"], spec, window=1, holdout_fraction=0.3
    )
    rows = {row.index: row for row in run.rows}
    assert rows[2].score is None and rows[2].note.startswith("single class")
    # Training on the one-class batch fails: the deployed model stays, and the row says so.
    assert not rows[2].retrained and "retrain failed" in rows[2].note
    totals = run.totals()
    assert totals["scored"] == 2 and totals["batches"] == 3
    assert totals["mean_score"] == pytest.approx(np.mean([rows[1].score, rows[3].score]), abs=1e-4)
    assert prequential_score(_Constant(), frames[2], "y") is None


class _Constant:
    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
        return np.full(frame.height, 0.5)


def test_the_plot_is_written_as_png(tmp_path: Path) -> None:
    def run(policy: str, aucs: list[float | None], retrain: set[int]) -> PolicyRun:
        rows = [
            PolicyRow(
                index=i + 1,
                batch_id=f"2013-{i + 2:02d}",
                n_rows=10,
                positives=3,
                score=auc,
                retrained=i + 1 in retrain,
                promoted=i + 1 in retrain,
                note="" if auc is not None else "single class: no ROC AUC",
            )
            for i, auc in enumerate(aucs)
        ]
        return PolicyRun(policy, rows, 1.0, {"training_s": 0.5})

    runs = [
        run("never", [0.7, None, 0.6], set()),
        run("every batch", [0.7, None, 0.72], {1, 2, 3}),
        run(LOOP, [0.7, None, 0.71], {2}),
    ]
    path = plot_policies(runs, tmp_path / "sub" / "policies_x.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _regression_batch(index: int, *, flipped: bool, rng: np.random.Generator) -> pl.DataFrame:
    x = rng.uniform(-1, 1, ROWS)
    y = (-10.0 if flipped else 10.0) * x + rng.normal(0, 1, ROWS)
    return pl.DataFrame(
        {
            "t": np.arange(index * ROWS, (index + 1) * ROWS),
            "x": x,
            "z": rng.normal(size=ROWS),
            "y": y,
        }
    )


def test_a_regression_stream_is_scored_in_rmse_lower_is_better() -> None:
    rng = np.random.default_rng(11)
    frames = [_regression_batch(i, flipped=i >= FLIP_AT, rng=rng) for i in range(5)]
    stream = _stream(frames)
    stream.task = "regression"
    spec = TrainSpec(
        target="y", numeric=["x", "z"], time_col="t", task="regression", max_rounds=60, seed=42
    )
    schedule = schedules(3)
    never = run_baseline("never", stream, schedule["never"], spec, window=1, holdout_fraction=0.3)
    every = run_baseline(
        "every batch", stream, schedule["every batch"], spec, window=1, holdout_fraction=0.3
    )
    n, e = _aucs(never), _aucs(every)
    # RMSE: the old relation's model is about 2 x 10 x |x| off after the flip, the retrained one
    # about the noise (1) again from batch 4.
    assert n[1] is not None and n[1] < 2.5 and n[4] is not None and n[4] > 8
    assert e[4] is not None and e[4] < 2.5
    totals = every.totals()
    assert totals["metric"] == "rmse" and totals["higher_is_better"] is False
    assert totals["worst_score"] == pytest.approx(max(every.scores()), abs=1e-4)  # worst = highest
    assert totals["mean_score"] < never.totals()["mean_score"]


def _run(policy: str, scores: list[float | None], retrain: set[int], metric: str) -> PolicyRun:
    rows = [
        PolicyRow(i + 1, f"b{i + 1}", 10, 0, score, i + 1 in retrain, i + 1 in retrain)
        for i, score in enumerate(scores)
    ]
    return PolicyRun(policy, rows, 1.0, metric=metric)


def test_the_target_honours_the_metric_direction_and_the_retrain_share() -> None:
    every = _run("every batch", [40.0, 42.0, 38.0, 41.0, 39.0, 40.0], set(range(1, 7)), "rmse")
    # A lower RMSE is better: 39.5 beats 40.0, with 2 retrains of 6 allowed.
    loop = _run(LOOP, [40.0, 41.0, 38.0, 40.0, 39.0, 39.0], {2, 5}, "rmse")
    check = target_check([every, loop])
    assert check["driftpilot_mean"] == pytest.approx(39.5) and check["baseline_mean"] == 40.0
    assert check["gain"] == pytest.approx(0.5 / 40.0, abs=1e-4)  # a share of every batch's RMSE
    assert check["score_met"] and check["retrains_met"] and check["met"]
    assert "RMSE" in target_line(check) and "Target MET" in target_line(check)
    # The same numbers read as ROC AUC: the loop's lower mean is worse.
    auc = target_check(
        [
            _run("every batch", [0.7, 0.72], {1, 2}, "roc_auc"),
            _run(LOOP, [0.7, 0.71], set(), "roc_auc"),
        ]
    )
    assert not auc["score_met"] and auc["retrains_met"] and not auc["met"]
    # Three retrains of six is more than a third.
    busy = target_check([every, _run(LOOP, [39.0] * 6, {1, 3, 5}, "rmse")])
    assert busy["score_met"] and not busy["retrains_met"] and "Target NOT MET" in target_line(busy)


def test_the_target_compares_only_batches_both_policies_scored() -> None:
    every = _run("every batch", [0.9, 0.5, 0.8], {1, 2, 3}, "roc_auc")
    loop = _run(LOOP, [0.9, None, 0.8], set(), "roc_auc")  # batch 2 unscored by the loop
    check = target_check([every, loop])
    assert check["batches_compared"] == 2 and check["gain"] == 0.0 and check["met"]


@pytest.mark.integration  # real MLflow under the test's home
def test_batches_without_a_loop_metric_are_scored_with_the_champion_then_deployed(
    settings: Settings, flip: Stream, spec: TrainSpec
) -> None:
    from driftpilot.runs.plane import ControlPlane
    from tools import registry
    from tools.train import train_model

    # The registry's champion history: v1 learnt the old relation, v2 the flipped one.
    frames = [frame for _, frame in flip.batches]
    for version, window in ((1, frames[0]), (2, frames[FLIP_AT])):
        model = train_model(window, spec)
        request = registry.RegisterRequest(name=flip.dataset, key=f"v{version}")
        assert registry.register_model(model, request, settings).version == version
        registry.promote(flip.dataset, version, settings)
    assert registry.champion_history(flip.dataset, settings) == [1, 2]

    def batch(index: int, metric: float | None, action: str, promoted: int | None) -> BatchRow:
        return BatchRow(
            index=index,
            batch_id=f"b{index}",
            n_rows=ROWS,
            drift_share=None,
            champion_metric=metric,
            action=action,
            outcome="x",
            risk_tier=None,
            promoted=promoted,
            retrained=promoted is not None,
            seconds=1.0,
            run_id=f"r{index}",
        )

    loop_rows = [
        batch(1, None, "quarantine", None),  # deployed: v1
        batch(2, 0.9, "retrain", 2),
        batch(3, None, "quarantine", None),  # deployed: v2 (promoted on batch 2)
        batch(4, 0.9, "monitor", None),
    ]
    result = StreamResult("synthetic", "builtin", "builtin", loop_rows, 0.0, 0.0, True, None)
    rows = [
        PolicyRow(r.index, r.batch_id, r.n_rows, 0, r.champion_metric, r.retrained)
        for r in loop_rows
    ]
    plane = ControlPlane(settings)
    try:
        fill_unscored(plane, flip, result, rows)
    finally:
        plane.close()
    assert rows[0].score is not None and rows[0].score > 0.85  # v1 on batch 1 (old relation)
    assert "champion v1" in rows[0].note
    # Batch 3 follows the flipped relation: v2 scores it high, v1 would score it low.
    assert rows[2].score is not None and rows[2].score > 0.85
    assert "champion v2" in rows[2].note
    assert rows[1].score == 0.9 and rows[3].score == 0.9  # the loop's own metrics are kept


def test_equal_batches_keep_the_rows_and_their_order_in_equal_sizes() -> None:
    """Months of unequal length (31, 28, 31 days of hourly rows, ties at each hour) re-cut
    into as many batches: the same rows in the same order, sizes within one row."""
    hours = pl.datetime_range(
        pl.datetime(2013, 1, 1), pl.datetime(2013, 3, 31, 23), interval="1h", eager=True
    )
    frame = pl.DataFrame({"t": pl.concat([hours, hours]).sort(), "row": range(2 * hours.len())})
    frame = frame.with_columns(pl.col("t").dt.strftime("%m").alias("month"))
    months = frame.partition_by("month", maintain_order=True)
    assert [m.height for m in months] == [1488, 1344, 1488]

    parts = equal_batches(pl.concat(months), "t", len(months))

    assert [part.height for _, part in parts] == [1440, 1440, 1440]
    assert pl.concat([part for _, part in parts])["row"].to_list() == frame["row"].to_list()
    assert [batch_id for batch_id, _ in parts] == [
        "eq01-2013-01-01T00",
        "eq02-2013-01-31T00",
        "eq03-2013-03-02T00",
    ]


def test_equal_batches_spread_the_remainder_and_sort_by_time() -> None:
    frame = pl.DataFrame({"t": [5, 1, 3, 2, 4, 0, 6], "x": list("fbdceag")})
    parts = equal_batches(frame, "t", 3)
    assert [part["x"].to_list() for _, part in parts] == [["a", "b", "c"], ["d", "e"], ["f", "g"]]
    assert [batch_id for batch_id, _ in parts] == ["eq01", "eq02", "eq03"]
    with pytest.raises(ValueError, match="cannot cut 7 rows into 8"):
        equal_batches(frame, "t", 8)


def _framing(retrains: int, promotions: int) -> dict[str, Any]:
    loop = {
        "retrains": retrains,
        "promotions": promotions,
        "yield": promotions / retrains if retrains else None,
        "mean_score": 0.68,
    }
    return {"batches": ["a"] * 12, "totals": {LOOP: loop}}


def test_the_framing_criterion_needs_close_retrain_counts_and_each_yield() -> None:
    met = framing_check({"month": _framing(3, 2), "equal": _framing(4, 2)})
    assert met["met"] and met["retrain_gap"] == 1
    assert "month: 3 retrains, 0 recalibrations, 2 promotions, yield 67%" in framing_line(
        "flights", met
    )
    apart = framing_check({"month": _framing(2, 2), "equal": _framing(4, 4)})
    assert apart["yields_met"] and not apart["retrains_met"] and not apart["met"]
    low = framing_check({"month": _framing(3, 1), "equal": _framing(3, 2)})
    assert low["retrains_met"] and not low["yields_met"]
    assert 1 / 3 < MIN_YIELD <= 2 / 3
    idle = framing_check({"month": _framing(0, 0), "equal": _framing(0, 0)})
    assert not idle["yields_met"] and "yield -" in framing_line("flights", idle)


def test_a_recalibration_is_counted_apart_from_the_retrains() -> None:
    """Issue 21 tells a recalibration (a calibration map on the champion) from a retrain: the
    totals count them apart, and the yield is promoted retrains per retrain."""
    rows = [
        PolicyRow(1, "b1", 10, 0, 0.70, retrained=True, promoted=True),
        PolicyRow(2, "b2", 10, 0, 0.71, retrained=True, promoted=False),
        PolicyRow(3, "b3", 10, 0, 0.72, promoted=True, recalibrated=True),
    ]
    totals = PolicyRun("driftpilot", rows, 1.0, {"training_s": 0.5}).totals()
    assert (totals["retrains"], totals["recalibrations"], totals["promotions"]) == (2, 1, 2)
    assert totals["yield"] == 0.5
