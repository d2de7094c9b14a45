"""Alerts on real flights and real control runs: webhooks posted to a real HTTP receiver on
loopback, a dead endpoint (a closed port) that never holds up a run, every attempt audited
with the URL redacted, and the webhook routes of the API."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from driftpilot.alerts.webhooks import AlertDispatcher, AlertSettings, Webhooks, WebhookSpec
from driftpilot.core.settings import ApiSettings, Settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import ToolCall
from tests.conftest import add_flights

pytestmark = pytest.mark.integration
SECRET = "s3cr3t-token-value"
PROBLEM = "application/problem+json"


class Receiver:
    """A webhook receiver: records every POST (path and JSON body); ``/flaky`` answers 503
    to its first request."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                path = self.path.split("?", 1)[0]
                with received.lock:
                    received.posts.append((path, body))
                    flaky_first = (
                        path == "/flaky" and sum(p == path for p, _ in received.posts) == 1
                    )
                self.send_response(503 if flaky_first else 200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for p, b in self.posts if p == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def dead_url() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook?token={SECRET}"


def bad_batch(months: dict[str, pl.DataFrame], seed: int) -> pl.DataFrame:
    """A real month with a column missing: ingestion quarantines it (fast, no training)."""
    return months["2013-02"].sample(n=1500, seed=seed).sort("time_hour").drop("distance")


def wait_for(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_alerts_reach_the_receiver_and_a_dead_endpoint_never_blocks_a_run(
    settings: Settings,
    jan_sample: pl.DataFrame,
    months: dict[str, pl.DataFrame],
    receiver: Receiver,
) -> None:
    cp = ControlPlane(settings)
    add_flights(cp, jan_sample)
    hooks = Webhooks(cp.store)
    streak = ["quarantine_streak"]
    json_hook = hooks.add("flights", WebhookSpec(url=f"{receiver.url}/json", events=streak), "ann")
    hooks.add("flights", WebhookSpec(url=f"{receiver.url}/slack", format="slack"), "ann")
    flaky = hooks.add(
        "flights", WebhookSpec(url=f"{receiver.url}/flaky?token={SECRET}", events=streak), "ann"
    )
    hooks.add("flights", WebhookSpec(url=f"{receiver.url}/promo", events=["promotion"]), "ann")
    dead = hooks.add("flights", WebhookSpec(url=dead_url(), events=streak), "ann")
    assert (
        SECRET not in dead.url
        and dead.url.endswith(":" + dead.url.rsplit(":", 1)[1])
        and dead.url.endswith("/…")
    )

    # Retries: 3 attempts 1 s and 2 s apart, so the dead endpoint takes >= 3 s to give up.
    conf = AlertSettings(timeout_s=2, retries=2, backoff_s=1.0, max_backoff_s=2.0, workers=2)
    with AlertDispatcher(cp, conf) as dispatcher:
        first = cp.start_run("flights", bad_batch(months, 1), "bad-1", requested_by="ann")
        started = time.monotonic()
        second = cp.start_run("flights", bad_batch(months, 2), "bad-2", requested_by="ann")
        run_s = time.monotonic() - started
        assert first.outcome == second.outcome == "quarantined"
        # The run returned while the dead endpoint is still being retried.
        assert not dispatcher.wait_idle(0) and run_s < 3.0, run_s
        assert dispatcher.wait_idle(30)
    assert time.monotonic() - started >= 3.0

    (event,) = receiver.bodies("/json")
    assert event["source"] == "driftpilot" and event["event"] == "quarantine_streak"
    assert event["model"] == "flights" and event["run_id"] == second.run_id
    assert event["detail"] == {"streak": 2} and "quarantined" in event["text"]
    (slack,) = receiver.bodies("/slack")  # all events: only the streak happened
    assert set(slack) == {"text", "blocks"} and "flights" in slack["text"]
    assert slack["blocks"][0] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": slack["text"]},
    }
    assert any(second.run_id in f["text"] for f in slack["blocks"][1]["fields"])
    assert receiver.bodies("/promo") == []  # not subscribed to quarantine streaks
    assert len(receiver.bodies("/flaky")) == 2  # a 503, then delivered on the retry

    calls = cp.store.list_rows(
        ToolCall, ToolCall.agent == "alerts", ToolCall.tool == "webhook.post", order=ToolCall.id
    )
    attempts: dict[str, list[tuple[bool, Any, Any]]] = {}
    for call in calls:
        args, result = json.loads(call.args), json.loads(call.result)
        assert SECRET not in call.args + call.result
        assert call.run_id == second.run_id and args["event"] == "quarantine_streak"
        attempts.setdefault(args["webhook_id"], []).append(
            (call.ok, result["status"], args["attempt"])
        )
    assert attempts[json_hook.webhook_id] == [(True, 200, 1)]
    assert attempts[flaky.webhook_id] == [(False, 503, 1), (True, 200, 2)]
    assert attempts[dead.webhook_id] == [(False, None, 1), (False, None, 2), (False, None, 3)]
    dead_calls = [c for c in calls if json.loads(c.args)["webhook_id"] == dead.webhook_id]
    assert json.loads(dead_calls[-1].result)["error"] == "ConnectError"
    assert json.loads(dead_calls[-1].args)["url"].startswith("http://127.0.0.1:")
    assert cp.verify().ok
    cp.close()


def test_webhooks_over_the_api(
    settings: Settings,
    jan_sample: pl.DataFrame,
    months: dict[str, pl.DataFrame],
    receiver: Receiver,
) -> None:
    cp = ControlPlane(settings)
    add_flights(cp, jan_sample)
    _, operator = cp.create_api_key("olga", "operator")
    _, viewer = cp.create_api_key("vic", "viewer")
    ops, view = {"X-Api-Key": operator}, {"X-Api-Key": viewer}
    url = f"{receiver.url}/json?token={SECRET}"
    with TestClient(create_app(cp, ApiSettings(recover_on_start=False))) as client:
        body = {"url": url, "events": ["quarantine_streak", "run_failed"]}
        assert client.post("/models/flights/webhooks", json=body, headers=view).status_code == 403
        for bad in ({"url": "ftp://example.org/x"}, {"url": url, "events": ["coffee"]}):
            answer = client.post("/models/flights/webhooks", json=bad, headers=ops)
            assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM
        assert client.post("/models/nope/webhooks", json=body, headers=ops).status_code == 404

        made = client.post("/models/flights/webhooks", json=body, headers=ops)
        assert made.status_code == 201, made.text
        hook = made.json()
        assert SECRET not in made.text and hook["created_by"] == "olga"
        assert hook["events"] == ["quarantine_streak", "run_failed"]
        again = client.post("/models/flights/webhooks", json=body, headers=ops)
        assert again.status_code == 422 and "already" in again.json()["detail"]
        listed = client.get("/models/flights/webhooks", headers=ops)
        assert [h["webhook_id"] for h in listed.json()] == [hook["webhook_id"]]
        assert SECRET not in listed.text
        assert client.get("/models/flights/webhooks", headers=view).status_code == 403

        # The app's dispatcher posts what runs in this process announce.
        for seed in (3, 4):
            cp.start_run("flights", bad_batch(months, seed), f"bad-{seed}", requested_by="ann")
        (event,) = wait_for(lambda: receiver.bodies("/json"), 30, "the alert")
        assert event["event"] == "quarantine_streak"

        path = f"/models/flights/webhooks/{hook['webhook_id']}"
        assert client.delete(path, headers=ops).status_code == 204
        assert client.delete(path, headers=ops).status_code == 404
        assert client.get("/models/flights/webhooks", headers=ops).json() == []
