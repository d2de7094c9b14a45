"""The report service (driftpilot.runs.reports): a run's Evidently report is rendered once
from what its drift decision recorded, cached by the batch's content and the reference,
audited once per run (appended, so the chains verify), and concurrent callers render once."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import typer

from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.runs.reports import TOOL
from driftpilot.store.audit import now
from driftpilot.store.models import ManagedModel, Run, ToolCall


@pytest.fixture
def plane(settings: Settings) -> Iterator[ControlPlane]:
    cp = ControlPlane(settings.ensure_dirs())
    cp.store.add(
        ManagedModel(
            name="m",
            source="test",
            target="y",
            time_col="t",
            numeric=json.dumps(["x"]),
            categorical=json.dumps(["c"]),
            family="lightgbm",
            metric="roc_auc",
            created_at=now(),
        )
    )
    yield cp
    cp.close()


def frame(n: int, shift: float, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {"x": rng.normal(shift, 1.0, n), "c": rng.choice(["a", "b", "c"], n).tolist()}
    )


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Any]:
    """A filed batch and a reference window on disk, as a drift decision records them."""
    batch, reference = tmp_path / "batch.parquet", tmp_path / "reference.parquet"
    frame(400, 0.5, 1).write_parquet(batch)
    frame(600, 0.0, 2).write_parquet(reference)
    stat = reference.stat()
    return {
        "batch": str(batch),
        "batch_sha256": hashlib.sha256(batch.read_bytes()).hexdigest(),
        "reference": str(reference),
        "reference_version": 1,
        "reference_stamp": f"{stat.st_size}:{stat.st_mtime_ns}",
    }


def add_run(
    cp: ControlPlane, run_id: str, source: dict[str, Any] | None, status: str = "pending"
) -> str:
    """A completed run; with ``source``, its drift decision as the analyst audits it."""
    cp.store.add(
        Run(
            id=run_id,
            model="m",
            batch_id="b",
            trigger="api",
            requested_by="ann",
            status="completed",
            outcome="no_retrain:none",
            summary="{}",
            created_at=now(),
            updated_at=now(),
        )
    )
    if source is not None:
        evidence = {"report": None, "report_status": status, "report_source": source}
        cp.store.record_decision(run_id, "drift_analyst", "none", "r", evidence, backend="rules")
    return run_id


def records(cp: ControlPlane, run_id: str) -> list[dict[str, Any]]:
    rows = cp.store.list_rows(ToolCall, ToolCall.run_id == run_id, ToolCall.tool == TOOL)
    return [json.loads(r.result) | {"ok": r.ok} for r in rows]


def test_a_report_is_rendered_once_cached_and_audited_once_per_run(
    plane: ControlPlane, inputs: dict[str, Any]
) -> None:
    first = add_run(plane, "run-1", inputs)
    assert plane.get_run(first).report_status == "pending"
    assert plane.report_status(first).status == "pending"

    view = plane.run_report(first)
    assert view.status == "ready" and view.path is not None and view.sha256 is not None
    path = Path(view.path)
    assert path.parent == (plane.settings.reports_dir or Path()) / "m"
    html = gzip.decompress(path.read_bytes())
    assert b"<html" in html[:1000].lower()
    assert hashlib.sha256(html).hexdigest() == view.sha256
    assert records(plane, first) == [
        {"path": str(path), "sha256": view.sha256, "cached": False, "ok": True}
    ]
    ran = plane.get_run(first)
    assert (ran.report_status, ran.report_path) == ("ready", str(path))

    # Asked again: the same file, no render, no second record.
    written = path.stat().st_mtime_ns
    assert plane.run_report(first) == view
    assert path.stat().st_mtime_ns >= written
    assert len(records(plane, first)) == 1

    # A second run on identical data against the same reference: the same file, its own record.
    second = add_run(plane, "run-2", inputs)
    assert plane.get_run(second).report_status == "ready"  # the file is there already
    again = plane.run_report(second)
    assert (again.path, again.sha256) == (view.path, view.sha256)
    assert records(plane, second) == [
        {"path": str(path), "sha256": view.sha256, "cached": True, "ok": True}
    ]
    assert plane.store.verify().ok
    assert [p.name for p in path.parent.glob("*.html.gz")] == [path.name]

    # Removed (as the retention does): pending again, rendered again, the new file audited.
    path.unlink()
    assert plane.get_run(first).report_status == "pending"
    rendered = plane.run_report(first)
    assert rendered.sha256 == hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
    assert plane.run_report(first).sha256 == rendered.sha256  # a hit gives the file's own hash
    assert [r["sha256"] for r in records(plane, first)] == [view.sha256, rendered.sha256]
    assert plane.run_report(second).sha256 == rendered.sha256  # the other run: its new record
    assert [r["sha256"] for r in records(plane, second)] == [view.sha256, rendered.sha256]
    assert plane.store.verify().ok


def test_concurrent_callers_render_once(plane: ControlPlane, inputs: dict[str, Any]) -> None:
    runs = [add_run(plane, f"run-{i}", inputs) for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        views = list(pool.map(plane.run_report, runs * 2))
    assert {(v.status, v.path, v.sha256) for v in views} == {
        ("ready", views[0].path, views[0].sha256)
    }
    audited = [r for run_id in runs for r in records(plane, run_id)]
    assert len(audited) == len(runs)  # one record per run, whoever asked twice
    assert sorted(r["cached"] for r in audited) == [False, True, True, True]  # one render
    assert plane.store.verify().ok


def test_a_run_without_a_report_says_why(plane: ControlPlane, inputs: dict[str, Any]) -> None:
    quarantined = add_run(plane, "run-q", None)
    untestable = add_run(plane, "run-u", inputs, status="none")
    for run_id, reason in ((quarantined, "no drift step"), (untestable, "no column")):
        view = plane.run_report(run_id)
        assert view.status == "none" and reason in view.reason
        assert plane.get_run(run_id).report_status == "none"
        assert records(plane, run_id) == []
    # The reference replaced since the decision: the report would compare something else.
    moved = add_run(plane, "run-r", inputs)
    stamp = Path(inputs["reference"]).stat().st_mtime_ns + 5_000_000_000
    os.utime(inputs["reference"], ns=(stamp, stamp))
    view = plane.run_report(moved)
    assert view.status == "none" and "changed since the run" in view.reason
    # ... and the run view says so too, rather than pending for ever
    assert plane.get_run(moved).report_status == "none"


def test_the_html_is_read_under_the_lock_and_a_killed_render_leaves_nothing(
    plane: ControlPlane, inputs: dict[str, Any]
) -> None:
    folder = (plane.settings.reports_dir or Path()) / "m"
    folder.mkdir(parents=True)
    leftover = folder / ".drift-dead.html.gz.partial"  # a render killed half-way
    leftover.write_bytes(b"half")
    run_id = add_run(plane, "run-h", inputs)
    view, html = plane.run_report_html(run_id)
    assert view.status == "ready" and html is not None
    assert hashlib.sha256(html).hexdigest() == view.sha256
    assert not leftover.exists()
    # one lock file for the folder, however many reports it holds
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".reports.lock", Path(view.path or "").name]
    )
    none, nothing = plane.run_report_html(add_run(plane, "run-n", None))
    assert none.status == "none" and nothing is None


def test_a_report_rendered_in_the_background(plane: ControlPlane, inputs: dict[str, Any]) -> None:
    run_id = add_run(plane, "run-bg", inputs)
    plane.render_report_later(run_id)
    plane.render_report_later(run_id)  # queued once
    assert plane.reports.drain(120)
    assert plane.get_run(run_id).report_status == "ready"
    assert len(records(plane, run_id)) == 1


def test_an_older_run_names_its_report_in_the_decision(plane: ControlPlane, tmp_path: Path) -> None:
    report = tmp_path / "old.html.gz"
    report.write_bytes(gzip.compress(b"<html></html>"))
    add_run(plane, "run-old", None)
    evidence = {"report": str(report), "report_sha256": "abc"}
    plane.store.record_decision("run-old", "drift_analyst", "none", "r", evidence, backend="x")
    assert plane.run_report("run-old").model_dump(include={"status", "path", "sha256"}) == {
        "status": "ready",
        "path": str(report),
        "sha256": "abc",
    }
    report.unlink()
    view = plane.run_report("run-old")
    assert view.status == "none" and "retention" in view.reason


def test_the_cli_prints_a_reports_path_rendering_it_first(
    plane: ControlPlane, inputs: dict[str, Any]
) -> None:
    from typer.testing import CliRunner

    from driftpilot.cli import runs

    app = typer.Typer()
    app.command()(runs.report)
    run_id = add_run(plane, "run-cli-1", inputs)
    printed = CliRunner().invoke(app, ["run-cli"])
    assert printed.exit_code == 0, printed.output
    path = Path(printed.output.strip().splitlines()[-1])
    assert path.is_file() and plane.report_status(run_id).path == str(path)
    assert len(records(plane, run_id)) == 1
    add_run(plane, "run-cli-2", None)
    refused = CliRunner().invoke(app, ["run-cli-2"])
    assert refused.exit_code != 0 and "no drift step" in str(refused.exception)


def test_a_cached_report_is_hashed_once_and_read_without_waiting_for_a_render(
    plane: ControlPlane, inputs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from driftpilot.runs import reports

    run_id = add_run(plane, "run-c", inputs)
    view = plane.run_report(run_id)
    hashed: list[Path] = []
    real = reports._html_sha256
    monkeypatch.setattr(reports, "_html_sha256", lambda p: hashed.append(p) or real(p))
    for _ in range(3):
        assert plane.run_report(run_id).sha256 == view.sha256
    assert hashed == []  # the render remembered it; touching the file does not forget it
    assert len(plane.reports._digests) == 1  # one entry per report file, however often read

    # Another report of the model is rendering (it holds the folder's lock for seconds):
    # a finished report is read at once.
    folder = Path(view.path or "").parent
    held, release = threading.Event(), threading.Event()

    def render_elsewhere() -> None:
        with reports._exclusive(folder):
            held.set()
            release.wait(10)

    other = threading.Thread(target=render_elsewhere)
    other.start()
    try:
        assert held.wait(5)
        started = time.monotonic()
        ready, html = plane.run_report_html(run_id)
        assert time.monotonic() - started < 1.0
        assert ready.status == "ready" and html is not None
        assert hashlib.sha256(html).hexdigest() == view.sha256
    finally:
        release.set()
        other.join()
