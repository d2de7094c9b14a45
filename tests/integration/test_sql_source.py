"""SQL batch sources on a real PostgreSQL (tests/pg.py) and a SQLite file: ``driftpilot run
--sql``, schedules over a query (the real scheduler with a clock the tests move, real control
runs), and what a query may not do (write, run long, bind other values, leak its URL).

February flights sit in a table of each database; the model was bootstrapped on January."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from driftpilot.cli import app as cli_app
from driftpilot.core.settings import ApiSettings, get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.scheduling.scheduler import Scheduler
from driftpilot.scheduling.sources import trained_until
from driftpilot.scheduling.specs import Payload, ScheduleSpec, SqlQuery, SqlSource
from driftpilot.sources.sql import (
    SqlFailed,
    SqlRefused,
    SqlTimeout,
    Window,
    as_utc,
    read_query,
)
from driftpilot.store.models import BatchRecord, Run, Schedule, ScheduleBatch, ToolCall
from tests.conftest import add_flights
from tests.pg import PostgresServer

pytestmark = pytest.mark.integration
PASSWORD = "s3cret-Pw-77"  # trust authentication ignores it; it must never be shown
TABLE = "flights_feb"
NEVER_SOON = "0 0 1 1 *"
WINDOW_SQL = f"SELECT * FROM {TABLE} WHERE time_hour > :start AND time_hour <= :end"
EVIL = "UA'); DROP TABLE flights_feb; --"


def utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def write_table(url: str, frame: pl.DataFrame) -> None:
    """``frame`` as table ``flights_feb`` (times: timestamptz on PostgreSQL, SQLAlchemy's
    text form on SQLite)."""
    engine = sa.create_engine(url)
    sqlite = url.startswith("sqlite")
    types = {
        pl.Float64: sa.Float,
        pl.Int64: sa.BigInteger,
        pl.Int32: sa.Integer,
        pl.String: sa.Text,
        pl.Boolean: sa.Boolean,
    }
    columns = [
        sa.Column(
            name,
            sa.DateTime(timezone=not sqlite)
            if isinstance(dtype, pl.Datetime)
            else types.get(type(dtype), sa.Float)(),
        )
        for name, dtype in frame.schema.items()
    ]
    table = sa.Table(TABLE, sa.MetaData(), *columns)
    rows = frame.to_dicts()
    if sqlite:
        for row in rows:
            row["time_hour"] = row["time_hour"].astimezone(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), rows)
    engine.dispose()


def count(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(sa.text(f"SELECT count(*) FROM {TABLE}")).scalar_one()
    engine.dispose()
    return int(found)


@pytest.fixture(scope="module")
def feb(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    frame = months["2013-02"].drop("arr_delay", "delay_class").sample(n=3000, seed=7)
    frame = frame.sort("time_hour").with_columns(pl.col("time_hour").dt.cast_time_unit("us"))
    # A hostile value in the data: it must come back as the text it is.
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit(EVIL))
        .otherwise("carrier")
        .alias("carrier")
    )


@pytest.fixture(scope="module")
def databases(
    postgres: PostgresServer, feb: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    pg = postgres.create_database()
    pg_with_password = pg.replace("postgres@", f"postgres:{PASSWORD}@")
    lite = f"sqlite:///{tmp_path_factory.mktemp('sqlsrc') / 'lite.db'}"
    for url in (pg, lite):
        write_table(url, feb)
    engine = sa.create_engine(pg)
    with engine.begin() as conn:  # a function that writes, for a SELECT to call
        conn.exec_driver_sql(
            "CREATE FUNCTION sneak() RETURNS bigint LANGUAGE sql AS "
            f"'INSERT INTO {TABLE} (carrier) VALUES (''x'') RETURNING 1'"
        )
    engine.dispose()
    yield {"warehouse": pg_with_password, "lite": lite}
    postgres.drop_database(pg.rsplit("/", 1)[1])


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory,
    jan_sample: pl.DataFrame,
    databases: dict[str, str],
) -> Iterator[ControlPlane]:
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("sql") / "home"
        mp.setenv("DRIFTPILOT_HOME", str(home))
        mp.setenv("DRIFTPILOT_LEASE_TTL_S", "5")
        down = "postgresql+psycopg://postgres:" + PASSWORD + "@127.0.0.1:1/nowhere"
        mp.setenv("DRIFTPILOT_SOURCES_DATABASES", json.dumps({**databases, "down": down}))
        mp.setenv("DRIFTPILOT_SOURCES_SQL_TIMEOUT_S", "3")
        get_settings.cache_clear()
        cp = ControlPlane(get_settings())
        add_flights(cp, jan_sample, principal="alice")
        yield cp
        cp.close()
    get_settings.cache_clear()


class Clock:
    """A time that stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def move_to(self, moment: datetime) -> None:
        self.now = moment


