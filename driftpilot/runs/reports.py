"""Evidently's HTML report of a run, rendered after the decision.

The drift analyst decides on native numbers and records what the report is rendered from
(``report_source`` in its audited evidence: the filed batch with its content hash, the
reference window with the champion version and the file's identity). This service renders it
when asked: in the background once a run ended (the in-process executor, the queue's worker),
or on the first request (the API, the chat, the CLI). Nothing the run returns waits for it.

- Cache: one file per (batch content, reference) under ``reports_dir/<model>/``, so a second
  request, or a second run on identical data against the same reference, reuses it (its mtime
  is refreshed: the retention keeps what is in use).
- Concurrency: a render holds an exclusive lock on a file beside the report (``flock``,
  across threads and processes), and looks again once it holds it: concurrent callers
  render once, the others read the file.
- Audit: each run gets one appended tool-call record (``drift.render_report`` by the drift
  analyst) with the report's path and the sha256 of its HTML, the first time its report
  exists; the signed heads are refreshed after it. A failed render is audited as failed.
- Retention: ``graphs.control.prune_reports`` runs after a new report is written, under the
  folder's lock (the only writer of reports: a reader holding the lock never loses its file).

Statuses: ``ready`` (the file is there), ``pending`` (it can be rendered), ``none`` (no drift
step, no testable column, or what it was rendered from is gone; ``reason`` says which). Runs
audited before reports left the decision path name their report in the evidence: ready while
the retention keeps it, none after.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from driftpilot.core.errors import DataError
from driftpilot.core.settings import Settings
from driftpilot.store import AuditStore
from driftpilot.store.models import Decision, Run, ToolCall

if TYPE_CHECKING:  # run views read statuses here: the CLI's quick reads import no agent
    from agents.context import RunContext

log = logging.getLogger(__name__)

AGENT = "drift_analyst"
TOOL = "drift.render_report"
ReportStatus = Literal["pending", "ready", "none"]


class ReportView(BaseModel):
    """Where a run's report stands."""

    run_id: str
    model: str
    status: ReportStatus = Field(description="pending | ready | none")
    path: str | None = Field(None, description="The report file (gzip HTML), when ready.")
    sha256: str | None = Field(None, description="sha256 of its HTML, once rendered here.")
    reason: str = Field("", description="Why there is no report (status none).")


