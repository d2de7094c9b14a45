"""The ``driftpilot`` command line.

Heavy libraries are imported inside the commands, so ``driftpilot --help`` is instant.

Errors: parsing and running every command go through one guard (``_Guarded``, the app's group
class), so a command raises and never prints its own error. The user sees one line on stderr
and an exit code, never a traceback:

    DriftPilotError (ours, worded for people)      error: <message>                      exit 1
    bad usage (typer.BadParameter, bad option)     error: <message> (try '... --help')   exit 2
    anything else (a bug)                          error: internal error: <Type>: <msg>  exit 3
                                                   hint: run again with --log-level DEBUG

``driftpilot --log-level DEBUG <command>`` prints the traceback as well. A new command follows
the pattern: check its options and raise ``typer.BadParameter`` (a bad value) or ``UsageError``
(a missing combination), call the service, and let a ``DriftPilotError`` rise.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# Typer 0.29 vendors click: the Context its groups take and the errors it raises live here.
from typer._click import ClickException, Context
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from driftpilot.core.errors import DriftPilotError, NotFound
from driftpilot.core.vocabulary import outcome_label, status_label, trigger_label

if TYPE_CHECKING:
    from tools.datasets import DatasetSpec

EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _error(message: str) -> None:
    """One line on stderr. Plain echo, not rich: a message may hold [brackets] that rich
    would read as markup, and rich wraps long lines."""
    typer.echo(f"{typer.style('error:', fg='red')} {' '.join(message.split())}", err=True)


def _traceback_if_debugging() -> bool:
    """Print the traceback being handled when logging at DEBUG; say whether it did."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        return False
    traceback.print_exc(file=sys.stderr)
    return True


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Map every exception a command raises to one ``error:`` line and an exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort, NoArgsIsHelpError):
        raise  # exits, Ctrl-C and "no arguments: show the help" stay typer's
    except UsageError as exc:
        hint = f" (try '{exc.ctx.command_path} --help')" if exc.ctx else ""
        _error(exc.format_message() + hint)
        raise typer.Exit(EXIT_USAGE) from None
    except ClickException as exc:
        _error(exc.format_message())
        raise typer.Exit(exc.exit_code) from None
    except DriftPilotError as exc:
        _traceback_if_debugging()
        _error(str(exc) or type(exc).__name__)
        raise typer.Exit(EXIT_ERROR) from None
    except Exception as exc:
        debugging = _traceback_if_debugging()
        _error(f"internal error: {type(exc).__name__}: {exc}")
        if not debugging:
            typer.echo(
                "hint: run again as 'driftpilot --log-level DEBUG ...' to see the traceback",
                err=True,
            )
        raise typer.Exit(EXIT_INTERNAL) from None


class _Guarded(TyperGroup):
    """The app's group: parsing its options, and parsing and running every subcommand
    (nested groups included), happen inside the error guard."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        with _one_line_errors():
            return super().parse_args(ctx, args)

    def invoke(self, ctx: Context) -> Any:
        with _one_line_errors():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Guarded,
    help="DriftPilot: keep production tabular models healthy.",
    no_args_is_help=True,
)
model_app = typer.Typer(help="Managed models.", no_args_is_help=True)
app.add_typer(model_app, name="model")
audit_app = typer.Typer(help="Show, verify or export the audit trail; its signed checkpoints.")
app.add_typer(audit_app, name="audit")
keys_app = typer.Typer(help="API keys of the REST API (stored hashed).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
users_app = typer.Typer(help="Password users of the chat (stored hashed).", no_args_is_help=True)
app.add_typer(users_app, name="users")
UNBOUNDED = 100_000  # columns a table may take on a pipe: more than any row needs


class _Unbounded:
    """A table rendered at its natural width, however wide the console says it is."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from console.render(self.table, options.update_width(UNBOUNDED))


