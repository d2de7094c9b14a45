"""Opening the audit store checks the schema's revision with one query and runs Alembic only
when the database is behind (or when the migration files cannot be read without it)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import driftpilot.store
from driftpilot.store import AuditStore
from driftpilot.store.engine import head_revision

MIGRATIONS = Path(driftpilot.store.__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _version(url: str) -> list[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        found = list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    engine.dispose()
    return found


def test_head_revision_is_alembics() -> None:
    assert head_revision() == ScriptDirectory.from_config(_config()).get_current_head()


def test_a_database_behind_is_upgraded_on_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    engine = sa.create_engine(url)
    config = _config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0008")
    engine.dispose()
    store = AuditStore(url)
    assert store.at_head()
    assert _version(url) == [head_revision()]
    store.engine.dispose()


def test_a_fresh_database_is_created_and_then_at_head(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    store = AuditStore(url)
    assert store.at_head() and _version(url) == [head_revision()]
    store.engine.dispose()


def _versions(folder: Path, scripts: dict[str, str]) -> Path:
    folder.mkdir()
    for name, text in scripts.items():
        (folder / name).write_text(text)
    return folder


def test_head_revision_reads_typed_and_plain_assignments(tmp_path: Path) -> None:
    folder = _versions(
        tmp_path / "v",
        {
            "a.py": '"""Revision ID: a"""\nrevision = "a"\ndown_revision = None\n',
            "b.py": 'revision: str = "b"\ndown_revision: Union[str, None] = "a"\n',
        },
    )
    assert head_revision(folder) == "b"


def test_head_revision_leaves_what_it_does_not_understand_to_alembic(tmp_path: Path) -> None:
    base = {"a.py": 'revision = "a"\ndown_revision = None\n'}
    two_heads = {**base, "b.py": 'revision = "b"\ndown_revision = "a"\n'}
    two_heads["c.py"] = 'revision = "c"\ndown_revision = "a"\n'
    merge = {**two_heads, "d.py": 'revision = "d"\ndown_revision = ("b", "c")\n'}
    computed = {**base, "b.py": 'revision = make_id()\ndown_revision = "a"\n'}
    unnamed = {**base, "b.py": 'down_revision = "a"\n'}
    for name, scripts in {
        "two heads": two_heads,
        "merge": merge,
        "computed": computed,
        "unnamed": unnamed,
    }.items():
        assert head_revision(_versions(tmp_path / name.replace(" ", "_"), scripts)) is None, name
