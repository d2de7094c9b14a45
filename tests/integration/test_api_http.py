"""The REST API over real HTTP: ``driftpilot serve`` in a subprocess on a free loopback port,
over a temporary home with the flights model (real data, real MLflow, real SQLite).

The tests share one server and one trained model and run in file order: a run paused for
approval survives a kill -9 of the server and is approved through the new one; later tests
read the trail the earlier ones wrote. The policy forces a retrain and calls every promotion
high-risk, so runs pause for a person (or end rejected/quarantined)."""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import yaml

from driftpilot.core.llm import free_port
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from tests.conftest import REPORTS_ON_REQUEST, add_flights, db_env, wait_serving
from tests.integration.test_control_graph import FORCE_RETRAIN, HIGH_RISK, merge
from tools.datasets import FLIGHTS_CACHE

pytestmark = pytest.mark.integration

DRIFTPILOT = Path(sys.executable).with_name("driftpilot")
ENDED = {"success", "error"}
STOPPED = ENDED | {"interrupted"}
PROBLEM = "application/problem+json"
LIMITS = {
    "DRIFTPILOT_API_MAX_BODY_BYTES": str(4 * 1024 * 1024),
    "DRIFTPILOT_API_MAX_BATCH_ROWS": "50000",
    "DRIFTPILOT_API_MAX_UPLOAD_COLUMNS": "100",
    "DRIFTPILOT_API_MAX_LINE_BYTES": "65536",
    "DRIFTPILOT_API_SSE_PING_S": "1",
    "DRIFTPILOT_API_SSE_POLL_S": "0.2",
    **REPORTS_ON_REQUEST,
}