class _CliConsole(Console):
    """rich as usual on a terminal. On a pipe or a file (a log, ``| grep``) rich would wrap
    everything at 80 columns, a word per line in a narrow column: there lines are printed
    unwrapped and tables at their natural width, so one row stays one line."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if self.is_terminal:
            super().print(*objects, **kwargs)
            return
        kwargs.setdefault("soft_wrap", True)  # no wrapping, no cropping at the width
        unbounded = (_Unbounded(o) if isinstance(o, Table) else o for o in objects)
        super().print(*unbounded, **kwargs)


console = _CliConsole()


def _add_row(table: Table, *cells: str) -> None:
    """A row of plain text: names, rationales and outcomes may hold [brackets] that rich
    would read as markup and drop."""
    table.add_row(*(Text(cell) for cell in cells))


def _print_json(items: list[Any]) -> None:
    """One JSON document (a list) on stdout, with the machine names, for scripts."""
    typer.echo(json.dumps(items, indent=2, default=str))


AsJson = Annotated[
    bool, typer.Option("--json", help="Print one JSON list (machine names) instead of a table.")
]


@app.callback()
def main(log_level: Annotated[str, typer.Option(help="Logging level.")] = "WARNING") -> None:
    from driftpilot.core.logs import setup_logging

    if log_level.upper() not in LOG_LEVELS:
        raise typer.BadParameter(
            f"{log_level!r} is not one of {', '.join(LOG_LEVELS)}", param_hint="'--log-level'"
        )
    setup_logging(log_level)


def _plane() -> Any:
    from driftpilot.runs.plane import ControlPlane

    return ControlPlane()


ALERT_GRACE_S = 10.0  # how long a command waits, at most, for its alerts to be delivered


@contextmanager
def _alerting(plane: Any) -> Iterator[None]:
    """Deliver the webhooks of what this command does (an approval waiting, a promotion, a
    rollback, a failed run) before it exits; a dead endpoint costs at most ALERT_GRACE_S."""
    from driftpilot.alerts.webhooks import AlertDispatcher

    dispatcher = AlertDispatcher(plane).start()
    try:
        yield
    finally:
        if not dispatcher.wait_idle(ALERT_GRACE_S):
            _error(f"alerts not delivered within {ALERT_GRACE_S:.0f} s were dropped (audited)")
        dispatcher.stop()


def _spec(dataset: str) -> DatasetSpec:
    """The built-in dataset's spec; an unknown name is bad usage."""
    from tools.datasets import SPECS

    if dataset not in SPECS:
        raise typer.BadParameter(
            f"unknown dataset {dataset!r}; built-in datasets: {', '.join(sorted(SPECS))}"
        )
    return SPECS[dataset]


def _dataset_batch(from_dataset: str | None) -> tuple[DatasetSpec, str]:
    """The dataset and batch id named by '--from-dataset flights:2013-03' (nothing is read)."""
    if from_dataset is None or ":" not in from_dataset:
        raise UsageError("give --batch PATH or --from-dataset NAME:BATCH_ID (e.g. flights:2013-03)")
    name, batch_id = from_dataset.split(":", 1)
    return _spec(name), batch_id


def _batch_from(batch: Path | None, from_dataset: str | None) -> tuple[Any, str]:
    """A batch frame and its id, from a file or from a built-in dataset ('flights:2013-03')."""
    from tools.data import load_table, split_batches
    from tools.datasets import load_dataset

    if batch is not None:
        return load_table(batch), batch.stem
    spec, batch_id = _dataset_batch(from_dataset)
    name = spec.name
    batches = {
        b.info.batch_id: b.frame
        for b in split_batches(
            load_dataset(name),  # type: ignore[arg-type]
            spec.time_col,
            every=spec.batch_every,
        )
    }
    if batch_id not in batches:
        raise typer.BadParameter(f"{name} has no batch {batch_id!r}; batches: {', '.join(batches)}")
    return batches[batch_id], batch_id


