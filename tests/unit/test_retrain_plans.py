"""After a rejected challenger the next attempt changes something the evidence points to;
the drift policy counts the model's history (signals, cooldown, yield) from run summaries."""

from __future__ import annotations

from typing import Any

from agents.drift_reading import history_counts
from agents.optimizer import default_plan, plan_after_rejections, rejected_attempts
from agents.retraining import window_plan
from driftpilot.core.policy import Policy


def attempt(family: str = "lightgbm", trials: int = 8, window: int = 2) -> dict[str, Any]:
    return {
        "drift": {"action": "retrain", "significant_drop": True},
        "optimizer": {"family": family, "n_trials": trials},
        "retraining": {"window": window},
        "evaluation": {"action": "reject"},
    }


PROMOTED = {**attempt(), "promotion": {"status": "promoted"}, "evaluation": {"action": "promote"}}
QUIET: dict[str, Any] = {"drift": {"action": "none"}}
WATCHED: dict[str, Any] = {"drift": {"action": "monitor", "material": True}}


def test_rejected_attempts_count_since_the_last_promotion() -> None:
    assert rejected_attempts([attempt(), PROMOTED, QUIET]) == []
    assert len(rejected_attempts([attempt(), PROMOTED, attempt(), QUIET, attempt()])) == 2


def test_first_a_wider_search_then_the_other_family() -> None:
    limits = Policy.load().optimizer
    plan = default_plan(limits, "lightgbm")
    assert plan_after_rejections(plan, limits, []) == plan
    once = plan_after_rejections(plan, limits, [attempt(trials=8)])
    assert (once.family, once.n_trials) == ("lightgbm", 16) and "rejected" in once.rationale
    twice = plan_after_rejections(plan, limits, [attempt(trials=8), attempt(trials=16)])
    assert twice.family == "catboost" and "2 challengers in a row" in twice.rationale


def test_the_window_follows_the_evidence() -> None:
    shifted = {"drift": {"material": True, "severity": "medium"}}
    noisy = {"drift": {"material": False, "severity": "medium"}}
    assert window_plan(2, 1, 6, noisy, []).window == 2
    narrow = window_plan(2, 1, 6, shifted, [attempt(window=4)])
    assert narrow.window == 2 and "latest data only" in narrow.rationale
    wide = window_plan(2, 1, 6, noisy, [attempt(window=2)])
    assert wide.window == 4 and "more data" in wide.rationale


def test_history_counts() -> None:
    past = [attempt(), PROMOTED, QUIET, WATCHED]
    counts = history_counts(past, persistence_n=3)
    assert counts == {
        "recent_signals": 1,  # the last two batches: quiet, then material drift
        "batches_since_retrain": 2,
        "retrains": 2,
        "promotions": 1,
    }
    assert history_counts([], 3)["batches_since_retrain"] is None
    # P(promotion) reads the latest four attempts only: old rejections age out.
    long = [attempt() for _ in range(6)] + [PROMOTED]
    assert history_counts(long, 3)["retrains"] == 4
    assert history_counts(long, 3)["promotions"] == 1
