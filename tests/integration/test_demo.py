"""`make demo`'s job: the control loop over the 2013 flights with the builtin backend."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from driftpilot.demo import run_demo

pytestmark = pytest.mark.integration


def test_demo_tells_the_year(settings: Any) -> None:
    console = Console(record=True, width=140)
    result = run_demo(console, approve_as="dana")
    rows = {r["batch"]: r for r in result["rows"]}
    assert list(rows) == [f"2013-{m:02d}" for m in range(2, 13)]
    promoted = [r for r in result["rows"] if r["promoted"]]
    assert promoted, "the year has real drift: at least one promotion"
    # Every promotion went through the policy: automatic at low risk, else dana's approval.
    assert all(r["approved_by"] in ("policy:low-risk", "dana") for r in promoted)
    assert all(
        r["drift_share"] is not None and r["champion_auc"] is not None for r in result["rows"]
    )
    assert result["verify"].ok
    text = console.export_text()
    assert "audit verified" in text and "mlflow ui" in text
    if any(r["approved_by"] == "dana" for r in promoted):
        assert "Approved by dana" in text


def test_second_demo_gets_its_own_model(settings: Any, jan_sample: Any) -> None:
    from driftpilot.demo import _free_name
    from driftpilot.service import ControlPlane
    from tools.datasets import FLIGHTS

    plane = ControlPlane()
    assert _free_name(plane, "flights-demo") == "flights-demo"
    plane.add_model(
        "flights-demo",
        jan_sample,
        target=FLIGHTS.target,
        time_col=FLIGHTS.time_col,
        numeric=FLIGHTS.numeric,
        categorical=FLIGHTS.categorical,
    )
    assert _free_name(plane, "flights-demo") == "flights-demo-2"
