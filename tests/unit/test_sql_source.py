"""What a SQL source accepts before anything connects: the query's shape and binds, the
database's name and URL, the schedule payload, and a message's redaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from driftpilot.core.settings import SourceSettings
from driftpilot.scheduling.specs import GlobSource, Payload, SqlQuery, source_kind
from driftpilot.sources.sql import (
    SqlFailed,
    SqlRefused,
    TooManyRows,
    Window,
    check_query,
    cut_end,
    database_url,
    parse_url,
    read_query,
    read_window,
    redact,
)

URL = "postgresql+psycopg://reader:Hunter2-pw@db.internal:5432/shop"


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM t WHERE t > :start AND t <= :end",
        "  select 1 ;  ",
        "-- the window\n/* rows */ WITH x AS (SELECT 1) SELECT * FROM x WHERE :end > :start",
        "(SELECT 1)",
        "SELECT t::date FROM t WHERE t > :start",  # a cast is not a bind
    ],
)
def test_one_select_with_the_window_binds_is_accepted(query: str) -> None:
    assert check_query(query) == query.strip().removesuffix(";").strip()


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "empty"),
        (";", "empty"),
        ("DELETE FROM t", "only reads"),
        ("-- SELECT\nDROP TABLE t", "only reads"),
        ("SELECT 1; DROP TABLE t", "one statement"),
        ("SELECT * FROM t WHERE id = :id", ":id"),
        ("SELECT * FROM t WHERE t > :start AND a = :a AND b = :b", ":a, :b"),
    ],
)
def test_other_queries_are_refused(query: str, reason: str) -> None:
    with pytest.raises(SqlRefused, match=reason):
        check_query(query)


def test_urls_are_never_in_a_message() -> None:
    conf = SourceSettings(databases={"shop": URL})
    assert database_url("shop", conf) == URL
    with pytest.raises(SqlRefused) as unknown:
        database_url("other", conf)
    assert "shop" in str(unknown.value) and "Hunter2" not in str(unknown.value)
    for bad, reason in (
        ("mysql://u:Hunter2-pw@h/db", "PostgreSQL or SQLite"),
        ("not a url Hunter2-pw", "not a valid"),
    ):
        with pytest.raises(SqlRefused, match=reason) as refused:
            parse_url(bad)
        assert "Hunter2" not in str(refused.value)
    said = f"failed on {URL} (postgresql+psycopg://reader:***@db.internal:5432/shop) Hunter2-pw"
    assert redact(said, URL) == "failed on *** (***) ***"


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = f"{tmp_path}/absent.db"
    window = Window(datetime(2020, 1, 1, tzinfo=UTC), datetime(2021, 1, 1, tzinfo=UTC))
    with pytest.raises(SqlFailed, match="does not exist"):
        read_query(f"sqlite:///{path}", "SELECT 1", window, timeout_s=1, max_rows=1)
    assert not Path(path).exists()


def test_a_sql_payload_names_a_database_never_a_url() -> None:
    source = {"sql": {"database": "shop", "query": "SELECT * FROM t WHERE t > :start"}}
    payload = Payload.model_validate({"model": "m", "source": source})
    assert source_kind(payload.model_dump()) == "sql"
    for bad in (
        {"database": URL, "query": "SELECT 1"},  # a URL is not a name
        {"database": "shop", "query": "SELECT 1", "url": URL},
        {"database": "shop", "query": "UPDATE t SET a = 1"},
        {"database": "shop", "query": "SELECT 1", "since": "yesterday'; --"},
    ):
        with pytest.raises(ValidationError):
            Payload.model_validate({"model": "m", "source": {"sql": bad}})
    naive = SqlQuery(database="shop", query="SELECT 1", since=datetime(2026, 1, 1))
    assert naive.since == datetime(2026, 1, 1, tzinfo=UTC)


def test_object_store_globs_are_checked_for_shape() -> None:
    assert GlobSource(glob="s3://bucket/flights/*.parquet").glob.startswith("s3://")
    assert source_kind({"source": {"glob": "s3://bucket/a/*.csv"}}) == "s3"
    assert source_kind({"source": {"glob": "a/*.csv"}}) == "glob"
    for bad in ("s3://", "s3://bucket", "s3://bucket/../x/*.csv", "s3://b/a**/*.csv"):
        with pytest.raises(ValidationError):
            GlobSource(glob=bad)


def test_a_sqlite_query_reads_times_and_mixed_numbers(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "mixed.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (at TEXT, n NUMERIC, s TEXT)")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?)",
            [("2026-01-02 03:04:05", 1, "a"), ("2026-01-03T00:00:00+01:00", 2.5, None)],
        )
    window = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
    query = "SELECT * FROM t WHERE julianday(at) > julianday(:start) ORDER BY at"
    frame = read_query(f"sqlite:///{path}", query, window, timeout_s=5, max_rows=5, time_col="at")
    assert frame["n"].to_list() == [1.0, 2.5]
    assert frame["at"].to_list() == [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 2, 23, 0, tzinfo=UTC),
    ]
    with pytest.raises(TooManyRows, match="more than 1 rows"):  # refused, never cut
        read_query(f"sqlite:///{path}", query, window, timeout_s=5, max_rows=1)


def instants(times: list[datetime]) -> Callable[[datetime], int]:
    """A count of the rows of (START, end], as a query over rows at ``times`` answers."""
    return lambda end: sum(1 for t in times if START < t <= end)


START = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_cut_fits_the_limit_and_is_at_least_half_full() -> None:
    times = [START + timedelta(minutes=7 * i + 1) for i in range(1000)]
    window = Window(START, START + timedelta(days=30))
    end = cut_end(instants(times), window, 100)
    taken = instants(times)(end)
    assert 50 <= taken <= 100 and end.microsecond == 0
    # Crowded instants: the latest end that fits, to the microsecond.
    crowd = [START + timedelta(seconds=1, microseconds=3)] * 2 + [START + timedelta(seconds=2)] * 9
    end = cut_end(instants(crowd), Window(START, START + timedelta(hours=1)), 5)
    assert instants(crowd)(end) == 2 and end < START + timedelta(seconds=2)
    with pytest.raises(TooManyRows, match="cannot be cut"):
        cut_end(instants(crowd[2:]), Window(START, START + timedelta(hours=1)), 5)


def write_times(path: Path, times: list[str]) -> str:
    import sqlite3

    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (at TEXT, n INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(t, i) for i, t in enumerate(times)])
    return f"sqlite:///{path}"


def test_a_window_over_the_limit_is_cut_and_the_next_goes_on(tmp_path: Path) -> None:
    """read_window takes at most max_rows rows, says which window it read, and windows
    read one after the other from its end take every row exactly once."""
    times = [START + timedelta(minutes=13 * i + 5) for i in range(500)]
    url = write_times(tmp_path / "many.db", [t.strftime("%Y-%m-%d %H:%M:%S") for t in times])
    query = "SELECT * FROM t WHERE at > :start AND at <= :end"
    end = START + timedelta(days=30)
    with pytest.raises(TooManyRows):  # read_query still refuses: a batch is never partial
        read_query(url, query, Window(START, end), timeout_s=5, max_rows=120)
    seen: list[int] = []
    window = Window(START, end)
    for _ in range(20):
        frame, read = read_window(url, query, window, timeout_s=5, max_rows=120, time_col="at")
        if frame.height == 0:
            break
        assert frame.height <= 120 and read.start == window.start and read.end <= end
        assert frame["at"].max() <= read.end  # type: ignore[operator]
        seen += frame["n"].to_list()
        window = Window(read.end, end)
    assert sorted(seen) == list(range(500))


def test_sqlite_bounds_suit_space_text_and_time_functions_suit_iso_text(tmp_path: Path) -> None:
    """The bounds are 'YYYY-MM-DD HH:MM:SS.ffffff': a column in that form compares as text;
    an isoformat column ('T', an offset) compares through julianday(), to the microsecond
    SQLite's doubles keep (a window starting at a row's time excludes it, one ending there
    takes it). Plain text comparison against 'T' text takes the wrong rows of the bounds' day."""
    times = [datetime(2026, 3, 5, h, 30, tzinfo=UTC) for h in (1, 9, 10, 17)]
    window = Window(
        datetime(2026, 3, 5, 9, 30, tzinfo=UTC), datetime(2026, 3, 5, 17, 30, tzinfo=UTC)
    )
    space = write_times(tmp_path / "space.db", [t.strftime("%Y-%m-%d %H:%M:%S") for t in times])
    iso = write_times(tmp_path / "iso.db", [t.isoformat() for t in times])
    as_text = "SELECT n FROM t WHERE at > :start AND at <= :end ORDER BY n"
    as_time = (
        "SELECT n FROM t WHERE julianday(at) > julianday(:start) "
        "AND julianday(at) <= julianday(:end) ORDER BY n"
    )
    read = {
        (url, query): read_query(url, query, window, timeout_s=5, max_rows=9)["n"].to_list()
        for url in (space, iso)
        for query in (as_text, as_time)
    }
    assert read[(space, as_text)] == read[(space, as_time)] == read[(iso, as_time)] == [2, 3]
    assert read[(iso, as_text)] != [2, 3]  # why an ISO 'T' column needs julianday()
