"""Control runs: ``run``, ``runs``, ``recover``, ``rollback``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from driftpilot.cli.common import (
    AsJson,
    _add_row,
    _alerting,
    _batch_from,
    _dataset_batch,
    _plane,
    _print_json,
    _print_run,
    _reads,
    _run_prefix,
    console,
)
from driftpilot.core.episodes import episode_of, label
from driftpilot.core.vocabulary import outcome_label, status_label, trigger_label


def run(
    model: Annotated[str, typer.Argument(help="Managed model name.")],
    batch: Annotated[
        Path | None, typer.Option(help="CSV/Parquet file holding the new batch.")
    ] = None,
    from_dataset: Annotated[
        str | None, typer.Option(help="Built-in batch, e.g. flights:2013-07.")
    ] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who requests the run (audited).")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="If another run holds the model, wait for it.")
    ] = False,
    retrain: Annotated[
        str | None,
        typer.Option(
            "--retrain",
            metavar="REASON",
            help="Ask for a retrain, and say why (audited as your request; it lifts an "
            "escalated episode's hold: the policy's other bounds still apply).",
        ),
    ] = None,
) -> None:
    """Run the control loop on one new batch (one run per model at a time)."""
    if retrain is not None and not retrain.strip():
        raise typer.BadParameter("say why a retrain is asked for", param_hint="'--retrain'")
    if batch is None:
        _dataset_batch(from_dataset)  # bad usage fails before anything is opened
    plane = _plane()
    plane.model_view(model)  # so does an unknown model: before a batch is read
    frame, batch_id = _batch_from(batch, from_dataset)
    with _alerting(plane), console.status(f"control run on {batch_id}..."):
        view = plane.start_run(
            model, frame, batch_id, requested_by=by, wait=wait, retrain_reason=retrain
        )
    _print_run(view)


def runs(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    limit: Annotated[int, typer.Option(help="How many.")] = 20,
    as_json: AsJson = False,
) -> None:
    """List recent runs: status, outcome, what triggered each (and its schedule)."""
    views = _reads(with_state=as_json).list_runs(model, limit)
    if as_json:
        _print_json([v.model_dump(mode="json") for v in views])
        return
    table = Table(
        "run",
        "model",
        "batch",
        "status",
        "outcome",
        "trigger",
        "schedule",
        "requested by",
        "started",
        "episode",
    )
    for v in views:
        _add_row(
            table,
            v.run_id[:12],
            v.model,
            v.batch_id,
            status_label(v.status),
            outcome_label(v.outcome),
            trigger_label(v.trigger),
            (v.schedule_id or "")[:8],
            v.requested_by,
            v.created_at[:19],
            label(episode_of(v.summary)),
        )
    console.print(table)


def recover() -> None:
    """Finish runs whose process died: resume runs left running (lease expired) from their
    last checkpoint, apply approval decisions recorded but never applied."""
    plane = _plane()
    with _alerting(plane):
        done = plane.recover()
    if not done:
        console.print("nothing to recover")
        return
    table = Table("run", "model", "found", "did", "now")
    for r in done:
        now = status_label(r.status) + (f", {outcome_label(r.outcome)}" if r.outcome else "")
        _add_row(table, r.run_id[:12], r.model, r.found, r.did, now)
    console.print(table)


def rollback(
    model: Annotated[str, typer.Argument(help="Managed model name.")],
    who: Annotated[str, typer.Option("--as", help="Who rolls back (audited).")],
    reason: Annotated[str, typer.Option(help="Why it is rolled back (required, audited).")],
) -> None:
    """Move the champion back to the previous version; the reason goes into the audit."""
    if not reason.strip():
        raise typer.BadParameter(
            "give a reason: why the champion goes back", param_hint="'--reason'"
        )
    plane = _plane()
    with _alerting(plane):
        result = plane.rollback(model, who, reason)
    console.print(f"{model}: champion v{result['from']} -> v{result['to']} (by {result['by']}).")


def report(
    run_id: Annotated[str, typer.Argument(help="The run: its id or a unique prefix of it.")],
    open_: Annotated[
        bool, typer.Option("--open", help="Also open it in the default web browser.")
    ] = False,
) -> None:
    """Print the path of a run's Evidently drift report, rendering it first if it is not
    there yet (reports are rendered after the run's decision, and cached)."""
    from driftpilot.core.errors import NotFound

    plane = _plane()
    full = plane.resolve_run_id(_run_prefix(run_id))
    with console.status(f"Evidently report of run {full[:12]}..."):
        view = plane.run_report(full)
    if view.status != "ready" or view.path is None:
        raise NotFound(f"run {full[:12]} has no report: {view.reason}")
    if open_:
        import webbrowser

        from tools.drift_report import readable_report

        assert plane.settings.cache_dir is not None
        webbrowser.open(readable_report(view.path, plane.settings.cache_dir / "reports").as_uri())
    typer.echo(view.path)
