"""A model's metric in words, for people: its label, its direction and a value of it.

Every place that shows a model's score (the chat, the CLI, the labels view, the demo, the
evals) names the model's own metric and says which way is better, so "RMSE 8.4 (lower is
better)" is never read as a ROC AUC. Unknown names (a metric recorded by a newer version) are
shown as recorded rather than refused: a display must not fail on what it cannot name.

``quote``, ``compare``, ``versus`` and ``gain_margin`` write a number beside the bound a rule
read it against, with the digits that keep each on its true side (the policy's rationales and
the explanations use them).
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


def quote(value: float, against: float = 0.0, digits: int = 3, signed: bool = False) -> str:
    """``value`` with ``digits`` decimals, or more when fewer would put the shown number on the
    other side of ``against`` (or on it): 0.0396 against 0.04 reads 0.0396, never 0.040, and a
    value just above zero never reads 0.000. Zero never reads -0.000."""
    return compare(value, against, digits=digits, signed=signed)[0]


def compare(
    value: float, bound: float, *, strict: bool = False, digits: int = 3, signed: bool = False
) -> tuple[str, str, str]:
    """``value``, the operator that holds, and ``bound``, as text a reader can check: a rule
    ``value >= bound`` (``strict``: ``value > bound``) reads ``>=`` or ``<`` (``>`` or ``<=``)
    from the numbers themselves, and both are shown with the digits that keep them on their
    true sides (a bound with a short exact spelling, as policy thresholds have, keeps it)."""
    value, bound = value + 0.0, bound + 0.0  # -0.0 + 0.0 is 0.0: no "-0.000"
    holds = value > bound if strict else value >= bound
    op = (">" if holds else "<=") if strict else (">=" if holds else "<")
    short = f"{bound:g}"
    exact = short if float(short) == bound else None
    sign = "+" if signed else ""
    truth = (value > bound) - (value < bound)
    for places in range(digits, 13):
        shown, against = f"{value:{sign}.{places}f}", exact or f"{bound:.{places}f}"
        if (float(shown) > float(against)) - (float(shown) < float(against)) == truth:
            return shown, op, against
    return f"{value:{sign}}", op, repr(bound)


def versus(
    value: float, bound: float, *, strict: bool = False, digits: int = 3, name: str = ""
) -> str:
    """``value op [name] bound``, e.g. ``0.050 >= retrain cost 0.04`` (see ``compare``)."""
    shown, op, against = compare(value, bound, strict=strict, digits=digits)
    return f"{shown} {op} {name + ' ' if name else ''}{against}"


def gain_margin(gain: float, half_width: float, ratio: float) -> str:
    """The risk rule's words for a gain against its interval: "small" (a thin margin) when it
    is under ``ratio`` half-widths, "large" (a sure one) otherwise, with the product quoted."""
    shown, op, need = compare(gain, ratio * half_width, digits=4, signed=True)
    size = "large" if op == ">=" else "small"
    return (
        f"gain {shown} is {size} against its interval: {op} {ratio:g} x its half-width "
        f"{half_width:.4f} = {need}"
    )
