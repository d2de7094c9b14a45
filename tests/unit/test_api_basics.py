"""The API's fast paths through FastAPI's TestClient, over a real ControlPlane on a temporary
home (no model is trained here): authentication and roles, problem+json for every error,
body limits, the batch bounds (paths, CSV and Parquet bombs), the bind rule, cursors and the
Prometheus rendering. Real HTTP and real runs are in tests/integration/test_api_http.py."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from api import batches
from api.app import CORE, create_app
from api.problems import Problem
from api.routes import runs as runs_routes
from api.routes.health import _Snapshot
from api.serve import check_bind, is_loopback
from driftpilot.core.errors import ConfigError
from driftpilot.core.settings import ApiSettings, Settings
from driftpilot.runs.plane import ControlPlane, MetricsSnapshot
from driftpilot.sources import files

PROBLEM = "application/problem+json"
ROLES = ("viewer", "operator", "approver", "admin")


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(Settings(home=tmp_path / "home").ensure_dirs())
    yield cp
    cp.close()


@pytest.fixture
def keys(plane: ControlPlane) -> dict[str, str]:
    return {role: plane.create_api_key(f"{role}-person", role)[1] for role in ROLES}


@pytest.fixture
def client(plane: ControlPlane, keys: dict[str, str]) -> Iterator[TestClient]:
    conf = ApiSettings(max_body_bytes=4096, workers=1)
    with TestClient(create_app(plane, conf)) as c:
        c.app.state.executor.wait_started(30)  # type: ignore[attr-defined]
        yield c


def problem(response: Any, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["status"] == status and body["detail"]
    if slug is not None:
        assert body["type"] == f"urn:driftpilot:problem:{slug}", body
    return dict(body)


def as_role(keys: dict[str, str], role: str) -> dict[str, str]:
    return {"X-Api-Key": keys[role]}


# -- authentication and roles -------------------------------------------------------------------

OPEN = {"/healthz", "/readyz"}


def core_routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path with its parameters filled in) of every route of the core routers that
    the app serves (its OpenAPI document lists it)."""
    served = client.get("/openapi.json").json()["paths"]
    found = []
    for module in CORE:
        for route in module.router.routes:
            if isinstance(route, APIRoute) and route.path not in OPEN:
                assert route.path in served, route.path
                path = route.path.replace("{", "").replace("}", "")
                found += [(method, path) for method in sorted(route.methods)]
    return found


def test_every_core_route_but_health_needs_a_key(client: TestClient) -> None:
    routes = core_routes(client)
    assert len(routes) >= 20
    # one address sends a wrong key to every route: the guessing limit must not answer first
    client.app.state.plane.settings.auth.max_failures = 10_000  # type: ignore[attr-defined]
    for method, path in routes:
        body = problem(client.request(method, path), 401, "unauthenticated")
        assert "X-Api-Key" in body["detail"], (method, path)
        problem(client.request(method, path, headers={"X-Api-Key": "dp_x_y"}), 401)


@pytest.mark.parametrize(
    ("method", "path", "needed"),
    [
        ("POST", "/runs", "operator"),
        ("POST", "/runs/upload", "operator"),
        ("POST", "/runs/r1/cancel", "operator"),
        ("POST", "/models", "operator"),
        ("POST", "/models/m/rollback", "approver"),  # the policy's people.rollback_role
        ("POST", "/approvals/r1", "approver"),
    ],
)
def test_a_role_below_the_needed_one_gets_403(
    client: TestClient, keys: dict[str, str], method: str, path: str, needed: str
) -> None:
    for role in ROLES[: ROLES.index(needed)]:
        body = problem(client.request(method, path, headers=as_role(keys, role)), 403)
        assert body["type"].endswith("insufficient-role")
        assert f"has the {role} role; this needs {needed}" in body["detail"]


def test_a_revoked_key_is_refused(client: TestClient, plane: ControlPlane) -> None:
    view, secret = plane.create_api_key("temp", "viewer")
    assert client.get("/runs", headers={"X-Api-Key": secret}).status_code == 200
    plane.revoke_api_key(view.key_id)
    problem(client.get("/runs", headers={"X-Api-Key": secret}), 401)


def test_the_principal_comes_from_the_key_never_the_body(
    client: TestClient, keys: dict[str, str]
) -> None:
    body = {"decision": "approve", "approver": "someone-else"}
    problem(client.post("/approvals/r1", json=body, headers=as_role(keys, "approver")), 422)


# -- problem+json everywhere ----------------------------------------------------------------------