def sql_spec(database: str, query: str = WINDOW_SQL, **options: Any) -> ScheduleSpec:
    source = SqlSource(sql=SqlQuery(database=database, query=query, **options))
    return ScheduleSpec(schedule=NEVER_SOON, payload=Payload(model="flights", source=source))


def rows_in(feb: pl.DataFrame, start: datetime, end: datetime) -> int:
    times = feb["time_hour"].dt.convert_time_zone("UTC")
    return int(((times > start) & (times <= end)).sum())


def filed_rows(cp: ControlPlane, run_id: str) -> int:
    return sum(r.n_rows for r in cp.store.list_rows(BatchRecord, BatchRecord.run_id == run_id))


def fire_at(sched: Scheduler, cron_id: str, clock: Clock, moment: datetime) -> Any:
    clock.move_to(moment)
    return sched.fire(cron_id, moment)


@pytest.mark.parametrize(("database", "origin"), [("warehouse", "JFK"), ("lite", "LGA")])
def test_a_schedule_over_a_query_reads_consecutive_windows(
    plane: ControlPlane, feb: pl.DataFrame, database: str, origin: str
) -> None:
    """Two firings read (trained-until, t1] and (t1, t2] as bound parameters, and run them;
    a third with no new row is no-new-batch and claims nothing. (Each database's schedule
    reads other flights: the model has seen the content of the other's batches.)"""
    feb = feb.filter(pl.col("origin") == origin)
    query = f"{WINDOW_SQL} AND origin = '{origin}'"
    clock = Clock()
    horizon = trained_until(plane, "flights")
    assert isinstance(horizon, datetime)
    first_start = as_utc(horizon)
    t1, t2 = utc(2013, 2, 15), utc(2013, 3, 2)
    with Scheduler(plane, clock=clock) as sched:
        sched.sources.clock = clock  # the window's end when the firing does not pass it
        view = sched.create(sql_spec(database, query), "sam")
        assert view.payload["source"]["sql"]["database"] == database
        first = fire_at(sched, view.cron_id, clock, t1)
        second = fire_at(sched, view.cron_id, clock, t2)
        third = fire_at(sched, view.cron_id, clock, t2 + timedelta(days=1))
        ledger = plane.store.list_rows(ScheduleBatch, ScheduleBatch.cron_id == view.cron_id)
        sched.delete(view.cron_id, "sam")
    assert sorted(e.batch_key for e in ledger) == [f"sql:{t1.isoformat()}", f"sql:{t2.isoformat()}"]
    assert [f.outcome for f in (first, second, third)] == ["fired", "fired", "no-new-batch"]
    assert (first.batch_id, second.batch_id) == ("sql-20130215T000000Z", "sql-20130302T000000Z")
    windows = [plane.get_run(f.run_id or "").metadata["sql_window"] for f in (first, second)]
    assert windows == [
        {"start": first_start.isoformat(), "end": t1.isoformat()},
        {"start": t1.isoformat(), "end": t2.isoformat()},
    ]
    expected = [rows_in(feb, first_start, t1), rows_in(feb, t1, t2)]
    assert expected[0] > 200 and expected[1] > 200  # both halves of February
    assert [filed_rows(plane, f.run_id or "") for f in (first, second)] == expected
    for fired in (first, second):
        run = plane.store.get(Run, fired.run_id or "")
        assert run.trigger == "schedule" and run.status in ("completed", "waiting_approval")
    assert third.run_id is None and third.detail == ""