class Reports:
    """Render, cache and audit runs' reports; ``sign`` signs the audit heads after a record."""

    def __init__(
        self,
        store: AuditStore,
        settings: Settings,
        ctx: RunContext,
        sign: Callable[[], str] | None = None,
    ) -> None:
        self.store, self.settings, self.ctx, self.sign = store, settings, ctx, sign
        self._later: queue.Queue[str] = queue.Queue()
        self._queued: set[str] = set()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._digests: dict[str, tuple[tuple[int, int, int], str]] = {}

    # -- status (no rendering) ------------------------------------------------------------------

    def status(self, run_id: str) -> ReportView:
        """Where ``run_id``'s report stands (reads, never renders).

        Raises:
            NotFound: no such run.
        """
        run = self.store.get(Run, run_id)
        return statuses(self.store, self.settings, [run])[run_id]

    # -- rendering ------------------------------------------------------------------------------

    def render(self, run_id: str) -> ReportView:
        """The run's report, rendered now if it is not there yet (once, whoever else asks
        meanwhile), and audited for this run the first time it exists.

        Raises:
            NotFound: no such run.
            DataError: Evidently could not compare the batch with the reference.
        """
        return self._render_view(run_id, read=False)[0]

    def html(self, run_id: str) -> tuple[ReportView, bytes | None]:
        """``render`` and the report's HTML (None when there is no report), read under the
        folder's lock: a retention in another process cannot remove it in between.

        Raises:
            NotFound: no such run.
            DataError: Evidently could not compare the batch with the reference.
        """
        return self._render_view(run_id, read=True)

    def _render_view(self, run_id: str, *, read: bool) -> tuple[ReportView, bytes | None]:
        run = self.store.get(Run, run_id)
        source = _source(self.store, run_id)
        view = _status(self.settings, run, source)
        if view.status == "none" or source is None or "report_source" not in source:
            # nothing to render (or a report recorded by the decision itself, read as is)
            html = _read(view.path) if read and view.path else None
            return view, html
        path = _path(self.settings, run.model, source["report_source"])
        found = self._ready(run, view, path, read)
        if found is not None:  # there and audited for this run: no lock, no wait on a render
            return found
        with _exclusive(path.parent):
            missing = _inputs_gone(source["report_source"])
            if not path.is_file() and missing:
                return view.model_copy(update={"status": "none", "reason": missing}), None
            sha256, rendered = self._ensure(run, source["report_source"], path)
            if rendered:
                self._prune(run.model)
                _drop_partials(path.parent)
            html = _read(str(path)) if read and sha256 is not None else None
        if sha256 is None:
            none = {"status": "none", "path": None, "reason": "no column could be tested"}
            return view.model_copy(update=none), None
        ready = {"status": "ready", "path": str(path), "sha256": sha256}
        return view.model_copy(update=ready), html

    def _ready(
        self, run: Run, view: ReportView, path: Path, read: bool
    ) -> tuple[ReportView, bytes | None] | None:
        """The report as it is, without the folder's lock (a render of another report of the
        model holds it for seconds), when it exists and is audited for this run; None
        otherwise, or when the retention removed it meanwhile (the locked path decides then).
        The hash given is that of the HTML returned: an open file survives its deletion."""
        try:
            if read:
                html = _read(str(path))
                sha256 = hashlib.sha256(html).hexdigest()
            else:
                html, sha256 = None, self._digest(path)
            if self._audited(run.id, path) != sha256:
                return None
            self._touch(path, sha256)
        except (FileNotFoundError, DataError):
            return None
        return view.model_copy(
            update={"status": "ready", "path": str(path), "sha256": sha256}
        ), html

    def _touch(self, path: Path, sha256: str) -> None:
        """In use again: the retention counts it as new (its hash stays known)."""
        os.utime(path)
        self._remember(path, sha256)

    def _ensure(self, run: Run, src: dict[str, Any], path: Path) -> tuple[str | None, bool]:
        """Under the report's lock: the sha256 of its HTML (None: nothing testable), rendering
        it if it is missing, and whether this call rendered it; the run's audit record is
        appended once."""
        if path.is_file():
            sha256 = self._digest(path)
            self._touch(path, sha256)
            if self._audited(run.id, path) != sha256:  # this file is not audited for this run
                self._record(run.id, src, lambda: sha256, path, cached=True)
            return sha256, False
        digest = self._record(run.id, src, lambda: self._render(run.model, src, path), path)
        if digest is not None:
            self._remember(path, digest)  # the file this call wrote, hashed as it was written
        return digest, digest is not None

    def _render(self, model: str, src: dict[str, Any], path: Path) -> str | None:
        """Evidently's report of the batch against the reference, with the decision's
        columns and configuration (``tools.drift_report.render_report``)."""
        import polars as pl

        from tools.drift import DriftConfig
        from tools.drift_report import render_report

        spec = self.ctx.spec(model)
        cap = self.settings.report_max_rows or None  # Evidently's report is pandas, in memory
        return render_report(
            pl.scan_parquet(src["reference"]),
            pl.scan_parquet(src["batch"]),  # a scan: only the sampled rows are read
            numeric=spec.numeric,
            categorical=spec.categorical,
            config=DriftConfig(max_rows=cap),
            path=path,
            seed=self.settings.seed,
        )

    def _record(
        self,
        run_id: str,
        src: dict[str, Any],
        make: Callable[[], str | None],
        path: Path,
        *,
        cached: bool = False,
    ) -> str | None:
        """Run ``make`` as the audited tool call of ``run_id`` (a failure is audited too);
        a result with no report (nothing testable) is audited without a path."""
        args = {k: src.get(k) for k in ("batch_sha256", "reference", "reference_version")}
        sha256 = self.ctx.call(
            run_id,
            AGENT,
            TOOL,
            make,
            args,
            lambda digest: {
                "path": str(path) if digest else None,
                "sha256": digest,
                "cached": cached,
            },
        )
        if self.sign is not None:
            self.sign()
        return sha256

    def _audited(self, run_id: str, path: Path) -> str | None:
        """The sha256 the newest record of this run's report at ``path`` holds (None: none)."""
        rows = self.store.list_rows(
            ToolCall,
            ToolCall.run_id == run_id,
            ToolCall.tool == TOOL,
            ToolCall.ok.is_(True),
            order=ToolCall.id.desc(),
        )
        for row in rows:
            result = json.loads(row.result)
            if result.get("path") == str(path) and result.get("sha256"):
                return str(result["sha256"])
        return None

    def _digest(self, path: Path) -> str:
        """The sha256 of a report's HTML, remembered per report file and its version, so a
        cache hit does not decompress the report to hash it. A version is the inode, size and
        change time: a render replaces the file by a rename, and after the retention deleted a
        report the new one can get the old inode back (even, rarely, the same size)."""
        version = _version(path)
        with self._lock:
            known = self._digests.get(str(path))
        if known is not None and known[0] == version:
            return known[1]
        sha256 = _html_sha256(path)
        self._remember(path, sha256)
        return sha256

    def _remember(self, path: Path, sha256: str) -> None:
        """``sha256`` is the hash of ``path`` as it is now (one entry per report file)."""
        version = _version(path)
        with self._lock:
            self._digests[str(path)] = (version, sha256)

    def _prune(self, model: str) -> None:
        """The report retention, now that the folder holds one more report."""
        from graphs.control import prune_reports

        try:
            prune_reports(self.ctx, model)
        except OSError as exc:  # housekeeping: the report is written whatever the disk says
            log.warning("report retention of %s skipped: %s", model, exc)

    # -- in the background ----------------------------------------------------------------------

    def render_later(self, run_id: str) -> None:
        """Render ``run_id``'s report in this process's background thread (one render at a
        time; a run already queued is not queued twice). Returns at once: a failure is
        logged (and audited by the render), the report is then rendered on request."""
        with self._lock:
            if run_id in self._queued:
                return
            self._queued.add(run_id)
            if self._worker is None or not self._worker.is_alive():
                # daemon: a process that stops drops a render half-way (written to a temporary
                # name, so nothing half-written is left), and the first request renders it.
                self._worker = threading.Thread(target=self._work, name="dp-report", daemon=True)
                self._worker.start()
        self._later.put(run_id)

    def _work(self) -> None:
        while True:
            run_id = self._later.get()
            try:
                self.render(run_id)
            except Exception:
                log.exception("rendering the report of run %s failed", run_id)
            finally:
                with self._lock:
                    self._queued.discard(run_id)
                self._later.task_done()

    def idle(self) -> bool:
        """Whether no report is queued or rendering in this process's background thread."""
        with self._lock:
            return not self._queued

    def drain(self, timeout_s: float = 60.0) -> bool:
        """Wait until the queued renders are done (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queued:
                    return True
            time.sleep(0.02)
        return False


def statuses(store: AuditStore, settings: Settings, runs: list[Run]) -> dict[str, ReportView]:
    """The report status of each run (one query for their drift decisions, one stat per
    report); never renders."""
    ids = [r.id for r in runs]
    evidence: dict[str, dict[str, Any]] = {}
    if ids:
        for row in store.list_rows(
            Decision, Decision.run_id.in_(ids), Decision.agent == AGENT, order=Decision.id
        ):
            evidence.setdefault(row.run_id, json.loads(row.evidence))
    return {r.id: _status(settings, r, evidence.get(r.id)) for r in runs}


def _source(store: AuditStore, run_id: str) -> dict[str, Any] | None:
    """The drift analyst's audited evidence of the run (None: it has no drift step)."""
    rows = store.list_rows(
        Decision, Decision.run_id == run_id, Decision.agent == AGENT, order=Decision.id, limit=1
    )
    return json.loads(rows[0].evidence) if rows else None


