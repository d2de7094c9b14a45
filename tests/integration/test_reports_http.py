"""Evidently's report off the decision path, over real HTTP: ``driftpilot serve`` in a
subprocess over a home with the flights model (real data, real MLflow, real SQLite).

A run's result (and its view) comes before its report: the report is rendered after the run
ended, by the server's executor in the background or on the first GET of
``/runs/{id}/report``; the run view links it once ready, the audit records its sha256 after
the run's end, and the trail still verifies. A run with no drift step has no report (404)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store import AuditStore
from driftpilot.store.models import Run
from tests.conftest import add_flights, db_env
from tests.integration.test_api_http import (
    ENDED,
    LIMITS,
    Server,
    assert_problem,
    dataset_run,
    wait_run,
)
from tools.datasets import FLIGHTS_CACHE

pytestmark = pytest.mark.integration
WATCH_ONLY = {"drift": {"retrain": "never"}}  # runs end at the drift verdict


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, flights_df: pl.DataFrame, months: Any
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("reports-http")
    home = root / "home"
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump(WATCH_ONLY))
    settings = Settings(home=home, policy_path=policy).ensure_dirs()
    assert settings.cache_dir is not None
    flights_df.write_parquet(settings.cache_dir / FLIGHTS_CACHE)
    cp = ControlPlane(settings)
    add_flights(cp, months["2013-01"].sample(n=4000, seed=1).sort("time_hour"))
    srv = Server(home=home, env={})
    srv.keys["olga"] = cp.create_api_key("olga", "operator")[1]
    srv.keys["vic"] = cp.create_api_key("vic", "viewer")[1]
    cp.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
    srv.env = {
        **env,
        "DRIFTPILOT_HOME": str(home),
        "DRIFTPILOT_POLICY_PATH": str(policy),
        **LIMITS,
        "DRIFTPILOT_REPORT_RENDER": "after_run",  # the default, which this module tests
        **db_env(),
    }
    srv.start()
    yield srv
    srv.stop()


def report_records(server: Server, run_id: str) -> list[dict[str, Any]]:
    with server.client("vic") as viewer:
        rows = viewer.get("/audit", params={"run_id": run_id, "limit": 500}).json()["items"]
    return [r for r in rows if r.get("tool") == "drift.render_report"]


def wait_report(client: Any, run_id: str, timeout: float = 180) -> Any:
    """The run's view once its report is ready, with no request for the report itself."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/runs/{run_id}").json()
        if run["report_status"] == "ready":
            return run
        assert run["report_status"] == "pending" and time.monotonic() < deadline, run
        time.sleep(0.3)


def test_the_result_comes_first_then_the_report_is_rendered_served_linked_and_audited(
    server: Server,
) -> None:
    with server.client("olga") as operator:
        created = operator.post("/runs", json=dataset_run("flights", "flights:2013-07", 3000))
        assert created.status_code == 202, created.text
        run_id = created.json()["run_id"]
        assert created.json()["report_status"] == "none"  # no drift step yet
    with server.client("vic") as viewer:
        ended = wait_run(viewer, run_id, ENDED)
        assert ended["status"] == "success", ended
        assert ended["outcome"].startswith("no_retrain"), ended
        # The decision is there; the report is rendered after it (or already was).
        assert ended["summary"]["drift"]["report"] is None
        assert ended["report_status"] in ("pending", "ready"), ended
        assert (ended["report_url"] is not None) == (ended["report_status"] == "ready")

        # The server renders it in the background (its executor, or the queue's worker).
        run = wait_report(viewer, run_id)
        assert run["report_url"] == f"/runs/{run_id}/report"
        served = viewer.get(run["report_url"])
        assert served.status_code == 200, served.text
        assert served.headers["content-type"].startswith("text/html")
        html = served.content
        assert b"<html" in html[:1000].lower() and len(html) > 100_000
        assert viewer.get(run["report_url"]).content == html  # cached: the same file
        listed = viewer.get("/runs", params={"model": "flights"}).json()["items"]
        assert [(r["run_id"], r["report_status"]) for r in listed] == [(run_id, "ready")]

        # One record, after the run's result, with the served HTML's sha256.
        [record] = report_records(server, run_id)
        result = json.loads(record["result"])
        assert result["sha256"] == hashlib.sha256(html).hexdigest() and not result["cached"]
        assert served.headers["x-report-sha256"] == result["sha256"]
        stored = Path(result["path"])
        assert gzip.decompress(stored.read_bytes()) == html
        assert stored.parent == server.home / "reports" / "flights"
        store = AuditStore(Settings(home=server.home).db_url)
        ended_at = store.get(Run, run_id).updated_at  # when the run's result was written
        store.engine.dispose()
        assert record["created_at"] > ended_at  # rendered after the run ended

        # Gone (as the retention removes reports): pending again, rendered on the first GET,
        # audited again with the new file's hash; the trail verifies.
        stored.unlink()
        assert viewer.get(f"/runs/{run_id}").json()["report_status"] == "pending"
        again = viewer.get(f"/runs/{run_id}/report")
        assert again.status_code == 200 and b"<html" in again.content[:1000].lower()
        assert stored.is_file()
        records = [json.loads(r["result"]) for r in report_records(server, run_id)]
        assert [r["sha256"] for r in records] == [
            result["sha256"],
            hashlib.sha256(again.content).hexdigest(),
        ]
        verified = viewer.post("/audit/verify").json()
        assert verified["ok"], verified


def test_a_run_without_a_drift_step_has_no_report(server: Server) -> None:
    batch = dataset_run("flights", "flights:2013-07", 3000)  # the batch of the test above
    with server.client("olga") as operator:
        run_id = operator.post("/runs", json=batch).json()["run_id"]
    with server.client("vic") as viewer:
        ended = wait_run(viewer, run_id, ENDED)
        assert ended["outcome"] == "quarantined", ended  # a duplicate batch: no drift step
        assert (ended["report_status"], ended["report_url"]) == ("none", None)
        assert_problem(viewer.get(f"/runs/{run_id}/report"), 404, "no report", "no drift step")
        assert_problem(viewer.get("/runs/nope/report"), 404)
    with server.client() as anonymous:
        assert_problem(anonymous.get(f"/runs/{run_id}/report"), 401)
