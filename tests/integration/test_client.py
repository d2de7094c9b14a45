"""``driftpilot.client`` against a real server (``driftpilot serve`` in a subprocess): a frame
logged in requests of ``batch_rows``, a refusal raised with the server's detail, failures
retried (a 503 with Retry-After, a connection dropped before or after the server committed)
without a row written twice, and the background ``Logger``.

Faults come from a small proxy in front of the real server (``Flaky``): it answers 503, or
drops the connection, for the requests it is told to; every other request goes through."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pandas as pd
import polars as pl
import pytest
from sqlalchemy import func, select

from driftpilot.client import Client, ClientError, Logger, LoggerError
from driftpilot.store import AuditStore
from driftpilot.store.models import InferenceRow
from tests.integration.test_api_http import Server, free_port
from tests.integration.test_inference_api import (  # noqa: F401  (fixtures)
    MAX_REQUEST_ROWS,
    server,
    store,
)

pytestmark = pytest.mark.integration


class Flaky:
    """A loopback HTTP proxy to ``target``: each POST takes the next fault of ``faults``
    (``503``: answered 503 with Retry-After 0, nothing forwarded; ``drop``: the connection
    closed unanswered, nothing forwarded; ``lost``: forwarded, committed by the server, then
    the connection closed before its answer), or goes through when there is none."""

    def __init__(self, target: str) -> None:
        self.target, self.faults, self.posts = target, list[str](), 0
        self.lock = threading.Lock()
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with flaky.lock:
                    flaky.posts += 1
                    fault = flaky.faults.pop(0) if flaky.faults else None
                if fault == "503":
                    self._answer(503, b'{"detail": "busy"}', {"Retry-After": "0"})
                    return
                if fault == "drop":
                    self._drop()
                    return
                forwarded = httpx.post(
                    flaky.target + self.path,
                    content=body,
                    headers={k: v for k, v in self.headers.items() if k.lower() in _PASSED},
                    timeout=30,
                )
                if fault == "lost":
                    self._drop()
                    return
                ctype = forwarded.headers.get("content-type", "")
                self._answer(forwarded.status_code, forwarded.content, {"Content-Type": ctype})

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, *_: Any) -> None:  # quiet: the test output is the story
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_PASSED = {"content-type", "x-api-key", "authorization"}


@pytest.fixture
def flaky(server: Server) -> Iterator[Flaky]:  # noqa: F811
    proxy = Flaky(server.url)
    yield proxy
    proxy.close()


def frame(start: int, n: int) -> pl.DataFrame:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "row_id": [f"c{i}" for i in range(start, start + n)],
            "t": [t0 + timedelta(seconds=i) for i in range(start, start + n)],
            "x": [float(i % 7) for i in range(start, start + n)],
            "c": ["a" if i % 2 else None for i in range(start, start + n)],
            "prediction": [i % 2 for i in range(start, start + n)],
            "probabilities": [0.4 + (i % 2) / 5 for i in range(start, start + n)],
        }
    )


def count(store: AuditStore, pattern: str) -> int:  # noqa: F811
    """Logged rows whose id is LIKE ``pattern``."""
    with store.reading() as session:
        query = select(func.count()).where(InferenceRow.row_id.like(pattern))
        return int(session.scalar(query.select_from(InferenceRow)) or 0)


def test_a_frame_is_logged_in_requests_and_logging_it_again_writes_nothing(
    server: Server,  # noqa: F811
    store: AuditStore,  # noqa: F811
    flaky: Flaky,
) -> None:
    with Client(flaky.url, server.keys["olga"], batch_rows=500) as client:
        rows = frame(0, 1200)
        assert client.log("m", rows) == {"accepted": 1200, "duplicates": 0, "rows": 1200}
        # The server takes 300 rows per request: its 413 says so, and the client splits.
        assert flaky.posts == 5 and client.batch_rows == MAX_REQUEST_ROWS
        assert client.log("m", rows) == {"accepted": 0, "duplicates": 1200, "rows": 1200}
        one = rows.row(0, named=True) | {"row_id": "c-one"}
        assert client.log("m", one)["accepted"] == 1  # a dict is one row
        as_pandas = frame(5000, 3).to_pandas()
        as_pandas.loc[1, "x"] = float("nan")  # pandas' missing value: null
        assert client.log("m", as_pandas)["accepted"] == 3
    assert count(store, "c%") == 1204
    with store.reading() as session:
        payload = session.scalars(
            select(InferenceRow.payload).where(InferenceRow.row_id == "c5001")
        )
        assert json.loads(payload.one())["x"] is None


def test_a_refusal_is_a_client_error_with_the_servers_detail_and_is_not_retried(
    server: Server,  # noqa: F811
    flaky: Flaky,
) -> None:
    with Client(flaky.url, server.keys["olga"], backoff_s=0.01) as client:
        bad = frame(6000, 2).with_columns(pl.lit("high").alias("x"))
        with pytest.raises(ClientError) as refused:
            client.log("m", bad)
        assert refused.value.status == 422 and not refused.value.retryable
        assert "row 0, column 'x': must be a number" in str(refused.value)
        assert refused.value.problem["errors"][1]["row"] == 1
        with pytest.raises(ClientError, match="no model 'nope'") as missing:
            client.log("nope", frame(6000, 1))
        assert missing.value.status == 404
    assert flaky.posts == 2
    with Client(server.url, server.keys["vic"]) as viewer, pytest.raises(ClientError) as denied:
        viewer.log("m", frame(6000, 1))
    assert denied.value.status == 403


def test_failures_are_retried_and_no_row_is_written_twice(
    server: Server,  # noqa: F811
    store: AuditStore,  # noqa: F811
    flaky: Flaky,
) -> None:
    flaky.faults = ["503", "drop", "lost", "503"]
    with Client(flaky.url, server.keys["olga"], backoff_s=0.01) as client:
        answer = client.log("m", frame(7000, 50))
    # The "lost" try was committed by the server; its retry found the rows logged already.
    assert answer == {"accepted": 0, "duplicates": 50, "rows": 50}
    assert flaky.posts == 5 and count(store, "c70__") == 50


def test_a_failure_that_lasts_ends_in_a_retryable_client_error(server: Server) -> None:  # noqa: F811
    closed = f"http://127.0.0.1:{free_port()}"
    client = Client(closed, server.keys["olga"], retries=2, backoff_s=0.01)
    with client, pytest.raises(ClientError, match="no answer") as failed:
        client.log("m", frame(8000, 1))
    assert failed.value.status is None and failed.value.retryable


def test_the_logger_sends_rows_in_the_background_through_failures(
    server: Server,  # noqa: F811
    store: AuditStore,  # noqa: F811
    flaky: Flaky,
) -> None:
    flaky.faults = ["503", "drop", "503"]
    rows = frame(10_000, 1000).to_dicts()
    with Logger(flaky.url, server.keys["olga"], "m", flush_rows=200, flush_s=0.1) as logger:
        for one in rows:
            logger.log(one)  # the line a service adds
        assert logger.flush(timeout=60)
        assert logger.sent == 1000
    assert count(store, "c1____") == 1000  # c10000..c10999
    assert flaky.posts >= 5 + 3


def test_the_logger_keeps_refused_rows_and_raises_them_at_close(
    server: Server,  # noqa: F811
    store: AuditStore,  # noqa: F811
) -> None:
    logger = Logger(server.url, server.keys["olga"], "m", flush_rows=10, flush_s=0.05)
    good = frame(20_000, 30).to_dicts()
    bad = good[15] | {"x": "high"}
    for one in [*good[:15], bad, *good[16:]]:
        logger.log(one)
    with pytest.raises(LoggerError) as kept:
        logger.close()
    assert kept.value.status == 422 and kept.value.rows == [bad]
    assert count(store, "c200__") == 29  # the bad row's request went again without it
    with pytest.raises(ClientError, match="closed"):
        logger.log(good[0])


def test_the_logger_delivers_every_good_row_of_a_request_with_refused_rows(
    server: Server,  # noqa: F811
    store: AuditStore,  # noqa: F811
    flaky: Flaky,
) -> None:
    rows = frame(60_000, 302).to_dicts()
    with Client(server.url, server.keys["olga"]) as client:
        client.log("m", rows[200])
    invalid = rows[100] | {"x": "high"}
    conflicting = rows[200] | {"x": rows[200]["x"] + 1.0}  # its row id logged with other x
    rows[100], rows[200] = invalid, conflicting
    logger = Logger(flaky.url, server.keys["olga"], "m", flush_s=0.05)
    logger.log(rows)  # one request of them all (then the server's 300)
    with pytest.raises(LoggerError) as kept:
        logger.close()
    assert kept.value.rows == [invalid, conflicting]
    assert kept.value.reasons == [
        "HTTP 422: column 'x': must be a number, not str",
        "HTTP 409: row id 'c60200' is logged already with other content",
    ]
    assert logger.sent == 300 and count(store, "c60___") == 301  # 300 and the one before
    # 413 (302 rows: the server takes 300), 422, 409, then the 300 good rows: a refusal that
    # names its rows costs one request.
    assert flaky.posts == 4
    with store.reading() as session:
        query = select(InferenceRow.payload).where(InferenceRow.row_id == "c60200")
        assert json.loads(session.scalars(query).one())["x"] == frame(60_200, 1)["x"][0]


def test_the_logger_gives_up_at_close_and_keeps_what_it_could_not_send(server: Server) -> None:  # noqa: F811
    closed = f"http://127.0.0.1:{free_port()}"
    logger = Logger(closed, server.keys["olga"], "m", flush_rows=5, flush_s=0.01)
    rows = frame(30_000, 12).to_dicts()
    logger.log(pd.DataFrame(rows))
    with pytest.raises(LoggerError, match="12 logged rows were not delivered") as kept:
        logger.close(timeout=0.5)
    assert [r["row_id"] for r in kept.value.rows] == [r["row_id"] for r in rows]
    assert kept.value.retryable


def test_labels_that_come_later_join_logged_rows_by_row_id(
    server: Server,  # noqa: F811
    store: AuditStore,  # noqa: F811
) -> None:
    with Client(server.url, server.keys["olga"], batch_rows=2) as client:
        client.log("m", frame(40_000, 3))
        labels = pl.DataFrame({"row_id": ["c40000", "c40001", "c40002"], "y": [1, 0, True]})
        first = client.label("m", labels)
        assert (first["accepted"], first["duplicates"], first["rows"]) == (3, 0, 3)
        again = client.label("m", labels.head(1))
        assert (again["accepted"], again["duplicates"]) == (0, 1)
        with pytest.raises(ClientError) as other:
            client.label("m", {"row_id": "c40000", "y": 0})
        assert other.value.status == 409
    with store.reading() as session:
        query = select(InferenceRow.label).where(InferenceRow.row_id.like("c4000_"))
        assert sorted(str(label) for label in session.scalars(query)) == ["0", "1", "1"]


def test_the_logger_keeps_rows_that_are_not_json_and_its_thread_goes_on(
    server: Server,  # noqa: F811
    store: AuditStore,  # noqa: F811
) -> None:
    logger = Logger(server.url, server.keys["olga"], "m", flush_rows=1, flush_s=0.01)
    odd = frame(50_000, 1).to_dicts()[0] | {"x": object()}
    logger.log(odd)
    logger.log(frame(50_001, 1))
    with pytest.raises(LoggerError, match="cannot be sent") as kept:
        logger.close()
    assert kept.value.rows == [odd]
    assert count(store, "c50001") == 1  # the row after it was sent
