"""What a challenger did in a drift episode, as the episode records it: the attempt a run
tried, its outcome, and why it lost as a reason code of fixed words and numbers.

Split from ``driftpilot.core.episodes`` (which folds these attempts into episodes) so the
reason codes the drift analyst's LLM reads live in one place. Pure functions: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from driftpilot.core.errors import TRAINER_FAILURES
from driftpilot.core.metric_text import higher_is_better, quote
from driftpilot.core.tasks import METRICS

ATTEMPTS = ("retrain", "recalibrate")  # drift actions that fit a challenger


def number(value: Any) -> float | None:
    """A float, or None for anything that is not a finite number (missing keys, None, bools)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


# -- what a challenger did -----------------------------------------------------------------------


def attempt(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The retrain (or recalibration) a completed run tried, with its outcome: ``rejected``,
    ``training_defect`` or ``failed`` (it lost), ``promoted``, or ``pending`` (won on the
    holdout, no promotion yet: waiting for or refused by a person). None: nothing tried."""
    drift = summary.get("drift") or {}
    if drift.get("action") not in ATTEMPTS:
        return None
    retraining = summary.get("retraining") or {}
    evaluation = summary.get("evaluation") or {}
    metric = _metric_name(
        evaluation.get("judged_on") or evaluation.get("metric") or drift.get("metric")
    )
    kind = retraining.get("kind")
    tried: dict[str, Any] = {
        "run_id": str(summary.get("run_id") or ""),
        "kind": kind if kind in ATTEMPTS else drift.get("action"),
        "family": _family(retraining.get("family")),
        "metric": metric,
        "gain": number(evaluation.get("gain")),
        "ci_low": number(evaluation.get("ci_low")),
    }
    defect = evaluation.get("training_defect")
    if retraining.get("failed"):
        reason = retraining.get("reason")
        tried.update(outcome="failed", reason=reason if reason in FAILURE_CODES else None)
    elif isinstance(defect, Mapping) and defect:
        tried.update(outcome="training_defect")
        tried.update({k: number(defect.get(k)) for k in _DEFECT_NUMBERS})
        tried["metric"] = _metric_name(defect.get("metric")) or metric
    elif evaluation.get("action") == "reject":
        tried.update(outcome="rejected")
    elif (summary.get("promotion") or {}).get("status") == "promoted":
        tried.update(outcome="promoted")
    elif evaluation.get("action") == "promote":
        tried.update(outcome="pending")
    else:
        tried.update(outcome="unknown")
    tried["why"] = why_of(tried)
    return tried


_DEFECT_NUMBERS = ("holdout", "valid", "chance", "valid_chance", "gap", "max_gap")
_OUTCOMES = ("rejected", "training_defect", "failed", "promoted", "pending", "unknown")
_SAFE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,80}")


def why_of(tried: Mapping[str, Any]) -> str:
    """Why an attempt ended as it did: a reason code of fixed words and the attempt's
    numbers (see ``FAILURE_CODES``)."""
    outcome = tried.get("outcome")
    if outcome == "failed":
        return _failed_code(tried.get("kind"), tried.get("reason"))
    if outcome == "training_defect":
        return _defect_code(tried)
    if outcome == "rejected":
        return _rejected_code(tried)
    fixed = {"promoted": "promoted", "pending": "won on the holdout, not promoted"}
    return fixed.get(str(outcome), "no evaluation recorded")


def clean_tried(tried: Mapping[str, Any]) -> dict[str, Any]:
    """A stored attempt with only its codes, names and numbers kept and its ``why`` written
    again from them: an episode stored by an earlier version quoted the trainer's message."""
    outcome = tried.get("outcome")
    reason = tried.get("reason")
    run_id = tried.get("run_id")
    clean: dict[str, Any] = {
        "run_id": run_id if isinstance(run_id, str) and _SAFE_ID.fullmatch(run_id) else "",
        "kind": tried.get("kind") if tried.get("kind") in ATTEMPTS else None,
        "family": _family(tried.get("family")),
        "metric": _metric_name(tried.get("metric")),
        "gain": number(tried.get("gain")),
        "ci_low": number(tried.get("ci_low")),
        "outcome": outcome if outcome in _OUTCOMES else "unknown",
    }
    if clean["outcome"] == "failed":
        clean["reason"] = reason if reason in FAILURE_CODES else None
    if clean["outcome"] == "training_defect":
        clean.update({k: number(tried.get(k)) for k in _DEFECT_NUMBERS})
    clean["why"] = why_of(clean)
    return clean


LOST = ("rejected", "training_defect", "failed")


# Why an attempt lost, as the drift analyst's LLM reads it (``tried[].why``, the diagnosis):
# a reason code of fixed words and numbers, never free text. A trainer's message and an
# exception's text are the owner's (they can quote cell values): the run's summary and its
# audit record keep them, the episode does not.
FAILURE_CODES = frozenset(TRAINER_FAILURES) | {"unfit", "unsupported"}


def _failed_code(kind: Any, reason: Any) -> str:
    """``trainer_failed: timeout`` or ``recalibrate_failed: unsupported``: the failure's
    code when it is one of the known ones (``TRAINER_FAILURES``, the recalibration's)."""
    code = "recalibrate_failed" if kind == "recalibrate" else "trainer_failed"
    return f"{code}: {reason}" if reason in FAILURE_CODES else code


def _defect_code(defect: Mapping[str, Any]) -> str:
    """``training_defect: holdout 0.290 < chance 0.500`` and/or ``holdout 0.610 vs
    validation 0.930 (gap 0.320 > 0.25)``: what the evaluator measured, in numbers only. An
    RMSE's or MAE's gap is read on the validation's scale: the validation's chance level is
    then shown beside it (``validation 30.0, chance there 51.6 (gap 0.550 > 0.25)``)."""
    holdout, valid = number(defect.get("holdout")), number(defect.get("valid"))
    chance, gap = number(defect.get("chance")), number(defect.get("gap"))
    max_gap = number(defect.get("max_gap"))
    higher = higher_is_better(_metric_name(defect.get("metric")))
    parts = []
    if holdout is not None and chance is not None:
        worse = holdout < chance if higher else holdout > chance
        parts.append(
            f"holdout {quote(holdout)} {'<' if higher else '>'} chance {quote(chance)}"
            if worse
            else f"holdout {quote(holdout)}, chance {quote(chance)}"
        )
    elif holdout is not None:
        parts.append(f"holdout {quote(holdout)}")
    if valid is not None:
        words = f"validation {quote(valid)}"
        # RMSE, MAE: the gap was read on the validation's scale (chance there, valid_chance)
        valid_chance = number(defect.get("valid_chance"))
        if valid_chance is not None:
            words += f", chance there {quote(valid_chance)}"
        if gap is not None:
            words += f" (gap {quote(gap)}" + (f" > {max_gap:g})" if max_gap is not None else ")")
        parts.append(words)
    return "training_defect: " + (", ".join(parts) or "flagged by the evaluator")


def _metric_name(name: Any) -> str | None:
    """A metric name the registry knows (None: anything else, which is not shown)."""
    return name if isinstance(name, str) and name in METRICS else None


def _rejected_code(tried: Mapping[str, Any]) -> str:
    """``rejected: gain -0.030 roc_auc [-0.080, ...]``: the gain and its interval's lower bound."""
    gain, low = tried.get("gain"), tried.get("ci_low")
    if gain is None:
        return "rejected"
    words = f"rejected: gain {quote(gain, signed=True)} {tried.get('metric') or ''}".rstrip()
    if low is not None:
        words += f", interval lower bound {quote(low, signed=True)} (not above zero)"
    return words


_FAMILY = re.compile(r"[A-Za-z0-9_.:-]{1,40}")


def _family(family: Any) -> str | None:
    """A model family as recorded (``lightgbm``, ``trainer``, ``adopted:sklearn``); None for
    anything else (an adopted flavour's name is read from the owner's MLflow model)."""
    return family if isinstance(family, str) and _FAMILY.fullmatch(family) else None
