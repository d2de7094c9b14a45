"""The audit trail: ``driftpilot audit`` (show, verify, export), ``audit checkpoint``."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from driftpilot.cli.common import (
    EXIT_ERROR,
    AsJson,
    _add_row,
    _print_json,
    _reads,
    _run_prefix,
    _trust,
    console,
)
from driftpilot.core.errors import NotFound

if TYPE_CHECKING:
    from driftpilot.runs.reads import Reads

audit_app = typer.Typer(help="Show, verify or export the audit trail; its signed checkpoints.")


@audit_app.callback(invoke_without_command=True)
def audit(
    ctx: typer.Context,
    run_id: Annotated[
        str | None, typer.Option("--run", help="Only this run (a unique id prefix will do).")
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Walk the hash chains, compare with the newest signed checkpoint, check the "
            "invariants across tables and against MLflow.",
        ),
    ] = False,
    export: Annotated[str | None, typer.Option(help="Export format: jsonl (to stdout).")] = None,
    as_json: AsJson = False,
) -> None:
    """Show, verify or export the audit trail."""
    if ctx.invoked_subcommand is not None:
        return
    if export not in (None, "jsonl"):
        raise typer.BadParameter(f"unknown export format {export!r}; use jsonl")
    if run_id is not None:
        _run_prefix(run_id, "'--run'")
    if verify:
        _print_verify(_trust().verify())
        return
    reads = _reads(with_state=False)  # audit rows only: no run's checkpointed state
    if run_id is not None:
        run_id = _audited_run_id(reads, run_id)
    if export is not None:
        for row in reads.audit(run_id):
            sys.stdout.write(json.dumps(row, default=str) + "\n")
        return
    if as_json:
        _print_json(list(reads.audit(run_id)))
        return
    console.print(_audit_table(reads.audit(run_id), full=not console.is_terminal))


def _audited_run_id(reads: Reads, given: str) -> str:
    """The run ``given`` names: a unique prefix of a run's id, or the exact id of an audited
    operation that is not a run (a model's bootstrap, a rollback). None or several: NotFound."""
    try:
        return reads.resolve_run_id(given)
    except NotFound:
        if next(iter(reads.audit(given)), None) is not None:
            return given
        raise


AUDIT_DETAIL = 90  # characters of a rationale or comment a terminal table shows


def _audit_table(rows: Any, *, full: bool) -> Table:
    """One line per audit row; ``full``: the whole rationale (a log keeps it all)."""
    table = Table("table", "id", "run", "agent/kind", "action", "detail", "at")
    for row in rows:
        who = row.get("agent") or row.get("kind") or row.get("model", "")
        action = row.get("action") or row.get("tool") or row.get("decision") or row.get("phase", "")
        detail = (
            row.get("rationale")
            or row.get("comment")
            or row.get("principal")
            or row.get("actor")
            or row.get("step")
            or ""
        )
        detail = " ".join(str(detail).split())  # a rationale's line breaks: one row, one line
        _add_row(
            table,
            row["table"],
            str(row["id"]),
            str(row.get("run_id", ""))[:12],
            str(who),
            str(action),
            detail if full else detail[:AUDIT_DETAIL],
            row["created_at"][:19],
        )
    return table


def _print_verify(result: Any) -> None:
    """'audit verified' or every finding; a broken audit exits 1."""
    if result.ok:
        console.print(
            f"[green]audit verified[/]: {result.checked}"
            + (", matches the newest signed checkpoint" if result.checkpoint else "")
        )
        return
    broken = result.first_broken
    if broken is not None:
        console.print(
            f"[red]audit BROKEN[/] at {broken.table} row {broken.row_id}: {broken.reason}"
        )
    for problem in result.problems:
        console.print(f"[red]audit BROKEN[/]: {problem}", soft_wrap=True)
    raise typer.Exit(EXIT_ERROR)


@audit_app.command("checkpoint")
def audit_checkpoint(
    export: Annotated[
        bool, typer.Option("--export", help="Print only the signed checkpoint, for publishing.")
    ] = False,
) -> None:
    """The newest signed checkpoint of the audit chain heads, and the key that verifies it."""
    trust = _trust()
    text = trust.latest_checkpoint()
    if export:
        sys.stdout.write(text)
        return
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    console.print(f"verifier key: {trust.audit_verifier_key()}", markup=False, soft_wrap=True)
