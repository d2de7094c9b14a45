"""Calibration tools: refit how a classifier's scores map to probabilities, keeping the model.

A label shift moves a class's prevalence while the class-conditional inputs stay put. The
champion's ranking is then still right, but its probabilities carry the old prevalence:
p_new(y | x) ∝ p_old(y | x) · w_y with w_y = p_new(y) / p_old(y) (Saerens et al. 2002; the
textbook fix for label shift). A calibration map fitted on recent labelled rows learns that
correction (and any temperature the shift added) for a fraction of a retrain's cost:

- binary: Platt scaling on the champion's logit, p' = sigmoid(a · logit(p) + b), a > 0. The prior
  correction is the case a = 1, b = log(w_1 / w_0). Strictly increasing, so the ROC AUC is
  exactly the champion's. Isotonic regression is offered (``method="isotonic"``) but never
  chosen by default: its flat steps tie rows and can move the AUC.
- multiclass: bias-corrected temperature scaling, p' = softmax(t · log p + b): the biases are
  the log prior weights log w_y, t a temperature; with few rows per class the biases alone
  (``method="prior"``, t = 1).

Regression has no probabilities to calibrate: ``fit_calibrator`` refuses it.
Only NumPy at import; SciPy (the optimiser) and scikit-learn (isotonic) are imported inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import ConfigError, DataError
from driftpilot.core.tasks import Task
from tools.metrics import encode_labels, value

Method = Literal["auto", "platt", "isotonic", "prior", "bcts"]
EPS = 1e-7  # probabilities are kept inside (EPS, 1 - EPS): a log loss stays finite
MIN_ROWS_PER_PARAMETER = 50  # fewer labelled rows per fitted number: a smaller map
_BOUND = 20.0  # |bias| and the slope/temperature's upper bound: e^20 is beyond any real prior


class Calibrator(BaseModel):
    """A fitted calibration map: plain numbers, so it pickles and reads in an audit."""

    task: Task
    method: Literal["platt", "isotonic", "prior", "bcts"]
    slope: float = Field(1.0, description="platt: a; prior/bcts: the inverse temperature t.")
    biases: list[float] = Field(
        default_factory=list, description="platt: [b]; prior/bcts: b per class (log w_y)."
    )
    knots_x: list[float] = Field(default_factory=list, description="isotonic: score knots.")
    knots_y: list[float] = Field(default_factory=list, description="isotonic: mapped values.")

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """The calibrated scores, in the input's shape (binary ``(n,)``, multiclass
        ``(n, k)``)."""
        s = np.asarray(scores, dtype=float)
        if self.method == "isotonic":
            return np.clip(np.interp(s, self.knots_x, self.knots_y), EPS, 1 - EPS)
        if self.method == "platt":
            return _sigmoid(self.slope * _logit(s) + self.biases[0])
        return _softmax(self.slope * np.log(np.clip(s, EPS, 1.0)) + np.asarray(self.biases))

    def prior_weights(self) -> list[float] | None:
        """The class weights w_y the map multiplies the probabilities by (normalised to
        average 1), for the prior-correcting methods; None for isotonic."""
        if self.method == "isotonic":
            return None
        b = [0.0, self.biases[0]] if self.method == "platt" else self.biases
        w = np.exp(np.asarray(b) - max(b))
        return [float(v) for v in w / w.mean()]


class CalibrationFit(BaseModel):
    """What a fit found: the map and the log loss it leaves on the rows it was fitted on."""

    calibrator: Calibrator
    rows: int
    log_loss_before: float
    log_loss_after: float
    prevalence: dict[str, float] = Field(description="Class shares of the fitted rows.")


@dataclass
class CalibratedModel:
    """A model whose scores pass through a calibration map; it scores Polars frames like a
    ``TrainedModel`` (``predict_scores``) and reads like one (spec, classes, report: the
    base's, so feature importances and columns stay the champion's)."""

    base: Any
    calibrator: Calibrator

    @property
    def family(self) -> str:
        return str(self.base.family)

    @property
    def task(self) -> Task:
        return self.calibrator.task

    @property
    def spec(self) -> Any:
        return self.base.spec

    @property
    def classes(self) -> list[Any]:
        return list(getattr(self.base, "classes", None) or [])

    @property
    def report(self) -> Any:
        return getattr(self.base, "report", None)

    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
        """The base's scores for ``frame``, calibrated."""
        return self.calibrator.apply(self.base.predict_scores(frame))

    def encode(self, labels: Any) -> np.ndarray:
        return encode_labels(labels, self.task, self.classes)


def uncalibrated(model: Any) -> Any:
    """The model under any calibration map: recalibrating a recalibrated champion replaces
    its map (fitted on the raw scores again) rather than stacking a second one."""
    return model.base if isinstance(model, CalibratedModel) else model


def calibrate_model(
    model: Any, rows: pl.DataFrame, target: str, method: Method = "auto"
) -> tuple[CalibratedModel, CalibrationFit]:
    """Fit a calibration map of ``model`` (any scorer with ``predict_scores``, ``task`` and,
    multiclass, ``classes``) on the labelled ``rows``; a calibrated model comes back, whose
    base is ``model`` without its own map (``uncalibrated``).

    Raises:
        ConfigError: a regression model, or a method of the other classification task.
        DataError: too few labelled rows, or a single class among them.
    """
    base = uncalibrated(model)
    task: Task = base.task
    labelled = rows.filter(pl.col(target).is_not_null())
    classes = list(getattr(base, "classes", None) or []) or None
    y = encode_labels(labelled[target], task, classes) if task != "regression" else None
    if y is None:
        raise ConfigError("a regression model has no probabilities to calibrate: retrain it")
    fit = fit_calibrator(task, y, base.predict_scores(labelled), method)
    return CalibratedModel(base, fit.calibrator), fit


