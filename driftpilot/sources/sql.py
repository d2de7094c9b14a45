"""A batch from a SQL query: the rows a SELECT returns for one time window, read safely.

The query is the user's; the window is ours. ``:start`` and ``:end`` are the only bind
parameters a query may name, and they are always passed as bound parameters (the driver
sends them apart from the SQL text), never formatted into it: a value in the data or in the
bounds stays data. The query runs:

- alone: one statement (a trailing ``;`` at most), starting with ``SELECT`` or ``WITH``;
- in a read-only transaction (PostgreSQL ``SET TRANSACTION READ ONLY``, SQLite
  ``PRAGMA query_only``), rolled back at the end: a data-modifying ``WITH`` or a function
  that writes is refused by the database;
- under a statement timeout (PostgreSQL ``statement_timeout``, SQLite a progress handler
  that interrupts it);
- for at most ``max_rows`` rows (one more is fetched to know there were more), streamed (a
  server-side cursor on PostgreSQL). ``read_query`` refuses more (``TooManyRows``: a batch is
  never silently partial); ``read_window`` (schedules) moves the window's end earlier until
  the rows fit, and says which window it read, so the next window goes on from there.

Times are UTC. On PostgreSQL the bounds are aware UTC datetimes and the session's
``TimeZone`` is UTC in the transaction: a ``timestamp`` (without time zone) column holding
UTC times compares with the bounds as UTC, whatever the database's or the role's zone, and
a time without a zone in the result is marked UTC in the frame.

SQLite has no time type: the bounds are bound as text ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC),
the form SQLite's own ``datetime()`` and ``CURRENT_TIMESTAMP``, SQLAlchemy and Python's
sqlite3 adapter write, so ``col > :start`` is right for a column written that way. Text is
compared character by character, and no one form of the bounds is right for every column:
against ISO text with a ``T`` (``datetime.isoformat()``, JavaScript's ``toISOString``), a
``Z`` or an offset, every row of a bound's day would compare after that bound. Such a column
is compared through SQLite's time functions, which read every ISO 8601 form (offsets to
UTC): ``julianday(col) > julianday(:start) AND julianday(col) <= julianday(:end)``.

A database URL carries credentials: it is never put in a message. Every error this module
raises is worded without it (``redact``), and a driver error is re-raised from None so its
traceback does not carry the URL either. Only PostgreSQL and SQLite URLs are accepted.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from driftpilot.core.errors import ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Callable

    import polars as pl

    from driftpilot.core.settings import SourceSettings

BINDS = frozenset({"start", "end"})
DIALECTS = ("postgresql", "sqlite")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FETCH_CHUNK = 10_000
# The narrowest window a cut makes: the bounds' precision on both databases.
RESOLUTION = timedelta(microseconds=1)
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
_FIRST_WORD = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*(\w+)", re.S)
_TIMEOUT_STATE = "57014"  # PostgreSQL query_canceled: the statement timeout


class SqlRefused(ConfigError):
    """A query or database that is not run: not one read-only statement, a bind other than
    :start/:end, an unknown database name, an unsupported or invalid URL."""


class SqlFailed(DataError):
    """The query ran and failed: the database's error (worded without the URL)."""


class SqlTimeout(SqlFailed):
    """The query ran longer than the statement timeout."""


class TooManyRows(DataError):
    """The query returned more rows than one batch may hold."""


