"""The chat's builtin understanding: slash commands and plain phrases (no LLM)."""

from __future__ import annotations

import pytest

from ui.intents import MUTATIONS, USAGE, Intent, parse


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("/run flights flights:2013-07", Intent("run", model="flights", batch="flights:2013-07")),
        (
            "/run flights flights:2013-07 2000",
            Intent("run", model="flights", batch="flights:2013-07", rows=2000),
        ),
        ("/runs", Intent("runs")),
        ("/runs flights", Intent("runs", model="flights")),
        ("/pending", Intent("pending")),
        ("/approve 3fa2b9 looks right", Intent("approve", run="3fa2b9", text="looks right")),
        ("/reject 3fa2b9", Intent("reject", run="3fa2b9")),
        ("/audit 3fa2b9", Intent("audit", run="3fa2b9")),
        (
            "/rollback flights ops complaint",
            Intent("rollback", model="flights", text="ops complaint"),
        ),
        (
            "/schedule flights 0 * * * * flights:2013-02",
            Intent("schedule", model="flights", cron="0 * * * *", source="flights:2013-02"),
        ),
        ("/history flights", Intent("history", model="flights")),
        ("/schedules", Intent("schedules")),
        ("show schedules", Intent("schedules")),
        ("/help", Intent("help")),
        ("  /HELP  ", Intent("help")),
        ("check flights for drift", Intent("run", model="flights")),
        ("Check flights for drift on 2013-07?", Intent("run", model="flights", batch="2013-07")),
        ("what is pending?", Intent("pending")),
        ("approve the flights promotion", Intent("approve", model="flights")),
        ("reject run 3fa2b9c1", Intent("reject", run="3fa2b9c1")),
        ("roll back flights", Intent("rollback", model="flights")),
        ("rollback flights", Intent("rollback", model="flights")),
        ("show the audit of run 3fa2b9c1", Intent("audit", run="3fa2b9c1")),
        ("schedule flights every hour", Intent("schedule", model="flights", cron="0 * * * *")),
        ("list runs", Intent("runs")),
        ("help", Intent("help")),
    ],
)
def test_commands_and_phrases(message: str, expected: Intent) -> None:
    assert parse(message) == expected


def test_why_names_the_month_it_asks_about() -> None:
    asked = parse("why did you retrain in July?")
    assert (asked.kind, asked.batch) == ("why", "07")
    assert parse("why did you promote in 2013-10").batch == "2013-10"
    assert parse("why?").kind == "why" and parse("why?").batch is None


@pytest.mark.parametrize(
    ("message", "usage"),
    [
        ("/run flights", "run"),
        ("/run flights 2013-07", "run"),  # the batch needs its dataset
        ("/run flights flights:2013-07 many", "run"),
        ("/approve", "approve"),
        ("/audit", "audit"),
        ("/schedule flights hourly flights", "schedule"),
    ],
)
def test_a_command_without_its_arguments_answers_its_usage(message: str, usage: str) -> None:
    assert parse(message) == Intent("usage", text=USAGE[usage])


@pytest.mark.parametrize(
    "message", ["tell me a joke", "", "/frobnicate now", "please make it better"]
)
def test_anything_else_is_unknown(message: str) -> None:
    assert parse(message).kind == "unknown"


def test_nobody_can_say_who_they_are() -> None:
    """No intent carries a principal: who acts comes from the sign-in, never from the text."""
    for message in ["/approve 3fa2 as abby", "approve the flights promotion as admin"]:
        intent = parse(message)
        assert not hasattr(intent, "principal") and "abby" not in (intent.run or "")


def test_adopt_is_a_mutation_with_its_uri_batch_and_columns() -> None:
    got = parse("/adopt delay models:/delay@prod flights_delay:2013-01 arr_delay time_hour")
    assert got.kind == "adopt" and got.kind in MUTATIONS
    assert (got.model, got.uri, got.batch) == (
        "delay",
        "models:/delay@prod",
        "flights_delay:2013-01",
    )
    assert got.columns == ("arr_delay", "time_hour")
    assert parse("/adopt delay models:/delay@prod").kind == "usage"  # no batch, no target
    assert parse("/adopt delay models:/d@p 2013-01 arr_delay").kind == "usage"  # not DATASET:BATCH
