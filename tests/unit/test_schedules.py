"""Cron expressions (croniter, crontab semantics), time zones and batch sources of schedules,
checked without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from driftpilot.core.errors import ConfigError
from driftpilot.scheduling.cron import Cron, cron_trigger
from driftpilot.scheduling.sources import _at_or_before, unseen_batches
from driftpilot.scheduling.specs import (
    GlobSource,
    Payload,
    ScheduleSpec,
    ScheduleUpdate,
    check_glob,
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
    """A crontab's 0 and 7 are Sunday (APScheduler 3, used before, counted 0 as Monday)."""
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


def test_day_of_month_and_weekday_both_restricted_fire_on_either() -> None:
    """crontab ORs the two day fields when both are restricted: the 1st and every Monday."""
    days = {(f.day, f.strftime("%a")) for f in next_fires("0 0 1 * 1", n=8)}
    assert (1, "Tue") in days  # 2026-12-01, a Tuesday: the day of month alone
    assert {d for _, d in days} == {"Mon", "Tue", "Fri"}  # and Mondays; 2027-01-01 a Friday
    assert all(d == 1 or wd == "Mon" for d, wd in days)


PARIS = "Europe/Paris"  # CET/CEST: clocks go forward 2026-03-29 02:00, back 2026-10-25 03:00


def fires_between(cron: Cron, start: datetime, end: datetime) -> list[datetime]:
    out, at = [], start
    while (at := cron.next_after(at)) is not None and at <= end:  # type: ignore[assignment]
        out.append(at)
    return out


def test_a_daily_cron_fires_once_across_both_daylight_saving_changes() -> None:
    daily = Cron("30 2 * * *", PARIS)
    autumn = fires_between(
        daily, datetime(2026, 10, 24, 12, tzinfo=UTC), datetime(2026, 10, 26, 12, tzinfo=UTC)
    )
    # 02:30 happens twice on the 25th (CEST, then CET): one firing, at the first.
    assert [f.isoformat() for f in autumn] == [
        "2026-10-25T00:30:00+00:00",
        "2026-10-26T01:30:00+00:00",
    ]
    spring = fires_between(
        daily, datetime(2026, 3, 28, 12, tzinfo=UTC), datetime(2026, 3, 30, 12, tzinfo=UTC)
    )
    # 02:30 does not exist on the 29th: it fires once that day, right after the jump.
    assert [f.isoformat() for f in spring] == [
        "2026-03-29T01:00:00+00:00",
        "2026-03-30T00:30:00+00:00",
    ]
    # Due from the other side: the repeated 02:30 CET is not a new time to fire.
    fired = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert daily.due(fired, datetime(2026, 10, 25, 1, 31, tzinfo=UTC)) is None


def test_an_hourly_cron_follows_real_time_across_daylight_saving() -> None:
    hourly = Cron("0 * * * *", PARIS)
    autumn = fires_between(
        hourly,
        datetime(2026, 10, 24, 23, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 3, 30, tzinfo=UTC),
    )
    assert len(autumn) == 4 and len(set(autumn)) == 4  # 02:00 CEST and 02:00 CET both fire
    spring = fires_between(
        hourly, datetime(2026, 3, 28, 23, 30, tzinfo=UTC), datetime(2026, 3, 29, 3, 30, tzinfo=UTC)
    )
    assert [f.hour for f in spring] == [0, 1, 2, 3]  # one firing per real hour


def test_due_is_the_newest_cron_time_since_the_anchor() -> None:
    minutely = Cron("* * * * *", "UTC")
    assert minutely.due(SUNDAY - timedelta(minutes=1), SUNDAY) == SUNDAY  # a time is inclusive
    assert minutely.due(SUNDAY, SUNDAY + timedelta(seconds=59)) is None  # fired: not again
    later = SUNDAY + timedelta(minutes=5, seconds=10)
    assert minutely.due(SUNDAY, later) == SUNDAY + timedelta(minutes=5)  # coalesced
    paris = Cron("0 12 * * *", PARIS)  # noon in Paris is 11:00 UTC in November
    assert paris.due(SUNDAY - timedelta(days=1), SUNDAY) == SUNDAY - timedelta(hours=1)
