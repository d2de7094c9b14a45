"""``POST /models/{m}/inferences`` (JSON, NDJSON) and its upload (CSV, Parquet) over real
HTTP: ``driftpilot serve`` in a subprocess over a home with a binary and a multiclass model
(no training: logging needs none) and keys of each role.

Operators (and above) log; every refusal is problem+json and writes nothing; a retried
request writes nothing twice; what a request acknowledged is in the store."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import polars as pl
import pytest
from sqlalchemy import select

from driftpilot.core.settings import Settings
from driftpilot.store import AuditStore
from driftpilot.store.engine import now
from driftpilot.store.models import InferenceRow, ManagedModel
from tests.conftest import db_env
from tests.integration.test_api_http import LIMITS, Server, assert_problem
from tests.rows import window_of_rows

pytestmark = pytest.mark.integration

MAX_REQUEST_ROWS = 300
JSON = {"Content-Type": "application/json"}
ROLES = {"vic": "viewer", "olga": "operator", "amy": "approver", "ada": "admin"}


def model(name: str, task: str) -> ManagedModel:
    return ManagedModel(
        name=name,
        created_at=now(),
        source="",
        target="y",
        time_col="t",
        numeric=json.dumps(["x"]),
        categorical=json.dumps(["c"]),
        family="lightgbm",
        metric="roc_auc",
        task=task,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("inference-api") / "home"
    settings = Settings(home=home).ensure_dirs()
    store = AuditStore(settings.db_url)
    store.add(model("m", "binary"))
    store.add(model("w", "multiclass"))
    srv = Server(home=home, env={})
    for who, role in ROLES.items():
        srv.keys[who] = store.create_api_key(who, role)[1]
    store.engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
    srv.env = {
        **env,
        "DRIFTPILOT_HOME": str(home),
        **LIMITS,
        "DRIFTPILOT_INFERENCE_MAX_REQUEST_ROWS": str(MAX_REQUEST_ROWS),
        **db_env(),
    }
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def store(server: Server) -> Iterator[AuditStore]:
    """The server's store, opened by the tests to see what an answer committed."""
    opened = AuditStore(Settings(home=server.home).db_url)
    yield opened
    opened.engine.dispose()


def row(i: int, **over: Any) -> dict[str, Any]:
    base = {"row_id": f"r{i}", "t": "2026-03-01T10:00:00Z", "x": float(i), "c": "a"}
    return base | {"prediction": i % 2, "probabilities": 0.25} | over


def stored(store: AuditStore, model_name: str = "m") -> dict[str, InferenceRow]:
    with store.reading() as session:
        rows = session.scalars(select(InferenceRow).where(InferenceRow.model == model_name))
        return {r.row_id: r for r in rows}


def test_roles_a_viewer_cannot_log_operators_and_above_can(server: Server) -> None:
    with server.client() as anon, server.client("vic") as vic:
        assert_problem(anon.post("/models/m/inferences", json=[row(0)]), 401, "no API key")
        assert_problem(vic.post("/models/m/inferences", json=[row(0)]), 403, "operator")
        upload = {"file": ("rows.csv", b"row_id\n", "text/csv")}
        assert_problem(vic.post("/models/m/inferences/upload", files=upload), 403, "operator")
    for n, who in enumerate(["olga", "amy", "ada"]):
        with server.client(who) as client:
            answer = client.post("/models/m/inferences", json=[row(900 + n)])
            assert answer.status_code == 200, answer.text


def test_json_and_ndjson_rows_are_logged_once(server: Server, store: AuditStore) -> None:
    rows = [row(i) for i in range(100, 110)]
    with server.client("olga") as olga:
        first = olga.post("/models/m/inferences", json=rows)
        assert first.json() == {"model": "m", "accepted": 10, "duplicates": 0, "rows": 10}
        again = olga.post("/models/m/inferences", json={"rows": [*rows, row(110)]})
        assert again.json() == {"model": "m", "accepted": 1, "duplicates": 10, "rows": 11}
        ndjson = "\n".join(json.dumps(r) for r in [row(110), row(111)]) + "\n\n"
        nd = olga.post(
            "/models/m/inferences",
            content=ndjson,
            headers={"Content-Type": "application/x-ndjson; charset=utf-8"},
        )
        assert nd.json() == {"model": "m", "accepted": 1, "duplicates": 1, "rows": 2}
    logged = stored(store)
    assert {f"r{i}" for i in range(100, 112)} <= set(logged)
    payload = json.loads(logged["r105"].payload)
    assert payload["t"] == "2026-03-01T10:00:00.000000+00:00" and payload["prediction"] == 1
    assert window_of_rows(store, "m")["r105"] is None


