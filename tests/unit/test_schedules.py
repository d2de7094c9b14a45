"""Cron expressions, time zones and batch sources of schedules, checked without a database."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from driftpilot.core.errors import ConfigError
from driftpilot.scheduling.scheduler import (
    GlobSource,
    Payload,
    ScheduleSpec,
    ScheduleUpdate,
    _at_or_before,
    check_glob,
    cron_trigger,
    unseen_batches,
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


MONTHS = [f"2013-{m:02d}" for m in range(1, 13)]


def test_a_dataset_schedule_starts_after_the_newest_seen_batch_and_skips_seen_ones() -> None:
    assert unseen_batches(MONTHS, set())[:2] == ["2013-01", "2013-02"]
    assert unseen_batches(MONTHS, {"2013-01"})[0] == "2013-02"  # the bootstrap's month
    # Seen out of order: after the newest seen, not back into the gap before it.
    assert unseen_batches(MONTHS, {"2013-01", "2013-05"})[0] == "2013-06"
    assert unseen_batches(MONTHS, set(MONTHS)) == []
    # An explicit start is kept, but a seen batch is never run again.
    assert unseen_batches(MONTHS, {"2013-01", "2013-03", "2013-05"}, "2013-02")[:3] == [
        "2013-02",
        "2013-04",
        "2013-06",
    ]


def test_a_batch_begins_before_the_trained_horizon_across_zones_and_kinds() -> None:
    paris = ZoneInfo("Europe/Paris")
    horizon = datetime(2013, 1, 31, 23, 0, tzinfo=paris)
    assert _at_or_before(datetime(2013, 1, 1, 5, 0, tzinfo=paris), horizon)
    assert not _at_or_before(datetime(2013, 2, 1, 0, 0, tzinfo=paris), horizon)
    # The same instant in UTC compares as an instant.
    assert _at_or_before(datetime(2013, 1, 31, 22, 0, tzinfo=UTC), horizon)
    assert not _at_or_before(datetime(2013, 1, 31, 22, 30, tzinfo=UTC), horizon)
    # Without a zone: wall-clock time in the other's zone.
    assert _at_or_before(datetime(2013, 1, 31, 23, 0), horizon)
    assert _at_or_before(3600.0, 7200) and not _at_or_before(7201, 7200.0)
    assert not _at_or_before(datetime(2013, 1, 1, tzinfo=UTC), 7200.0)  # kinds never compare
