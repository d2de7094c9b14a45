"""tools.calibrate: a calibration map fitted on rows whose class shares moved fixes the
probabilities (log loss down on fresh rows of the new shares) and, for binary, keeps the
ranking (ROC AUC exactly the same)."""

from __future__ import annotations

import pickle

import numpy as np
import polars as pl
import pytest

from driftpilot.core.errors import ConfigError, DataError
from tools.calibrate import (
    CalibratedModel,
    calibrate_model,
    fit_calibrator,
    uncalibrated,
)
from tools.metrics import value
from tools.train import TrainSpec, train_model

TRAIN_PRIORS = np.array([0.6, 0.3, 0.1])


def binary_rows(rng: np.random.Generator, n: int, prevalence: float) -> tuple[np.ndarray, ...]:
    """Labels at ``prevalence`` and the Bayes scores of a model that believes 0.1: the
    class-conditional inputs are the same at any prevalence (a pure label shift)."""
    y = (rng.random(n) < prevalence).astype(int)
    x = rng.normal(1.5 * y, 1.0)
    z = 1.5 * x - 1.125 + np.log(0.1 / 0.9)
    return y, 1 / (1 + np.exp(-z))


def multiclass_rows(rng: np.random.Generator, n: int, prior: np.ndarray) -> tuple[np.ndarray, ...]:
    """Labels drawn from ``prior``, the Bayes probabilities of a model that believes
    ``TRAIN_PRIORS``."""
    y = rng.choice(3, size=n, p=prior)
    centres = np.eye(3) * 1.5
    x = centres[y] + rng.normal(size=(n, 3))
    loglik = -0.5 * ((x[:, None, :] - centres[None]) ** 2).sum(-1) + np.log(TRAIN_PRIORS)
    p = np.exp(loglik - loglik.max(1, keepdims=True))
    return y, p / p.sum(1, keepdims=True)


def test_binary_prevalence_change_log_loss_improves_and_auc_is_unchanged() -> None:
    rng = np.random.default_rng(0)
    y, s = binary_rows(rng, 3000, 0.4)
    fit = fit_calibrator("binary", y, s, "auto")
    assert fit.calibrator.method == "platt"
    # The textbook prior correction: logit shift log(w1/w0) = log((0.4/0.6)/(0.1/0.9)) = 1.79.
    assert fit.calibrator.biases[0] == pytest.approx(np.log(6.0), abs=0.15)
    assert fit.calibrator.slope == pytest.approx(1.0, abs=0.1)
    y_new, s_new = binary_rows(rng, 3000, 0.4)  # fresh rows: not the ones it was fitted on
    calibrated = fit.calibrator.apply(s_new)
    before, after = (
        value("log_loss", "binary", y_new, s_new),
        value("log_loss", "binary", y_new, calibrated),
    )
    assert before is not None and after is not None
    assert after < before - 0.1, (before, after)
    assert value("roc_auc", "binary", y_new, calibrated) == value("roc_auc", "binary", y_new, s_new)
    assert fit.log_loss_after < fit.log_loss_before
    assert fit.prevalence["1"] == pytest.approx(0.4, abs=0.03)


def test_binary_isotonic_on_request_also_improves_log_loss() -> None:
    rng = np.random.default_rng(1)
    y, s = binary_rows(rng, 5000, 0.4)
    fit = fit_calibrator("binary", y, s, "isotonic")
    y_new, s_new = binary_rows(rng, 3000, 0.4)
    after = value("log_loss", "binary", y_new, fit.calibrator.apply(s_new))
    before = value("log_loss", "binary", y_new, s_new)
    assert fit.calibrator.method == "isotonic" and fit.calibrator.prior_weights() is None
    assert after is not None and before is not None and after < before - 0.1


@pytest.mark.parametrize("method", ["auto", "prior"])
def test_multiclass_prior_shift_log_loss_improves(method: str) -> None:
    rng = np.random.default_rng(2)
    new_prior = np.array([0.1, 0.3, 0.6])
    y, s = multiclass_rows(rng, 3000, new_prior)
    fit = fit_calibrator("multiclass", y, s, method)  # type: ignore[arg-type]
    assert fit.calibrator.method == ("bcts" if method == "auto" else "prior")
    y_new, s_new = multiclass_rows(rng, 3000, new_prior)
    before = value("log_loss", "multiclass", y_new, s_new)
    after = value("log_loss", "multiclass", y_new, fit.calibrator.apply(s_new))
    assert before is not None and after is not None and after < before - 0.2, (before, after)
    # p'(y|x) ∝ p(y|x) w_y with w_y = new / old prior, up to a common factor.
    weights = np.asarray(fit.calibrator.prior_weights())
    expected = new_prior / TRAIN_PRIORS
    assert weights / weights[1] == pytest.approx(expected / expected[1], rel=0.3)


