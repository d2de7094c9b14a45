"""api.outage: which errors are an outage (503 with Retry-After) and which stay bugs."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import exc as sa_exc

from api.outage import outage_of, unavailable
from driftpilot.core.errors import AuditWriteError


def _raised_from(outer: Exception, cause: BaseException) -> Exception:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise outer from inner
    except Exception as caught:
        return caught


def test_a_full_disk_is_a_disk_outage_wherever_it_is_in_the_chain() -> None:
    assert outage_of(OSError(errno.ENOSPC, "No space left on device")) == "disk"
    assert outage_of(OSError(errno.EDQUOT, "Disk quota exceeded")) == "disk"
    full = sqlite3.OperationalError("database or disk is full")
    assert outage_of(full) == "disk"
    wrapped = sa_exc.OperationalError("INSERT ...", {}, full)
    assert outage_of(wrapped) == "disk"
    assert outage_of(_raised_from(RuntimeError("write failed"), wrapped)) == "disk"


def test_a_full_disk_under_polars_is_a_disk_outage() -> None:
    """Polars reports ENOSPC as a ComputeError with the OS's text (no errno): /dev/full is a
    device whose every write fails with ENOSPC."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    try:
        pl.DataFrame({"a": list(range(100_000))}).write_parquet("/dev/full")
    except Exception as exc:
        assert outage_of(exc) == "disk", repr(exc)
    else:
        raise AssertionError("writing to /dev/full succeeded")


def test_an_unreachable_or_locked_database_is_a_database_outage() -> None:
    refused = sa_exc.OperationalError("SELECT 1", {}, Exception("connection refused"))
    assert outage_of(refused) == "database"
    assert outage_of(_raised_from(AuditWriteError("could not append"), refused)) == "database"
    assert outage_of(sqlite3.OperationalError("database is locked")) == "database"
    assert outage_of(sa_exc.TimeoutError("QueuePool limit reached")) == "database"


def test_bugs_are_not_outages() -> None:
    assert outage_of(ValueError("bad")) is None
    assert outage_of(OSError(errno.ENOENT, "No such file")) is None
    assert outage_of(sqlite3.OperationalError("no such table: runs")) is None
    assert outage_of(sa_exc.IntegrityError("INSERT", {}, Exception("dup"))) is None
    assert outage_of(_raised_from(KeyError("x"), ValueError("y"))) is None


def test_the_problem_says_when_to_retry_and_hides_the_drivers_message() -> None:
    problem = unavailable("database")
    assert problem.status == 503 and problem.slug == "service-unavailable"
    assert problem.headers == {"Retry-After": "5"}
    assert unavailable("disk").headers == {"Retry-After": "30"}
