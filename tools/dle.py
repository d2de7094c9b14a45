"""Direct loss estimation (DLE, as in NannyML:
https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html#direct-loss-estimation-dle):
a regression's RMSE or MAE on a batch without labels. ``tools.estimate`` is the entry point
(``fit_estimator`` / ``estimate``); this module holds the method.

A LightGBM regressor (one thread) learns the champion's loss per row, the squared error for
RMSE and the absolute error for MAE, from the row's features and the champion's prediction, on
the reference rows. It is cross-fitted (``DLE_FOLDS`` folds, each model stopped early on a
slice of its own training rows), so the reference's own estimate comes from models that never
saw those rows (not optimistic), and a batch gets the mean of the fold models. The estimated
RMSE is the square root of the mean predicted squared error; the MAE the mean predicted
absolute error. The interval is a residual bootstrap: each replicate adds to each batch row's
predicted loss the out-of-fold residual of a reference row with a similar predicted loss, drawn
with replacement, so it covers the noise of the realised loss around its expectation.

What DLE assumes, and when not to trust it:

* Like CBPE, only covariate shift: the distribution of the loss given the features and the
  prediction is the reference's. A change in how the target relates to the features (concept
  drift: a new cause of delays the features do not carry) moves the real loss and not the
  estimate. Check it against realised metrics when labels arrive.
* The loss model must see what the loss depends on: features that explain the size of the
  errors (weather for flight delays) must be among ``features``. Losses driven by what no
  feature carries average out to the reference's level, so the estimate follows only the part
  of a change the features explain.
* Squared errors are heavy-tailed (a handful of five-hour delays dominate a month's RMSE): a
  small batch's realised RMSE swings with its few extreme rows, which no estimate from the
  features can foresee; trust the estimate on batches of thousands of rows, not dozens.
* Measured on real flights (same bench): the estimated RMSE of the arrival delay was off by
  6.3 % of the realised RMSE on average (5.9 % and 7.5 % with other seeds), by up to 20 % in
  a single month (October and November, whose realised RMSE fell below the reference's);
  forward in time, 7.9 % on average.
* It needs enough reference rows to learn the loss (``MIN_DLE_ROWS``), and batches inside the
  reference's range of features and predictions (a tree model extrapolates flat).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from driftpilot.core.errors import DataError, SchemaError
from tools.metrics import MAX_CELLS

__all__ = ["DLE_FOLDS", "MIN_DLE_ROWS", "DleEstimate", "DleModel", "estimate_dle", "fit_dle"]

MIN_DLE_ROWS = 200  # reference rows a loss model needs (fewer: folds of a few dozen rows)
DLE_FOLDS = 3
DLE_BINS = 10  # predicted-loss strata of the residual bootstrap


class DleEstimate(NamedTuple):
    """The metric of the predicted losses and its residual bootstrap interval."""

    value: float
    low: float
    high: float
    n_rows: int


@dataclass
class _Columns:
    """The loss model's design: numeric features as floats, the others as categories frozen
    to the reference's values, then the model's prediction."""

    numeric: list[str]
    categories: dict[str, list[str]]

    @classmethod
    def of(cls, reference: pl.DataFrame, features: list[str]) -> _Columns:
        missing = [c for c in features if c not in reference.columns]
        if missing:
            raise SchemaError(f"reference lacks feature columns {missing}")
        numeric = [c for c in features if reference[c].dtype.is_numeric()]
        categories = {
            c: sorted(reference[c].drop_nulls().cast(pl.String).unique().to_list())
            for c in features
            if c not in numeric
        }
        return cls(numeric, categories)

    def design(self, frame: pl.DataFrame, prediction: np.ndarray) -> Any:
        import pandas as pd

        missing = [c for c in [*self.numeric, *self.categories] if c not in frame.columns]
        if missing:
            raise SchemaError(f"the batch lacks feature columns {missing}")
        out = frame.select([pl.col(c).cast(pl.Float64) for c in self.numeric]).to_pandas()
        for col, values in self.categories.items():
            out[col] = pd.Categorical(frame[col].cast(pl.String).to_list(), categories=values)
        out["__prediction__"] = prediction
        return out


_DLE_PARAMS: dict[str, Any] = {
    "objective": "regression",  # the conditional mean of the loss is what the metric averages
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 50,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.9,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "num_threads": 1,
    "verbose": -1,
    "deterministic": True,
    "force_row_wise": True,
}


def _loss(metric: str, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    return (s - y) ** 2 if metric == "rmse" else np.abs(s - y)


def _from_loss(metric: str, mean_loss: np.ndarray) -> np.ndarray:
    return np.sqrt(mean_loss) if metric == "rmse" else mean_loss


@dataclass
class DleModel:
    """What ``fit_dle`` learnt on the reference rows."""

    metric: str  # rmse or mae
    loss_models: list[Any]  # one booster per fold
    columns: _Columns  # how the features are laid out for the boosters
    residual_bins: list[np.ndarray]  # out-of-fold residuals per predicted-loss stratum
    bin_edges: np.ndarray  # predicted-loss quantiles between the strata
    reference_losses: np.ndarray = field(default_factory=lambda: np.empty(0))  # out of fold

    def reference(self, confidence: float, n_boot: int, rng: np.random.Generator) -> DleEstimate:
        """The reference's own estimate, from out-of-fold losses (not optimistic)."""
        return estimate_losses(self, self.reference_losses, confidence, n_boot, rng)


