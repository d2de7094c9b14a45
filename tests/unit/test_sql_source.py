"""What a SQL source accepts before anything connects: the query's shape and binds, the
database's name and URL, the schedule payload, and a message's redaction."""

from __future__ import annotations

from datetime import UTC, datetime
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
    database_url,
    parse_url,
    read_query,
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