@dataclass(frozen=True)
class Window:
    """The time window a query reads: rows with ``start < t <= end`` (the query says how)."""

    start: datetime
    end: datetime

    def __str__(self) -> str:
        return f"({self.start.isoformat()}, {self.end.isoformat()}]"


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (a naive one is taken as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def check_query(query: str) -> str:
    """The query to run: one ``SELECT``/``WITH`` statement (a trailing ``;`` dropped) whose
    bind parameters are among ``:start`` and ``:end``.

    Raises:
        SqlRefused: several statements, another kind of statement, or another bind.
    """
    body = query.strip()
    body = body[:-1].rstrip() if body.endswith(";") else body
    if not body or "\x00" in body:
        raise SqlRefused("the SQL query is empty")
    if ";" in body:
        raise SqlRefused("the SQL query must be one statement: no ';' inside it")
    first = _FIRST_WORD.match(body)
    if first is None or first.group(1).lower() not in ("select", "with"):
        raise SqlRefused("the SQL query must be a SELECT (or WITH ... SELECT): it only reads")
    binds = set(text(body).compile().params)
    if binds - BINDS:
        names = ", ".join(f":{b}" for b in sorted(binds - BINDS))
        raise SqlRefused(
            f"the SQL query may bind only :start and :end (the window's bounds); found {names}"
        )
    return body


def database_url(name: str, conf: SourceSettings) -> str:
    """The URL of the database ``name`` of ``DRIFTPILOT_SOURCES_DATABASES``.

    Raises:
        SqlRefused: no database has that name (the message lists the names, never a URL).
    """
    if name not in conf.databases:
        known = ", ".join(sorted(conf.databases)) or "none (set DRIFTPILOT_SOURCES_DATABASES)"
        raise SqlRefused(f"no SQL database named {name!r}; configured: {known}")
    return conf.databases[name]


def parse_url(url: str) -> URL:
    """The URL, checked: a PostgreSQL or SQLite SQLAlchemy URL.

    Raises:
        SqlRefused: not a URL SQLAlchemy reads, or another database.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # SQLAlchemy's message quotes the URL: say it without.
        raise SqlRefused("the database URL is not a valid SQLAlchemy URL") from None
    if parsed.get_backend_name() not in DIALECTS:
        raise SqlRefused(
            f"SQL sources read PostgreSQL or SQLite, not {parsed.get_backend_name()!r}"
        )
    return parsed


def redact(message: str, url: str) -> str:
    """``message`` without the URL, its password-hidden form or its password."""
    try:
        parsed: URL | None = make_url(url)
    except (ArgumentError, ValueError):
        parsed = None
    secrets = [url]
    if parsed is not None:
        secrets.append(parsed.render_as_string(hide_password=True))
        password = parsed.password
        if password and len(str(password)) >= 3:
            secrets.append(str(password))
    for secret in sorted(secrets, key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def read_query(
    url: str,
    query: str,
    window: Window,
    *,
    timeout_s: float,
    max_rows: int,
    time_col: str | None = None,
) -> pl.DataFrame:
    """The rows ``query`` returns with ``:start``/``:end`` bound to ``window``, as a frame
    (empty when there are none). ``time_col``: a column returned as text (SQLite) is parsed
    to a UTC datetime (naive = UTC).

    Raises:
        SqlRefused: the query or the URL is refused (``check_query``, ``parse_url``).
        SqlTimeout: the query ran longer than ``timeout_s``.
        SqlFailed: the database refused or failed the query (a write in a read-only
            transaction, a missing table, a lost connection...).
        TooManyRows: more than ``max_rows`` rows.
    """
    frame, _ = _read(url, query, window, timeout_s, max_rows, time_col, cut=False)
    return frame


def read_window(
    url: str,
    query: str,
    window: Window,
    *,
    timeout_s: float,
    max_rows: int,
    time_col: str | None = None,
) -> tuple[pl.DataFrame, Window]:
    """The rows ``query`` returns for ``window`` or, when there are more than ``max_rows``,
    for the window ``(start, end']`` with the end moved earlier so that they fit (at least
    half of ``max_rows`` rows, or as many as fit before the next row's time); and the window
    read. Each time statement a cut tries is bounded (``max_rows + 1`` rows counted at
    most) and binds only the window's bounds. On PostgreSQL the tries and the read see one
    snapshot (repeatable read); on SQLite rows committed between them can make the read
    overflow: ``TooManyRows``, and the next read cuts again.

    Raises:
        TooManyRows: more than ``max_rows`` rows share the window's first instant (no
            earlier end holds any), or rows were committed during the cut (SQLite).
        SqlRefused, SqlTimeout, SqlFailed: as ``read_query`` (the timeout is per statement).
    """
    return _read(url, query, window, timeout_s, max_rows, time_col, cut=True)


def _read(
    url: str,
    query: str,
    window: Window,
    timeout_s: float,
    max_rows: int,
    time_col: str | None,
    *,
    cut: bool,
) -> tuple[pl.DataFrame, Window]:
    body = check_query(query)
    parsed = parse_url(url)
    dialect = parsed.get_backend_name()
    if dialect == "sqlite":
        _check_sqlite_file(parsed)
    engine = create_engine(
        parsed, poolclass=NullPool, connect_args=_connect_args(dialect, timeout_s)
    )
    try:
        with engine.connect() as conn:
            keys, rows, read = _run(conn, dialect, body, window, timeout_s, max_rows, cut)
    except SqlTimeout:
        raise
    except DBAPIError as exc:
        raise _failure(exc, url, timeout_s) from None
    except SQLAlchemyError as exc:
        raise SqlFailed(redact(f"the SQL query failed: {exc}", url)) from None
    finally:
        engine.dispose()
    return _frame(keys, rows, time_col), read


def _connect_args(dialect: str, timeout_s: float) -> dict[str, Any]:
    if dialect == "postgresql":
        return {"connect_timeout": max(1, round(timeout_s))}
    return {"timeout": timeout_s}  # SQLite: how long to wait for a lock


def _bounds(window: Window, dialect: str) -> dict[str, Any]:
    start, end = as_utc(window.start), as_utc(window.end)
    if dialect == "sqlite":
        return {"start": start.strftime(SQLITE_TIME), "end": end.strftime(SQLITE_TIME)}
    return {"start": start, "end": end}


def _check_sqlite_file(parsed: URL) -> None:
    # sqlite3 creates a missing file on connect: a typo would read an empty new database.
    name = parsed.database or ""
    if name and name != ":memory:" and not name.startswith("file:") and not Path(name).is_file():
        raise SqlFailed("the SQLite database file does not exist")


def _run(
    conn: Connection,
    dialect: str,
    body: str,
    window: Window,
    timeout_s: float,
    max_rows: int,
    cut: bool,
) -> tuple[list[str], list[tuple[Any, ...]], Window]:
    """Run the query read-only under the timeout; at most ``max_rows`` rows (the window
    cut when ``cut``). The transaction is rolled back, never committed: what a function
    could still do in a read-only transaction (PostgreSQL lets ``lo_create`` through) is
    undone."""
    transaction = conn.begin()
    try:
        if dialect == "postgresql":
            # Repeatable read: a cut's tries and its read see the same rows.
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute(
                text(
                    "SELECT set_config('statement_timeout', :ms, true), "
                    "set_config('TimeZone', 'UTC', true)"
                ),
                {"ms": str(max(1, round(timeout_s * 1000)))},
            )
            return _read_rows(conn, dialect, body, window, max_rows, cut, lambda: None)
        return _run_sqlite(conn, body, window, timeout_s, max_rows, cut)
    finally:
        if transaction.is_active:
            transaction.rollback()


class _Deadline:
    """A SQLite progress handler that interrupts a statement running past the timeout."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.expired = False
        self.restart()

    def restart(self) -> None:
        """Start the timeout again, for the next statement."""
        self.at = time.monotonic() + self.timeout_s

    def __call__(self) -> int:
        if time.monotonic() > self.at:
            self.expired = True
            return 1  # SQLite aborts the statement: "interrupted"
        return 0


def _run_sqlite(
    conn: Connection, body: str, window: Window, timeout_s: float, max_rows: int, cut: bool
) -> tuple[list[str], list[tuple[Any, ...]], Window]:
    conn.exec_driver_sql("PRAGMA query_only = ON")
    raw = conn.connection.driver_connection
    assert raw is not None  # a connection SQLAlchemy just opened
    deadline = _Deadline(timeout_s)
    raw.set_progress_handler(deadline, 10_000)
    try:
        return _read_rows(conn, "sqlite", body, window, max_rows, cut, deadline.restart)
    except DBAPIError:
        if deadline.expired:
            raise SqlTimeout(f"the SQL query ran longer than {timeout_s:g} s") from None
        raise
    finally:
        raw.set_progress_handler(None, 0)


def _read_rows(
    conn: Connection,
    dialect: str,
    body: str,
    window: Window,
    max_rows: int,
    cut: bool,
    restart: Callable[[], None],
) -> tuple[list[str], list[tuple[Any, ...]], Window]:
    """The rows of ``window``; when they are too many and ``cut``, of the cut window."""
    try:
        keys, rows = _fetch(conn, body, _bounds(window, dialect), max_rows)
        return keys, rows, window
    except TooManyRows:
        if not cut:
            raise

    def count(end: datetime) -> int:
        restart()
        return _count(conn, dialect, body, Window(window.start, end), max_rows + 1)

    cut_window = Window(window.start, cut_end(count, window, max_rows))
    restart()
    keys, rows = _fetch(conn, body, _bounds(cut_window, dialect), max_rows)
    return keys, rows, cut_window


def cut_end(count: Callable[[datetime], int], window: Window, max_rows: int) -> datetime:
    """An end for ``window`` (whose rows are more than ``max_rows``) such that
    ``count(end)``, the rows of ``(start, end]``, is between 1 and ``max_rows``: bisected, on whole
    seconds while the range spans more than two, stopping at a window at least half full,
    else at the latest end that fits (to the microsecond).

    Raises:
        TooManyRows: no end that fits holds a row: more than ``max_rows`` rows share the
            first rows' instant.
    """
    fits, over = as_utc(window.start), as_utc(window.end)
    taken = 0
    while over - fits > RESOLUTION:
        mid = fits + (over - fits) // 2
        if over - fits > timedelta(seconds=2):
            mid = mid.replace(microsecond=0)
        found = count(mid)
        if found > max_rows:
            over = mid
            continue
        fits, taken = mid, found
        if found >= max_rows / 2:
            break
    if taken == 0:  # an empty window would be no new batch: the schedule would stall
        raise TooManyRows(
            f"more than {max_rows} rows (one batch's limit) at {over.isoformat()}: "
            "the window cannot be cut before them"
        )
    return fits


def _count(conn: Connection, dialect: str, body: str, window: Window, cap: int) -> int:
    """The rows of the query in ``window``, counted up to ``cap``: the database stops
    reading there. The query is nested as written (a newline ends its last ``--`` comment)."""
    probe = (
        f"SELECT count(*) FROM (SELECT 1 AS one FROM (\n{body}\n) AS dp_rows "
        "LIMIT :dp_cap) AS dp_counted"
    )
    result = conn.execute(text(probe), {**_bounds(window, dialect), "dp_cap": cap})
    return int(result.scalar_one())


def _fetch(
    conn: Connection, body: str, params: dict[str, Any], max_rows: int
) -> tuple[list[str], list[tuple[Any, ...]]]:
    result = conn.execution_options(stream_results=True).execute(text(body), params)
    keys = list(result.keys())
    rows: list[tuple[Any, ...]] = []
    while len(rows) <= max_rows:
        chunk = result.fetchmany(min(FETCH_CHUNK, max_rows + 1 - len(rows)))
        if not chunk:
            break
        rows.extend(tuple(r) for r in chunk)
    result.close()
    if len(rows) > max_rows:
        raise TooManyRows(f"the SQL query returned more than {max_rows} rows (one batch's limit)")
    return keys, rows


def _failure(exc: DBAPIError, url: str, timeout_s: float) -> SqlFailed:
    state = getattr(exc.orig, "sqlstate", None)
    if state == _TIMEOUT_STATE:
        return SqlTimeout(f"the SQL query ran longer than {timeout_s:g} s")
    reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig)
    return SqlFailed(redact(f"the SQL query failed: {reason}", url))