def test_a_bad_row_is_a_422_naming_it_and_writes_nothing(server: Server, store: AuditStore) -> None:
    rows = [row(200), row(201, x="high"), row(202, extra=1), row(203)]
    del rows[3]["c"]
    with server.client("olga") as olga:
        body = assert_problem(olga.post("/models/m/inferences", json=rows), 422, "row 1")
        assert body["type"].endswith("invalid-rows") and body["count"] == 3
        assert body["errors"] == [
            {"row": 1, "column": "x", "reason": "must be a number, not str"},
            {"row": 2, "column": "extra", "reason": "unknown column (not a feature of the model)"},
            {"row": 3, "column": "c", "reason": "missing feature (send null for a missing value)"},
        ]
        twice = [row(204), row(204, x=5.0)]
        body = assert_problem(olga.post("/models/m/inferences", json=twice), 422, "also row 0")
        lines = f"{json.dumps(row(205))}\nnot json\n"
        ndjson = {"Content-Type": "application/x-ndjson"}
        body = assert_problem(olga.post("/models/m/inferences", content=lines, headers=ndjson), 422)
        assert body["errors"][0]["row"] == 1 and "not JSON" in body["errors"][0]["reason"]
        for bad in ([1, 2], {"rows": "x"}, {"row_id": "r1"}):
            assert_problem(olga.post("/models/m/inferences", json=bad), 422)
        assert_problem(olga.post("/models/m/inferences", content=b"{", headers=JSON), 422, "JSON")
        deep = b"[" * 100_000  # too deep for the parser: a 422, not a 500
        assert_problem(olga.post("/models/m/inferences", content=deep, headers=JSON), 422, "JSON")
    assert not {"r200", "r203", "r204", "r205"} & set(stored(store))


def test_a_row_id_logged_with_other_content_is_a_409_and_writes_nothing(
    server: Server, store: AuditStore
) -> None:
    with server.client("olga") as olga:
        assert olga.post("/models/m/inferences", json=[row(300)]).status_code == 200
        clash = [row(301), row(300, x=-1.0)]
        body = assert_problem(olga.post("/models/m/inferences", json=clash), 409, "'r300'")
        assert body["type"].endswith("row-conflict") and body["row_ids"] == ["r300"]
    logged = stored(store)
    assert "r301" not in logged and json.loads(logged["r300"].payload)["x"] == 300.0


def test_unknown_models_types_and_sizes_are_refused(server: Server) -> None:
    with server.client("olga") as olga:
        assert_problem(olga.post("/models/nope/inferences", json=[row(1)]), 404, "no model 'nope'")
        text = olga.post(
            "/models/m/inferences", content=b"r1", headers={"Content-Type": "text/csv"}
        )
        assert_problem(text, 415, "text/csv")
        assert_problem(olga.post("/models/m/inferences", content=b"[]"), 415)  # no type
        many = [row(i) for i in range(MAX_REQUEST_ROWS + 1)]
        body = assert_problem(olga.post("/models/m/inferences", json=many), 413, "limit is 300")
        assert body["limit"] == MAX_REQUEST_ROWS
        huge = b"[" + b" " * int(LIMITS["DRIFTPILOT_API_MAX_BODY_BYTES"]) + b"]"
        assert_problem(olga.post("/models/m/inferences", content=huge, headers=JSON), 413)
        upload = {"file": ("rows.txt", b"row_id\n", "text/plain")}
        assert_problem(olga.post("/models/m/inferences/upload", files=upload), 415, ".txt")
        missing = {"file": ("rows.csv", b"row_id\n", "text/csv")}
        assert_problem(olga.post("/models/nope/inferences/upload", files=missing), 404)


def test_csv_and_parquet_uploads_log_a_multiclass_models_rows(
    server: Server, store: AuditStore
) -> None:
    table = pl.DataFrame(
        {
            "row_id": ["w1", "w2", "w3"],
            "t": [datetime(2026, 3, 1, h, tzinfo=UTC) for h in (1, 2, 3)],
            "x": [1.0, None, 3.0],
            "c": ["a", "b", None],
            "prediction": ["sun", "rain", "fog"],
            "proba_sun": [0.8, 0.1, 0.1],
            "proba_rain": [0.1, 0.8, 0.1],
            "proba_fog": [0.1, 0.1, 0.8],
        }
    )
    parquet = io.BytesIO()
    table.head(2).write_parquet(parquet)
    with server.client("olga") as olga:
        files = {"file": ("rows.parquet", parquet.getvalue(), "application/octet-stream")}
        first = olga.post("/models/w/inferences/upload", files=files)
        assert first.json() == {"model": "w", "accepted": 2, "duplicates": 0, "rows": 2}
        csv = table.write_csv().encode()
        again = olga.post("/models/w/inferences/upload", files={"file": ("rows.csv", csv)})
        assert again.json() == {"model": "w", "accepted": 1, "duplicates": 2, "rows": 3}
        bad = table.with_columns(pl.col("proba_fog") + 0.5).write_csv().encode()
        refused = olga.post("/models/w/inferences/upload", files={"file": ("bad.csv", bad)})
        assert_problem(refused, 422, "row 0", "sum to 1.5000")
    logged = stored(store, "w")
    assert sorted(logged) == ["w1", "w2", "w3"]
    assert json.loads(logged["w2"].payload)["probabilities"] == {
        "fog": 0.1,
        "rain": 0.8,
        "sun": 0.1,
    }


def test_an_acknowledged_row_is_in_the_store_before_the_answer(
    server: Server, store: AuditStore
) -> None:
    """No read-your-write lag: the answer is sent after the commit."""
    with httpx.Client(base_url=server.url, headers={"X-Api-Key": server.keys["olga"]}) as olga:
        for i in range(400, 420):
            assert olga.post("/models/m/inferences", json=[row(i)]).status_code == 200
            assert f"r{i}" in stored(store)