@model_app.command("add")
def model_add(
    name: Annotated[
        str, typer.Argument(help="Name of the managed model (MLflow registered model).")
    ],
    dataset: Annotated[
        str | None, typer.Option(help="Built-in dataset: flights or creditcard.")
    ] = None,
    initial: Annotated[
        str | None, typer.Option(help="Initial batch of the dataset, e.g. 2013-01.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="CSV/Parquet with the initial training window.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Label column (0/1).")] = None,
    time_col: Annotated[str | None, typer.Option(help="Time column.")] = None,
    numeric: Annotated[str, typer.Option(help="Comma-separated numeric features.")] = "",
    categorical: Annotated[str, typer.Option(help="Comma-separated categorical features.")] = "",
    family: Annotated[str, typer.Option(help="lightgbm or catboost.")] = "lightgbm",
    by: Annotated[str | None, typer.Option("--by", help="Who adds it (audited).")] = None,
) -> None:
    """Register a managed model and train, register and promote its first champion."""
    from tools.data import load_table

    if dataset:
        if not initial:
            raise UsageError("give --initial with --dataset (e.g. 2013-01)")
        spec = _spec(dataset)
        frame, _ = _batch_from(None, f"{dataset}:{initial}")
        target, time_col = spec.target, spec.time_col
        num, cat = spec.numeric, spec.categorical
    else:
        if not (data and target and time_col and numeric):
            raise UsageError(
                "give --dataset and --initial, or --data, --target, --time-col, --numeric"
            )
        frame = load_table(data)
        num, cat = numeric.split(","), [c for c in categorical.split(",") if c]
    view = _plane().add_model(
        name,
        frame,
        target=target,
        time_col=time_col,
        numeric=num,
        categorical=cat,
        family=family,
        source=dataset or str(data),
        principal=by,
    )
    console.print(
        f"Model [bold]{view.name}[/]: champion v{view.champion} ({view.family}), "
        f"baseline {view.metric} {view.baseline:.4f}."
    )


@model_app.command("list")
def model_list(as_json: AsJson = False) -> None:
    """List managed models with their champion."""
    models = _plane().list_models()
    if as_json:
        _print_json([m.model_dump(mode="json") for m in models])
        return
    table = Table("model", "target", "family", "champion", "baseline", "features")
    for m in models:
        _add_row(
            table,
            m.name,
            m.target,
            m.family,
            f"v{m.champion}",
            f"{m.baseline or 0:.4f}",
            str(len(m.features)),
        )
    console.print(table)


@app.command()
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
) -> None:
    """Run the control loop on one new batch (one run per model at a time)."""
    if batch is None:
        _dataset_batch(from_dataset)  # bad usage fails before anything is opened
    plane = _plane()
    plane.model_view(model)  # so does an unknown model: before a batch is read
    frame, batch_id = _batch_from(batch, from_dataset)
    with _alerting(plane), console.status(f"control run on {batch_id}..."):
        view = plane.start_run(model, frame, batch_id, requested_by=by, wait=wait)
    _print_run(view)


def _print_run(view: Any) -> None:
    """The run as one line (and how to decide it, if it waits); a failed run ends the
    command with its error and exit code 1."""
    console.print(
        f"run [bold]{view.run_id}[/] ({escape(view.model)}, batch {escape(view.batch_id)}): "
        + escape(status_label(view.status))
        + (f", {escape(outcome_label(view.outcome))}" if view.outcome else "")
    )
    if view.approval_request:
        console.print(
            f"[yellow]waiting for approval:[/] {escape(view.approval_request['description'])}"
        )
        console.print(f"  approve: driftpilot approve {view.run_id} --as NAME [--comment TEXT]")
        console.print(f"  reject:  driftpilot reject {view.run_id} --as NAME [--comment TEXT]")
    if view.status == "failed":
        _error(f"run {view.run_id[:12]} failed: {view.summary.get('error') or view.outcome}")
        raise typer.Exit(EXIT_ERROR)


@app.command()
def runs(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    limit: Annotated[int, typer.Option(help="How many.")] = 20,
    as_json: AsJson = False,
) -> None:
    """List recent runs: status, outcome, what triggered each (and its schedule)."""
    views = _plane().list_runs(model, limit)
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
        )
    console.print(table)


def _run_prefix(given: str, hint: str = "'RUN_ID'") -> str:
    """A run id or a prefix of one, as given; an empty one (a script's unset variable) is bad
    usage, not the prefix of every run."""
    if not given.strip():
        raise typer.BadParameter("give a run id or a unique prefix of one", param_hint=hint)
    return given


def _decide(run_id: str, decision: str, who: str, comment: str) -> None:
    _run_prefix(run_id)
    plane = _plane()
    run_id = plane.resolve_run_id(run_id)
    with _alerting(plane), console.status(f"{decision} and resume run {run_id[:12]}..."):
        view = plane.decide(run_id, decision, who, comment)
    console.print(f"{who} {decision}d the promotion.")
    _print_run(view)