def fit_calibrator(task: Task, y: np.ndarray, scores: np.ndarray, method: Method) -> CalibrationFit:
    """Fit the map from scores to probabilities on encoded labels ``y`` (binary 0/1,
    multiclass class indices; rows of a class the model does not know, -1, are left out).

    Raises:
        ConfigError: regression, or a method of the other classification task.
        DataError: fewer than ``MIN_ROWS_PER_PARAMETER`` rows, or a single class.
    """
    if task == "regression":
        raise ConfigError("a regression model has no probabilities to calibrate: retrain it")
    s = np.asarray(scores, dtype=float)
    keep = np.asarray(y) >= 0
    y, s = np.asarray(y)[keep].astype(int), s[keep]
    if len(y) < MIN_ROWS_PER_PARAMETER:
        raise DataError(f"{len(y)} labelled rows: a calibration map needs at least 50")
    if len(np.unique(y)) < 2:
        raise DataError(f"the {len(y)} calibration rows hold a single class")
    chosen = _choose(task, method, len(y), s)
    if chosen == "isotonic":
        calibrator = _fit_isotonic(y, s)
    elif chosen == "platt":
        calibrator = _fit_platt(y, s)
    else:
        calibrator = _fit_softmax(y, s, temperature=chosen == "bcts")
    before = value("log_loss", task, y, np.clip(s, EPS, 1 - EPS) if task == "binary" else s)
    after = value("log_loss", task, y, calibrator.apply(s))
    assert before is not None and after is not None  # two classes: both are defined
    counts = np.bincount(y, minlength=2 if task == "binary" else s.shape[1])
    return CalibrationFit(
        calibrator=calibrator,
        rows=len(y),
        log_loss_before=before,
        log_loss_after=after,
        prevalence={str(k): float(c / len(y)) for k, c in enumerate(counts)},
    )


def _choose(task: Task, method: Method, n: int, s: np.ndarray) -> str:
    """The method to fit: the one asked for, or by default Platt (binary) and bias plus
    temperature scaling (multiclass; biases only with under 50 rows per fitted number)."""
    binary_methods, multi_methods = ("platt", "isotonic"), ("prior", "bcts")
    if method == "auto":
        if task == "binary":
            return "platt"
        return "bcts" if n >= MIN_ROWS_PER_PARAMETER * (s.shape[1] + 1) else "prior"
    if method not in (binary_methods if task == "binary" else multi_methods):
        raise ConfigError(f"calibration method {method!r} does not fit a {task} model")
    return method


def _fit_platt(y: np.ndarray, s: np.ndarray) -> Calibrator:
    from scipy.optimize import minimize

    z = _logit(s)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        p = _sigmoid(theta[0] * z + theta[1])
        nll = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
        r = p - y
        return float(nll), np.array([np.mean(r * z), np.mean(r)])

    found = minimize(
        loss,
        np.array([1.0, 0.0]),
        jac=True,
        method="L-BFGS-B",
        bounds=[(1e-3, _BOUND), (-_BOUND, _BOUND)],  # a > 0: the map keeps the ranking
    )
    return Calibrator(task="binary", method="platt", slope=found.x[0], biases=[found.x[1]])


def _fit_softmax(y: np.ndarray, s: np.ndarray, *, temperature: bool) -> Calibrator:
    from scipy.optimize import minimize

    logp = np.log(np.clip(s, EPS, 1.0))
    n, k = s.shape
    onehot = np.eye(k)[y]
    ridge = 1e-4  # keeps the bias of a class absent from the rows finite

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        t, b = (theta[0], theta[1:]) if temperature else (1.0, theta)
        z = t * logp + b
        z -= z.max(axis=1, keepdims=True)
        logq = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        nll = -np.mean((onehot * logq).sum(axis=1)) + ridge * float(b @ b)
        dz = (np.exp(logq) - onehot) / n
        db = dz.sum(axis=0) + 2 * ridge * b
        grad = np.r_[np.sum(dz * logp), db] if temperature else db
        return float(nll), grad

    start = np.r_[1.0, np.zeros(k)] if temperature else np.zeros(k)
    bounds = [(1e-3, _BOUND)] * temperature + [(-_BOUND, _BOUND)] * k
    found = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds)
    t, b = (found.x[0], found.x[1:]) if temperature else (1.0, found.x)
    return Calibrator(
        task="multiclass",
        method="bcts" if temperature else "prior",
        slope=float(t),
        biases=[float(v) for v in b - b.mean()],  # a common shift changes nothing: centred
    )


def _fit_isotonic(y: np.ndarray, s: np.ndarray) -> Calibrator:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=EPS, y_max=1 - EPS, out_of_bounds="clip").fit(s, y)
    return Calibrator(
        task="binary",
        method="isotonic",
        knots_x=[float(v) for v in iso.X_thresholds_],
        knots_y=[float(v) for v in iso.y_thresholds_],
    )


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, EPS, 1 - EPS)
    return np.asarray(np.log(q) - np.log1p(-q))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip(1 / (1 + np.exp(-z)), EPS, 1 - EPS))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))