def test_run_from_a_query_on_the_command_line(
    plane: ControlPlane, feb: pl.DataFrame, databases: dict[str, str]
) -> None:
    cli = CliRunner()
    url = databases["warehouse"]
    args = ["run", "flights", "--sql", WINDOW_SQL, "--db-url", url]
    done = cli.invoke(
        cli_app,
        [*args, "--start", "2013-02-03", "--end", "2013-02-10T00:00:00+00:00"],
        terminal_width=200,
    )
    assert done.exit_code == 0, done.output
    assert "batch sql-20130210T000000Z" in done.output and PASSWORD not in done.output
    run_id = done.output.split("run ", 1)[1].split(" ", 1)[0]
    assert filed_rows(plane, run_id) == rows_in(feb, utc(2013, 2, 3), utc(2013, 2, 10))

    # A bound that is not a time is refused before anything runs; the table is intact.
    evil = cli.invoke(cli_app, [*args, "--start", "2013-02-01'; DROP TABLE flights_feb; --"])
    assert evil.exit_code == 2 and "ISO 8601" in evil.output
    empty = cli.invoke(
        cli_app,
        [
            "run",
            "flights",
            "--sql",
            WINDOW_SQL,
            "--database",
            "lite",
            "--start",
            "2014-01-01",
            "--end",
            "2014-02-01",
        ],
    )
    assert empty.exit_code == 1 and "no rows" in empty.output
    both = cli.invoke(cli_app, [*args, "--database", "lite"])
    assert both.exit_code == 2 and "--db-url URL or --database NAME" in both.output
    write = cli.invoke(
        cli_app, ["run", "flights", "--sql", f"DELETE FROM {TABLE}", "--db-url", url]
    )
    assert write.exit_code == 1 and "only reads" in write.output
    down = cli.invoke(cli_app, ["run", "flights", "--sql", WINDOW_SQL, "--database", "down"])
    assert down.exit_code == 1 and "SQL query failed" in down.output, down.output
    assert PASSWORD not in down.output and "nowhere" not in down.output
    assert count(url) == feb.height


@pytest.mark.parametrize("database", ["warehouse", "lite"])
def test_values_stay_data(databases: dict[str, str], feb: pl.DataFrame, database: str) -> None:
    """The hostile carrier comes back as text, the bounds bind as values, and a query that
    names another bind is refused."""
    url = databases[database]
    window = Window(utc(2013, 1, 1), utc(2013, 3, 2))
    frame = read_query(url, WINDOW_SQL, window, timeout_s=5, max_rows=10_000, time_col="time_hour")
    assert frame.height == feb.height and EVIL in frame["carrier"].to_list()
    assert frame["time_hour"].dtype == pl.Datetime("us", "UTC")
    echoed = read_query(url, "SELECT :start AS s, :end AS e", window, timeout_s=5, max_rows=1)
    if database == "warehouse":  # bound as timestamptz values
        assert echoed.row(0) == (window.start, window.end)
    else:  # SQLite: as text, the form SQLAlchemy writes
        assert echoed.row(0) == ("2013-01-01 00:00:00.000000", "2013-03-02 00:00:00.000000")
    with pytest.raises(SqlRefused, match=":carrier"):
        read_query(url, f"{WINDOW_SQL} AND carrier = :carrier", window, timeout_s=5, max_rows=9)
    assert count(url.replace(f":{PASSWORD}", "")) == feb.height


@pytest.mark.parametrize("database", ["warehouse", "lite"])
def test_writes_and_long_queries_are_refused(
    databases: dict[str, str], feb: pl.DataFrame, database: str
) -> None:
    url = databases[database]
    window = Window(utc(2013, 1, 1), utc(2013, 3, 2))
    for statement in (f"DELETE FROM {TABLE}", f"SELECT 1; DELETE FROM {TABLE}"):
        with pytest.raises(SqlRefused):
            read_query(url, statement, window, timeout_s=5, max_rows=10)
    if database == "warehouse":
        with pytest.raises(SqlFailed, match="data-modifying"):
            read_query(
                url,
                f"WITH gone AS (DELETE FROM {TABLE} RETURNING *) SELECT * FROM gone",
                window,
                timeout_s=5,
                max_rows=10,
            )
        # A SELECT that writes through a function: the read-only transaction refuses it.
        with pytest.raises(SqlFailed, match="cannot execute INSERT in a read-only transaction"):
            read_query(url, "SELECT sneak() WHERE :start < :end", window, timeout_s=5, max_rows=1)
        # What PostgreSQL lets through read-only is rolled back: no large object is left.
        made = read_query(url, "SELECT lo_create(0) AS oid", window, timeout_s=5, max_rows=1)
        assert made.height == 1
        kept = "SELECT count(*) AS n FROM pg_largeobject_metadata"
        assert read_query(url, kept, window, timeout_s=5, max_rows=1).item() == 0
        slow = f"SELECT * FROM {TABLE} WHERE pg_sleep(30) IS NOT NULL AND time_hour > :start"
    else:
        slow = (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
            "SELECT count(*) FROM c WHERE :start < :end"
        )
    started = datetime.now(UTC)
    with pytest.raises(SqlTimeout, match="longer than 1 s"):
        read_query(url, slow, window, timeout_s=1, max_rows=10)
    assert (datetime.now(UTC) - started).total_seconds() < 10
    assert count(url.replace(f":{PASSWORD}", "")) == feb.height