@dataclass
class Server:
    """A ``driftpilot serve`` subprocess over one home; ``restart`` kills it (-9) and starts
    a new one on the same home."""

    home: Path
    env: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = 0
    # On PostgreSQL the API queues runs and a `driftpilot worker` executes them.
    worker: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        self.starts += 1
        log = (self.home.parent / f"serve-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [str(DRIFTPILOT), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_serving(self.proc, f"{self.url}/healthz", self.log)
        if db_env(self.env):
            self.worker = subprocess.Popen(
                [str(DRIFTPILOT), "worker", "--concurrency", "2"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        for proc in (self.proc, self.worker):
            if proc is not None:
                proc.kill()
                proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in (self.proc, self.worker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=30)

    def restart(self) -> None:
        self.kill()
        self.start()

    def log(self) -> str:
        path = self.home.parent / f"serve-{self.starts}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def client(self, who: str | None = None, **headers: str) -> httpx.Client:
        if who is not None:
            headers["X-Api-Key"] = self.keys[who]
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, flights_df: pl.DataFrame, months: Any
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("api-http")
    home = root / "home"
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump(merge(FORCE_RETRAIN, HIGH_RISK)))
    settings = Settings(home=home, policy_path=policy, lease_ttl_s=3).ensure_dirs()
    assert settings.cache_dir is not None
    flights_df.write_parquet(settings.cache_dir / FLIGHTS_CACHE)  # no re-parse in the server
    cp = ControlPlane(settings)
    jan = months["2013-01"].sample(n=4000, seed=1).sort("time_hour")
    add_flights(cp, jan, principal="alice")
    srv = Server(home=home, env={})
    for who, role in [
        ("admin", "admin"),
        ("olga", "operator"),
        ("abby", "approver"),
        (" OLGA ", "approver"),  # olga again, under the one identity rule
        ("vic", "viewer"),
    ]:
        srv.keys[who] = cp.create_api_key(who, role)[1]
    cp.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
    srv.env = {
        **env,
        "DRIFTPILOT_HOME": str(home),
        "DRIFTPILOT_POLICY_PATH": str(policy),
        "DRIFTPILOT_LEASE_TTL_S": "3",
        **LIMITS,
        **db_env(),  # DRIFTPILOT_TEST_DB=postgres: the module's databases (tests/conftest.py)
    }
    srv.start()
    yield srv
    srv.stop()


def assert_problem(response: httpx.Response, status: int, *detail: str) -> dict[str, Any]:
    """An RFC 9457 problem with this status, whose detail names every part of ``detail``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body), body
    assert body["status"] == status and body["type"].startswith("urn:driftpilot:problem:")
    for part in detail:
        assert part in body["detail"], body
    return dict(body)


def wait_run(client: httpx.Client, run_id: str, until: set[str], timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/runs/{run_id}").json()
        if run["status"] in until:
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.3)


def dataset_run(model: str, ref: str, rows: int, **extra: Any) -> dict[str, Any]:
    return {"model": model, "input": {"batch": {"dataset": ref, "max_rows": rows}}, **extra}


def read_events(response: httpx.Response) -> tuple[list[tuple[str, Any, str | None]], int]:
    """SSE events (name, data, id) and how many comment lines (pings) came."""
    events: list[tuple[str, Any, str | None]] = []
    pings = 0
    name, data, ident = "message", "", None
    for line in response.iter_lines():
        if line.startswith(":"):
            pings += 1
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()
        elif line.startswith("id:"):
            ident = line[3:].strip()
        elif line == "" and data:
            events.append((name, json.loads(data), ident))
            name, data, ident = "message", "", None
    return events, pings


# -- auth ---------------------------------------------------------------------------------------


def test_401_without_or_with_a_bad_key_and_403_for_a_role_too_low(server: Server) -> None:
    with server.client() as anon:
        body = assert_problem(anon.get("/runs"), 401, "no API key")
        assert "driftpilot keys create" in body["detail"]
        assert anon.get("/runs").headers["www-authenticate"].startswith("Bearer")
        assert_problem(anon.get("/runs", headers={"X-Api-Key": "dp_nope"}), 401, "unknown")
        bearer = anon.get("/runs", headers={"Authorization": f"Bearer {server.keys['vic']}"})
        assert bearer.status_code == 200
    with server.client("vic") as viewer:
        refused = viewer.post("/runs", json=dataset_run("flights", "flights:2013-07", 500))
        assert_problem(refused, 403, "'vic' has the viewer role", "operator")
    with server.client("olga") as operator:
        refused = operator.post("/approvals/abc", json={"decision": "approve"})
        assert_problem(refused, 403, "'olga' has the operator role", "approver")
        assert operator.get("/runs").json()["items"] == []  # nothing ran because of these


def test_an_idle_connection_outlives_uvicorns_default_keep_alive(server: Server) -> None:
    """A client reusing a connection after 6 s idle (uvicorn closes after 5 s by default)
    gets its answer: the server closing a connection the client is sending on fails the
    request, which is what a load balancer or a slow client runs into."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b'{"status":"ok"}'
        first = conn.sock
        time.sleep(6)
        conn.request("GET", "/healthz")  # on the same socket: a closed one fails here
        assert conn.sock is first and conn.getresponse().status == 200
    finally:
        conn.close()


def test_keys_from_the_cli_authenticate_until_revoked(server: Server) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(DRIFTPILOT), "keys", *args], env=server.env, capture_output=True, text=True
        )

    made = cli("create", "--name", "Quinn", "--role", "viewer")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    key_id = made.stderr.split()[1]
    assert secret.startswith("dp_") and "quinn (viewer)" in made.stderr
    assert key_id in cli("list").stdout and secret not in cli("list").stdout
    with server.client(**{"X-Api-Key": secret}) as quinn:
        assert quinn.get("/models").status_code == 200
        assert cli("revoke", key_id).returncode == 0
        assert_problem(quinn.get("/models"), 401, "unknown or revoked")


# -- a run paused for approval, approved after the server restarted -----------------------------


