"""Cron times of schedules: five-field crontab expressions in an IANA time zone, on croniter.

Semantics are crontab's: minute hour day-of-month month day-of-week; weekday 0 and 7 are
Sunday (names ``sun``-``sat`` and ``jan``-``dec`` are accepted); when both the day of month
and the day of week are restricted, a day matching either fires (crontab ORs them).

Times are evaluated in the schedule's zone (``zoneinfo``). Across a daylight-saving change:
a wall-clock time skipped in spring fires at the first instant after the gap (as cron runs
it when the clock jumps); a wall-clock time repeated in autumn fires once, at its first
occurrence, unless the hour field is a wildcard (``*``, ``*/2``): such a cron follows real
time and fires in both the repeated hours.

A schedule is *due* when its newest cron time at or before now is later than its anchor
(its last firing, or its last change): ``Cron.latest(now) > anchor``. The cron times in
between coalesce into that newest one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from driftpilot.core.errors import ConfigError

_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_FIELD = re.compile(r"^[0-9*,/-]+$")
_NAMED_FIELD = re.compile(r"^[0-9A-Za-z*,/-]+$")
_TINY = timedelta(microseconds=1)
_MAX_SKIPS = 4  # repeated wall-clock times skipped in a row (one DST fold at most needs 1)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``.

    Raises:
        ConfigError: not an IANA time zone name.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"unknown time zone {name!r}: give an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from exc


def _weekday(token: str, *, upper: bool) -> int:
    names = {d: i for i, d in enumerate(_DAYS)}
    low = token.lower()
    if low in names:
        return names[low]
    if token.isdigit() and 0 <= int(token) <= 7:
        day = int(token)
        return day if upper else day % 7
    raise ConfigError(f"weekday {token!r} is not 0-7 or sun-sat")


def _check_weekdays(field: str) -> None:
    """A crontab weekday field: numbers 0-7 (0 and 7 are Sunday) or day names, ranges that
    run forwards, positive steps."""
    if field == "*":
        return
    for item in field.split(","):
        body, slash, step_text = item.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) >= 1):
            raise ConfigError(f"weekday step {step_text!r} must be a positive number")
        if body == "*":
            continue
        if "-" in body:
            a, _, b = body.partition("-")
            first, last = _weekday(a, upper=False), _weekday(b, upper=True)
        else:
            first = last = _weekday(body, upper=False)
        if first > last:
            raise ConfigError(f"weekday range {body!r} runs backwards")


class Cron:
    """A validated five-field cron expression in an IANA time zone.

    Raises:
        ConfigError: not five fields, a character cron does not allow, a field out of range,
            a schedule that never fires, or an unknown time zone.
    """

    def __init__(self, expression: str, timezone: str) -> None:
        from croniter import croniter

        self.tz = zone(timezone)
        fields = expression.split()
        if len(fields) != 5:
            raise ConfigError(
                f"cron schedule {expression!r} has {len(fields)} fields; give 5: "
                "minute hour day-of-month month day-of-week (e.g. '*/15 * * * *')"
            )
        minute, hour, day, month, weekday = fields
        for name, value, pattern in (
            ("minute", minute, _FIELD),
            ("hour", hour, _FIELD),
            ("day of month", day, _FIELD),
            ("month", month, _NAMED_FIELD),
            ("day of week", weekday, _NAMED_FIELD),
        ):
            if not pattern.match(value):
                raise ConfigError(f"cron {name} field {value!r} has characters cron does not allow")
        _check_weekdays(weekday)
        self.expression = " ".join(fields)
        self._wild_hour = hour.startswith("*")
        self._croniter = croniter
        try:
            croniter(self.expression, datetime.now(self.tz), day_or=True)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"invalid cron schedule {expression!r}: {exc}") from exc
        if self.next_after(datetime.now(UTC)) is None:
            raise ConfigError(f"cron schedule {expression!r} never fires")

    def _times(self, start: datetime, *, forward: bool) -> datetime | None:
        """The first cron time after (or, backwards, at or before) ``start``, in UTC."""
        it = self._croniter(self.expression, start.astimezone(self.tz), day_or=True)
        for _ in range(_MAX_SKIPS):
            try:
                moment: datetime = it.get_next(datetime) if forward else it.get_prev(datetime)
            except (ValueError, KeyError):  # croniter: no such date within its search span
                return None
            if not self._repeated(moment):
                return moment.astimezone(UTC)
        return None

    def _repeated(self, moment: datetime) -> bool:
        """Whether ``moment`` is the second occurrence of a wall-clock time repeated when
        the clocks go back, for a cron whose hour is fixed (it fired at the first one)."""
        if self._wild_hour:
            return False
        local = moment.astimezone(self.tz)
        return bool(local.fold) and local.replace(fold=0).utcoffset() != local.utcoffset()

    def latest(self, now: datetime) -> datetime | None:
        """The newest cron time at or before ``now`` (UTC), None when there is none."""
        return self._times(now + _TINY, forward=False)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first cron time strictly after ``moment`` (UTC), None when it never fires."""
        return self._times(moment, forward=True)

    def due(self, anchor: datetime, now: datetime) -> datetime | None:
        """The newest cron time in (``anchor``, ``now``]: the earlier ones coalesce into it.
        None when no cron time passed since the anchor."""
        newest = self.latest(now)
        return newest if newest is not None and newest > anchor else None

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        """The first cron time at or after ``now`` (after ``previous`` when given), in the
        schedule's zone."""
        start = now - _TINY
        if previous is not None and previous > start:
            start = previous
        found = self.next_after(start)
        return found.astimezone(self.tz) if found is not None else None


def cron_trigger(expression: str, timezone: str) -> Cron:
    """The cron of a five-field crontab expression in an IANA time zone (see ``Cron``).

    Raises:
        ConfigError: the expression or the zone is invalid, or it never fires.
    """
    return Cron(expression, timezone)