def test_a_multiclass_map_moves_the_one_vs_rest_auc_a_little() -> None:
    """Unlike binary Platt, reweighting classes inside a softmax changes each one-vs-rest
    ranking (p'_y / (1 - p'_y) = w_y p_y / sum of w_j p_j over the other classes): the macro
    ROC AUC moves, by far less than the log loss gains. The evaluator therefore rejects a
    recalibration only for a drop in the model's metric that counts, not for any
    significant one."""
    rng = np.random.default_rng(0)
    new_prior = np.array([0.5, 0.3, 0.2])

    def rows(n: int) -> tuple[np.ndarray, np.ndarray]:
        y, p = multiclass_rows(rng, n, new_prior)
        noisy = np.exp(np.log(p) + rng.normal(0.0, 0.8, size=p.shape))  # not a Bayes model
        return y, noisy / noisy.sum(1, keepdims=True)

    (y, s), (y_new, s_new) = rows(700), rows(5000)
    mapped = fit_calibrator("multiclass", y, s, "prior").calibrator.apply(s_new)
    auc_before = value("roc_auc", "multiclass", y_new, s_new)
    auc_after = value("roc_auc", "multiclass", y_new, mapped)
    assert auc_before is not None and auc_after is not None
    assert auc_after != auc_before and abs(auc_after - auc_before) < 0.005
    loss_before = value("log_loss", "multiclass", y_new, s_new)
    loss_after = value("log_loss", "multiclass", y_new, mapped)
    assert loss_before is not None and loss_after is not None
    assert loss_after < loss_before - 0.01


def test_regression_and_too_little_data_are_refused() -> None:
    with pytest.raises(ConfigError, match="regression"):
        fit_calibrator("regression", np.zeros(100), np.zeros(100), "auto")
    with pytest.raises(DataError, match="at least 50"):
        fit_calibrator("binary", np.array([0, 1] * 10), np.full(20, 0.5), "auto")
    with pytest.raises(DataError, match="single class"):
        fit_calibrator("binary", np.zeros(200, dtype=int), np.full(200, 0.3), "auto")
    with pytest.raises(ConfigError, match="does not fit"):
        fit_calibrator("binary", np.array([0, 1] * 50), np.full(100, 0.5), "bcts")


def frame(rng: np.random.Generator, n: int, prevalence: float) -> pl.DataFrame:
    y = (rng.random(n) < prevalence).astype(int)
    return pl.DataFrame({"x": rng.normal(1.5 * y, 1.0), "noise": rng.normal(size=n), "label": y})


def test_a_trained_champion_recalibrated_scores_frames_and_pickles() -> None:
    rng = np.random.default_rng(3)
    spec = TrainSpec(target="label", numeric=["x", "noise"], max_rounds=60)
    champion = train_model(frame(rng, 4000, 0.1), spec)
    recent, later = frame(rng, 2000, 0.4), frame(rng, 2000, 0.4)
    calibrated, fit = calibrate_model(champion, recent, "label")
    y = later["label"].to_numpy()
    old, new = champion.predict_scores(later), calibrated.predict_scores(later)
    old_loss, new_loss = value("log_loss", "binary", y, old), value("log_loss", "binary", y, new)
    assert old_loss is not None and new_loss is not None and new_loss < old_loss - 0.05
    assert value("roc_auc", "binary", y, new) == pytest.approx(value("roc_auc", "binary", y, old))
    assert calibrated.family == "lightgbm" and calibrated.spec is champion.spec
    assert calibrated.report is champion.report  # the drift analyst reads its importances
    # MLflow stores it by pickling; recalibrating it again replaces the map, not stacks one.
    again = pickle.loads(pickle.dumps(calibrated))
    assert np.allclose(again.predict_scores(later), new)
    second, _ = calibrate_model(again, later, "label")
    assert isinstance(second, CalibratedModel) and not isinstance(second.base, CalibratedModel)
    assert uncalibrated(second).family == "lightgbm" and fit.rows == 2000


def test_a_trained_multiclass_champion_recalibrated_follows_the_new_shares() -> None:
    rng = np.random.default_rng(4)

    def rows(n: int, prior: np.ndarray) -> pl.DataFrame:
        y = rng.choice(["a", "b", "c"], size=n, p=prior)
        centre = {"a": 0.0, "b": 1.5, "c": 3.0}
        return pl.DataFrame({"x": [rng.normal(centre[v]) for v in y], "label": y})

    spec = TrainSpec(task="multiclass", target="label", numeric=["x"], max_rounds=60)
    champion = train_model(rows(4000, TRAIN_PRIORS), spec)
    new_prior = np.array([0.1, 0.3, 0.6])
    calibrated, fit = calibrate_model(champion, rows(3000, new_prior), "label")
    later = rows(3000, new_prior)
    y = np.array([calibrated.classes.index(v) for v in later["label"].to_list()])
    old = value("log_loss", "multiclass", y, champion.predict_scores(later))
    new = value("log_loss", "multiclass", y, calibrated.predict_scores(later))
    assert old is not None and new is not None and new < old - 0.1, (old, new)
    assert calibrated.classes == ["a", "b", "c"] and fit.calibrator.method == "bcts"
    assert calibrated.predict_scores(later).mean(axis=0) == pytest.approx(new_prior, abs=0.05)