def test_run_streams_pauses_and_is_approved_after_a_restart(server: Server) -> None:
    with server.client("olga") as olga:
        created = olga.post(
            "/runs", json=dataset_run("flights", "flights:2013-07", 2000, metadata={"t": 1})
        )
        assert created.status_code == 202, created.text
        run = created.json()
        assert run["status"] in ("pending", "running") and run["requested_by"] == "olga"
        assert run["assistant_id"] == "flights" and run["metadata"] == {"t": 1}
        kept = olga.get(f"/runs/{run['run_id']}").json()  # stored with the run, not echoed
        assert kept["metadata"] == {"t": 1}
        busy = olga.post("/runs", json=dataset_run("flights", "flights:2013-08", 500))
        assert_problem(busy, 409, "busy")

        with olga.stream("GET", f"/runs/{run['run_id']}/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events, pings = read_events(response)
        assert pings >= 1  # the heartbeat (every second here) while the run works
        names = [e[0] for e in events]
        assert names[0] == "metadata" and names[-2:] == ["interrupt", "end"], names
        steps = [data for name, data, _ in events if name == "step"]
        agents = [s["agent"] for s in steps]
        assert agents[:2] == ["ingestion", "drift_analyst"] and "evaluator" in agents, agents
        assert all(s["rationale"] and s["action"] for s in steps)
        ids = [int(i) for _, _, i in events if i is not None]
        assert ids == list(range(1, len(ids) + 1))
        interrupt = events[-2][1]["interrupt"]
        assert interrupt["action_request"]["action"] == "promote"
        assert {"allow_accept", "allow_respond"} <= set(interrupt["config"])
        assert interrupt["description"]

        # Reconnecting with Last-Event-ID gets only what followed.
        with olga.stream(
            "GET", f"/runs/{run['run_id']}/stream", headers={"Last-Event-ID": str(ids[-2])}
        ) as response:
            again, _ = read_events(response)
        assert [i for _, _, i in again if i is not None] == [str(ids[-1])]

        paused = wait_run(olga, run["run_id"], STOPPED)
        assert paused["status"] == "interrupted" and paused["interrupt"] == interrupt
        pending = olga.get("/approvals").json()
        assert [a["run_id"] for a in pending] == [run["run_id"]]
        assert pending[0]["interrupt"]["action_request"]["action"] == "promote"

    with server.client(" OLGA ") as olga_approver:  # the requester, with an approver key
        refused = olga_approver.post(
            f"/approvals/{run['run_id']}", json={"command": {"resume": {"decision": "approve"}}}
        )
        assert_problem(refused, 403, "requested run")

    server.restart()  # kill -9: the paused run lives in the checkpointer and the audit
    deadline = time.monotonic() + 30
    while "recovery at start-up" not in server.log():  # the lifespan recovers, and says so
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)

    with server.client("abby") as abby:
        assert abby.get(f"/runs/{run['run_id']}").json()["status"] == "interrupted"
        decided = abby.post(
            f"/approvals/{run['run_id']}",
            json={"command": {"resume": {"decision": "approve", "comment": "checked"}}},
        )
        assert decided.status_code == 202, decided.text
        # The stream of a decided run follows it to its end (from after what was seen).
        with abby.stream(
            "GET", f"/runs/{run['run_id']}/stream", headers={"Last-Event-ID": str(ids[-1])}
        ) as response:
            rest, _ = read_events(response)
        kinds = [name for name, _, _ in rest]
        assert kinds[-2:] == ["outcome", "end"] and "interrupt" not in kinds, kinds
        assert ("approval", "abby") in [(n, (d or {}).get("principal")) for n, d, _ in rest]
        assert ("champion", 2) in [(n, (d or {}).get("version")) for n, d, _ in rest]
        assert rest[-2][1]["outcome"] == "promoted"
        done = wait_run(abby, run["run_id"], ENDED)
        assert (done["status"], done["outcome"]) == ("success", "promoted"), done
        assert abby.get("/models/flights").json()["champion"] == 2
        assert abby.get("/approvals").json() == []
        decided = abby.post(f"/approvals/{run['run_id']}", json={"decision": "approve"})
        assert_problem(decided, 409, "not waiting for approval")


# -- the other batch sources, multitask and cancel -----------------------------------------------


def test_runs_on_a_file_under_the_root_and_an_upload(server: Server, months: Any) -> None:
    inbox = server.home / "inbox"
    inbox.mkdir(exist_ok=True)
    months["2013-08"].sample(n=1500, seed=8).sort("time_hour").write_parquet(inbox / "aug.parquet")
    buffer = io.BytesIO()
    months["2013-09"].sample(n=1500, seed=9).sort("time_hour").write_parquet(buffer)
    with server.client("olga") as olga:
        by_path = olga.post(
            "/runs", json={"model": "flights", "input": {"batch": {"path": "aug.parquet"}}}
        )
        assert by_path.status_code == 202, by_path.text
        uploaded = olga.post(
            "/runs/upload",
            data={"model": "flights", "multitask_strategy": "enqueue", "metadata": '{"k": "v"}'},
            files={"file": ("sep.parquet", buffer.getvalue(), "application/octet-stream")},
        )
        assert uploaded.status_code == 202, uploaded.text
        assert uploaded.json()["batch_id"] == "sep" and by_path.json()["batch_id"] == "aug"
        assert uploaded.json()["metadata"] == {"k": "v"}
        for created in (by_path, uploaded):
            done = wait_run(olga, created.json()["run_id"], STOPPED)
            assert done["status"] in ("success", "interrupted"), (done["outcome"], done["summary"])


