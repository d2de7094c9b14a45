"""A batch given as a file (``driftpilot run --batch FILE``) is streamed: stored as it came,
checked over a scan and filed by a streaming sink, with the same verdict and hash as the
same rows given in memory. Real flights, real MLflow, real SQLite; the builtin LLM."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import BatchRecord, Decision
from tools.datasets import FLIGHTS

pytestmark = pytest.mark.integration


def plane(
    trained_home: Callable[[str], Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ControlPlane:
    """A plane on a copy of the session's trained flights home, monitor-only (no retrain)."""
    trained_home("flights")
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"drift": {"retrain": "never"}}))
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(path))
    get_settings.cache_clear()
    return ControlPlane(get_settings())


def sha(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_a_bad_batch_file_is_quarantined_with_its_reason_as_it_came(
    settings: Settings,
    trained_home: Any,
    tmp_path: Path,
    months: dict[str, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cp = plane(trained_home, tmp_path, monkeypatch)
    storm = (
        months["2013-02"]
        .sample(n=4000, seed=5)
        .with_columns(
            pl.when(pl.int_range(pl.len()) % 3 > 0)
            .then(None)
            .otherwise(pl.col("temp"))
            .alias("temp")
        )
    )
    given = tmp_path / "storm.parquet"
    storm.write_parquet(given)
    view = cp.start_run("flights", given, "storm")
    assert view.outcome == "quarantined"
    [record] = cp.store.list_rows(BatchRecord, BatchRecord.status == "quarantined")
    assert "temp" in record.reason and "null" in record.reason
    assert sha(record.path) == sha(given)  # kept exactly as it came
    assert given.exists()  # the caller's file is theirs


def test_a_batch_file_is_judged_and_filed_as_the_same_rows_in_memory(
    settings: Settings,
    trained_home: Any,
    tmp_path: Path,
    months: dict[str, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cp = plane(trained_home, tmp_path, monkeypatch)
    batch = months["2013-03"].sample(n=5000, seed=6).sort(FLIGHTS.time_col)
    given = tmp_path / "march.parquet"
    batch.write_parquet(given, row_group_size=1000)
    from_file = cp.start_run("flights", given, "march")
    assert from_file.status == "completed" and from_file.outcome != "quarantined"
    [record] = cp.store.list_rows(BatchRecord, BatchRecord.run_id == from_file.run_id)
    assert record.status == "accepted" and record.n_rows == batch.height
    assert sha(record.path) == sha(given)  # nothing to conform: the file itself, not rewritten
    filed = pl.read_parquet(record.path)
    assert filed.sort(FLIGHTS.time_col, "dest", "carrier", "sched_dep_time").equals(
        batch.select(filed.columns).sort(FLIGHTS.time_col, "dest", "carrier", "sched_dep_time")
    )
    # The same rows in memory, in another order: the same content hash, so a duplicate.
    again = cp.start_run("flights", batch.reverse(), "march-again")
    assert again.outcome == "quarantined"
    assert "already ingested" in again.summary["ingestion"]["reason"]
    # ... and the same findings: the file's verdict is what the rows in memory earn.
    [decision] = cp.store.list_rows(
        Decision, Decision.run_id == from_file.run_id, Decision.agent == "ingestion"
    )
    assert from_file.summary["ingestion"]["warnings"] == again.summary["ingestion"]["warnings"]
    assert from_file.summary["ingestion"]["time_range"] == again.summary["ingestion"]["time_range"]
    assert decision.action == "accept"


def test_an_unlabelled_csv_file_is_conformed_and_filed_by_the_sink(
    settings: Settings,
    trained_home: Any,
    tmp_path: Path,
    months: dict[str, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cp = plane(trained_home, tmp_path, monkeypatch)
    batch = months["2013-04"].sample(n=3000, seed=8).sort(FLIGHTS.time_col)
    given = tmp_path / "april.csv"
    batch.drop(FLIGHTS.target).write_csv(given)  # times with offsets, labels to come
    view = cp.start_run("flights", given, "april")
    assert view.status == "completed" and view.outcome != "quarantined"
    ingestion = view.summary["ingestion"]
    assert any(FLIGHTS.time_col in c for c in ingestion["conversions"])
    assert any("label" in w for w in ingestion["warnings"])
    [record] = cp.store.list_rows(BatchRecord, BatchRecord.run_id == view.run_id)
    filed = pl.read_parquet(record.path)
    assert filed.height == batch.height and filed[FLIGHTS.target].null_count() == batch.height
    assert filed.schema[FLIGHTS.time_col] == batch.schema[FLIGHTS.time_col]
    assert filed[FLIGHTS.time_col].sort().equals(batch[FLIGHTS.time_col].sort())