@app.command()
def approve(
    run_id: Annotated[str, typer.Argument(help="Run id (or a unique prefix).")],
    who: Annotated[str, typer.Option("--as", help="Approver (must differ from the requester).")],
    comment: Annotated[str, typer.Option(help="Comment for the audit trail.")] = "",
) -> None:
    """Approve a high-risk promotion and resume the run."""
    _decide(run_id, "approve", who, comment)


@app.command()
def reject(
    run_id: Annotated[str, typer.Argument(help="Run id (or a unique prefix).")],
    who: Annotated[str, typer.Option("--as", help="Who rejects.")],
    comment: Annotated[str, typer.Option(help="Comment for the audit trail.")] = "",
) -> None:
    """Reject a high-risk promotion and resume the run."""
    _decide(run_id, "reject", who, comment)


@app.command()
def approvals(as_json: AsJson = False) -> None:
    """List runs waiting for approval, with how to decide each."""
    views = _plane().pending_approvals()
    if as_json:
        _print_json([v.model_dump(mode="json") for v in views])
        return
    if not views:
        console.print("nothing waits for approval")
    for view in views:
        _print_run(view)


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
    plane = _plane()
    if verify:
        _print_verify(plane.verify())
        return
    if run_id is not None:
        run_id = _audited_run_id(plane, run_id)
    if export is not None:
        for row in plane.audit(run_id):
            sys.stdout.write(json.dumps(row, default=str) + "\n")
        return
    if as_json:
        _print_json(list(plane.audit(run_id)))
        return
    console.print(_audit_table(plane.audit(run_id), full=not console.is_terminal))


def _audited_run_id(plane: Any, given: str) -> str:
    """The run ``given`` names: a unique prefix of a run's id, or the exact id of an audited
    operation that is not a run (a model's bootstrap, a rollback). None or several: NotFound."""
    try:
        return str(plane.resolve_run_id(given))
    except NotFound:
        if next(iter(plane.audit(given)), None) is not None:
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
    plane = _plane()
    text = plane.latest_checkpoint()
    if export:
        sys.stdout.write(text)
        return
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    console.print(f"verifier key: {plane.audit_verifier_key()}", markup=False, soft_wrap=True)


@app.command()
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


@app.command()
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


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on; not loopback needs an API key.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
) -> None:
    """Serve the REST API (docs at /docs). At start it recovers, in the background, what a
    dead process left; a bind other than loopback refuses to start without an API key."""
    from api.serve import serve as serve_api

    if not host.strip():
        raise typer.BadParameter("give an address, e.g. 127.0.0.1", param_hint="'--host'")
    plane = _plane()
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger("api").setLevel(logging.INFO)  # start-up recovery is worth seeing
    serve_api(host, port, plane=plane)


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Runs this worker executes at once.")
    ] = 1,
    queues: Annotated[
        str, typer.Option(help="Comma-separated queues to take jobs from: runs, schedules.")
    ] = "runs,schedules",
    name: Annotated[str | None, typer.Option(help="Worker name in logs.")] = None,
) -> None:
    """Take runs and schedule firings from the PostgreSQL task queue (procrastinate) until
    SIGTERM/SIGINT, then finish the runs in progress and exit. Any number, on any machine,
    against one DRIFTPILOT_DB_URL."""
    from driftpilot.execution.queue import QUEUES, Queue
    from driftpilot.scheduling.scheduler import Scheduler

    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    if not chosen or set(chosen) - set(QUEUES):
        raise typer.BadParameter(f"queues are {', '.join(QUEUES)}", param_hint="'--queues'")
    plane = _plane()
    queue = Queue(plane)
    roots = plane.settings.api.batch_roots or None  # where schedules' glob sources read, as the API
    queue.scheduler = Scheduler(plane, roots=roots, queue=queue).start()
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger("procrastinate").setLevel(logging.INFO)  # job starts and ends
    queue.run_worker(concurrency=concurrency, queues=chosen, name=name)


def _role(role: str) -> str:
    from driftpilot.core.identity import ROLES

    if role not in ROLES:
        raise typer.BadParameter(
            f"unknown role {role!r}; roles: {', '.join(ROLES)}", param_hint="'--role'"
        )
    return role


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Whose key: the principal it acts as (audited).")],
    role: Annotated[str, typer.Option(help="viewer, operator, approver or admin.")],
) -> None:
    """Create an API key; its secret is printed once (only its hash is stored)."""
    _role(role)
    view, secret = _plane().create_api_key(name, role)
    typer.echo(
        f"key {view.key_id} for {view.principal} ({view.role}); its secret, shown once:",
        err=True,
    )
    typer.echo(secret)


