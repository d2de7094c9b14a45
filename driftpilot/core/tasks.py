"""What a model predicts (its task) and how its quality is measured (its metrics).

Three tasks: ``binary`` (a score per row: P(label is the positive class)), ``multiclass`` (a
probability per class per row) and ``regression`` (a number per row). Each metric belongs to
one or more tasks and knows its direction, so "better" and "a drop" mean the same thing for a
ROC AUC, a log loss and an RMSE:

==========  =========================================  =========  ==============  ========
task        metric                                     better     needs scores    change
==========  =========================================  =========  ==============  ========
binary      roc_auc, pr_auc                            higher     probabilities   points
binary      log_loss                                   lower      probabilities   points
binary      f1 (at 0.5)                                higher     labels          points
multiclass  roc_auc (macro one-vs-rest)                higher     probabilities   points
multiclass  log_loss                                   lower      probabilities   points
multiclass  macro_f1                                   higher     labels          points
regression  rmse, mae                                  lower      predictions     share
regression  r2                                         higher     predictions     points
==========  =========================================  =========  ==============  ========

A change in a bounded metric is read in points (ROC AUC 0.80 -> 0.78 is a drop of 0.02). RMSE
and MAE carry the target's unit, so their change is read as a share of the value it is
compared with (RMSE 10.0 -> 10.5 minutes is a drop of 0.05): the policy's thresholds
(``max_metric_drop: 0.02``) then mean the same for a delay in minutes and a price in dollars.

Nothing here imports NumPy: the numbers are computed in ``tools.metrics``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from driftpilot.core.errors import ConfigError

Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[Task, ...] = get_args(Task)


@dataclass(frozen=True)
class Metric:
    """One metric: its name, the tasks it serves, its direction and how a change is read."""

    name: str
    tasks: tuple[Task, ...]
    higher_is_better: bool
    needs_probabilities: bool
    relative: bool = False  # a change is a share of the compared value (unit-bearing metrics)
    chance: float | None = None  # what a model that knows nothing scores, when fixed
    label: str = ""

    def gain(self, before: float, after: float) -> float:
        """How much better ``after`` is than ``before`` (> 0 better, < 0 worse).

        In points for bounded metrics; as a share of ``before`` for relative ones."""
        diff = after - before if self.higher_is_better else before - after
        if self.relative:  # from a perfect 0, any change is an infinite share, with its sign
            return diff / abs(before) if before else math.copysign(math.inf, diff) if diff else 0.0
        return diff

    def drop(self, baseline: float, now: float) -> float:
        """How much worse ``now`` is than ``baseline`` (> 0 worse): ``-gain(baseline, now)``."""
        return -self.gain(baseline, now)


_ALL: tuple[Metric, ...] = (
    Metric("roc_auc", ("binary", "multiclass"), True, True, chance=0.5, label="ROC AUC"),
    Metric("pr_auc", ("binary",), True, True, label="PR AUC"),
    Metric("log_loss", ("binary", "multiclass"), False, True, label="log loss"),
    Metric("f1", ("binary",), True, False, label="F1"),
    Metric("macro_f1", ("multiclass",), True, False, label="macro F1"),
    Metric("rmse", ("regression",), False, False, relative=True, label="RMSE"),
    Metric("mae", ("regression",), False, False, relative=True, label="MAE"),
    Metric("r2", ("regression",), True, False, chance=0.0, label="R²"),
)
METRICS: dict[str, Metric] = {m.name: m for m in _ALL}

PRIMARY: dict[Task, str] = {"binary": "roc_auc", "multiclass": "roc_auc", "regression": "rmse"}
"""The primary metric of each task when the policy names none."""

# The early-stopping loss each task's boosters watch on the validation split.
TRAINING_LOSS: dict[Task, str] = {
    "binary": "log_loss",
    "multiclass": "log_loss",
    "regression": "rmse",
}


def metrics_for(task: Task) -> list[str]:
    """The metrics a task's models are measured by, primary first."""
    names = [m.name for m in _ALL if task in m.tasks]
    return sorted(names, key=lambda n: n != PRIMARY[task])


def metric(name: str, task: Task) -> Metric:
    """The metric ``name`` of ``task``.

    Raises:
        ConfigError: an unknown task, or a metric that does not measure this task.
    """
    check_task(task)
    found = METRICS.get(name)
    if found is None or task not in found.tasks:
        raise ConfigError(
            f"metric {name!r} does not measure a {task} model; choose one of {metrics_for(task)}"
        )
    return found


def check_task(task: str) -> Task:
    """``task`` if it is one of the three, else a ConfigError naming them."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    return task
