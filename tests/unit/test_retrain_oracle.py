"""evals.retrain_oracle: schedules scored from the table of every model on every later batch."""

from __future__ import annotations

from evals.retrain_oracle import ScoreTable, budget_for, carry, oracle, schedules


def table(metric: str = "rmse") -> ScoreTable:
    """Five batches (0 trains the first model; 1-4 are scored). Retraining after batch 2 is the
    one retrain that pays: its model scores 1.0 where every other model scores 3.0-4.0."""
    scores: dict[int, dict[int, float | None]] = {
        0: {1: 3.0, 2: 3.0, 3: 4.0, 4: 4.0},
        1: {2: 3.5, 3: 4.0, 4: 4.0},
        2: {3: 1.0, 4: 1.0},
        3: {4: 3.0},
    }
    return ScoreTable(["b0", "b1", "b2", "b3", "b4"], scores, 1, metric)


def test_a_schedule_serves_each_batch_with_the_latest_model_trained_before_it() -> None:
    t = table()
    assert t.schedule_scores(()) == [3.0, 3.0, 4.0, 4.0]
    assert t.schedule_scores((2,)) == [3.0, 3.0, 1.0, 1.0]
    assert t.schedule_scores((1, 3)) == [3.0, 3.5, 4.0, 3.0]


def test_schedules_within_the_budget_leave_out_the_last_batch() -> None:
    t = table()
    assert schedules(t, 1) == [(), (1,), (2,), (3,)]
    assert len(schedules(t, 3)) == 8  # every subset of {1, 2, 3}
    assert budget_for(t, 1 / 3) == 1  # every batch retrains 4 times


def test_the_oracle_finds_the_one_retrain_that_pays_and_counts_who_reaches_every_batch() -> None:
    result = oracle(table(), 1)
    assert result["best"][0] == {"retrain_after": ["b2"], "mean": 2.0}
    # every batch: 3.0, 3.5, 1.0, 3.0 -> 2.625; only retraining after b2 (2.0) is as low
    assert result["every_batch_mean"] == 2.625
    assert result["every_batch_retrains"] == 4
    assert result["reaching"] == [["b2"]]
    assert result["reaching_every_batch"] == 1


def test_higher_is_better_flips_the_order() -> None:
    result = oracle(table("roc_auc"), 1)
    assert result["best"][0]["retrain_after"] == ["b1"]  # 3.0, 3.5, 4.0, 4.0: the highest mean


def test_carry_compares_the_holdout_gain_with_the_next_batchs() -> None:
    t = table()
    # model 2 wins 20 % on b2's holdout over the first model and 10 % over model 1, and 75 %
    # on b3 over both (1.0 against 4.0); model 3 loses 50 % on b3's holdout over the first
    # model (3.0 against 2.0), yet wins 25 % on b4 (3.0 against 4.0)
    t.holdout = {2: {2: 2.0, 0: 2.5, 1: 2.2}, 3: {3: 3.0, 0: 2.0, 2: 1.0}}
    result = carry(t)
    rows = {(r["trained_after"], r["against"]): r for r in result["rows"]}
    assert rows["b2", "first"] == {
        "trained_after": "b2",
        "against": "first",
        "holdout_gain": 0.2,
        "next_gain": 0.75,
    }
    assert rows["b3", "first"]["holdout_gain"] == -0.5 and rows["b3", "first"]["next_gain"] == 0.25
    assert rows["b3", "previous"]["next_gain"] == -2.0  # model 2's 1.0 against model 3's 3.0
    assert "first" not in result  # fewer than 3 models: no correlation


def test_carry_correlates_over_the_models_and_counts_agreeing_signs() -> None:
    t = table()
    # against the first model: model 1 holdout +0.1 / next (b2: 3.5 vs 3.0) -0.1667;
    # model 2 +0.2 / +0.75; model 3 -0.5 / +0.25: one sign of three agrees
    t.holdout = {1: {1: 2.7, 0: 3.0}, 2: {2: 2.0, 0: 2.5, 1: 2.2}, 3: {3: 3.0, 0: 2.0, 2: 1.0}}
    result = carry(t)
    assert [r["against"] for r in result["rows"]] == [
        "first",
        "first",
        "previous",
        "first",
        "previous",
    ]
    assert result["first"]["models"] == 3 and result["first"]["sign_agreement"] == 1
    assert result["first"]["correlation"] == 0.184  # of (0.1, 0.2, -0.5) and (-0.1667, 0.75, 0.25)
    assert "previous" not in result  # 2 models: no correlation
