"""Evaluation tools: is the challenger really better than the champion?

Both models are scored on the *same* held-out recent rows; the difference of the metric is
given with a paired bootstrap confidence interval (the same resampled rows score both
models), so a gain whose interval includes zero can be told apart from a real one.

Every task and metric of ``driftpilot.core.tasks`` is compared the same way: the gain is in
``Metric.gain`` units (> 0 means the challenger is better; points for bounded metrics, a share
of the champion's value for RMSE and MAE), and the metrics themselves are those of
``tools.metrics`` (one implementation for the value, the interval and the paired gain).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import ConfigError, DataError, SchemaError
from driftpilot.core.tasks import Task
from driftpilot.core.tasks import metric as metric_info
from tools.drift import Scorer
from tools.metrics import divergence, encode_labels, paired_gains, value


class Comparison(BaseModel):
    """Champion vs challenger on one holdout. ``gain`` is signed so that > 0 is better."""

    metric: str = Field(description="Metric compared (see driftpilot.core.tasks).")
    task: Task = Field("binary", description="binary, multiclass or regression.")
    higher_is_better: bool = Field(True, description="Direction of the metric.")
    n_rows: int
    champion: float = Field(description="Champion's metric on the holdout.")
    challenger: float = Field(description="Challenger's metric on the holdout.")
    gain: float = Field(
        description="Improvement of challenger over champion (> 0 better; Metric.gain units: "
        "points, or a share of the champion's value for RMSE and MAE)."
    )
    ci_low: float = Field(description="Lower bound of the gain's confidence interval.")
    ci_high: float = Field(description="Upper bound of the gain's confidence interval.")
    confidence: float = Field(description="Confidence level of the interval.")
    n_boot: int
    significant: bool = Field(description="The interval excludes zero on the better side.")
    prediction_divergence: float = Field(
        description="How differently the two models score the rows (0 = identical): binary "
        "mean |dp|, multiclass mean total variation, regression mean |dy| / target std."
    )


def compare_models(
    champion: Scorer,
    challenger: Scorer,
    holdout: pl.DataFrame,
    target: str,
    *,
    task: Task = "binary",
    metric: str = "roc_auc",
    classes: Sequence[Any] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Score champion and challenger on the same holdout with a paired bootstrap CI.

    Args:
        champion: the serving model.
        challenger: the candidate.
        holdout: labelled recent rows neither model was trained on.
        target: label column (binary 0/1, class labels, or a number).
        task: binary, multiclass or regression.
        metric: a metric of the task (``driftpilot.core.tasks.metrics_for``).
        classes: multiclass: the class order of the champion's probability columns (default
            ``champion.classes``). A challenger with other classes (a class that appeared
            since) has its columns aligned to the union of both lists.
        n_boot: bootstrap resamples.
        confidence: interval level, e.g. 0.95.

    Raises:
        SchemaError: the target is missing.
        DataError: the holdout is empty, a classifier's holdout holds a single class, or the
            metric is undefined on it.
        ConfigError: a metric of another task.
    """
    if target not in holdout.columns:
        raise SchemaError(f"holdout lacks target column {target!r}")
    rows = holdout.filter(pl.col(target).is_not_null())
    if rows.height == 0:
        raise DataError("holdout has no labelled rows")
    if task != "regression" and rows[target].n_unique() < 2:
        raise DataError(f"holdout needs at least two classes; got {rows.height} rows of one class")
    s_champ, s_chall = champion.predict_scores(rows), challenger.predict_scores(rows)
    if task == "multiclass":
        own = list(classes if classes is not None else getattr(champion, "classes", []))
        other = list(getattr(challenger, "classes", own)) or own
        classes = [*own, *(c for c in other if c not in own)]
        s_champ, s_chall = _align(s_champ, own, classes), _align(s_chall, other, classes)
    y = encode_labels(rows[target], task, classes)
    return compare_scores(
        y,
        s_champ,
        s_chall,
        task=task,
        metric=metric,
        n_boot=n_boot,
        confidence=confidence,
        seed=seed,
    )


def _align(scores: np.ndarray, own: list[Any], classes: list[Any]) -> np.ndarray:
    """Probability columns of a model with classes ``own`` in the order of ``classes`` (a
    class the model does not know gets probability 0)."""
    if own == classes:
        return np.asarray(scores, dtype=float)
    out = np.zeros((len(scores), len(classes)))
    for j, c in enumerate(own):
        out[:, classes.index(c)] = scores[:, j]
    return out


def compare_scores(
    y: np.ndarray,
    s_champ: np.ndarray,
    s_chall: np.ndarray,
    *,
    task: Task = "binary",
    metric: str = "roc_auc",
    spread: float | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """``compare_models`` on precomputed scores (same rows, same order) and encoded labels
    (``tools.metrics.encode_labels``). ``spread``: the regression target's spread for the
    divergence (default the standard deviation of ``y``).

    Raises:
        DataError: the metric is undefined for either model on these rows.
        ConfigError: a metric of another task, or confidence outside (0, 1).
    """
    info = metric_info(metric, task)
    if not 0 < confidence < 1 or n_boot < 1:
        raise ConfigError(f"need 0 < confidence < 1 and n_boot >= 1, got {confidence}, {n_boot}")
    y = encode_labels(y, "binary") if task == "binary" else np.asarray(y)
    champ = value(info.name, task, y, s_champ)
    chall = value(info.name, task, y, s_chall)
    if champ is None or chall is None:
        raise DataError(f"{metric} is undefined on these {len(y)} rows (a single class?)")
    gain, reps = paired_gains(info.name, task, y, s_champ, s_chall, n_boot=n_boot, seed=seed)
    if not len(reps):
        raise DataError(f"no bootstrap replicate of the {metric} gain is defined")
    alpha = (1 - confidence) / 2
    low, high = (float(v) for v in np.quantile(reps, [alpha, 1 - alpha]))
    if task == "regression" and spread is None:
        spread = float(np.std(y))
    return Comparison(
        metric=info.name,
        task=task,
        higher_is_better=info.higher_is_better,
        n_rows=len(y),
        champion=champ,
        challenger=chall,
        gain=gain,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        n_boot=len(reps),
        significant=low > 0,
        prediction_divergence=divergence(task, s_champ, s_chall, spread),
    )
