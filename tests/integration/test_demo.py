"""`make demo`'s job: the control loop over the 2013 flights with the builtin backend, then
the second act's high-risk promotion waiting for a person. The whole year is opt-in (slow);
the default run tells a short year through the same code."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from rich.console import Console

from driftpilot.core.settings import Settings
from driftpilot.demo import run_demo
from driftpilot.runs.plane import ControlPlane
from tools.datasets import FLIGHTS, FLIGHTS_CACHE

pytestmark = pytest.mark.integration


@pytest.mark.slow  # ~7 min; test_demo_tells_a_short_year runs the same code every time
def test_demo_tells_the_year(settings: Any) -> None:
    console = Console(record=True, width=140)
    result = run_demo(console, approve_as="dana")
    _the_story_is_told(result, console, [f"2013-{m:02d}" for m in range(2, 13)])


def test_demo_tells_a_short_year(settings: Settings, flights_df: pl.DataFrame) -> None:
    """The demo on a flights table of January, February and July (the home's cached copy of
    the real one): the first champion on January, a year of February and July, and the second
    act (January's champion first checked on July), as ``make demo`` runs them."""
    assert settings.cache_dir is not None
    short = flights_df.filter(pl.col(FLIGHTS.time_col).dt.month().is_in([1, 2, 7]))
    short.write_parquet(settings.cache_dir / FLIGHTS_CACHE)  # what load_dataset reads
    console = Console(record=True, width=140)
    result = run_demo(console, approve_as="dana")
    _the_story_is_told(result, console, ["2013-02", "2013-07"])


def _the_story_is_told(result: dict[str, Any], console: Console, batches: list[str]) -> None:
    rows = {r["batch"]: r for r in result["rows"]}
    assert list(rows) == batches
    promoted = [r for r in result["rows"] if r["promoted"]]
    assert promoted, "the year has real drift: at least one promotion"
    # Every promotion went through the policy: automatic when it rated the run low risk,
    # else dana's approval.
    plane = ControlPlane()
    for row in promoted:
        tier = plane.get_run(row["run_id"]).summary["cicd"]["tier"]
        assert row["approved_by"] == ("policy:low-risk" if tier == "low" else "dana"), row
    assert all(
        r["drift_share"] is not None and r["champion_score"] is not None for r in result["rows"]
    )
    assert result["verify"].ok
    # The runs' reports were rendered after the decisions, before the audit was verified.
    assert {plane.report_status(r["run_id"]).status for r in result["rows"]} == {"ready"}
    text = console.export_text()
    assert "audit verified" in text and "mlflow ui" in text
    assert "Approved by dana" in text  # at least the second act's promotion
    late = result["act_two"]
    _the_policy_sent_act_two_to_a_person(late)
    # The end names the API, the chat and the audit commands (the act's run id to inspect).
    for command in (
        "driftpilot serve",
        "/docs",
        "driftpilot ui",
        f"driftpilot audit --run {late['run_id']}",
        "driftpilot audit --verify",
    ):
        assert command in text, command


def _the_policy_sent_act_two_to_a_person(late: dict[str, Any]) -> None:
    """The act's run paused at the real policy's high tier and dana's approval promoted it."""
    from agents.cicd import risk_inputs
    from driftpilot.store.models import Approval

    plane = ControlPlane()
    run = plane.get_run(late["run_id"])
    summary = run.summary
    # The tier is the default policy's own verdict on the run's numbers, not the demo's.
    champion_family = "lightgbm"  # the demo adds its models with add_model's default family
    inputs = risk_inputs(summary["evaluation"], summary["retraining"], champion_family)
    risk = plane.policy.assess_risk(inputs)
    assert risk.tier == "high" and late["tier"] == "high"
    assert risk.reasons == late["reasons"] and risk.reasons
    approvals = plane.store.list_rows(Approval, Approval.run_id == run.run_id, order=Approval.id)
    assert [(a.kind, a.principal, a.decision) for a in approvals] == [
        ("request", "driftpilot-demo", "pending"),
        ("decision", "dana", "approve"),
    ]
    assert run.outcome == "promoted" and late["approved_by"] == "dana"
    assert plane.model_view(late["model"]).champion == late["promoted"] == 2


def test_a_waiting_second_act_ends_with_its_approve_command() -> None:
    from driftpilot.demo import _next_steps

    waiting = {"run_id": "abc123", "status": "waiting_approval"}
    steps = [command for command, _ in _next_steps("sqlite:///m.db", waiting)]
    assert steps[0] == "driftpilot approve abc123 --as NAME"
    done = [c for c, _ in _next_steps("sqlite:///m.db", {**waiting, "status": "completed"})]
    assert not any(c.startswith("driftpilot approve") for c in done)


def test_a_failed_run_is_said_in_the_table() -> None:
    from driftpilot.demo import _result

    failed = {"promoted": None, "approved_by": None, "status": "failed", "outcome": "TuningError"}
    assert _result(failed) == "run failed: TuningError"
    waiting = {**failed, "status": "waiting_approval", "outcome": "waiting_approval"}
    assert _result(waiting) == "waiting for approval"


def test_second_demo_gets_its_own_model(settings: Any, jan_sample: Any) -> None:
    from driftpilot.demo import _free_name

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