def test_cancel_a_pending_run_and_refuse_the_rest(server: Server) -> None:
    with server.client("olga") as olga:
        first = olga.post("/runs", json=dataset_run("flights", "flights:2013-10", 1500)).json()
        queued = olga.post(
            "/runs",
            json=dataset_run("flights", "flights:2013-11", 1500, multitask_strategy="enqueue"),
        )
        assert queued.status_code == 202 and queued.json()["status"] == "pending"
        assert_problem(
            olga.post("/runs", json=dataset_run("flights", "flights:2013-12", 500)), 409, "busy"
        )
        cancelled = olga.post(f"/runs/{queued.json()['run_id']}/cancel", json={"reason": "dup"})
        assert cancelled.status_code == 200, cancelled.text
        assert (cancelled.json()["status"], cancelled.json()["outcome"]) == ("error", "cancelled")
        assert_problem(olga.post(f"/runs/{queued.json()['run_id']}/cancel"), 409, "ended")
        assert_problem(olga.post("/runs/nope/cancel"), 404)
        wait_run(olga, first["run_id"], STOPPED)
        # The cancelled run never ran: no agent decided anything in it.
        trail = olga.get("/audit", params={"run_id": queued.json()["run_id"]}).json()["items"]
        assert [(r["agent"], r["action"]) for r in trail] == [("api", "cancel")]
        assert "olga cancelled" in trail[0]["rationale"]
        assert olga.get(f"/runs/{queued.json()['run_id']}").json()["outcome"] == "cancelled"
        waiting = [a["run_id"] for a in olga.get("/approvals").json()]
        if waiting:
            assert_problem(olga.post(f"/runs/{waiting[0]}/cancel"), 409, "reject it instead")


# -- lists, audit, metrics ------------------------------------------------------------------------