@keys_app.command("list")
def keys_list(
    all_keys: Annotated[bool, typer.Option("--all", help="Revoked keys too.")] = False,
    as_json: AsJson = False,
) -> None:
    """List API keys (never their secrets)."""
    keys = [k for k in _plane().list_api_keys() if all_keys or not k.revoked]
    if as_json:
        _print_json([k.model_dump(mode="json") for k in keys])
        return
    table = Table("key", "principal", "role", "created", "revoked")
    for k in keys:
        _add_row(
            table, k.key_id, k.principal, k.role, k.created_at[:19], "yes" if k.revoked else ""
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (keys list).")]) -> None:
    """Revoke an API key: requests with it answer 401 from now on."""
    view = _plane().revoke_api_key(key_id)
    console.print(f"key {view.key_id} of {view.principal} ({view.role}) revoked.")


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="The user's name: the principal they act as.")],
    role: Annotated[str, typer.Option(help="viewer, operator, approver or admin.")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")
    ] = False,
) -> None:
    """Add a password user of the chat (the password is prompted; only a scrypt hash is kept)."""
    from driftpilot.core.identity import normalize_principal
    from driftpilot.store.users import add_user

    _role(role)
    normalize_principal(name)  # a bad name fails before a password is asked
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    view = add_user(_plane().store, name, role, password)
    console.print(f"user [bold]{view.name}[/] ({view.role}) added; sign in to the chat with it.")


@users_app.command("list")
def users_list(as_json: AsJson = False) -> None:
    """List the chat's password users (never their hashes)."""
    from dataclasses import asdict

    from driftpilot.store.users import list_users

    users = list_users(_plane().store)
    if as_json:
        _print_json([asdict(u) for u in users])
        return
    table = Table("user", "role", "created")
    for u in users:
        _add_row(table, u.name, u.role, u.created_at[:19])
    console.print(table)


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8001,
) -> None:
    """Serve the chat (Chainlit): sign in with an API key or a password user, then /help."""
    from driftpilot.core.settings import get_settings
    from ui.launch import run as run_chat

    if not host.strip():
        raise typer.BadParameter("give an address, e.g. 127.0.0.1", param_hint="'--host'")
    from driftpilot.store.users import list_users

    plane = _plane()
    if not any(not k.revoked for k in plane.list_api_keys()) and not list_users(plane.store):
        typer.echo(
            "hint: nobody can sign in yet: `driftpilot keys create --name NAME --role approver` "
            "or `driftpilot users add NAME --role approver`",
            err=True,
        )
    plane.close()
    settings = get_settings().ensure_dirs()
    console.print(f"DriftPilot chat on http://{host}:{port} (Ctrl-C stops it)")
    sys.stdout.flush()
    run_chat(settings, host, port)


@app.command()
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


@app.command()
def demo(
    dataset: Annotated[str, typer.Option(help="flights or creditcard.")] = "flights",
    approve_as: Annotated[
        str | None, typer.Option(help="Approve high-risk promotions as NAME.")
    ] = None,
) -> None:
    """The main job: a champion on the first batch, then every later batch through the loop."""
    from driftpilot.demo import run_demo

    _spec(dataset)
    run_demo(console, dataset=dataset, approve_as=approve_as, interactive=sys.stdin.isatty())


