"""A store outage over real HTTP: ``driftpilot serve`` on a real PostgreSQL server of its own
(tests/pg.py's binaries, not the session's shared server: this one is crashed). While the
server is stopped in immediate mode, every request that needs the database answers 503
problem+json with Retry-After (never a raw 500, never a hang); once it is started again the
same process answers 200 without a restart."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from driftpilot.core.llm import free_port
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from evals.soak_services import Postgres, Service
from tests.pg import find_bin_dir, postgres_required, start_postgres

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"
RUN: dict[str, object] = {
    "model": "flights",
    "input": {"batch": {"dataset": "flights:2013-07"}},
}


@dataclass
class Api:
    url: str
    key: str
    pg: Postgres
    service: Service

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, headers={"X-Api-Key": self.key}, timeout=30)

    def post(self, path: str, body: dict[str, object]) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers={"X-Api-Key": self.key}, timeout=30)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    if find_bin_dir() is None and not postgres_required():
        pytest.skip("PostgreSQL is not installed (tests/pg.py says how to get it)")
    root = tmp_path_factory.mktemp("outage")
    with start_postgres() as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
        env |= {
            "DRIFTPILOT_HOME": str(root / "home"),
            "DRIFTPILOT_DB_URL": server.create_database("audit"),
            "DRIFTPILOT_OPTUNA_STORAGE": server.create_database("optuna"),
        }
        settings = Settings(
            home=root / "home",
            db_url=env["DRIFTPILOT_DB_URL"],
            optuna_storage=env["DRIFTPILOT_OPTUNA_STORAGE"],
        ).ensure_dirs()
        cp = ControlPlane(settings)
        key = cp.create_api_key("olga", "operator")[1]
        cp.close()
        port = free_port()
        service = Service("serve", ["serve", "--port", str(port)], env, root)
        url = f"http://127.0.0.1:{port}"
        service.start(ready_url=f"{url}/healthz")
        pg = Postgres(server)
        try:
            yield Api(url, key, pg, service)
        finally:
            service.stop()
            if not pg.accepts():  # start_postgres stops it on exit, so it must be running
                pg.start()


def assert_unavailable(response: httpx.Response) -> None:
    """503 problem+json of an outage, with a Retry-After of whole seconds."""
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert body["status"] == 503
    assert body["type"].endswith("service-unavailable"), body
    assert "postgres" not in body["detail"].lower(), body  # the driver's message is not shown


def test_a_stopped_database_answers_503_with_retry_after_then_recovers(api: Api) -> None:
    assert api.get("/runs").status_code == 200
    api.pg.stop_immediate()
    try:
        assert not api.pg.accepts()
        for _ in range(3):  # the pool's dead connections, then failed new ones
            assert_unavailable(api.get("/runs"))
            assert_unavailable(api.get("/approvals"))
            assert_unavailable(api.post("/runs", RUN))
        # readyz says the same (a route's own 503 gets a Retry-After too)
        ready = httpx.get(api.url + "/readyz", timeout=30)
        assert ready.status_code == 503 and int(ready.headers["retry-after"]) > 0
        assert api.service.alive(), api.service.tail()
    finally:
        api.pg.start()
    deadline = time.monotonic() + 60
    statuses = []
    while time.monotonic() < deadline:
        response = api.get("/runs")
        statuses.append(response.status_code)
        if response.status_code == 200:
            break
        assert_unavailable(response)
        time.sleep(0.5)
    assert statuses[-1] == 200, statuses
    assert api.get("/approvals").status_code == 200
    # Every error was answered by a handler: uvicorn logged no unhandled one.
    assert "Exception in ASGI application" not in api.service.tail(1_000_000)