def fit_dle(
    metric: str,
    y: np.ndarray,
    s: np.ndarray,
    reference: pl.DataFrame,
    features: list[str],
    seed: int,
) -> DleModel:
    """Cross-fitted loss models; the out-of-fold predictions give the reference's own
    estimate and the residuals of the bootstrap.

    Raises:
        DataError: labels, predictions and rows that differ in number, or fewer than 200.
        SchemaError: a feature the reference lacks.
    """
    if len(y) != len(s) or reference.height != len(y):
        raise DataError(f"{len(y)} labels, {len(s)} predictions, {reference.height} rows")
    if len(y) < MIN_DLE_ROWS:
        raise DataError(f"DLE needs at least {MIN_DLE_ROWS} reference rows, got {len(y)}")
    columns = _Columns.of(reference, features)
    x = columns.design(reference, s)
    loss = _loss(metric, y, s)
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(y)) % DLE_FOLDS
    oof = np.empty(len(y))
    models = []
    for f in range(DLE_FOLDS):
        fit_rows = np.flatnonzero(fold != f)
        model = _fit_loss_model(x, loss, fit_rows, rng, seed + f)
        held = np.flatnonzero(fold == f)
        oof[held] = np.clip(model.predict(x.iloc[held]), 0.0, None)
        models.append(model)
    edges = np.unique(np.quantile(oof, np.linspace(0, 1, DLE_BINS + 1)[1:-1]))
    stratum = np.searchsorted(edges, oof, side="right")
    residuals = loss - oof
    return DleModel(
        metric,
        loss_models=models,
        columns=columns,
        # (a stratum left empty by tied quantiles draws from every residual)
        residual_bins=[
            residuals[stratum == b] if (stratum == b).any() else residuals
            for b in range(len(edges) + 1)
        ],
        bin_edges=edges,
        reference_losses=oof,
    )


def _fit_loss_model(
    x: Any, loss: np.ndarray, rows: np.ndarray, rng: np.random.Generator, seed: int
) -> Any:
    """A booster of the loss on ``rows``, stopped early on a random fifth of them."""
    import lightgbm as lgb

    shuffled = rng.permutation(rows)
    n_stop = max(1, len(rows) // 5)
    stop, train = shuffled[:n_stop], shuffled[n_stop:]
    params = {**_DLE_PARAMS, "seed": seed}
    train_set = lgb.Dataset(x.iloc[train], loss[train], params={"feature_pre_filter": False})
    stop_set = lgb.Dataset(
        x.iloc[stop], loss[stop], reference=train_set, params={"feature_pre_filter": False}
    )
    return lgb.train(
        params,
        train_set,
        num_boost_round=500,
        valid_sets=[stop_set],
        callbacks=[lgb.early_stopping(30, verbose=False)],
    )


def estimate_dle(
    model: DleModel,
    s: np.ndarray,
    frame: pl.DataFrame | None,
    confidence: float,
    n_boot: int,
    rng: np.random.Generator,
) -> DleEstimate:
    """DLE on a batch: its predictions ``s`` (checked, not empty) and its rows ``frame``.

    Raises:
        DataError: no rows, or not one row per prediction.
        SchemaError: a feature the batch lacks.
    """
    if frame is None or frame.height != len(s):
        got = "no rows" if frame is None else f"{frame.height} rows"
        raise DataError(f"DLE needs the batch's rows with its {len(s)} predictions, got {got}")
    x = model.columns.design(frame, s)
    predicted = np.mean([m.predict(x) for m in model.loss_models], axis=0)
    return estimate_losses(model, np.clip(predicted, 0.0, None), confidence, n_boot, rng)


def estimate_losses(
    model: DleModel,
    predicted: np.ndarray,
    confidence: float,
    n_boot: int,
    rng: np.random.Generator,
) -> DleEstimate:
    """The metric of the predicted losses, and the residual bootstrap's interval: each
    replicate adds to each row's predicted loss the residual of a reference row of the same
    predicted-loss stratum, drawn with replacement."""
    n = len(predicted)
    stratum = np.searchsorted(model.bin_edges, predicted, side="right")
    step = max(1, min(n_boot, MAX_CELLS // max(n, 1)))
    reps = []
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        noise = np.empty((b, n))
        for k, pool in enumerate(model.residual_bins):
            rows = np.flatnonzero(stratum == k)
            if len(rows):
                noise[:, rows] = pool[rng.integers(0, len(pool), (b, len(rows)))]
        # clipped after averaging: clipping each row's negative draw would bias the mean up
        reps.append(_from_loss(model.metric, np.clip((predicted + noise).mean(axis=1), 0, None)))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(np.concatenate(reps), [alpha, 1 - alpha])
    value = float(_from_loss(model.metric, np.asarray(predicted.mean())))
    return DleEstimate(value, float(low), float(high), n)
