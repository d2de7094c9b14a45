"""Cron expressions, time zones and batch sources of schedules, checked without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from driftpilot.errors import ConfigError
from driftpilot.schedules import (
    GlobSource,
    Payload,
    ScheduleSpec,
    ScheduleUpdate,
    check_glob,
    cron_trigger,
)

SUNDAY = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)  # a Sunday noon


def next_fires(expression: str, tz: str = "UTC", n: int = 3) -> list[datetime]:
    trigger = cron_trigger(expression, tz)
    out: list[datetime] = []
    previous = None
    moment = SUNDAY.astimezone(ZoneInfo(tz))
    for _ in range(n):
        fire = trigger.get_next_fire_time(previous, moment)
        assert fire is not None
        out.append(fire)
        previous, moment = fire, fire
    return out


@pytest.mark.parametrize(
    ("weekday", "expected"),
    [
        ("0", {"Sun"}),
        ("7", {"Sun"}),
        ("1", {"Mon"}),
        ("1-5", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("mon-fri", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("5-7", {"Fri", "Sat", "Sun"}),
        ("*/3", {"Sun", "Wed", "Sat"}),
        ("6,0", {"Sat", "Sun"}),
    ],
)
def test_weekdays_count_as_crontab_does(weekday: str, expected: set[str]) -> None:
    """APScheduler 3 counts 0 as Monday; a crontab's 0 (and 7) is Sunday."""
    days = {f.strftime("%a") for f in next_fires(f"0 6 * * {weekday}", n=14)}
    assert days == expected


def test_every_minute_and_time_zones() -> None:
    minutes = next_fires("* * * * *", n=3)
    assert [(f.hour, f.minute, f.second) for f in minutes] == [(12, 0, 0), (12, 1, 0), (12, 2, 0)]
    paris = next_fires("30 6 * * *", "Europe/Paris", n=1)[0]
    assert (paris.hour, paris.minute) == (6, 30)
    assert paris.utcoffset() is not None and paris.astimezone(UTC).hour == 5  # CET in November


@pytest.mark.parametrize(
    ("expression", "tz", "message"),
    [
        ("* * * *", "UTC", "has 4 fields; give 5"),
        ("* * * * * *", "UTC", "has 6 fields"),
        ("60 * * * *", "UTC", "invalid cron schedule"),
        ("* 24 * * *", "UTC", "invalid cron schedule"),
        ("0 0 30 2 *", "UTC", "never fires"),
        ("0 0 1 * 1", "UTC", "not both"),
        ("* * * * 8", "UTC", "not 0-7 or sun-sat"),
        ("* * * * 5-1", "UTC", "backwards"),
        ("last * * * *", "UTC", "characters cron does not allow"),
        ("* * * * *", "Mars/Olympus", "unknown time zone"),
        ("* * * * *", "../etc/passwd", "unknown time zone"),
        ("* * * * *", "", "unknown time zone"),
    ],
)
def test_bad_schedules_are_clear_errors(expression: str, tz: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cron_trigger(expression, tz)


def test_spec_validation_names_the_problem() -> None:
    payload = Payload(model="flights", source=GlobSource(glob="in/*.csv"))
    spec = ScheduleSpec(schedule="*/15 * * * *", timezone="Asia/Tokyo", payload=payload)
    assert spec.enabled and spec.multitask_strategy == "reject"
    with pytest.raises(ValidationError, match="unknown time zone"):
        ScheduleSpec(schedule="* * * * *", timezone="Nowhere/City", payload=payload)
    with pytest.raises(ValidationError, match="give 5"):
        ScheduleSpec(schedule="* * *", payload=payload)
    with pytest.raises(ValidationError, match="multitask_strategy"):
        ScheduleSpec(schedule="* * * * *", payload=payload, multitask_strategy="interrupt")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):  # one source, of a known kind
        Payload.model_validate({"model": "flights", "source": {"glob": "*.csv", "dataset": "x"}})
    with pytest.raises(ValidationError, match="unknown time zone"):
        ScheduleUpdate(timezone="Mars/Olympus")
    assert ScheduleUpdate(enabled=False).model_dump(exclude_unset=True) == {"enabled": False}


@pytest.mark.parametrize(
    "pattern",
    [
        "../*.csv",
        "/etc/*.csv",
        "~/x/*.csv",
        "a\\b.csv",
        "in/../../x.csv",
        " ",
        "a\x00",
        "a**/x.csv",
    ],
)
def test_globs_stay_under_their_root(pattern: str) -> None:
    with pytest.raises(ConfigError, match="relative"):
        check_glob(pattern)
    with pytest.raises(ValidationError):
        GlobSource(glob=pattern)


def test_safe_globs_pass() -> None:
    for pattern in ("*.parquet", "flights/**/*.csv", "2013-*.csv"):
        assert check_glob(pattern) == pattern
