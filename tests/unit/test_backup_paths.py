"""A restored home's paths: the source home's paths rewritten to the target's in text cells
and LangGraph checkpoint values, never in the hash-chained tables, never a lookalike prefix."""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from contextlib import closing
from pathlib import Path

import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Interrupt
from pydantic import BaseModel

from driftpilot.core.errors import BackupError
from driftpilot.runs import backup_stores

OLD, NEW = "/data/old-home", "/srv/restored/home"
PAIRS = [(OLD, NEW)]
Window = namedtuple("Window", ["path", "rows"])


class Slice(BaseModel):
    window_path: str
    rows: int


def test_text_is_rewritten_only_at_a_path_boundary() -> None:
    assert backup_stores.swap_text(OLD, PAIRS) == NEW
    assert backup_stores.swap_text(f"file://{OLD}/mlartifacts/1", PAIRS) == (
        f"file://{NEW}/mlartifacts/1"
    )
    assert backup_stores.swap_text(f"{OLD}-2/batch.parquet", PAIRS) == f"{OLD}-2/batch.parquet"


def test_checkpoint_values_are_rewritten_through_the_types_a_state_holds() -> None:
    serde = JsonPlusSerializer()
    state = {
        "batch": {"path": f"{OLD}/batches/a.parquet", "n_rows": 3},
        "windows": [Window(f"{OLD}/w.parquet", 3)],
        "slice": Slice(window_path=f"{OLD}/w.parquet", rows=3),
        "asked": [Interrupt(value={"holdout": f"{OLD}/h.parquet"}, id="i1")],
    }
    kind, blob = serde.dumps_typed(state)
    new_kind, new_blob = backup_stores.swap_blob(kind, blob, PAIRS, "test")
    back = serde.loads_typed((new_kind, new_blob))
    assert back["batch"] == {"path": f"{NEW}/batches/a.parquet", "n_rows": 3}
    assert back["slice"].window_path == f"{NEW}/w.parquet"
    assert back["asked"][0].value == {"holdout": f"{NEW}/h.parquet"}
    assert OLD.encode() not in new_blob


def test_a_value_the_walk_cannot_rewrite_is_an_error_not_a_silent_link_to_the_source() -> None:
    serde = JsonPlusSerializer()
    kind, blob = serde.dumps_typed({"raw": f"{OLD}/x".encode()})  # bytes: not rewritten
    with pytest.raises(BackupError, match="still names"):
        backup_stores.swap_blob(kind, blob, PAIRS, "writes")


def test_sqlite_cells_are_rewritten_but_chained_tables_are_not(tmp_path: Path) -> None:
    file = tmp_path / "audit.db"
    with closing(sqlite3.connect(file)) as conn, conn:
        conn.execute("CREATE TABLE models (name TEXT, reference_path TEXT, rows INTEGER)")
        conn.execute("CREATE TABLE decisions (id INTEGER, rationale TEXT)")
        conn.execute("INSERT INTO models VALUES ('m', ?, 3)", (f"{OLD}/ref.parquet",))
        conn.execute("INSERT INTO models VALUES ('exact', ?, 1)", (OLD,))
        conn.execute("INSERT INTO decisions VALUES (1, ?)", (f"{OLD}/ref.parquet",))
    backup_stores.rewrite_sqlite(file, PAIRS, keep={"decisions"})
    with closing(sqlite3.connect(file)) as conn:
        paths = [p for (p,) in conn.execute("SELECT reference_path FROM models ORDER BY rows")]
        [(chained,)] = conn.execute("SELECT rationale FROM decisions")
    assert paths == [NEW, f"{NEW}/ref.parquet"]
    assert chained == f"{OLD}/ref.parquet"  # its hash covers it: left as it was


def test_each_database_is_copied_once_and_an_mlflow_server_is_not_copied(tmp_path: Path) -> None:
    from driftpilot.core.settings import Settings

    pg = "postgresql+psycopg://dp@db.internal:5432/driftpilot"
    settings = Settings(
        home=tmp_path / "home",
        db_url=pg,
        optuna_storage="postgresql+psycopg://dp@db.internal:5432/optuna",
        mlflow_tracking_uri="https://mlflow.internal",
        mlflow_registry_uri="",
        checkpoint_url="",
    )
    found, holder = backup_stores.stores(settings)
    assert {s.role: s.kind for s in found} == {
        "audit": "postgresql",
        "mlflow": "external",
        "optuna": "postgresql",
    }
    # The checkpoints live in the audit's database, the registry is the tracking server.
    assert holder == {
        "audit": "audit",
        "checkpoints": "audit",
        "mlflow": "mlflow",
        "mlflow_registry": "mlflow",
        "optuna": "optuna",
    }
    # Every URL given (empty: derived from the home), not the environment's: a PostgreSQL
    # test session sets DRIFTPILOT_DB_URL.
    local_settings = Settings(
        home=tmp_path / "home",
        db_url="",
        checkpoint_url="",
        mlflow_tracking_uri="",
        mlflow_registry_uri="",
        optuna_storage="",
    )
    local, _ = backup_stores.stores(local_settings)
    assert {s.role: s.path.name for s in local} == {
        "audit": "driftpilot.db",
        "checkpoints": "checkpoints.db",
        "mlflow": "mlflow.db",
        "optuna": "optuna.db",
    }