def _frame(keys: list[str], rows: list[tuple[Any, ...]], time_col: str | None) -> pl.DataFrame:
    """The rows as a frame: decimals as floats, a text time column as UTC datetimes, a time
    without a zone as UTC (the session's zone was UTC)."""
    import polars as pl

    if len(set(keys)) != len(keys):
        raise SqlFailed(f"the SQL query returns duplicate column names: {', '.join(keys)}")
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in keys]
    try:
        frame = pl.DataFrame(
            [_series(key, list(values)) for key, values in zip(keys, columns, strict=True)]
        )
    except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
        raise SqlFailed(f"the SQL query's rows do not make a table: {exc}") from exc
    if time_col is not None and time_col in frame.columns and frame[time_col].dtype == pl.String:
        frame = _parse_times(frame, time_col)
    naive = [
        pl.col(name).dt.replace_time_zone("UTC")
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is None
    ]
    return frame.with_columns(naive) if naive else frame


def _series(key: str, values: list[Any]) -> pl.Series:
    """One column: decimals as floats; integers and floats mixed (SQLite's NUMERIC, a
    PostgreSQL numeric with and without decimals) as floats. Other mixed types raise."""
    import polars as pl

    values = [float(v) if isinstance(v, Decimal) else v for v in values]
    try:
        return pl.Series(key, values)
    except TypeError:
        if all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values
        ):
            return pl.Series(key, values, dtype=pl.Float64, strict=False)
        raise


def _parse_times(frame: pl.DataFrame, time_col: str) -> pl.DataFrame:
    """The text time column as UTC datetimes: ISO 8601 in any of its forms, row by row
    (SQLite keeps whatever each writer wrote); naive = UTC."""
    import polars as pl

    parsed: list[datetime | None] = []
    for value in frame[time_col].to_list():
        try:
            parsed.append(None if value is None else as_utc(datetime.fromisoformat(value)))
        except ValueError:
            raise SqlFailed(
                f"the SQL query's time column {time_col!r} holds {value[:40]!r}, not an ISO "
                "8601 time"
            ) from None
    column = pl.Series(time_col, parsed, dtype=pl.Datetime("us", "UTC"))
    return frame.with_columns(column)