def test_errors_are_problems(client: TestClient, keys: dict[str, str]) -> None:
    op = as_role(keys, "operator")
    problem(client.get("/nowhere", headers=op), 404)
    problem(client.delete("/runs", headers=op), 405)
    problem(client.get("/runs/nope", headers=op), 404, "not-found")
    problem(client.get("/models/nope", headers=op), 404, "not-found")
    problem(client.get("/models/nope/versions", headers=op), 404)
    problem(client.get("/models/nope/champions", headers=op), 404)
    problem(client.get("/jobs/nope", headers=op), 404)
    problem(client.get("/runs/nope/stream", headers=op), 404)
    problem(client.post("/runs/nope/cancel", headers=op), 404)
    batch = {"batch": {"dataset": "flights:2013-07"}}
    # Unknown model: 404 before any batch is read.
    problem(client.post("/runs", json={"model": "nope", "input": batch}, headers=op), 404)
    wrong = [
        {"model": 5, "input": batch},
        {"model": "m", "input": {"batch": {"dataset": "no colon"}}},
        {"model": "m", "input": {"batch": {"dataset": "flights:2013-07", "max_rows": -1}}},
        {"model": "m", "input": {"batch": {"path": ""}}},
        {"model": "m", "assistant_id": "other", "input": batch},
        {"input": batch},
        {"model": "m", "input": batch, "multitask_strategy": "interrupt"},
        {"model": "m", "input": batch, "surprise": True},
        [1, 2, 3],
    ]
    for body in wrong:
        found = problem(client.post("/runs", json=body, headers=op), 422, "invalid-request")
        assert found["errors"], found
    bad_json = client.post(
        "/runs", content=b"{", headers={**op, "content-type": "application/json"}
    )
    problem(bad_json, 422)
    problem(client.get("/runs", params={"limit": 1000}, headers=op), 422)
    problem(client.get("/runs", params={"cursor": "bm9wZQ"}, headers=op), 422)
    problem(client.get("/audit", params={"cursor": "bm9wZQ"}, headers=op), 422)
    problem(client.get("/audit", params={"table": "runs"}, headers=op), 422)


def test_body_limits_declared_and_streamed(client: TestClient, keys: dict[str, str]) -> None:
    op = as_role(keys, "operator")
    declared = client.post("/runs", content=b"x" * 5000, headers=op)
    problem(declared, 413, "content-too-large")

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 1000

    streamed = client.post("/runs", content=chunks(), headers=op)  # chunked, no length
    problem(streamed, 413, "content-too-large")
    fits = client.post("/runs", content=b"{}", headers={**op, "content-type": "application/json"})
    problem(fits, 422)  # under the limit: read and validated