def test_the_api_accepts_a_sql_schedule_and_never_shows_a_url(
    plane: ControlPlane, databases: dict[str, str]
) -> None:
    _, operator = plane.create_api_key("ola", "operator")
    _, viewer = plane.create_api_key("vik", "viewer")
    ops, view = {"X-Api-Key": operator}, {"X-Api-Key": viewer}
    conf = ApiSettings(recover_on_start=False)
    source = {"sql": {"database": "warehouse", "query": WINDOW_SQL, "since": "2013-02-20"}}
    body = {"schedule": NEVER_SOON, "payload": {"model": "flights", "source": source}}
    with TestClient(create_app(plane, conf, own_plane=False)) as client:
        for bad, needle in (
            ({"query": f"DELETE FROM {TABLE}"}, "only reads"),
            ({"query": f"{WINDOW_SQL} AND carrier = :c"}, ":c"),
            ({"since": "2013-02-01'; DROP TABLE flights_feb; --"}, "since"),
            ({"url": databases["warehouse"]}, "url"),
        ):
            wrong = {
                **body,
                "payload": {"model": "flights", "source": {"sql": {**source["sql"], **bad}}},
            }
            answer = client.post("/schedules", json=wrong, headers=ops)
            assert answer.status_code == 422, answer.text
            assert needle in answer.text and PASSWORD not in answer.text
        made = client.post("/schedules", json=body, headers=ops)
        assert made.status_code == 201, made.text
        cron_id = made.json()["cron_id"]
        lg = client.post(
            "/runs/crons",
            json={"assistant_id": "flights", "schedule": NEVER_SOON, "input": {"source": source}},
            headers=ops,
        )
        assert lg.status_code == 200, lg.text
        assert lg.json()["payload"]["input"]["source"]["sql"]["database"] == "warehouse"
        # A firing that fails (an unreachable database, a missing table) says why, without the URL.
        broken = {
            **body,
            "payload": {
                "model": "flights",
                "source": {"sql": {"database": "down", "query": WINDOW_SQL}},
            },
        }
        down_id = client.post("/schedules", json=broken, headers=ops).json()["cron_id"]
        missing = {
            **body,
            "payload": {
                "model": "flights",
                "source": {
                    "sql": {
                        "database": "warehouse",
                        "query": "SELECT * FROM nope WHERE :start < :end",
                    }
                },
            },
        }
        missing_id = client.post("/schedules", json=missing, headers=ops).json()["cron_id"]
        sched: Scheduler = client.app.state.scheduler  # type: ignore[attr-defined]
        failed = [sched.fire(i, utc(2013, 3, 1)) for i in (down_id, missing_id)]
        assert [f.outcome for f in failed] == ["error", "error"]
        assert "SQL query failed" in failed[0].detail and '"nope"' in failed[1].detail
        shown = [
            client.get(path, headers=view).text
            for path in (
                "/schedules",
                f"/schedules/{cron_id}",
                f"/schedules/{down_id}/firings",
                f"/schedules/{missing_id}/firings",
            )
        ]
        for cid in (cron_id, down_id, missing_id, lg.json()["cron_id"]):
            client.delete(f"/schedules/{cid}", headers=ops)
    calls = plane.store.list_rows(ToolCall, ToolCall.agent == "scheduler")
    kinds = {json.loads(c.args).get("source") or json.loads(c.result).get("source") for c in calls}
    assert "sql" in kinds
    stored = [c.args + c.result for c in calls] + shown
    stored += [s.payload for s in plane.store.list_rows(Schedule)]
    secrets = [PASSWORD, *databases.values(), "127.0.0.1:1/nowhere"]
    assert not [s for s in secrets for text in stored if s in text]


