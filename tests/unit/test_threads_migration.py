"""Migration 0007 moves LangGraph threads out of the step-effects ledger into ``threads``
(and its downgrade writes them back)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import driftpilot.store

MIGRATIONS = Path(driftpilot.store.__file__).parent / "migrations"


def _config(engine: sa.Engine) -> tuple[Config, sa.Connection]:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    conn = engine.connect()
    config.attributes["connection"] = conn
    return config, conn


def _effect(conn: sa.Connection, run_id: str, step: str, result: Any) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO step_effects (run_id, step, result, created_at) "
            "VALUES (:r, :s, :v, '2026-01-01T00:00:00+00:00')"
        ),
        {"r": run_id, "s": step, "v": json.dumps(result, sort_keys=True)},
    )


def test_0007_moves_thread_rows_and_back(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    config, conn = _config(engine)
    with conn.begin():
        command.upgrade(config, "0006")
    placeholder, bound, run = "0" * 8 + "-0000-4000-8000-" + "0" * 12, "1" * 36, "a" * 32
    with conn.begin():
        created = {"metadata": {"ticket": "T-1"}, "created_at": "t0", "created_by": "olga"}
        _effect(conn, placeholder, "langgraph.thread", created)
        _effect(conn, bound, "langgraph.thread", {**created, "metadata": {}})
        binding = {
            "run_id": run,
            "assistant_id": "flights",
            "metadata": {"via": "sdk"},
            "multitask_strategy": "reject",
            "created_at": "t1",
        }
        _effect(conn, bound, "langgraph.thread.run", binding)
        _effect(conn, run, "langgraph.run.thread", {"thread_id": bound})
        _effect(conn, run, "some.other.step", {"kept": True})
    effects_before = sorted(
        conn.execute(sa.text("SELECT run_id, step, result FROM step_effects")).all()
    )
    conn.commit()
    with conn.begin():
        command.upgrade(config, "0007")
    rows = {r.thread_id: r._asdict() for r in conn.execute(sa.text("SELECT * FROM threads")).all()}
    assert set(rows) == {placeholder, bound}
    assert json.loads(rows[placeholder]["meta"]) == {"ticket": "T-1"}
    assert rows[placeholder]["run_id"] is None
    assert rows[placeholder]["created_by"] == "olga"
    assert rows[bound]["run_id"] == run
    assert rows[bound]["assistant_id"] == "flights"
    assert json.loads(rows[bound]["run_meta"]) == {"via": "sdk"}
    assert rows[bound]["bound_at"] == "t1"
    left = conn.execute(sa.text("SELECT step FROM step_effects")).scalars().all()
    assert left == ["some.other.step"]
    conn.commit()
    with conn.begin():
        command.downgrade(config, "0006")
    effects_after = sorted(
        conn.execute(sa.text("SELECT run_id, step, result FROM step_effects")).all()
    )
    assert effects_after == effects_before
    conn.close()
