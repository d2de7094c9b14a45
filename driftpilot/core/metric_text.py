"""A model's metric in words, for people: its label, its direction and a value of it.

Every place that shows a model's score (the chat, the CLI, the labels view, the demo, the
evals) names the model's own metric and says which way is better, so "RMSE 8.4 (lower is
better)" is never read as a ROC AUC. Unknown names (a metric recorded by a newer version) are
shown as recorded rather than refused: a display must not fail on what it cannot name.
"""

from __future__ import annotations

from driftpilot.core.tasks import METRICS


def label(name: str | None) -> str:
    """The metric's label ("ROC AUC", "RMSE"); the name itself when it is not known."""
    found = METRICS.get(name or "")
    return found.label if found is not None and found.label else (name or "score")


def higher_is_better(name: str | None) -> bool:
    """The metric's direction; a name not known is taken as higher-is-better (scores)."""
    found = METRICS.get(name or "")
    return True if found is None else found.higher_is_better


def direction(name: str | None) -> str:
    """ "higher is better" or "lower is better"."""
    return "higher is better" if higher_is_better(name) else "lower is better"


def value(name: str | None, number: float | None) -> str:
    """A value of the metric: bounded metrics to 4 decimals, unit-bearing ones (RMSE, MAE) to
    4 significant digits (a delay RMSE of 38.21 minutes, a price RMSE of 0.01234)."""
    if number is None:
        return "-"
    found = METRICS.get(name or "")
    return format(number, ".4g" if found is not None and found.relative else ".4f")


def describe(
    name: str | None,
    number: float | None,
    low: float | None = None,
    high: float | None = None,
) -> str:
    """ "RMSE 8.412 [7.9, 8.9] (lower is better)": the label, the value, its interval when
    given, and the direction."""
    interval = ""
    if low is not None and high is not None:
        interval = f" [{value(name, low)}, {value(name, high)}]"
    return f"{label(name)} {value(name, number)}{interval} ({direction(name)})"