def test_a_timestamp_column_holds_utc_whatever_the_database_zone(
    postgres: PostgresServer,
) -> None:
    """A ``timestamp`` (without time zone) column of UTC times compares with the bounds as
    UTC and comes back as UTC, in a database whose zone is New York's."""
    url = postgres.create_database()
    name = url.rsplit("/", 1)[1]
    postgres.psql(f"ALTER DATABASE {name} SET timezone TO 'America/New_York'")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE events (n int, at timestamp, atz timestamptz)")
        conn.exec_driver_sql(
            "INSERT INTO events VALUES (1, '2026-03-05 12:30:00', '2026-03-05 12:30:00+00')"
        )
    with engine.connect() as conn:  # the zone the query would otherwise run in
        assert conn.exec_driver_sql("SHOW TimeZone").scalar_one() == "America/New_York"
    engine.dispose()
    naive = "SELECT * FROM events WHERE at > :start AND at <= :end"
    aware = "SELECT * FROM events WHERE atz > :start AND atz <= :end"
    noon = Window(datetime(2026, 3, 5, 12, tzinfo=UTC), datetime(2026, 3, 5, 13, tzinfo=UTC))
    five = Window(datetime(2026, 3, 5, 17, tzinfo=UTC), datetime(2026, 3, 5, 18, tzinfo=UTC))
    for query in (naive, aware):
        frame = read_query(url, query, noon, timeout_s=5, max_rows=5, time_col="at")
        assert (
            frame.height == 1 and read_query(url, query, five, timeout_s=5, max_rows=5).is_empty()
        )
        expected = datetime(2026, 3, 5, 12, 30, tzinfo=UTC)
        assert frame["at"].dtype == frame["atz"].dtype == pl.Datetime("us", "UTC")
        assert frame.row(0) == (1, expected, expected)
    postgres.drop_database(name)


def test_a_window_over_the_batch_limit_is_cut_and_the_schedule_goes_on(
    plane: ControlPlane, feb: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first firing with more rows behind it than a batch may hold runs a cut window of at
    most max_batch_rows rows and says so; the next firings go on from its end, until every
    row of the window has been run once. (The query ends in a comment: the bounded count a
    cut makes nests it as written.)"""
    limit = 150
    monkeypatch.setattr(plane.settings.api, "max_batch_rows", limit)
    feb = feb.filter(pl.col("origin") == "EWR")
    query = f"{WINDOW_SQL} AND origin = 'EWR' -- Newark"
    horizon = trained_until(plane, "flights")
    assert isinstance(horizon, datetime)
    start, end = as_utc(horizon), utc(2013, 2, 12)
    assert rows_in(feb, start, end) > 2 * limit
    clock = Clock()
    firings = []
    with Scheduler(plane, clock=clock) as sched:
        sched.sources.clock = clock
        view = sched.create(sql_spec("warehouse", query), "sam")
        for hour in range(8):
            firing = fire_at(sched, view.cron_id, clock, end + timedelta(hours=hour))
            firings.append(firing)
            if firing.outcome != "fired":
                break
        sched.delete(view.cron_id, "sam")
    assert firings[-1].outcome == "no-new-batch" and len(firings) >= 4
    fired = firings[:-1]
    windows = [plane.get_run(f.run_id or "").metadata["sql_window"] for f in fired]
    bounds = [start.isoformat()] + [w["end"] for w in windows]
    assert [w["start"] for w in windows] == bounds[:-1]  # each goes on from the last
    assert all("window cut from" in f.detail for f in fired[:-1])
    counts = [filed_rows(plane, f.run_id or "") for f in fired]
    assert all(limit / 2 <= n <= limit for n in counts[:-1]) and 0 < counts[-1] <= limit
    last_end = as_utc(datetime.fromisoformat(bounds[-1]))
    assert sum(counts) == rows_in(feb, start, last_end) and last_end >= end