@app.command("eval")
def eval_(
    data: Annotated[
        Path | None, typer.Option(help="A labelled CSV or Parquet table.", dir_okay=False)
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="Or a built-in dataset: flights, creditcard.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="The binary label column.")] = None,
    positive: Annotated[
        str | None, typer.Option(help="The target value that counts as 1 (if not 0/1).")
    ] = None,
    time_col: Annotated[
        str | None, typer.Option("--time", help="The column that orders rows in time.")
    ] = None,
    order_by: Annotated[
        str | None, typer.Option(help="'row': no time column, the row order is time.")
    ] = None,
    batch: Annotated[
        str | None,
        typer.Option(help="Batch size: month, week, day, hour, <N>h or <N> rows."),
    ] = None,
    numeric: Annotated[str, typer.Option(help="Comma-separated numeric features.")] = "",
    categorical: Annotated[str, typer.Option(help="Comma-separated categorical features.")] = "",
    initial: Annotated[int, typer.Option(min=1, help="Batches that train the first champion.")] = 1,
    approvals: Annotated[
        str, typer.Option(help="High-risk promotions: approve, reject or wait.")
    ] = "approve",
    escalations: Annotated[
        str,
        typer.Option(
            help="'Accept this quarantined batch as the new normal?': approve, reject or wait."
        ),
    ] = "reject",
    approver: Annotated[
        str, typer.Option(help="The evaluator principal who answers them.")
    ] = "evaluator",
    llm: Annotated[
        str | None,
        typer.Option(help="builtin, openai:M, ollama:M or scripted:FILE (default: configured)."),
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: shipped).")] = None,
    family: Annotated[str, typer.Option(help="lightgbm or catboost.")] = "lightgbm",
    max_batches: Annotated[
        int | None, typer.Option(min=2, help="Stop after this many batches.")
    ] = None,
    home: Annotated[
        Path | None, typer.Option(help="The eval's own home (default: <home>/evals/NAME-TIME).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Results JSON (default: in the home).")] = None,
    name: Annotated[str | None, typer.Option(help="Model name (default: the file's stem).")] = None,
) -> None:
    """Run the control loop over a labelled table, batch by batch, in a home of its own.

    The first batch (or --initial K) trains the first champion; every later batch is one
    control run. Ends with a per-batch table (drift share, champion metric, action, outcome,
    risk tier, seconds) and a JSON file."""
    from evals.byo import EvalRequest, run_eval

    if order_by is not None and order_by.lower() != "row":
        raise typer.BadParameter("only 'row' is understood", param_hint="--order-by")
    for hint, answer in (("--approvals", approvals), ("--escalations", escalations)):
        if answer not in ("approve", "reject", "wait"):
            raise typer.BadParameter("approve, reject or wait", param_hint=hint)
    if family not in ("lightgbm", "catboost"):
        raise typer.BadParameter("lightgbm or catboost", param_hint="--family")
    request = EvalRequest(
        data=data,
        dataset=dataset,
        target=target,
        positive=positive,
        time_col=time_col,
        order_by_row=order_by is not None,
        batch=batch,
        numeric=[c for c in numeric.split(",") if c] or None,
        categorical=[c for c in categorical.split(",") if c] or None,
        initial=initial,
        approvals=approvals,
        escalations=escalations,
        approver=approver,
        llm=llm,
        policy=policy,
        family=family,
        max_batches=max_batches,
        home=home,
        out=out,
        name=name,
    )
    run_eval(request, console)


@app.command()
def tour(
    trials: Annotated[int, typer.Option(min=1, help="Optuna trials for the challenger.")] = 12,
) -> None:
    """Walk through the deterministic tools on the real 2013 flights (no agents)."""
    from driftpilot.tour import run_tool_tour

    run_tool_tour(console, trials=trials)


@app.command()
def data(
    dataset: Annotated[
        str, typer.Argument(help="Built-in dataset: flights or creditcard.")
    ] = "flights",
    every: Annotated[str | None, typer.Option(help="Batch period: hour, day, week, month.")] = None,
    as_json: AsJson = False,
) -> None:
    """Load a built-in real dataset and list its batches."""
    from tools.data import split_batches
    from tools.datasets import load_dataset

    spec = _spec(dataset)
    frame = load_dataset(dataset)  # type: ignore[arg-type]
    batches = split_batches(frame, spec.time_col, every=every or spec.batch_every)  # type: ignore[arg-type]
    rates = [float(b.frame[spec.target].mean() or 0) for b in batches]  # type: ignore[arg-type]
    if as_json:
        _print_json(
            [
                {**b.info.model_dump(mode="json"), "target_rate": r}
                for b, r in zip(batches, rates, strict=True)
            ]
        )
        return
    table = Table(title=f"{dataset}: {frame.height:,} rows, label {spec.target!r}")
    for col in ("batch", "rows", f"{spec.target} rate", "hash"):
        table.add_column(col)
    for batch, rate in zip(batches, rates, strict=True):
        table.add_row(
            batch.info.batch_id,
            f"{batch.info.n_rows:,}",
            f"{rate:.3f}",
            batch.info.content_hash[:12],
        )
    console.print(table)


@app.command()
def labels(
    model: Annotated[str, typer.Argument(help="Managed model name.")],
    batch: Annotated[str, typer.Argument(help="Batch id of an accepted batch without labels.")],
    file: Annotated[Path, typer.Option("--file", help="CSV/Parquet holding the target column.")],
    key: Annotated[
        str | None,
        typer.Option(help="Join on this column (in batch and file); default: row order."),
    ] = None,
    who: Annotated[str | None, typer.Option("--as", help="Who attaches them (audited).")] = None,
) -> None:
    """Attach labels that arrived late to an accepted batch; show the champion's realised
    ROC AUC on them against the estimate made without them."""
    plane = _plane()
    view = plane.attach_labels(model, batch, file, who or plane.settings.principal, key=key)

    def number(value: float | None, fmt: str = ".4f") -> str:
        return "-" if value is None else format(value, fmt)

    table = Table("labels", "", title=f"{view.model} batch {view.batch_id}")
    table.add_row("rows labelled", f"{view.rows_labelled:,} of {view.rows:,}")
    champion = "-" if view.champion_version is None else f"v{view.champion_version}"
    table.add_row("champion that scored it", champion)
    table.add_row("realised roc_auc", number(view.realised_roc_auc))
    table.add_row("estimated roc_auc", number(view.estimated_roc_auc))
    table.add_row("estimation error", number(view.estimation_error, "+.3f"))
    table.add_row("run", view.run_id)
    console.print(table)
    console.print(f"labelled batch: {view.path}")


if __name__ == "__main__":
    app()


# -- the local LLM (opt-in real-LLM tier) -------------------------------------------------------

llm_app = typer.Typer(
    help="The local LLM: llama.cpp's llama-server with Qwen2.5-Coder-0.5B (`make llm-local`).",
    no_args_is_help=True,
)
app.add_typer(llm_app, name="llm")


@llm_app.command("serve")
def llm_serve(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Loopback TCP port.")] = 8089,
    model: Annotated[
        Path | None, typer.Option(help="A GGUF model file; default: the one in the LLM cache.")
    ] = None,
) -> None:
    """Run the local llama-server in the foreground (Ctrl-C stops it); point DriftPilot at it
    with DRIFTPILOT_LLM=openai:qwen2.5-coder-0.5b and DRIFTPILOT_LLM_BASE_URL."""
    import contextlib
    import subprocess

    from driftpilot.core.llm import LOCAL_MODEL_NAME, server_command
    from driftpilot.core.settings import get_settings

    command = server_command(get_settings(), port, model)  # ConfigError: run make llm-local
    console.print(
        f"llama-server on http://127.0.0.1:{port}/v1 - use it with\n"
        f"  DRIFTPILOT_LLM=openai:{LOCAL_MODEL_NAME} "
        f"DRIFTPILOT_LLM_BASE_URL=http://127.0.0.1:{port}/v1",
        markup=False,
    )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the server too: it stops
        code = subprocess.call(command)
        if code:
            raise typer.Exit(code)


@llm_app.command(
    "exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def llm_exec(
    command: Annotated[list[str], typer.Argument(help="The command to run, after --.")],
) -> None:
    """Start the local llama-server on a free loopback port, wait until it is healthy, run
    COMMAND with DRIFTPILOT_LLM and DRIFTPILOT_LLM_BASE_URL pointing at it, stop the server;
    exit with COMMAND's code (`make demo-llm` runs the demo this way)."""
    import os
    import subprocess

    from driftpilot.core.llm import LOCAL_MODEL_NAME, local_server
    from driftpilot.core.settings import get_settings

    settings = get_settings()
    log = settings.home / "llama-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with local_server(settings, log_path=log) as base_url:
        console.print(f"llama-server ready at {base_url} (log: {log})", markup=False)
        env = {
            **os.environ,
            "DRIFTPILOT_LLM": f"openai:{LOCAL_MODEL_NAME}",
            "DRIFTPILOT_LLM_BASE_URL": base_url,
        }
        code = subprocess.call(command, env=env)
    if code:
        raise typer.Exit(code)
