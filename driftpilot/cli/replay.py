"""What if: ``driftpilot replay`` re-decides past runs under another policy or LLM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from typer._click.exceptions import UsageError

from driftpilot.cli.common import _plane, _run_prefix, console


def replay(
    run_id: Annotated[
        str | None, typer.Argument(help="The run to replay (a unique id prefix will do).")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option(help="Policy YAML to re-decide under (default: the configured).")
    ] = None,
    llm: Annotated[
        str | None, typer.Option(help="LLM: builtin, openai:M or ollama:M (default: configured).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Replay this model's latest runs instead of one run.")
    ] = None,
    last: Annotated[
        int | None, typer.Option(min=1, help="With --model: how many runs (default 10).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """What if: re-decide past runs under another policy or LLM, as a dry run.

    Each run is forked from its checkpoint with the evidence it had; nothing is trained,
    registered, promoted or written to the audit trail. Shows where the decisions differ."""
    from driftpilot.core.settings import get_settings
    from driftpilot.replay import replay_model, replay_run, what_if

    if (run_id is None) == (model is None):
        raise UsageError("give a RUN_ID, or --model NAME [--last N]")
    if run_id is not None and last is not None:
        raise UsageError("--last goes with --model")
    if run_id is not None:
        _run_prefix(run_id)
    scenario = what_if(get_settings(), policy, llm)  # a bad policy fails before anything opens
    plane = _plane()
    if model is not None:
        summary = replay_model(plane, model, last or 10, scenario)
        if as_json:
            typer.echo(summary.model_dump_json(indent=2))
        else:
            _print_replays(summary)
        return
    assert run_id is not None
    report = replay_run(plane, plane.resolve_run_id(run_id), scenario)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        _print_replay(report)


def _print_replay(report: Any) -> None:
    """One replay: the agents' decisions side by side, '*' where they differ, then the
    outcomes and what the replay reused or could not know."""
    console.print(
        f"What-if replay of run [bold]{report.run_id}[/] ({report.model}, batch "
        f"{report.batch_id}), forked at checkpoint {report.forked_from}",
        markup=True,
        highlight=False,
    )
    console.print(
        f"policy {report.policy}, backend {report.backend}; dry run: nothing was written",
        markup=False,
    )
    table = Table("agent", "original", "replayed", "", caption="* differs")
    for step in report.steps:
        table.add_row(
            step.agent, step.original or "-", step.replayed or "-", "*" if step.differs else ""
        )
    console.print(table)
    mark = "differs" if report.outcome_differs else "same"
    console.print(
        f"outcome: {report.original_outcome} -> {report.replayed_outcome} ({mark})", markup=False
    )
    if report.stopped:
        console.print(f"replay stopped: {report.stopped}", markup=False)
    for step in report.steps:
        for note in step.notes + (["the LLM failed: the policy decided"] if step.fallback else []):
            console.print(f"note ({step.agent}): {note}", markup=False)


def _print_replays(summary: Any) -> None:
    """Replays of a model's runs: one line per run, then how many runs each change touches."""
    console.print(
        f"What-if replay of {summary.model}'s last {len(summary.runs)} runs under policy "
        f"{summary.policy}, backend {summary.backend}; dry run: nothing was written",
        markup=False,
    )
    table = Table("run", "batch", "original", "replayed", "", caption="* outcome differs")
    for r in summary.runs:
        mark = "*" if r.outcome_differs else ""
        table.add_row(r.run_id[:12], r.batch_id, r.original_outcome, r.replayed_outcome, mark)
    console.print(table)
    total = len(summary.runs)
    console.print(f"{summary.changed} of {total} runs would end differently", markup=False)
    for finding, count in summary.findings.items():
        console.print(f"{count} of {total} runs: {finding}", markup=False)
    for run_id, reason in summary.skipped.items():
        console.print(f"skipped {run_id[:12]}: {reason}", markup=False)
