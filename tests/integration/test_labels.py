"""Labels that arrive late, end to end on real flights: February batches run without their
target (accepted, filed with an empty label column), then February's real labels are attached
through the service, the CLI and the API (``driftpilot serve`` over real HTTP). One home,
one champion (a copy of the session's trained home) and one server for the module."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from driftpilot.cli import app
from driftpilot.core.errors import DataError, NotFound, RunStateError, SchemaError
from driftpilot.runs.evidence_keys import upgrade
from driftpilot.runs.plane import ControlPlane, LabelsView
from driftpilot.store.models import BatchRecord, Decision, ToolCall
from tests.conftest import TrainedHomes, plane_on_copy
from tests.integration.test_api_http import LIMITS, Server, assert_problem
from tools import registry
from tools.data import content_hash
from tools.datasets import FLIGHTS

pytestmark = pytest.mark.integration

TARGET = FLIGHTS.target
PARTS = ("feb-a", "feb-cli", "feb-api", "feb-key")


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, trained_homes: TrainedHomes
) -> Iterator[ControlPlane]:
    """A copy of the session's trained flights home (champion v1 on 9,000 January flights),
    default policy, builtin LLM."""
    yield from plane_on_copy(tmp_path_factory, trained_homes, "labels")


@pytest.fixture(scope="module")
def feb(months: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """Four February batches of 1,200 flights, with their real labels (one with an id)."""
    rows = months["2013-02"].sample(n=4800, seed=3, shuffle=True)
    parts = {name: rows.slice(i * 1200, 1200).sort("time_hour") for i, name in enumerate(PARTS)}
    parts["feb-key"] = (
        parts["feb-key"]
        .with_row_index("flight_id")
        .with_columns(pl.format("F{}", pl.col("flight_id")).alias("flight_id"))
    )
    return parts


@pytest.fixture(scope="module")
def unlabelled(plane: ControlPlane, feb: dict[str, pl.DataFrame]) -> dict[str, Any]:
    """Each February batch run without its target: accepted and filed for labels."""
    runs = {}
    for name, part in feb.items():
        view = plane.start_run("flights", part.drop(TARGET), name, requested_by="ann")
        assert view.status == "completed" and view.summary["ingestion"]["action"] == "accept"
        runs[name] = view
    return runs


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def filed(view: Any) -> Path:
    return Path(view.summary["ingestion"]["path"])


def decisions(plane: ControlPlane, run_id: str) -> list[Decision]:
    return plane.store.list_rows(
        Decision, Decision.run_id == run_id, Decision.agent == "labels", order=Decision.id
    )


def champion_auc(plane: ControlPlane, version: int, rows: pl.DataFrame) -> float:
    """The champion's ROC AUC computed here, from its scores and the real labels."""
    scorer = registry.load_version("flights", version, plane.settings)
    return float(roc_auc_score(rows[TARGET].to_numpy(), scorer.predict_scores(rows)))


def test_bad_labels_are_refused_clearly_and_change_nothing(
    plane: ControlPlane, feb: dict[str, pl.DataFrame], unlabelled: dict[str, Any], tmp_path: Path
) -> None:
    view, part = unlabelled["feb-a"], feb["feb-a"]
    path = filed(view)
    before, rows = sha256(path), len(plane.store.list_rows(Decision))
    labels = part.select(TARGET)
    cases: list[tuple[pl.DataFrame, type[Exception], list[str]]] = [
        (labels.head(1000), DataError, ["1000 rows", "1200", "--key"]),
        (
            labels.with_columns(
                pl.when(pl.int_range(pl.len()) == 7).then(2).otherwise(pl.col(TARGET)).alias(TARGET)
            ),
            DataError,
            [f"column {TARGET!r}", "0/1", "[2]"],
        ),
        (labels.rename({TARGET: "late"}), SchemaError, [f"no {TARGET!r} column"]),
        (labels.with_columns(pl.lit(None, pl.Int8).alias(TARGET)), DataError, ["no label"]),
    ]
    for i, (frame, error, parts) in enumerate(cases):
        file = tmp_path / f"bad-{i}.parquet"
        frame.write_parquet(file)
        with pytest.raises(error) as caught:
            plane.attach_labels("flights", "feb-a", file, "bob")
        for part_ in parts:
            assert part_ in str(caught.value), caught.value
    good = tmp_path / "good.csv"
    labels.write_csv(good)
    with pytest.raises(NotFound, match="no batch 'feb-zz'"):
        plane.attach_labels("flights", "feb-zz", good, "bob")
    with pytest.raises(NotFound, match="no model 'nope'"):
        plane.attach_labels("nope", "feb-a", good, "bob")
    with pytest.raises(DataError, match="no such file"):
        plane.attach_labels("flights", "feb-a", tmp_path / "gone.csv", "bob")
    with pytest.raises(SchemaError, match="no key column 'flight_id'"):
        plane.attach_labels("flights", "feb-a", good, "bob", key="flight_id")
    assert sha256(path) == before and len(plane.store.list_rows(Decision)) == rows
    assert pl.read_parquet(path)[TARGET].null_count() == part.height


