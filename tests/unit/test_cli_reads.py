"""The read-only commands' reads without the plane give the plane's run views."""

from __future__ import annotations

import json
from typing import Any

from driftpilot.cli.common import _reads
from driftpilot.runs.plane import ControlPlane
from driftpilot.store import AuditStore
from driftpilot.store.audit import promotion_action
from driftpilot.store.engine import now
from driftpilot.store.models import Run


def _run(store: AuditStore, run_id: str, status: str, outcome: str | None) -> None:
    at = now()
    summary = {"drift": {"action": "none"}} if status == "completed" else {}
    store.add(
        Run(
            id=run_id,
            model="m",
            batch_id="2013-07",
            trigger="cli",
            requested_by="ann",
            status=status,
            outcome=outcome,
            summary=json.dumps(summary),
            created_at=at,
            updated_at=at,
        )
    )


def test_views_without_the_plane_are_the_planes(settings: Any) -> None:
    store = AuditStore(settings.db_url)
    _run(store, "c" * 32, "completed", "no_retrain:none")
    _run(store, "w" * 32, "waiting_approval", None)
    report = settings.reports_dir / "m" / "report.html.gz"  # rendered by the decision (old runs)
    report.parent.mkdir(parents=True)
    report.write_bytes(b"")
    evidence = {"report": str(report), "report_sha256": "0" * 64}
    store.record_decision("c" * 32, "drift_analyst", "none", "no drift", evidence, backend="x")
    payload = {"description": "Promote m v2 over v1"}
    store.request_approval("w" * 32, "ann", payload, promotion_action("m", 2, 1))
    plane = ControlPlane(settings)
    try:
        expected = [v.model_dump() for v in plane.list_runs(None, 20)]
        pending = [v.model_dump() for v in plane.pending_approvals()]
    finally:
        plane.close()
    assert [v["run_id"] for v in expected] == ["w" * 32, "c" * 32]
    assert expected[1]["summary"] == {"drift": {"action": "none"}}
    assert (expected[1]["report_status"], expected[1]["report_path"]) == ("ready", str(report))
    for with_state in (True, False):
        reads = _reads(with_state=with_state)
        assert [v.model_dump() for v in reads.list_runs(None, 20)] == expected
        assert [v.model_dump() for v in reads.pending_approvals()] == pending
        reads.store.engine.dispose()
