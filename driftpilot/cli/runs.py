"""Control runs: ``run``, ``runs``, ``recover``, ``rollback``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from typer._click.exceptions import UsageError

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
from driftpilot.sources.objects import is_object_url


def run(
    model: Annotated[str, typer.Argument(help="Managed model name.")],
    batch: Annotated[
        str | None,
        typer.Option(
            help="CSV/Parquet file holding the new batch: a path, or an s3:// object under "
            "DRIFTPILOT_SOURCES_OBJECT_ROOTS."
        ),
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
    sql: Annotated[
        str | None,
        typer.Option(
            "--sql",
            metavar="QUERY",
            help="The batch is the rows of this SELECT; :start and :end are the window "
            "(bound parameters, never formatted in). Runs read-only, under a timeout.",
        ),
    ] = None,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db-url",
            help="SQLAlchemy URL of the PostgreSQL/SQLite database --sql reads (never printed; "
            "--database keeps a password out of the command line).",
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(help="Instead of --db-url: a database of DRIFTPILOT_SOURCES_DATABASES."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="The window's start (ISO 8601, UTC without an offset), exclusive; default: "
            "the newest time the champion was trained on."
        ),
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="The window's end, inclusive; default: now.")
    ] = None,
) -> None:
    """Run the control loop on one new batch (one run per model at a time): a file, a
    built-in batch, or the rows of a SQL query for a time window."""
    if retrain is not None and not retrain.strip():
        raise typer.BadParameter("say why a retrain is asked for", param_hint="'--retrain'")
    window = _sql_usage(batch, from_dataset, sql, db_url, database, start, end)
    if batch is None and sql is None:
        _dataset_batch(from_dataset)  # bad usage fails before anything is opened
    plane = _plane()
    plane.model_view(model)  # so does an unknown model: before a batch is read
    if sql is not None:
        frame, batch_id = _sql_batch(plane, model, sql, db_url, database, window)
    elif batch is not None and is_object_url(batch):
        frame, batch_id = _object_batch(plane, batch)
    else:
        frame, batch_id = _batch_from(Path(batch) if batch else None, from_dataset)
    with _alerting(plane), console.status(f"control run on {batch_id}..."):
        view = plane.start_run(
            model, frame, batch_id, requested_by=by, wait=wait, retrain_reason=retrain
        )
    _print_run(view)


def _object_batch(plane: Any, url: str) -> tuple[Any, str]:
    """An s3:// object's rows and its id (its name without the suffix), read within the
    API's batch limits; the object store's refusals are the command's error."""
    from driftpilot.sources.files import limits_of
    from driftpilot.sources.objects import read_object

    settings = plane.settings
    frame = read_object(url, settings.sources, limits_of(settings.api))
    return frame, PurePosixPath(url).stem


def _time_option(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    from driftpilot.sources.sql import as_utc

    try:
        return as_utc(datetime.fromisoformat(value))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-01-31T12:00)", param_hint=f"'{name}'"
        ) from None


def _sql_usage(
    batch: str | None,
    from_dataset: str | None,
    sql: str | None,
    db_url: str | None,
    database: str | None,
    start: str | None,
    end: str | None,
) -> tuple[datetime | None, datetime | None]:
    """The --sql options checked together (one batch source; --sql with one database);
    returns the window's given bounds."""
    if sql is None:
        if database is not None or start is not None or end is not None:
            raise UsageError("--database, --start and --end go with --sql QUERY")
        return None, None
    if batch is not None or from_dataset is not None:
        raise UsageError("give one batch: --batch, --from-dataset or --sql")
    if (db_url is None) == (database is None):
        raise UsageError("--sql reads one database: give --db-url URL or --database NAME")
    from driftpilot.sources.sql import check_query

    check_query(sql)  # a refused query fails before anything is opened
    bounds = _time_option(start, "--start"), _time_option(end, "--end")
    if bounds[0] is not None and bounds[1] is not None and bounds[1] <= bounds[0]:
        raise typer.BadParameter("--end must be after --start", param_hint="'--end'")
    return bounds


def _sql_batch(
    plane: Any,
    model: str,
    query: str,
    db_url: str | None,
    database: str | None,
    window: tuple[datetime | None, datetime | None],
) -> tuple[Any, str]:
    """The rows of the query for the window as a batch and its id (``sql-<end>``).

    Raises:
        DataError: the window has no rows (or the query failed: ``sources.sql``).
    """
    from driftpilot.core.errors import DataError
    from driftpilot.scheduling.sources import sql_batch, sql_start
    from driftpilot.sources.sql import Window, as_utc, database_url

    url = db_url if db_url is not None else database_url(database or "", plane.settings.sources)
    first = window[0] or sql_start(plane, model, None, set())
    last = window[1] or as_utc(plane.store.clock())
    if last <= first:
        raise DataError(f"the window ({first.isoformat()}, {last.isoformat()}] is empty")
    bounds = Window(first, last)
    with console.status(f"SQL query for {bounds}..."):
        picked = sql_batch(plane, model, url, query, bounds, key="")
    if picked is None:
        raise DataError(f"the SQL query returned no rows in {bounds}: no new batch")
    if "cut" in picked.detail:  # more rows than one batch holds: say where it stopped
        console.print(escape(picked.detail))
    return picked.frame, picked.batch_id


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
