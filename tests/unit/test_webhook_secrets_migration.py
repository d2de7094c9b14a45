"""Migration 0012 gives every existing webhook its own signing secret (NOT NULL afterwards),
and its downgrade drops the column again, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

import driftpilot.store

MIGRATIONS = Path(driftpilot.store.__file__).parent / "migrations"


def _webhook(conn: sa.Connection, webhook_id: str) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO webhooks (id, model, url, format, events, description, created_by,"
            " created_at) VALUES (:i, 'm', 'https://example.com/h', 'json', '[]', '', 'olga',"
            " '2026-01-01T00:00:00+00:00')"
        ),
        {"i": webhook_id},
    )


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_0012_generates_distinct_secrets_for_existing_webhooks(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'audit.db'}"
        if database == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = sa.create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        with conn.begin():
            command.upgrade(config, "0011")
            _webhook(conn, "a" * 32)
            _webhook(conn, "b" * 32)
        with conn.begin():
            command.upgrade(config, "0012")
        secrets: dict[str, str] = dict(
            conn.execute(sa.text("SELECT id, secret FROM webhooks")).all()
        )
        assert len(secrets) == 2 and len(set(secrets.values())) == 2
        assert all(isinstance(s, str) and len(s) >= 40 for s in secrets.values())
        columns = {c["name"]: c for c in sa.inspect(conn).get_columns("webhooks")}
        assert columns["secret"]["nullable"] is False
        conn.commit()
        with conn.begin():
            command.downgrade(config, "0011")
        names = {c["name"] for c in sa.inspect(conn).get_columns("webhooks")}
        assert "secret" not in names
        assert conn.execute(sa.text("SELECT count(*) FROM webhooks")).scalar() == 2
    engine.dispose()
