"""Challenger sanity (agents.evaluator): a challenger worse than chance on the holdout, or far
below its own validation score, is a training defect: flagged with its numbers and rejected
whatever its gain over the champion.

The reproduction: on a real stream with a lasting concept change, two challengers scored below
chance (gains of -0.29 and -0.41 ROC AUC). Their training window was dominated by batches of
the old concept while the holdout is the latest rows of the current batch, of the new one: the
challenger learnt the old relation between inputs and label, which the new rows invert, so it
ranks the holdout backwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from agents import evaluator
from agents.base import Llm
from agents.context import RunContext
from agents.drift_measures import too_small
from driftpilot.core.llm import Backend
from driftpilot.core.policy import Policy
from driftpilot.core.tasks import Task, metric
from tools.evaluate import Comparison
from tools.metrics import MetricInterval, chance_level, interval
from tools.train import TrainSpec, split_holdout, train_model

BUILTIN = Llm(Backend("builtin", "", None))


def own(name: str, value: float, low: float, high: float, task: Task = "binary") -> MetricInterval:
    info = metric(name, task)
    return MetricInterval(
        metric=name,
        task=task,
        higher_is_better=info.higher_is_better,
        value=value,
        low=low,
        high=high,
        n_rows=500,
        confidence=0.95,
        n_boot=200,
    )


def test_chance_levels_per_metric_and_task() -> None:
    assert chance_level("roc_auc", "binary", [0, 1]) == 0.5
    assert chance_level("roc_auc", "multiclass", [0, 1, 2]) == 0.5  # macro one-vs-rest
    assert chance_level("pr_auc", "binary", [0, 0, 0, 1]) == 0.25  # the positive share
    assert chance_level("r2", "regression", [1.0, 2.0]) == 0.0  # predicting the mean
    assert chance_level("rmse", "regression", [1.0, 3.0]) == pytest.approx(1.0)  # its std
    assert chance_level("mae", "regression", [1.0, 2.0, 6.0]) == pytest.approx(5 / 3)
    assert chance_level("log_loss", "binary", [0, 1]) is None  # depends on the prior held
    assert chance_level("f1", "binary", [0, 1]) is None


def test_worse_than_chance_needs_the_whole_interval() -> None:
    below = evaluator.training_defect(own("roc_auc", 0.31, 0.27, 0.35), 0.5, 0.62, 0.25)
    assert below is not None and below["chance"] == 0.5 and below["holdout"] == 0.31
    assert "worse than chance" in below["why"] and "0.3100" in below["why"]
    # Noise on a small holdout: the interval reaches 0.5, no defect.
    assert evaluator.training_defect(own("roc_auc", 0.47, 0.40, 0.55), 0.5, 0.55, 0.25) is None


def test_direction_aware_for_lower_is_better_metrics() -> None:
    # RMSE 14 (13-15) where predicting the mean scores 10: R² < 0, a defect.
    rmse = own("rmse", 14.0, 13.0, 15.0, "regression")
    found = evaluator.training_defect(rmse, 10.0, 9.0, 0.25)
    assert found is not None and "worse than chance" in found["why"]
    assert (
        evaluator.training_defect(own("rmse", 8.0, 7.5, 8.5, "regression"), 10.0, 7.9, 0.25) is None
    )
    r2 = evaluator.training_defect(own("r2", -0.2, -0.3, -0.1, "regression"), 0.0, None, 0.25)
    assert r2 is not None and r2["valid"] is None


def test_far_below_its_own_validation_score() -> None:
    # ROC AUC 0.60 (at best 0.64) on the holdout against 0.93 in validation: gap 0.29.
    found = evaluator.training_defect(own("roc_auc", 0.60, 0.56, 0.64), 0.5, 0.93, 0.25)
    assert found is not None and found["gap"] == pytest.approx(0.29)
    assert "far below its own validation score" in found["why"]
    # Log loss has no chance level: only the gap can flag it (lower is better: 0.70 vs 0.40).
    loss = evaluator.training_defect(own("log_loss", 0.75, 0.70, 0.80), None, 0.40, 0.25)
    assert loss is not None and loss["gap"] == pytest.approx(0.30)
    assert evaluator.training_defect(own("log_loss", 0.5, 0.45, 0.55), None, 0.40, 0.25) is None


def comparison(metric_name: str, gain: float, low: float, high: float) -> Comparison:
    return Comparison(
        metric=metric_name,
        n_rows=500,
        champion=0.5,
        challenger=0.5 + gain,
        gain=gain,
        ci_low=low,
        ci_high=high,
        confidence=0.95,
        n_boot=200,
        significant=low > 0,
        prediction_divergence=0.05,
    )


def test_a_training_defect_is_rejected_whatever_its_gain() -> None:
    defect = evaluator.training_defect(own("roc_auc", 0.45, 0.42, 0.48), 0.5, 0.70, 0.25)
    evidence = evaluator.EvaluatorEvidence(
        comparison=comparison("roc_auc", 0.05, 0.02, 0.08),  # it beats a worse champion
        champion_version=1,
        training_defect=defect,
    )
    ruling = evaluator.decide(evidence, Policy(), BUILTIN)
    assert ruling.allowed == ["reject"] and ruling.outcome.decision.action == "reject"
    assert "training defect: worse than chance" in ruling.outcome.decision.rationale
    assert evidence.shown()["training_defect"]["holdout"] == 0.45


def test_a_recalibration_is_judged_on_log_loss_and_must_keep_its_metric() -> None:
    kept = comparison("roc_auc", 0.0, 0.0, 0.0)
    evidence = evaluator.EvaluatorEvidence(
        comparison=comparison("log_loss", 0.08, 0.06, 0.10),
        champion_version=3,
        kind="recalibrate",
        primary=kept,
    )
    ruling = evaluator.decide(evidence, Policy(), BUILTIN)
    assert ruling.outcome.decision.action == "promote"
    assert "a monotone map keeps the ranking" in ruling.outcome.decision.rationale
    assert evidence.shown()["judged_on"] == "log_loss"
    dropped = evidence.model_copy(update={"primary": comparison("roc_auc", -0.03, -0.05, -0.01)})
    ruling = evaluator.decide(dropped, Policy(), BUILTIN)
    assert ruling.outcome.decision.action == "reject"
    assert "drops roc_auc by a drop that counts" in ruling.outcome.decision.rationale


def test_a_recalibration_keeps_a_significant_drop_under_the_one_that_counts() -> None:
    """The quick flights_delay_class label shift's first recalibration: log loss 1.0898 ->
    1.0534 on 300 holdout rows (gain +0.0364, CI +0.0098 to +0.0669), macro ROC AUC 0.6542 ->
    0.6503 (-0.0039, CI -0.0079 to -0.0003). The softmax map's reweighting costs a little of
    every one-vs-rest ranking; it was rejected for a drop far under the 0.02 that counts."""
    evidence = evaluator.EvaluatorEvidence(
        comparison=comparison("log_loss", 0.0364, 0.0098, 0.0669),
        champion_version=1,
        kind="recalibrate",
        primary=comparison("roc_auc", -0.0039, -0.0079, -0.0003),
    )
    policy = Policy()
    assert policy.drift.max_metric_drop == 0.02
    ruling = evaluator.decide(evidence, policy, BUILTIN)
    assert ruling.allowed[0] == "promote" and ruling.outcome.decision.action == "promote"
    assert "A drop under 0.02 does not count" in ruling.outcome.decision.rationale
    assert evidence.shown()["primary"]["dropped_significantly"] is True
    # The same drop with a stricter policy counts again.
    strict = policy.model_copy(
        update={"drift": policy.drift.model_copy(update={"max_metric_drop": 0.003})}
    )
    ruling = evaluator.decide(evidence, strict, BUILTIN)
    assert ruling.allowed == ["reject"]
    assert "drops roc_auc by a drop that counts" in ruling.outcome.decision.rationale


def flipped_stream(rng: np.random.Generator) -> pl.DataFrame:
    """Four batches of 2,000 rows: three of the old concept (label follows x), then the
    current one of the new (label follows -x)."""
    frames = []
    for b in range(4):
        x = rng.normal(size=2000)
        sign = 1.0 if b < 3 else -1.0
        label = (sign * 2.0 * x + rng.normal(size=2000) > 0).astype(int)
        t = np.arange(b * 2000, (b + 1) * 2000)
        frames.append(pl.DataFrame({"x": x, "z": rng.normal(size=2000), "label": label, "t": t}))
    return pl.concat(frames)


def test_reproduction_a_window_of_the_old_concept_scores_below_chance() -> None:
    """Measured: holdout ROC AUC 0.10 (0.07-0.13); its validation split (the window's latest
    rows, of the new concept too) scored 0.08, so early stopping kept one round: the chance
    check catches it, the validation gap cannot."""
    rng = np.random.default_rng(11)
    stream = flipped_stream(rng)
    current = stream.filter(pl.col("t") >= 6000)
    current_train, holdout = split_holdout(current, "t", 0.2)  # as agents.optimizer cuts it
    window = pl.concat([stream.filter(pl.col("t") < 6000), current_train])  # 6,000 old rows
    spec = TrainSpec(target="label", numeric=["x", "z"], time_col="t", max_rounds=100)
    challenger = train_model(window, spec)
    assert challenger.report is not None
    y = holdout["label"].to_numpy()
    scored = interval("roc_auc", "binary", y, challenger.predict_scores(holdout), n_boot=200)
    valid = challenger.report.valid.get("roc_auc")
    found = evaluator.training_defect(scored, chance_level("roc_auc", "binary", y), valid, 0.25)
    assert found is not None and scored.high is not None and scored.high < 0.5, scored
    assert found["holdout"] < 0.5 and "worse than chance" in found["why"]


def test_a_holdout_too_small_to_judge_on_is_named() -> None:
    """The multiclass small_noisy_batches stream: 150-row batches, a 45-row holdout on which
    a quick retrain "won" 0.225 macro ROC AUC (lower bound 0.070) and its challenger, promoted,
    was 0.028 worse on the truth. No gain on so few rows counts."""
    assert too_small(pl.Series(list(range(45)), dtype=pl.Float64), "regression", 100, 10) == (
        "45 labelled holdout rows (needs at least 100)"
    )
    assert too_small(pl.Series([float(i) for i in range(120)]), "regression", 100, 10) is None
    # Two classes of 10+ rows: enough, whatever a rare third class holds.
    classes = pl.Series(["a"] * 90 + ["b"] * 12 + ["c"] * 3)
    assert too_small(classes, "multiclass", 100, 10) is None
    # A binary holdout with 6 positives: an ROC AUC on them is a coin.
    rare = pl.Series([0] * 150 + [1] * 6 + [None] * 20)
    why = too_small(rare, "binary", 100, 10)
    assert why == "holdout classes of 150, 6 labelled rows (needs two with at least 10 each)"


def test_a_gain_on_a_holdout_too_small_is_rejected_whatever_it_is() -> None:
    evidence = evaluator.EvaluatorEvidence(
        comparison=comparison("roc_auc", 0.225, 0.070, 0.38),
        champion_version=2,
        holdout_too_small="45 labelled holdout rows (needs at least 100)",
    )
    ruling = evaluator.decide(evidence, Policy(), BUILTIN)
    assert ruling.allowed == ["reject"] and ruling.outcome.decision.action == "reject"
    assert "the holdout is too small to judge on: 45 labelled holdout rows" in (
        ruling.outcome.decision.rationale
    )
    assert evidence.shown()["holdout_too_small"].startswith("45 labelled")
    # The same gain on enough rows promotes.
    enough = evidence.model_copy(update={"holdout_too_small": None})
    assert evaluator.decide(enough, Policy(), BUILTIN).outcome.decision.action == "promote"


def test_a_score_in_the_targets_units_is_read_on_the_validations_scale() -> None:
    # The flights regression's June challenger: RMSE 64.9 (62.2-67.8) on the latest rows of
    # a summer month where predicting the mean scores 69.0, against 47.1 in validation. Raw,
    # a gap of 0.32 (a defect); on the validation's scale (predicting the mean scored 51.6
    # there, evals.policies' run of 2a7b033) 62.2 reads 46.5: the same skill, no defect.
    june = own("rmse", 64.9086, 62.2107, 67.7924, "regression")
    raw = evaluator.training_defect(june, 69.0145, 47.11, 0.25)
    assert raw is not None and raw["gap"] == pytest.approx(0.3205, abs=1e-4)
    assert evaluator.training_defect(june, 69.0145, 47.11, 0.25, valid_chance=51.58) is None
    # A fit that learnt more than it can use: 30.0 in validation on the same 51.6 spread.
    worse = evaluator.training_defect(june, 69.0145, 30.0, 0.25, valid_chance=51.58)
    assert worse is not None and worse["valid_chance"] == 51.58
    assert worse["gap"] == pytest.approx(62.2107 * 51.58 / 69.0145 / 30.0 - 1)
    assert "46.4950 on the validation's scale" in worse["why"]
    # MAE likewise; a metric in points (R², ROC AUC) is never rescaled.
    mae = own("mae", 30.0, 29.0, 31.0, "regression")
    assert evaluator.training_defect(mae, 40.0, 20.0, 0.25, valid_chance=28.0) is None
    assert evaluator.training_defect(mae, 40.0, 20.0, 0.25) is not None
    r2 = own("r2", 0.40, 0.38, 0.42, "regression")
    found = evaluator.training_defect(r2, 0.0, 0.70, 0.25, valid_chance=5.0)
    assert found is not None and found["gap"] == pytest.approx(0.28)


def test_a_regression_fit_reports_its_validations_spread() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=600)
    frame = pl.DataFrame({"x": x, "y": 3 * x + rng.normal(size=600), "t": np.arange(600)})
    spec = TrainSpec(
        target="y", numeric=["x"], time_col="t", task="regression", max_rounds=30, threads=1
    )
    report = train_model(frame, spec).report
    assert report is not None
    valid = frame.sort("t").tail(report.n_valid)["y"].to_numpy()
    assert report.valid_chance["rmse"] == pytest.approx(valid.std())
    assert report.valid_chance["mae"] == pytest.approx(np.abs(valid - np.median(valid)).mean())
    binary = spec.model_copy(update={"task": "binary"})
    labels = frame.with_columns((pl.col("y") > 0).cast(pl.Int64))
    classified = train_model(labels, binary).report
    assert classified is not None and classified.valid_chance == {}


def test_sanity_reads_the_retrainings_validation_spread(tmp_path: Path) -> None:
    """Through ``sanity``, as the graph's evaluator node calls it: a regression fit on two
    regimes (``s`` scales the target and its noise alike) validated on the quiet one and held
    out on the loud one. Its holdout RMSE is twice its validation RMSE with the same skill:
    read on the validation's scale (the retraining slice's ``valid_chance``) it is sane; a
    slice recorded without it (before it was kept) is judged raw, and flagged."""
    from driftpilot.core.settings import Settings
    from driftpilot.store import AuditStore
    from tests.rows import model_without_champion

    rng = np.random.default_rng(11)

    def rows(n: int, scale: float, start: int) -> pl.DataFrame:
        x, s = rng.uniform(-1, 1, n), np.full(n, scale)
        y = s * (3 * x + rng.normal(scale=0.5, size=n))
        return pl.DataFrame({"x": x, "s": s, "y": y, "t": np.arange(start, start + n)})

    early = pl.concat([rows(1500, 1.0, 0), rows(1500, 2.0, 0)]).sort("t")
    window = pl.concat([early.with_columns(pl.col("t") * 0), rows(750, 1.0, 1)])
    holdout = rows(600, 2.0, 2)
    spec = TrainSpec(target="y", numeric=["x", "s"], time_col="t", task="regression", threads=1)
    challenger = train_model(window, spec)
    report = challenger.report
    assert report is not None and report.n_valid == 750  # the quiet regime's rows, all
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    row = model_without_champion()  # then made the regression on x and s it is here
    row.numeric, row.metric, row.task = '["x", "s"]', "rmse", "regression"
    store.add(row)
    ctx = RunContext(Settings(home=tmp_path), store, Policy(), Backend("builtin", "", None))
    trained = {
        "mlflow_run_id": "run",
        "valid_metric": "rmse",
        "valid_score": report.valid.get("rmse"),
        "valid_chance": report.valid_chance["rmse"],
    }
    evidence = evaluator.EvaluatorEvidence(
        comparison=comparison("rmse", 0.05, 0.02, 0.08),
        champion_version=1,
        task="regression",
        target="y",
        holdout=holdout,
        challenger=challenger,
    )
    state = {"run_id": "r1", "model": "m", "retraining": trained}
    sane = evaluator.sanity(evidence, state, ctx)
    assert sane.own is not None and sane.own.value is not None
    assert sane.own.value > 1.6 * trained["valid_score"]  # twice the RMSE, raw
    assert sane.training_defect is None
    before = {k: v for k, v in trained.items() if k != "valid_chance"}
    raw = evaluator.sanity(evidence, {**state, "retraining": before}, ctx)
    assert raw.training_defect is not None and raw.training_defect["valid_chance"] is None
    assert "far below its own validation score" in raw.training_defect["why"]


def test_a_narrower_holdout_is_judged_raw() -> None:
    # Predicting the mean scores 5.0 on the holdout, 50.0 in validation: rescaled, RMSE 4.0
    # would read 40.0 against 30.0 (a gap of 0.33); a narrower holdout is never judged
    # harder than raw, so nothing that was sane becomes a defect.
    narrow = own("rmse", 4.0, 3.8, 4.2, "regression")
    assert evaluator.training_defect(narrow, 5.0, 30.0, 0.25, valid_chance=50.0) is None
