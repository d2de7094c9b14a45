"""Approvals: ``approve``, ``reject``, ``approvals``."""

from __future__ import annotations

from typing import Annotated

import typer

from driftpilot.cli.common import (
    AsJson,
    _alerting,
    _plane,
    _print_json,
    _print_run,
    _reads,
    _run_prefix,
    console,
)


def _decide(run_id: str, decision: str, who: str, comment: str) -> None:
    _run_prefix(run_id)
    plane = _plane()
    run_id = plane.resolve_run_id(run_id)
    with _alerting(plane), console.status(f"{decision} and resume run {run_id[:12]}..."):
        view = plane.decide(run_id, decision, who, comment)
    console.print(f"{who} {decision}d the promotion.")
    _print_run(view)


def approve(
    run_id: Annotated[str, typer.Argument(help="Run id (or a unique prefix).")],
    who: Annotated[str, typer.Option("--as", help="Approver (must differ from the requester).")],
    comment: Annotated[str, typer.Option(help="Comment for the audit trail.")] = "",
) -> None:
    """Approve a high-risk promotion and resume the run."""
    _decide(run_id, "approve", who, comment)


def reject(
    run_id: Annotated[str, typer.Argument(help="Run id (or a unique prefix).")],
    who: Annotated[str, typer.Option("--as", help="Who rejects.")],
    comment: Annotated[str, typer.Option(help="Comment for the audit trail.")] = "",
) -> None:
    """Reject a high-risk promotion and resume the run."""
    _decide(run_id, "reject", who, comment)


def approvals(as_json: AsJson = False) -> None:
    """List runs waiting for approval, with how to decide each."""
    views = _reads(with_state=as_json).pending_approvals()
    if as_json:
        _print_json([v.model_dump(mode="json") for v in views])
        return
    if not views:
        console.print("nothing waits for approval")
    for view in views:
        _print_run(view)
