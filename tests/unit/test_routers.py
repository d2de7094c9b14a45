"""Routers and the promotion gate fail closed: unknown values raise, never fall through."""

from __future__ import annotations

from typing import Any

import pytest

from driftpilot.core.errors import PolicyViolation
from driftpilot.core.policy import Policy
from graphs import state as routes


@pytest.mark.parametrize(
    ("router", "slice_", "key", "known"),
    [
        (routes.after_ingestion, "ingestion", "action", {"accept": "drift_analyst"}),
        (
            routes.after_drift,
            "drift",
            "action",
            {"retrain": "optimizer", "monitor": "report", "recalibrate": "recalibrate"},
        ),
        (routes.after_evaluation, "evaluation", "action", {"promote": "cicd", "reject": "report"}),
        (routes.after_cicd, "cicd", "tier", {"low": "promote", "high": "approval"}),
        (routes.after_approval, "approval", "decision", {"approve": "promote", "reject": "report"}),
    ],
)
def test_known_values_route_and_unknown_values_raise(
    router: Any, slice_: str, key: str, known: dict[str, str]
) -> None:
    for value, node in known.items():
        assert router({slice_: {key: value}}) == node
    for odd in ("medium", "", None, "HIGH", "approve "):
        with pytest.raises(PolicyViolation, match="refuses to route"):
            router({slice_: {key: odd}})


def test_only_low_promotes_without_an_approval() -> None:
    Policy.check_promotion("low", None)
    Policy.check_promotion("high", "bob")
    for tier in ("high", "medium", "critical", ""):
        with pytest.raises(PolicyViolation):
            Policy.check_promotion(tier, None)
    with pytest.raises(PolicyViolation, match="unknown risk tier"):
        Policy.check_promotion("medium", "bob")
    with pytest.raises(PolicyViolation, match="different action"):
        Policy.check_promotion("high", "bob", "the approval was given for a different action")
