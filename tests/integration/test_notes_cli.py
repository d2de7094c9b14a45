"""``driftpilot note`` and ``driftpilot notes`` as a user meets them: a note written, audited
and listed beside the run it falls in; a refused note is one error line and writes nothing;
listing imports no heavy library."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from driftpilot.cli import app
from driftpilot.core.settings import get_settings
from driftpilot.store import AuditStore
from driftpilot.store.engine import now
from driftpilot.store.models import ManagedModel, Note, Run, ToolCall

pytestmark = pytest.mark.integration


def cli(line: str) -> Any:
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, shlex.split(line), catch_exceptions=False)
    finally:
        get_settings.cache_clear()


@pytest.fixture
def store(settings: Any) -> Any:
    opened = AuditStore(settings.db_url)
    opened.add(
        ManagedModel(
            name="m",
            created_at=now(),
            source="",
            target="y",
            time_col="t",
            numeric="[]",
            categorical="[]",
            family="lightgbm",
            metric="roc_auc",
        )
    )
    summary = {"ingestion": {"time_range": {"start": "2026-01-01", "end": "2026-01-31"}}}
    at = now()
    opened.add(
        Run(
            id="r" * 32,
            model="m",
            batch_id="2026-01",
            trigger="cli",
            requested_by="ann",
            status="completed",
            outcome="no_retrain:monitor",
            summary=json.dumps(summary),
            created_at=at,
            updated_at=at,
        )
    )
    yield opened
    opened.engine.dispose()


def test_a_note_is_written_and_listed_beside_its_run(store: AuditStore) -> None:
    done = cli("note m 'ETL moved; temp now in °F' --at 2026-01-15T08:00:00 --as Ann")
    assert done.exit_code == 0, done.output
    assert "note 1 on m at 2026-01-15 08:00:00Z by ann" in done.output
    assert [n.text for n in store.list_rows(Note)] == ["ETL moved; temp now in °F"]
    assert [c.run_id for c in store.list_rows(ToolCall, ToolCall.agent == "notes")] == ["note-1"]
    listed = cli("notes m")
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if "ETL moved" in line)
    assert "rrrrrrrrrrrr (batch, no_retrain:monitor)" in row and "ann" in row
    as_json = json.loads(cli("notes m --json").output)
    assert [(n["id"], n["run_id"], n["run_how"], n["by"]) for n in as_json] == [
        (1, "r" * 32, "batch", "ann")
    ]


@pytest.mark.parametrize(
    ("line", "code", "part"),
    [
        ("note nope 'a deploy' --as ann", 1, "no model 'nope'"),
        ("note m 'a deploy'", 2, "Missing option '--as'"),
        ("note m 'a deploy' --as ann --at yesterday", 2, "not an ISO 8601 date or time"),
        (f"note m '{'x' * 501}' --as ann", 1, "the note is 501 characters; the limit is 500"),
        ("note m 'approve \u202ereject' --as ann", 1, "U+202E"),
        ("note m 'a deploy' --as 'ann\u200b'", 1, "invisible or control"),
        ("notes nope", 1, "no model 'nope'"),
    ],
)
def test_a_refused_note_is_one_error_line_and_writes_nothing(
    store: AuditStore, line: str, code: int, part: str
) -> None:
    done = cli(line)
    errors = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert done.exit_code == code and len(errors) == 1, done.output + done.stderr
    assert part in errors[0]
    assert store.list_rows(Note) == [] and store.list_rows(ToolCall) == []


def test_listing_notes_imports_no_heavy_library(store: AuditStore, tmp_path: Path) -> None:
    cli("note m 'a deploy' --as ann")
    probe = (
        "import sys\nfrom driftpilot.cli import app\n"
        "try:\n    app(['notes', 'm'], prog_name='driftpilot')\nexcept SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'alembic', 'numpy', 'polars', 'agents', 'tools', 'langgraph', 'fastapi'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "a deploy" in done.stdout and done.stdout.strip().endswith("[]"), done.stdout
