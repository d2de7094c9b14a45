"""Training tools: fit a LightGBM or CatBoost model for any task on a window of data.

Binary and multiclass models are classifiers (log loss objectives; a multiclass model keeps its
``classes`` in the order of its probability columns); a regression model predicts a number
(L2 objective). ``TrainedModel.predict_scores`` returns the shape ``tools.metrics`` reads.

Categorical columns are handled natively by both families (LightGBM through pandas
categoricals with the training categories frozen, CatBoost through ``cat_features``).
Thread counts are explicit: on 2 cores, more than one thread inside tuning is slower.
Early stopping watches the task's loss (log loss, RMSE) on a validation split (the latest rows
when a time column is given, so validation mimics the future).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import ModelError, SchemaError
from driftpilot.core.tasks import Task
from tools.drift import PerformanceResult, score_predictions
from tools.metrics import class_list, encode_labels, spread_levels

Family = Literal["lightgbm", "catboost"]
ParamValue = int | float | str | bool
_MISSING = "__missing__"

# Called every ``report_every`` rounds with (round, validation loss); False stops fitting.
IterationHook = Callable[[int, float], bool]


class TrainSpec(BaseModel):
    """What to train: family, columns, hyper-parameters and the fitting budget."""

    family: Family = Field("lightgbm", description="Model family: 'lightgbm' or 'catboost'.")
    task: Task = Field("binary", description="'binary', 'multiclass' or 'regression'.")
    target: str = Field(description="Label column: 0/1, class labels, or a number.")
    numeric: list[str] = Field(default_factory=list, description="Numeric feature columns.")
    categorical: list[str] = Field(default_factory=list, description="Categorical feature columns.")
    time_col: str | None = Field(None, description="If set, validate on the latest rows.")
    params: dict[str, ParamValue] = Field(default_factory=dict, description="Family parameters.")
    valid_fraction: float = Field(0.2, gt=0, lt=0.9, description="Share of rows for validation.")
    max_rounds: int = Field(1000, ge=1, description="Upper bound of boosting rounds.")
    early_stopping_rounds: int = Field(50, ge=1, description="Stop after this many flat rounds.")
    threads: int = Field(1, ge=1, description="Threads used by the booster.")
    seed: int = Field(42, description="Random seed.")

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class TrainReport(BaseModel):
    """Outcome of one training run."""

    family: Family
    params: dict[str, ParamValue] = Field(description="Parameters actually used.")
    best_iteration: int = Field(description="Boosting rounds kept after early stopping.")
    n_train: int
    n_valid: int
    valid: PerformanceResult = Field(description="Metrics on the validation split.")
    valid_chance: dict[str, float] = Field(
        default_factory=dict,
        description="What a model that knows nothing scores on the validation split, per "
        "metric whose level depends on the labels' spread (regression: RMSE, MAE): the scale "
        "its validation score is read against.",
    )
    feature_importance: dict[str, float] = Field(description="Normalised gain per feature.")
    elapsed_s: float


@dataclass
class TrainedModel:
    """A fitted model with the column handling it was trained with."""

    spec: TrainSpec
    booster: Any
    categories: dict[str, list[str]] = field(default_factory=dict)
    report: TrainReport | None = None
    classes: list[Any] = field(default_factory=list)  # multiclass: the probability columns

    @property
    def family(self) -> Family:
        return self.spec.family

    @property
    def task(self) -> Task:
        return self.spec.task

    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
        """Scores for every row of ``frame`` (which must hold the feature columns): binary
        P(label = 1) ``(n,)``, multiclass probabilities ``(n, k)`` in ``classes`` order,
        regression predictions ``(n,)``."""
        missing = [c for c in self.spec.features if c not in frame.columns]
        if missing:
            raise SchemaError(f"cannot score: columns {missing} are missing")
        design = _design(frame, self.spec, self.categories)
        if self.family == "lightgbm" or self.task == "regression":
            return np.asarray(self.booster.predict(design), dtype=float)
        proba = np.asarray(self.booster.predict_proba(design), dtype=float)
        return proba[:, 1] if self.task == "binary" else proba

    def encode(self, labels: Any) -> np.ndarray:
        """The labels as the metrics read them (multiclass: index into ``classes``)."""
        return encode_labels(labels, self.task, self.classes)


DEFAULT_PARAMS: dict[Family, dict[str, ParamValue]] = {
    "lightgbm": {
        "learning_rate": 0.05,
        "num_leaves": 31,
        "min_child_samples": 20,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
    },
    "catboost": {"learning_rate": 0.08, "depth": 6, "l2_leaf_reg": 3.0},
}


def train_model(
    frame: pl.DataFrame,
    spec: TrainSpec,
    *,
    on_iteration: IterationHook | None = None,
    report_every: int = 10,
) -> TrainedModel:
    """Fit a model for ``spec.task`` on ``frame`` as described by ``spec``.

    The rows are split into train and validation (latest ``valid_fraction`` when
    ``time_col`` is set, otherwise a seeded random split); boosting stops early on the
    validation loss (log loss; RMSE for a regression). Returns the model with its ``report``
    (the task's validation metrics, best iteration, feature importance, wall time).

    Raises:
        SchemaError: a feature or the target column is missing, or the target does not fit the
            task (binary: 0/1; regression: numbers).
        ModelError: too few rows, or a single class in the training split.
    """
    _validate(frame, spec)
    started = time.perf_counter()
    train, valid = split_train_valid(frame, spec)
    categories = {c: _categories(train[c]) for c in spec.categorical}
    classes = class_list(frame[spec.target]) if spec.task == "multiclass" else []
    x_train, x_valid = (_design(part, spec, categories) for part in (train, valid))
    y_train, y_valid = (
        encode_labels(part[spec.target], spec.task, classes) for part in (train, valid)
    )
    params = {**DEFAULT_PARAMS[spec.family], **spec.params}
    fit = _fit_lightgbm if spec.family == "lightgbm" else _fit_catboost
    hook = _Every(on_iteration, report_every) if on_iteration else None
    booster, best_iteration, importance = fit(
        x_train, y_train, x_valid, y_valid, params, spec, hook, len(classes)
    )
    model = TrainedModel(spec=spec, booster=booster, categories=categories, classes=classes)
    valid_scores = model.predict_scores(valid)
    model.report = TrainReport(
        family=spec.family,
        params=params,
        best_iteration=best_iteration,
        n_train=train.height,
        n_valid=valid.height,
        valid=score_predictions(y_valid, valid_scores, task=spec.task),
        valid_chance=spread_levels(y_valid, spec.task),
        feature_importance=importance,
        elapsed_s=round(time.perf_counter() - started, 3),
    )
    return model


def _validate(frame: pl.DataFrame, spec: TrainSpec) -> None:
    needed = [*spec.features, spec.target, *([spec.time_col] if spec.time_col else [])]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise SchemaError(f"training data lacks columns {missing}")
    if not spec.features:
        raise SchemaError("no feature columns given")
    labels = frame[spec.target].drop_nulls()
    if spec.task == "binary" and not set(labels.unique().to_list()) <= {0, 1}:
        shown = sorted(labels.unique().to_list(), key=str)[:5]
        raise SchemaError(f"target {spec.target!r} of a binary model must be 0/1, found {shown}")
    if spec.task == "regression" and not labels.dtype.is_numeric():
        raise SchemaError(
            f"target {spec.target!r} of a regression must be numeric ({labels.dtype})"
        )
    if frame.height < 50:
        raise ModelError(f"too few rows to train: {frame.height} (need at least 50)")


def split_holdout(
    frame: pl.DataFrame, time_col: str, fraction: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows to train on and the latest ``fraction`` of them (by ``time_col``) held out:
    a model's score on rows later than everything it learned from is its out-of-time score.
    """
    rows = frame.sort(time_col)
    n_hold = max(1, int(rows.height * fraction))
    fit, holdout = rows.head(rows.height - n_hold), rows.tail(n_hold)
    return fit, holdout


def split_train_valid(frame: pl.DataFrame, spec: TrainSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train/validation split: the latest rows by ``time_col``, else a seeded shuffle."""
    rows = frame.filter(pl.col(spec.target).is_not_null())
    if spec.time_col:
        rows = rows.sort(spec.time_col)
    else:
        rows = rows.sample(fraction=1.0, shuffle=True, seed=spec.seed)
    n_valid = max(1, int(rows.height * spec.valid_fraction))
    train, valid = rows.head(rows.height - n_valid), rows.tail(n_valid)
    for name, part in (("train", train), ("validation", valid)):
        if part[spec.target].n_unique() < 2:
            what = "value" if spec.task == "regression" else "class"
            raise ModelError(f"the {name} split holds a single {what}; need at least two")
    return train, valid


def _categories(series: pl.Series) -> list[str]:
    return sorted(series.drop_nulls().cast(pl.String).unique().to_list())


def _design(frame: pl.DataFrame, spec: TrainSpec, categories: dict[str, list[str]]) -> Any:
    """The pandas matrix a booster sees; categoricals frozen to the training categories."""
    numeric = frame.select([pl.col(c).cast(pl.Float64) for c in spec.numeric]).to_pandas()
    for col in spec.categorical:
        values = frame[col].cast(pl.String)
        if spec.family == "lightgbm":
            numeric[col] = _frozen_categorical(values, categories[col])
        else:
            numeric[col] = values.fill_null(_MISSING).to_list()
    return numeric[spec.features]


def _frozen_categorical(values: pl.Series, categories: list[str]) -> Any:
    """``pandas.Categorical(values, categories)``, a value outside them (or null) missing,
    coded in Polars: four times faster than pandas hashing a list of Python strings."""
    import pandas as pd

    codes = values.replace_strict(
        categories, list(range(len(categories))), default=-1, return_dtype=pl.Int32
    ).fill_null(-1)
    return pd.Categorical.from_codes(codes.to_numpy(), categories=categories)


# Objective and the validation loss early stopping watches, per task.
_LIGHTGBM_OBJECTIVE: dict[Task, tuple[str, str]] = {
    "binary": ("binary", "binary_logloss"),
    "multiclass": ("multiclass", "multi_logloss"),
    "regression": ("regression", "rmse"),
}
_CATBOOST_LOSS: dict[Task, str] = {
    "binary": "Logloss",
    "multiclass": "MultiClass",
    "regression": "RMSE",
}


def _fit_lightgbm(
    x_train: Any,
    y_train: np.ndarray,
    x_valid: Any,
    y_valid: np.ndarray,
    params: dict[str, ParamValue],
    spec: TrainSpec,
    hook: _Every | None,
    n_classes: int,
) -> tuple[Any, int, dict[str, float]]:
    import lightgbm as lgb

    objective, loss = _LIGHTGBM_OBJECTIVE[spec.task]
    full = {
        **params,
        "objective": objective,
        "metric": loss,
        **({"num_class": n_classes} if spec.task == "multiclass" else {}),
        "verbose": -1,
        "num_threads": spec.threads,
        "seed": spec.seed,
        "deterministic": True,
        "force_row_wise": True,
    }
    train_set = lgb.Dataset(x_train, y_train, params={"feature_pre_filter": False})
    valid_set = lgb.Dataset(
        x_valid, y_valid, reference=train_set, params={"feature_pre_filter": False}
    )
    booster = lgb.train(
        full,
        train_set,
        num_boost_round=spec.max_rounds,
        valid_sets=[valid_set],
        callbacks=[
            lgb.early_stopping(spec.early_stopping_rounds, verbose=False),
            *([_lightgbm_hook(hook, loss)] if hook else []),
        ],
    )
    gains = booster.feature_importance(importance_type="gain")
    return booster, int(booster.best_iteration or spec.max_rounds), _normalise(spec.features, gains)


def _fit_catboost(
    x_train: Any,
    y_train: np.ndarray,
    x_valid: Any,
    y_valid: np.ndarray,
    params: dict[str, ParamValue],
    spec: TrainSpec,
    hook: _Every | None,
    n_classes: int,
) -> tuple[Any, int, dict[str, float]]:
    from catboost import CatBoostClassifier, CatBoostRegressor, Pool

    loss = _CATBOOST_LOSS[spec.task]
    estimator = CatBoostRegressor if spec.task == "regression" else CatBoostClassifier
    model = estimator(
        **params,
        iterations=spec.max_rounds,
        loss_function=loss,
        thread_count=spec.threads,
        random_seed=spec.seed,
        verbose=False,
        allow_writing_files=False,
        early_stopping_rounds=spec.early_stopping_rounds,
        # Every class the model knows gets its column, even one absent from the training split
        # (a class that only appears in the latest rows): columns stay in ``classes`` order.
        **({"class_names": list(range(n_classes))} if spec.task == "multiclass" else {}),
    )
    cats = spec.categorical or None
    model.fit(
        Pool(x_train, y_train, cat_features=cats),
        eval_set=Pool(x_valid, y_valid, cat_features=cats),
        use_best_model=True,
        callbacks=[_CatBoostHook(hook, loss)] if hook else None,
    )
    gains = model.get_feature_importance()
    return model, int(model.get_best_iteration() or 0) + 1, _normalise(spec.features, gains)


def _normalise(names: list[str], gains: Any) -> dict[str, float]:
    values = np.asarray(gains, dtype=float)
    total = values.sum() or 1.0
    pairs = sorted(zip(names, values / total, strict=True), key=lambda p: -p[1])
    return {name: round(float(v), 5) for name, v in pairs}


class _Every:
    """Forward every n-th round's validation loss to a hook; remember a stop request."""

    def __init__(self, hook: IterationHook, every: int) -> None:
        self.hook, self.every, self.stopped = hook, max(1, every), False

    def __call__(self, iteration: int, loss: float) -> bool:
        if (iteration + 1) % self.every == 0 and not self.hook(iteration + 1, loss):
            self.stopped = True
        return not self.stopped


def _lightgbm_hook(hook: _Every, metric: str) -> Callable[[Any], None]:
    import lightgbm as lgb

    def callback(env: Any) -> None:
        loss = next(v for _, name, v, _ in env.evaluation_result_list if name == metric)
        if not hook(env.iteration, float(loss)):
            raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)

    callback.order = 40  # type: ignore[attr-defined]  # after early stopping's bookkeeping
    return callback


class _CatBoostHook:
    def __init__(self, hook: _Every, loss: str) -> None:
        self.hook, self.loss = hook, loss

    def after_iteration(self, info: Any) -> bool:
        loss = info.metrics["validation"][self.loss][-1]
        return self.hook(info.iteration - 1, float(loss))