def test_health_and_metrics(client: TestClient, keys: dict[str, str]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok"}
    text = client.get("/metrics", headers=as_role(keys, "viewer")).text
    assert "driftpilot_pending_approvals 0.0" in text
    assert 'driftpilot_run_duration_seconds_bucket{le="+Inf"} 0.0' in text
    assert client.app.state.executor.recovered == []  # type: ignore[attr-defined]
    assert "/runs/{run_id}/stream" in client.get("/openapi.json").json()["paths"]


def test_prometheus_rendering_of_a_snapshot() -> None:
    snap = MetricsSnapshot(
        runs={"completed:promoted": 2, "failed:cancelled": 1, "waiting_approval": 1},
        run_seconds=[3.0, 40.0, 700.0],
        drift_share={"flights": 0.25},
        pending_approvals=1,
        llm_fallbacks={"drift_analyst": 2, "cicd": 1},
    )
    registry = CollectorRegistry()
    registry.register(_Snapshot(snap, executing=1))
    text = generate_latest(registry).decode()
    for line in [
        'driftpilot_runs{outcome="promoted",status="success"} 2.0',
        'driftpilot_runs{outcome="cancelled",status="error"} 1.0',
        'driftpilot_runs{outcome="",status="interrupted"} 1.0',
        'driftpilot_run_duration_seconds_bucket{le="5.0"} 1.0',
        'driftpilot_run_duration_seconds_bucket{le="60.0"} 2.0',
        'driftpilot_run_duration_seconds_bucket{le="+Inf"} 3.0',
        "driftpilot_run_duration_seconds_sum 743.0",
        'driftpilot_drift_share{model="flights"} 0.25',
        "driftpilot_pending_approvals 1.0",
        'driftpilot_llm_fallbacks_total{agent="drift_analyst"} 2.0',
        'driftpilot_llm_fallbacks_total{agent="cicd"} 1.0',
        "driftpilot_executor_runs 1.0",
    ]:
        assert line in text, (line, text)


# -- batches: paths and bombs --------------------------------------------------------------------


def test_paths_stay_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.csv").write_text("a\n1\n")
    outside = tmp_path / "outside.csv"
    outside.write_text("a\n1\n")
    (root / "out.csv").symlink_to(outside)
    (root / "in.csv").symlink_to(root / "sub" / "ok.csv")
    (root / "dir-out").symlink_to(tmp_path)
    assert batches.resolve_under([root], "sub/ok.csv") == root / "sub" / "ok.csv"
    assert batches.resolve_under([root], "in.csv") == root / "sub" / "ok.csv"
    refused = [
        "../outside.csv",
        "sub/../../outside.csv",
        str(outside),
        "/etc/passwd.csv",
        "~/x.csv",
        "sub\\..\\..\\outside.csv",
        "a\x00.csv",
        "out.csv",
        "dir-out/outside.csv",
    ]
    for path in refused:
        with pytest.raises(Problem) as caught:
            batches.resolve_under([root], path)
        assert caught.value.status == 422 and caught.value.slug == "path-not-allowed", path
    for path, part in [("sub/ok.txt", "unsupported"), ("gone.csv", "no batch file")]:
        with pytest.raises(Problem, match=part):
            batches.resolve_under([root], path)


LIMITS = batches.Limits(max_rows=100, max_columns=10, max_bytes=10_000, max_line_bytes=50)


def check(data: bytes, chunk: int) -> None:
    files.check_csv((data[i : i + chunk] for i in range(0, len(data), chunk)), LIMITS, "x")


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_csv_bounds_hold_across_chunk_borders(chunk: int) -> None:
    ok = b"a,b\n" + b"1,2\n" * 30 + b"3," + b"4" * 46 + b"\n"  # longest line: 50 bytes
    check(ok, chunk)
    check(ok.rstrip(b"\n"), chunk)
    for bomb, part in [
        (b"a,b\n" + b"1," + b"4" * 49 + b"\n1,2\n", "line longer than 50"),
        (b"a,b\n1,2\n" + b"9" * 51, "line longer than 50"),  # the last line, no newline
        (b"a" * 51, "line longer than 50"),
        (b",".join(b"c" for _ in range(11)) + b"\n1\n", "11 columns"),
        (b",".join(b"c" for _ in range(11)), "too many columns"),
    ]:
        with pytest.raises(files.BatchRefused, match=part) as caught:
            check(bomb, chunk)
        assert caught.value.status == 413


def test_uploads_are_bounded_before_and_while_parsing(tmp_path: Path) -> None:
    def upload(data: bytes, name: str = "b.csv") -> pl.DataFrame:
        return batches.read_upload(data, name, LIMITS)

    assert upload(b"a,b\n1,2\n").shape == (1, 2)
    for data, status, part in [
        (b"a\n" + b"1\n" * 101, 413, "more than 100 rows"),
        (b"a,b\n", 422, "no rows"),
        (b"a,b\n1,2,3,4\n", 422, "cannot read"),
    ]:
        with pytest.raises(Problem, match=part) as caught:
            upload(data)
        assert caught.value.status == status
    with pytest.raises(Problem) as caught:
        upload(b"x", "b.exe")
    assert caught.value.status == 415
    parquet = io.BytesIO()
    pl.DataFrame({"a": range(500)}).write_parquet(parquet)
    with pytest.raises(Problem, match="500 rows") as caught:
        upload(parquet.getvalue(), "b.parquet")
    assert caught.value.status == 413
    wide = io.BytesIO()
    pl.DataFrame({f"c{i}": [1] for i in range(20)}).write_parquet(wide)
    with pytest.raises(Problem, match="20 columns"):
        upload(wide.getvalue(), "b.parquet")
    small = io.BytesIO()
    pl.DataFrame({"a": [1, 2]}).write_parquet(small)
    assert upload(small.getvalue(), "b.parquet")["a"].to_list() == [1, 2]
    big = tmp_path / "big.csv"
    big.write_bytes(b"a\n" + b"1\n" * 6000)
    with pytest.raises(Problem, match="bytes; the limit is 10000"):
        batches.read_file(big, LIMITS)


# -- the bind rule, cursors ------------------------------------------------------------------------


def test_loopback_hosts() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.4", "example.com", "10.0.0.1", ""):
        assert not is_loopback(host), host


def test_a_public_bind_needs_a_live_key(plane: ControlPlane) -> None:
    check_bind(plane, "127.0.0.1")
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0"):
        check_bind(plane, "0.0.0.0")
    view, _ = plane.create_api_key("ops", "admin")
    check_bind(plane, "0.0.0.0")
    plane.revoke_api_key(view.key_id)
    with pytest.raises(ConfigError):
        check_bind(plane, "0.0.0.0")


def test_run_cursors_round_trip_and_refuse_forgeries() -> None:
    run = runs_routes.Run(
        run_id="r1",
        thread_id="r1",
        assistant_id="m",
        model="m",
        batch_id="b",
        status="pending",
        requested_by="ann",
        created_at="2026-01-01T00:00:00+00:00",
    )
    cursor = runs_routes.encode_cursor(run)
    assert runs_routes.decode_cursor(cursor) == ("2026-01-01T00:00:00+00:00", "r1")
    for forged in ("", "x", "bnVsbA", "WzEsMl0"):  # '', garbage, null, [1,2]
        with pytest.raises(Problem):
            runs_routes.decode_cursor(forged)
