"""Words chosen from the numbers they quote: the agents' deterministic rationales.

The builtin backend and every LLM fallback explain a decision with a template. A template with
one wording per branch can state the opposite of its own numbers (an interval wholly below zero
once read "does not exclude zero"), so here each phrase is picked by the very numbers it quotes,
and every number is shown with the digits that keep it on its true side of the bound it is
read against (``driftpilot.core.metric_text.compare``). All functions are pure.
"""

from __future__ import annotations

from typing import Literal

from driftpilot.core.metric_text import compare, gain_margin, quote
from driftpilot.core.tasks import METRICS, Metric

Side = Literal["above", "below", "straddles"]


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 row``, ``2 rows``, ``0 rows``."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def signed(value: float, digits: int = 4) -> str:
    """``+0.0210`` / ``-0.0536``: a non-zero value never reads as zero, zero never as -0."""
    return quote(value, 0.0, digits, signed=True)


def interval_side(low: float, high: float) -> Side:
    """Where an interval lies against zero; touching zero does not exclude it."""
    if low > 0:
        return "above"
    if high < 0:
        return "below"
    return "straddles"


def gain_verdict(low: float, high: float) -> str:
    """What a gain's interval says about the challenger."""
    side = interval_side(low, high)
    if side == "above":
        return "the challenger is better (the interval lies above zero)"
    if side == "below":
        return "the challenger is worse (the interval lies below zero)"
    return "no sure difference (the interval does not exclude zero)"


def describe_gain(
    gain: float, low: float, high: float, confidence: float, rows: int | None = None
) -> str:
    """``gain -0.0536 (95% CI -0.0741 to -0.0321, 900 holdout rows): the challenger is worse
    (the interval lies below zero)``."""
    held = f", {count(rows, 'holdout row')}" if rows is not None else ""
    return (
        f"gain {signed(gain)} ({confidence:.0%} CI {signed(low)} to {signed(high)}{held}): "
        f"{gain_verdict(low, high)}"
    )


def describe_margin(gain: float, low: float, high: float, ratio: float) -> str:
    """A thin or a sure margin: is the gain at least ``ratio`` half-widths of its interval
    (the risk policy's ``min_gain_to_halfwidth``)?"""
    half_width = (high - low) / 2
    sure = compare(gain, ratio * half_width, digits=4)[1] == ">="
    return f"{'sure' if sure else 'thin'} margin: {gain_margin(gain, half_width, ratio)}"


def _bound_words(low: float, sure: str, unsure: str) -> str:
    """``lower bound 0.0100 > 0: <sure>`` or ``lower bound -0.0040 <= 0: <unsure>``."""
    shown, op, zero = compare(low, 0.0, strict=True, digits=4)
    return f"lower bound {shown} {op} {zero}: {sure if op == '>' else unsure}"


def change_unit(info: Metric) -> str:
    """How a drop or gain of ``info`` is counted: points, or a share of the compared value."""
    return f"a share of the {info.label}" if info.relative else f"{info.label} points"


def describe_drop(
    drop: float, low: float, info: Metric = METRICS["roc_auc"], *, estimated: bool = False
) -> str:
    """The champion's metric against its baseline, in the metric's own words and direction:
    a positive ``metric_drop`` is worse (ROC AUC fell, RMSE rose), a negative one better; a
    relative metric's change is shown in percent (``RMSE rose 6.00% above its baseline``). The
    lower bound says whether the worsening is sure."""
    subject = f"{'estimated ' if estimated else ''}{info.label}"
    shown = quote(drop, 0.0, 4)
    size = f"{quote(abs(drop) * 100, 0.0, 2)}%" if info.relative else quote(abs(drop), 0.0, 4)
    # The metric moves up when it got better and higher is better, or worse and lower is.
    up = (drop < 0) == info.higher_is_better
    if drop:
        moved = f"{subject} {'rose' if up else 'fell'} {size} {'above' if up else 'below'} "
        moved += f"its baseline ({'worse' if drop > 0 else 'better'})"
    else:
        moved = f"{subject} equals its baseline"
    bound = _bound_words(low, "surely worse", "not surely worse")
    return f"metric_drop={shown}: {moved} ({bound})"


def describe_fresh_gain(gain: float, low: float, info: Metric = METRICS["roc_auc"]) -> str:
    """What a quick retrain wins (or loses) over the champion on the holdout, in the metric's
    gain units (points, or a share of the champion's score for RMSE/MAE)."""
    shown = quote(gain, 0.0, 4)
    unit = f" ({change_unit(info)})"
    if gain > 0:
        what = f"a quick retrain would win fresh_gain={shown}{unit} on the holdout"
    elif gain < 0:
        lost = quote(-gain, 0.0, 4)
        what = f"a quick retrain would lose {lost} (fresh_gain={shown}{unit}) on the holdout"
    else:
        what = f"a quick retrain would win nothing (fresh_gain={shown}) on the holdout"
    return f"{what} ({_bound_words(low, 'a sure win', 'not a sure win')})"