def test_runs_list_filters_and_cursor_pages(server: Server) -> None:
    with server.client("vic") as vic:
        everything = vic.get("/runs", params={"limit": 200}).json()
        assert everything["next_cursor"] is None
        ids = [r["run_id"] for r in everything["items"]]
        assert len(ids) >= 5
        created = [r["created_at"] for r in everything["items"]]
        assert created == sorted(created, reverse=True)
        paged: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = vic.get("/runs", params=params).json()
            paged += [r["run_id"] for r in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert paged == ids
        promoted = vic.get("/runs", params={"status": "success", "outcome": "promoted"}).json()
        assert len(promoted["items"]) == 1
        errors = vic.get("/runs", params={"status": "error"}).json()["items"]
        assert [r["outcome"] for r in errors] == ["cancelled"]
        mine = vic.get("/runs", params={"requested_by": "  Olga"}).json()["items"]
        assert len(mine) == len(ids)
        assert vic.get("/runs", params={"model": "nope"}).json()["items"] == []
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert vic.get("/runs", params={"since": later}).json()["items"] == []
        assert len(vic.get("/runs", params={"until": later}).json()["items"]) == len(ids)
        assert_problem(vic.get("/runs", params={"cursor": "garbage"}), 422, "cursor")
        assert_problem(vic.get("/runs", params={"status": "done"}), 422)
        assert_problem(vic.get("/runs", params={"limit": 0}), 422)


def test_audit_query_verify_export_and_champion_at(server: Server) -> None:
    with server.client("vic") as vic:
        exported = []
        with vic.stream("GET", "/audit/export") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/x-ndjson")
            exported = [json.loads(line) for line in response.iter_lines() if line]
        assert len(exported) > 20 and {r["table"] for r in exported} >= {
            "decisions",
            "tool_calls",
            "approvals",
            "champion_history",
        }
        paged: list[tuple[str, int]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 25} | ({"cursor": cursor} if cursor else {})
            page = vic.get("/audit", params=params).json()
            paged += [(r["table"], r["id"]) for r in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert paged == [(r["table"], r["id"]) for r in exported]

        promoted = vic.get("/runs", params={"outcome": "promoted"}).json()["items"][0]
        of_run = vic.get("/audit", params={"run_id": promoted["run_id"], "limit": 1000}).json()
        assert {r["run_id"] for r in of_run["items"]} == {promoted["run_id"]}
        tables = {r["table"] for r in of_run["items"]}
        assert {"decisions", "approvals", "champion_history", "mutations"} <= tables
        approvals = vic.get(
            "/audit", params={"run_id": promoted["run_id"], "table": "approvals"}
        ).json()["items"]
        assert [(a["kind"], a["principal"]) for a in approvals] == [
            ("request", "olga"),
            ("decision", "abby"),
        ]
        analyst = vic.get("/audit", params={"agent": "drift_analyst", "limit": 1000}).json()
        assert analyst["items"] and {r["agent"] for r in analyst["items"]} == {"drift_analyst"}
        of_model = vic.get("/audit", params={"model": "flights", "limit": 1000}).json()["items"]
        assert any(r["run_id"] == "bootstrap-flights" for r in of_model)
        assert_problem(vic.get("/audit", params={"model": "nope"}), 404)
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        # a page with no row asks whether the model exists: unknown 404, known and empty 200
        assert_problem(vic.get("/audit", params={"model": "nope", "agent": "cicd"}), 404)
        assert_problem(vic.get("/audit", params={"model": "nope", "since": later}), 404)
        quiet = vic.get("/audit", params={"model": "flights", "since": later})
        assert quiet.status_code == 200 and quiet.json()["items"] == [], quiet.text
        assert vic.get("/audit", params={"since": later}).json()["items"] == []
        assert_problem(vic.get("/audit", params={"since": "2026-01-01T00:00:00"}), 422, "UTC")
        assert_problem(vic.get("/audit", params={"cursor": "!!"}), 422, "cursor")

        verified = vic.post("/audit/verify").json()
        assert verified["ok"] is True, verified
        assert verified["checked"]["decisions"] > 0 and verified["checkpoint"]

        history = vic.get("/models/flights/champions").json()
        assert [(h["action"], h["version"]) for h in history] == [("bootstrap", 1), ("promote", 2)]
        between = history[1]["at"]
        before = datetime.fromisoformat(between) - timedelta(microseconds=1)
        at = vic.get("/models/flights/champion-at", params={"time": before.isoformat()}).json()
        assert at["version"] == 1
        now = datetime.now(UTC).isoformat()
        assert vic.get("/models/flights/champion-at", params={"time": now}).json()["version"] == 2
        long_ago = "2000-01-01T00:00:00+00:00"
        assert vic.get("/models/flights/champion-at", params={"time": long_ago}).json() == {
            "model": "flights",
            "time": long_ago,
            "version": None,
        }
        assert_problem(vic.get("/models/nope/champion-at", params={"time": now}), 404)


def test_health_readiness_and_prometheus_metrics(server: Server) -> None:
    with server.client() as anon:
        assert anon.get("/healthz").json() == {"status": "ok"}
        assert anon.get("/readyz").json() == {"status": "ok"}
        assert_problem(anon.get("/metrics"), 401)
    with server.client("vic") as vic:
        response = vic.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'driftpilot_runs{outcome="promoted",status="success"} 1.0' in text
    assert 'driftpilot_runs{outcome="cancelled",status="error"} 1.0' in text
    assert 'driftpilot_run_duration_seconds_bucket{le="+Inf"}' in text
    assert "driftpilot_run_duration_seconds_count" in text
    assert 'driftpilot_drift_share{model="flights"}' in text
    waiting = sum(1 for _ in _interrupted(text))
    assert f"driftpilot_pending_approvals {float(waiting)}" in text
    assert "# TYPE driftpilot_llm_fallbacks_total counter" in text  # none with builtin


def _interrupted(text: str) -> Iterator[str]:
    for line in text.splitlines():
        if line.startswith("driftpilot_runs{") and 'status="interrupted"' in line:
            yield from [line] * int(float(line.rsplit(" ", 1)[1]))


# -- hostile payloads -----------------------------------------------------------------------------


def _state(client: httpx.Client) -> tuple[Any, ...]:
    """Runs with their status, models, and the size of the audit trail."""
    runs = client.get("/runs", params={"limit": 200}).json()["items"]
    return (
        [(r["run_id"], r["status"]) for r in runs],
        client.get("/models").json(),
        client.get("/audit/export").text.count("\n"),
    )


def test_hostile_payloads_get_4xx_problems_and_change_nothing(
    server: Server, tmp_path: Path
) -> None:
    inbox = server.home / "inbox"
    inbox.mkdir(exist_ok=True)
    outside = tmp_path / "secret.csv"
    outside.write_text("a,b\n1,2\n")
    (inbox / "link.csv").symlink_to(outside)
    (inbox / "many-rows.csv").write_text("x\n" + "1\n" * 60_000)
    with server.client("olga") as olga:
        before = _state(olga)

        def run_path(path: str) -> httpx.Response:
            return olga.post("/runs", json={"model": "flights", "input": {"batch": {"path": path}}})

        def upload(name: str, data: bytes, model: str = "flights") -> httpx.Response:
            return olga.post(
                "/runs/upload", data={"model": model}, files={"file": (name, data, "text/csv")}
            )

        big = {"model": "flights", "input": {"batch": {"path": "x.csv"}}, "pad": "x" * 5_000_000}
        assert_problem(olga.post("/runs", json=big), 413, "larger than the limit")
        assert_problem(upload("huge.csv", b"a\n" * 2_500_000), 413)
        assert_problem(olga.post("/runs", json={"model": 5, "input": "x"}), 422)
        assert_problem(
            olga.post("/runs", content=b"{not json", headers={"content-type": "application/json"}),
            422,
        )
        assert_problem(
            olga.post("/runs", json=dataset_run("nope", "flights:2013-07", 500)), 404, "nope"
        )
        assert_problem(olga.post("/runs", json=dataset_run("flights", "flights:2099-01", 500)), 404)
        assert_problem(upload("b.csv", b"a\n1\n", model="nope"), 404, "nope")
        assert_problem(run_path("../../etc/passwd"), 422)
        assert_problem(run_path("../../etc/passwd.csv"), 422, "'..'")
        assert_problem(run_path("/etc/passwd.csv"), 422)
        assert_problem(run_path(str(outside)), 422)
        assert_problem(run_path("link.csv"), 422, "leaves the allowed batch root")
        assert_problem(run_path("nothing-here.csv"), 422, "no batch file")
        assert_problem(run_path("many-rows.csv"), 413, "more than 50000 rows")
        assert_problem(upload("rows.csv", b"x\n" + b"1\n" * 60_000), 413, "more than 50000 rows")
        line = b"a,b\n" + b"1," + b"9" * 100_000 + b"\n"
        assert_problem(upload("line.csv", line), 413, "line longer than 65536")
        wide = ",".join(f"c{i}" for i in range(500)).encode() + b"\n" + b"1," * 499 + b"1\n"
        assert_problem(upload("wide.csv", wide), 413, "500 columns")
        assert_problem(upload("notes.txt", b"hello"), 415)
        assert_problem(upload("empty.csv", b"a,b\n"), 422, "no rows")
        assert_problem(upload("bad.parquet", b"PAR1 not parquet"), 422, "cannot read")
        assert_problem(olga.post("/approvals/nope", json={"decision": "approve"}), 403)
        with server.client("abby") as abby:
            assert_problem(abby.post("/approvals/nope", json={"decision": "approve"}), 404)
            assert_problem(abby.post("/approvals/x", json={"decision": "maybe"}), 422)
            assert_problem(
                abby.post("/approvals/x", json={"decision": "approve", "approver": "abby"}), 422
            )
        assert_problem(olga.get("/runs/nope"), 404)
        assert_problem(olga.get("/runs/nope/stream"), 404)
        assert_problem(olga.get("/models/nope"), 404)
        assert_problem(olga.get("/nowhere"), 404)
        assert_problem(olga.delete("/runs"), 405)
        assert _state(olga) == before


# -- models: create as a job, versions, champion history, rollback -------------------------------


def test_model_create_and_versions(server: Server, months: Any) -> None:
    with server.client("olga") as olga:
        created = olga.post(
            "/models",
            json={
                "name": "flights-feb",
                "input": {"batch": {"dataset": "flights:2013-02", "max_rows": 2000}},
            },
        )
        assert created.status_code == 202, created.text
        job = created.json()
        assert job["status"] in ("pending", "running") and job["model"] == "flights-feb"
        assert_problem(
            olga.post("/models", json={"name": "flights", "input": job_input()}), 409, "exists"
        )
        assert_problem(olga.post("/models", json={"name": "../x", "input": job_input()}), 422)
        deadline = time.monotonic() + 120
        while job["status"] not in ("success", "error"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
            job = olga.get(f"/jobs/{job['job_id']}").json()
        assert job["status"] == "success", job
        assert job["result"]["champion"] == 1
        model = olga.get("/models/flights-feb").json()
        assert model["champion"] == 1 and model["target"] == "delayed"
        assert "flights-feb" in [m["name"] for m in olga.get("/models").json()]
        assert_problem(olga.get("/jobs/nope"), 404)

        buffer = io.BytesIO()
        months["2013-03"].sample(n=1500, seed=3).write_csv(buffer)
        form = {
            "name": "flights-csv",
            "target": "delayed",
            "time_col": "time_hour",
            "numeric": "distance,temp,hour",
            "categorical": "carrier,origin",
        }
        uploaded = olga.post(
            "/models/upload", data=form, files={"file": ("mar.csv", buffer.getvalue())}
        )
        assert uploaded.status_code == 202, uploaded.text
        missing = olga.post(
            "/models/upload",
            data={**form, "name": "flights-x", "numeric": "distance,nope"},
            files={"file": ("mar.csv", buffer.getvalue())},
        )
        assert_problem(missing, 422, "nope")
        job = uploaded.json()
        while job["status"] not in ("success", "error"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
            job = olga.get(f"/jobs/{job['job_id']}").json()
        assert job["status"] == "success", job
        assert olga.get("/models/flights-csv").json()["features"] == [
            "distance",
            "temp",
            "hour",
            "carrier",
            "origin",
        ]
        assert [j["model"] for j in olga.get("/jobs").json()] == ["flights-csv", "flights-feb"]

        versions = olga.get("/models/flights/versions").json()
        numbers = [v["version"] for v in versions]
        assert numbers == sorted(numbers, reverse=True) and {1, 2} <= set(numbers)
        by_number = {v["version"]: v for v in versions}
        assert by_number[2]["is_champion"] and by_number[1]["was_champion"]
        assert by_number[1]["run_id"] == "bootstrap-flights"
        assert 0.5 < by_number[2]["metrics"]["valid_roc_auc"] <= 1.0
        assert_problem(olga.get("/models/nope/versions"), 404)


def test_rollback_moves_the_champion_back(server: Server) -> None:
    with server.client("olga") as operator:  # below the policy's rollback_role (approver)
        refused = operator.post("/models/flights/rollback", json={"reason": "ops complaint"})
        assert_problem(refused, 403)
    with server.client("abby") as olga:
        assert_problem(olga.post("/models/flights/rollback", json={"reason": ""}), 422)
        once = {"Idempotency-Key": "ops-ticket-42"}
        rolled = olga.post(
            "/models/flights/rollback", json={"reason": "ops complaint"}, headers=once
        )
        assert rolled.status_code == 200, rolled.text
        assert rolled.json() == {"model": "flights", "from": 2, "to": 1, "by": "abby"}
        retried = olga.post(  # a client retrying after a timeout: the same answer, no 2nd move
            "/models/flights/rollback", json={"reason": "ops complaint"}, headers=once
        )
        assert retried.json() == rolled.json()
        history = olga.get("/models/flights/champions").json()
        assert [(h["action"], h["version"]) for h in history][-2:] == [
            ("promote", 2),
            ("rollback", 1),
        ]
        now = datetime.now(UTC).isoformat()
        assert olga.get("/models/flights/champion-at", params={"time": now}).json()["version"] == 1
        assert olga.post("/audit/verify").json()["ok"] is True


def job_input() -> dict[str, Any]:
    return {"batch": {"dataset": "flights:2013-02", "max_rows": 500}}


def test_a_csv_upload_runs_like_its_parquet(server: Server, months: Any) -> None:
    buffer = io.BytesIO()
    months["2013-09"].sample(n=1200, seed=19).sort("time_hour").write_csv(buffer)
    with server.client("olga") as olga:
        uploaded = olga.post(
            "/runs/upload",
            data={"model": "flights", "multitask_strategy": "enqueue"},
            files={"file": ("sep.csv", buffer.getvalue(), "text/csv")},
        )
        assert uploaded.status_code == 202, uploaded.text
        done = wait_run(olga, uploaded.json()["run_id"], STOPPED)
        assert done["status"] in ("success", "interrupted"), (done["outcome"], done["summary"])