def test_the_service_attaches_februarys_labels_and_scores_the_champion(
    plane: ControlPlane, feb: dict[str, pl.DataFrame], unlabelled: dict[str, Any], tmp_path: Path
) -> None:
    run, part = unlabelled["feb-a"], feb["feb-a"]
    file = tmp_path / "feb-a-labels.parquet"
    part.select(TARGET).write_parquet(file)
    view = plane.attach_labels("flights", "feb-a", file, "Bob ")
    version = run.summary["drift"]["champion_version"]
    estimated = upgrade("drift", run.summary["drift"]).get("estimated_score")
    assert view.model_dump(exclude={"realised_score", "estimation_error"}) == {
        "model": "flights",
        "batch_id": "feb-a",
        "run_id": run.run_id,
        "rows": 1200,
        "rows_labelled": 1200,
        "champion_version": version,
        "metric": "roc_auc",
        "higher_is_better": True,
        "estimated_score": estimated,
        "path": str(filed(run)),
    }
    assert view.realised_score == pytest.approx(champion_auc(plane, version, part), abs=1e-9)
    if estimated is None:
        assert view.estimation_error is None
    else:
        assert view.estimation_error == pytest.approx(estimated - view.realised_score)
    # The filed batch now carries February's labels, in place (the window reads it).
    labelled = pl.read_parquet(filed(run))
    assert labelled[TARGET].to_list() == part[TARGET].to_list()
    [record] = plane.store.list_rows(BatchRecord, BatchRecord.batch_id == "feb-a")
    assert record.path == str(filed(run))
    # One tool call and one decision in the hash-chained audit, under the run that filed it.
    [decision] = decisions(plane, run.run_id)
    evidence = json.loads(decision.evidence)
    assert decision.action == "attach"
    assert "bob attached labels to 1200 of 1200 rows of batch feb-a" in decision.rationale
    realised = f"realised ROC AUC {view.realised_score:.4f} (higher is better)"
    assert realised in decision.rationale
    assert evidence["realised_score"] == view.realised_score and evidence["metric"] == "roc_auc"
    assert evidence["estimated_score"] == estimated
    assert evidence["batch_content_hash"] == record.content_hash
    assert evidence["file_hash_after"] == content_hash(labelled)
    assert evidence["file_sha256"] == sha256(filed(run))
    assert evidence["file_hash_before"] != evidence["file_hash_after"]
    [call] = plane.store.list_rows(
        ToolCall, ToolCall.run_id == run.run_id, ToolCall.agent == "labels"
    )
    assert call.tool == "drift.model_performance" and call.ok
    assert json.loads(call.result)["metrics"]["roc_auc"] == view.realised_score
    result = plane.verify()
    assert result.ok, result.problems


def test_labels_are_attached_once(
    plane: ControlPlane, feb: dict[str, pl.DataFrame], unlabelled: dict[str, Any], tmp_path: Path
) -> None:
    run, part = unlabelled["feb-a"], feb["feb-a"]
    same = tmp_path / "same.csv"
    part.select(TARGET).write_csv(same)
    path, rows = filed(run), len(plane.store.list_rows(Decision))
    before = sha256(path)
    again = plane.attach_labels("flights", "feb-a", same, "cy")  # a CSV this time: same labels
    assert again == LabelsView.model_validate(plane.store.effect(run.run_id, "labels"))
    assert (
        again.realised_score
        == json.loads(decisions(plane, run.run_id)[0].evidence)["realised_score"]
    )
    assert len(decisions(plane, run.run_id)) == 1 and len(plane.store.list_rows(Decision)) == rows
    flipped = tmp_path / "flipped.csv"
    part.select(TARGET).with_columns((1 - pl.col(TARGET)).alias(TARGET)).head(1200).write_csv(
        flipped
    )
    with pytest.raises(RunStateError, match="already has labels and these differ in 1200"):
        plane.attach_labels("flights", "feb-a", flipped, "cy")
    assert sha256(path) == before and len(plane.store.list_rows(Decision)) == rows


def test_labels_join_on_a_key_and_rows_left_out_stay_unlabelled(
    plane: ControlPlane, feb: dict[str, pl.DataFrame], unlabelled: dict[str, Any], tmp_path: Path
) -> None:
    run, part = unlabelled["feb-key"], feb["feb-key"]
    some = part.select("flight_id", TARGET).sample(n=900, seed=5, shuffle=True)
    repeated = tmp_path / "repeated.csv"
    pl.concat([some, some.head(3)]).write_csv(repeated)
    with pytest.raises(DataError, match="not unique in the labels: 3 rows"):
        plane.attach_labels("flights", "feb-key", repeated, "bob", key="flight_id")
    file = tmp_path / "some.csv"
    some.write_csv(file)
    view = plane.attach_labels("flights", "feb-key", file, "bob", key="flight_id")
    assert view.rows == 1200 and view.rows_labelled == 900
    labelled = pl.read_parquet(filed(run)).join(
        some.rename({TARGET: "truth"}), on="flight_id", how="left"
    )
    assert labelled.filter(pl.col("truth").is_null())[TARGET].null_count() == 300
    given = labelled.filter(pl.col("truth").is_not_null())
    assert (given[TARGET] == given["truth"]).all()
    rows = part.join(some.select("flight_id"), on="flight_id")
    version = run.summary["drift"]["champion_version"]
    assert view.realised_score == pytest.approx(champion_auc(plane, version, rows), abs=1e-9)