def _status(settings: Settings, run: Run, evidence: dict[str, Any] | None) -> ReportView:
    view = ReportView(run_id=run.id, model=run.model, status="none")
    if evidence is None:
        return view.model_copy(update={"reason": "the run has no drift step (yet)"})
    if evidence.get("report"):  # recorded by the decision, before reports left its path
        path = Path(evidence["report"])
        if path.is_file():
            return view.model_copy(
                update={"status": "ready", "path": str(path), "sha256": evidence["report_sha256"]}
            )
        return view.model_copy(update={"reason": "the report retention removed it"})
    src = evidence.get("report_source")
    if evidence.get("report_status") != "pending" or not src:
        return view.model_copy(update={"reason": "no column could be tested"})
    path = _path(settings, run.model, src)
    if path.is_file():
        return view.model_copy(update={"status": "ready", "path": str(path)})
    gone = _inputs_gone(src)  # a few stats: pending only while it can still be rendered
    if gone:
        return view.model_copy(update={"reason": gone})
    return view.model_copy(update={"status": "pending"})


def _path(settings: Settings, model: str, src: dict[str, Any]) -> Path:
    """The report's file: named by the batch's content hash and the reference's identity
    (its path, champion version and file stamp), so identical comparisons share one."""
    assert settings.reports_dir is not None
    reference = f"{src.get('reference')}|{src.get('reference_version')}|{src['reference_stamp']}"
    ref_id = hashlib.sha256(reference.encode()).hexdigest()[:12]
    return settings.reports_dir / model / f"drift-{src['batch_sha256'][:16]}-{ref_id}.html.gz"


def _inputs_gone(src: dict[str, Any]) -> str:
    """Why the report can no longer be rendered ('' when it can): the filed batch or the
    reference window is gone, or the reference file is not the one the decision read."""
    if not Path(src["batch"]).is_file():
        return "the run's batch file is gone"
    reference = Path(src["reference"]) if src.get("reference") else None
    if reference is None or not reference.is_file():
        return "the run's reference window is gone"
    stat = reference.stat()
    if f"{stat.st_size}:{stat.st_mtime_ns}" != src["reference_stamp"]:
        return "the reference window changed since the run"
    return ""


def _html_sha256(path: Path) -> str:
    from tools.drift_report import report_html

    return hashlib.sha256(report_html(path)).hexdigest()


def _read(path: str) -> bytes:
    from tools.drift_report import report_html

    return report_html(path)


def _version(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return (stat.st_ino, stat.st_size, stat.st_ctime_ns)


def _drop_partials(folder: Path) -> None:
    """Remove what renders killed half-way left (``.<report>.partial``): under the folder's
    lock no render of this folder is under way."""
    for partial in folder.glob(".*.partial"):
        partial.unlink(missing_ok=True)


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Hold the exclusive lock of a model's report folder (threads and processes of one host;
    released if the holder dies): one render, retention or clean-up of the folder at a time.
    One lock file per folder, which stays: removing it would race a waiter."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".reports.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
