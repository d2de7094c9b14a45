"""What the drift analyst skips on real batches leaves the decision as measuring everything: a
trained home per task (binary ROC AUC, regression RMSE, multiclass macro ROC AUC; real flights,
real MLflow champions), the champion's performance on a January batch (like its training
months: no drop) and a July one (summer delays), measured under ``drift.measure: needed`` and
``all`` with the real ``performance``, give the same drift bounds under ``retrain: auto`` and
``never`` for drift and histories on both sides of the policy's thresholds. The skips show in
the slice with their reasons, and the numbers both read (the score, the drop) agree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from agents.context import RunContext
from agents.drift_measures import performance
from agents.drift_reading import drift_evidence
from driftpilot.core.policy import Policy
from driftpilot.core.policy_rules import DriftRules
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane

pytestmark = pytest.mark.integration

HISTORIES: list[dict[str, Any]] = [
    {"recent_signals": 0, "batches_since_retrain": None, "retrains": 0, "promotions": 0},
    {"recent_signals": 2, "batches_since_retrain": 3, "retrains": 2, "promotions": 2},
]
SHARES = [0.0, 0.45, 0.7]


def _batches(months: dict[str, pl.DataFrame], time_col: str) -> dict[str, pl.DataFrame]:
    jan = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=11)
    return {
        "january": jan.slice(6000, 2500).sort(time_col),  # beside the champion's 6,000/9,000
        "july": months["2013-07"].sample(n=2500, seed=5).sort(time_col),
    }


@pytest.mark.parametrize("key", ["flights", "flights_delay", "flights_delay_class"])
def test_the_skips_decide_as_measuring_everything_on_real_batches(
    key: str,
    trained_home: Callable[[str], Settings],
    months: dict[str, pl.DataFrame],
    tmp_path: Path,
) -> None:
    plane = ControlPlane(trained_home(key))
    try:
        champ = plane.ctx.champion(key)
        assert champ is not None
        time_col = plane.ctx.spec(key).time_col
        skipped: set[str] = set()
        for name, batch in _batches(months, time_col).items():
            path = tmp_path / f"{name}.parquet"
            batch.write_parquet(path)
            for mode in ("auto", "never"):
                slices: dict[str, dict[str, Any]] = {}
                policies: dict[str, Policy] = {}
                for measure in ("all", "needed"):
                    policy = Policy(drift=DriftRules(retrain=mode, measure=measure))
                    ctx = RunContext(plane.settings, plane.store, policy, plane.backend)
                    run_id = f"skips-{name}-{mode}-{measure}"
                    slices[measure] = performance(ctx, run_id, key, batch, champ, str(path))
                    policies[measure] = policy
                full, lean = slices["all"], slices["needed"]
                assert lean["score"] == pytest.approx(full["score"], abs=1e-12)
                assert lean.get("metric_drop") == full.get("metric_drop")
                assert "estimated_score" in full and "estimated_score" not in lean
                reasons = lean.get("skipped", {})
                assert "estimate" in reasons and ("interval" in reasons) == (
                    "score_low" not in lean
                )
                assert ("quick_retrain" in reasons) == (mode != "auto")
                skipped.update(reasons)
                for share in SHARES:
                    for history in HISTORIES:
                        want = policies["all"].drift_bounds(drift_evidence(share, full, history))
                        got = policies["needed"].drift_bounds(drift_evidence(share, lean, history))
                        assert got == want, (name, mode, share, history, full, lean)
        domain = {"domain_classifier"} if plane.backend.is_builtin else set()
        assert skipped == {"estimate", "interval", "quick_retrain", *domain}, skipped
    finally:
        plane.close()