def test_the_cli_attaches_labels_and_reports_errors_in_one_line(
    plane: ControlPlane, feb: dict[str, pl.DataFrame], unlabelled: dict[str, Any], tmp_path: Path
) -> None:
    run, part = unlabelled["feb-cli"], feb["feb-cli"]
    cli = CliRunner()
    short = tmp_path / "short.parquet"
    part.select(TARGET).head(10).write_parquet(short)
    refused = cli.invoke(app, ["labels", "flights", "feb-cli", "--file", str(short)])
    assert refused.exit_code == 1, refused.output
    assert "error:" in refused.output and "--key" in refused.output
    assert "Traceback" not in refused.output
    file = tmp_path / "feb-cli.csv"
    part.select(TARGET).write_csv(file)
    args = ["labels", "flights", "feb-cli", "--file", str(file), "--as", "dora"]
    done = cli.invoke(app, args, terminal_width=200)
    assert done.exit_code == 0, done.output
    version = run.summary["drift"]["champion_version"]
    auc = champion_auc(plane, version, part)
    assert "1,200 of 1,200" in done.output and f"v{version}" in done.output
    assert f"{auc:.4f}" in done.output and run.run_id in done.output
    [decision] = decisions(plane, run.run_id)
    assert decision.rationale.startswith("dora attached labels")
    noop = cli.invoke(app, args, terminal_width=200)
    assert noop.exit_code == 0 and len(decisions(plane, run.run_id)) == 1


@pytest.fixture(scope="module")
def server(plane: ControlPlane) -> Iterator[Server]:
    assert plane.settings.home is not None
    srv = Server(home=plane.settings.home, env={})
    srv.keys["olga"] = plane.create_api_key("olga", "operator")[1]
    srv.keys["vic"] = plane.create_api_key("vic", "viewer")[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
    srv.env = {**env, "DRIFTPILOT_HOME": str(plane.settings.home), **LIMITS}
    srv.start()
    yield srv
    srv.stop()


def test_the_api_attaches_labels_as_the_keys_principal(
    plane: ControlPlane,
    feb: dict[str, pl.DataFrame],
    unlabelled: dict[str, Any],
    server: Server,
) -> None:
    run, part = unlabelled["feb-api"], feb["feb-api"]
    csv = part.select(TARGET).write_csv().encode()
    url = "/models/flights/batches/feb-api/labels"

    def upload(data: bytes, name: str = "labels.csv", **form: str) -> dict[str, Any]:
        return {"files": {"file": (name, data)}, "data": form}

    path = filed(run)
    before = sha256(path)
    with server.client("vic") as viewer:
        assert_problem(viewer.post(url, **upload(csv)), 403)
    with server.client("olga") as olga:
        assert_problem(olga.post("/models/nope/batches/feb-api/labels", **upload(csv)), 404, "nope")
        assert_problem(
            olga.post("/models/flights/batches/feb-zz/labels", **upload(csv)), 404, "feb-zz"
        )
        short = part.select(TARGET).head(5).write_csv().encode()
        assert_problem(olga.post(url, **upload(short)), 422, "5 rows", "--key")
        assert_problem(olga.post(url, **upload(csv, key="flight_id")), 422, "flight_id")
        assert_problem(olga.post(url, **upload(csv, name="labels.txt")), 415)
        assert sha256(path) == before
        done = olga.post(url, **upload(csv))
        assert done.status_code == 200, done.text
        body = done.json()
        version = run.summary["drift"]["champion_version"]
        assert body["rows_labelled"] == 1200 and body["champion_version"] == version
        assert body["metric"] == "roc_auc" and body["realised_score"] == pytest.approx(
            champion_auc(plane, version, part), abs=1e-9
        )
        assert olga.post(url, **upload(csv)).json() == body  # the same labels: same answer
        flipped = part.select((1 - pl.col(TARGET)).alias(TARGET)).write_csv().encode()
        assert_problem(olga.post(url, **upload(flipped)), 409, "already has labels")
    [decision] = decisions(plane, run.run_id)
    assert decision.rationale.startswith("olga attached labels")
    assert np.array_equal(pl.read_parquet(path)[TARGET].to_numpy(), part[TARGET].to_numpy())
    result = plane.verify()
    assert result.ok, result.problems
