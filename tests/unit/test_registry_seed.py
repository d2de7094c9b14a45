"""A new SQLite MLflow store is seeded from an empty migrated database (tools.registry)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tools.registry import seed_sqlite_store


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "xdg" / "driftpilot"


def _rows(db: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(query))


def _schema(db: Path) -> dict[str, list[str]]:
    """Each table's and index's definition as a sorted list of its lines: Alembic's batch
    migrations recreate SQLite tables with their constraints in set order, which differs from
    one process (or store) to the next without changing the schema."""
    rows = _rows(db, "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL")
    return {
        str(name): sorted(line.strip().rstrip(",") for line in str(sql).splitlines())
        for name, sql in rows
    }


def test_a_seeded_store_is_the_store_mlflow_would_have_made(cache: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    seeded, made = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    assert seed_sqlite_store(f"sqlite:///{seeded}")
    assert len(list(cache.glob("mlflow-empty-*.db"))) == 1
    made.parent.mkdir()
    MlflowClient(f"sqlite:///{made}").search_experiments()  # MLflow's own migrations
    assert _schema(seeded) == _schema(made)
    assert _rows(seeded, "SELECT * FROM alembic_version") == _rows(
        made, "SELECT * FROM alembic_version"
    )
    default = "SELECT experiment_id, name, artifact_location FROM experiments"
    assert (
        _rows(seeded, default)
        == _rows(made, default)
        == [(0, "Default", str(tmp_path / "mlruns" / "0"))]
    )
    client = MlflowClient(f"sqlite:///{seeded}")
    exp = client.create_experiment("driftpilot/m", artifact_location=str(tmp_path / "art"))
    assert client.get_experiment(exp).artifact_location == str(tmp_path / "art")


def test_an_existing_store_is_never_replaced(cache: Path, tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"someone's data")
    assert not seed_sqlite_store(f"sqlite:///{db}")
    assert db.read_bytes() == b"someone's data"
    assert not list(tmp_path.glob(".mlflow.db.*"))


def test_only_sqlite_files_are_seeded(cache: Path) -> None:
    assert not seed_sqlite_store("http://127.0.0.1:5000")
    assert not seed_sqlite_store("sqlite:///:memory:")
    assert not cache.exists()


def test_an_unwritable_cache_leaves_the_store_to_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    db = tmp_path / "home" / "mlflow.db"
    assert not seed_sqlite_store(f"sqlite:///{db}")
    assert not db.exists()
