"""The ``driftpilot`` command line.

Heavy libraries are imported inside the commands, so ``driftpilot --help`` is instant.

One module per command group; this one builds ``app`` from them, and the order it adds them
in is the order ``driftpilot --help`` lists them:

    common      the error guard, the console, --json, the plane, alerts, built-in batches
    runs        run, runs, recover, rollback          approvals   approve, reject, approvals
    serve       serve, worker, ui                     replay      replay
    evals       demo, eval, tour, data                labels      labels
    notes       note, notes (context notes)
    models      model add, model list                 audit       audit [checkpoint]
    adopt       model adopt (an existing MLflow model)
    inference   model window, model windows (the inference log's windows)
    keys        keys create, list, revoke             users       users add, list
    webhooks    webhooks add, list, remove, rotate-secret
    llm         llm serve, llm exec                   backup      backup, restore

Services are wired by ``driftpilot.runtime`` (the worker's queue and scheduler, the alerts a
command delivers before it exits), as in the API and the chat.

Errors: parsing and running every command go through one guard (``_Guarded``, the app's group
class), so a command raises and never prints its own error. The user sees one line on stderr
and an exit code, never a traceback:

    DriftPilotError (ours, worded for people)      error: <message>                      exit 1
    bad usage (typer.BadParameter, bad option)     error: <message> (try '... --help')   exit 2
    anything else (a bug)                          error: internal error: <Type>: <msg>  exit 3
                                                   hint: run again with --log-level DEBUG

``driftpilot --log-level DEBUG <command>`` prints the traceback as well. A new command follows
the pattern: check its options and raise ``typer.BadParameter`` (a bad value) or ``UsageError``
(a missing combination), call the service, and let a ``DriftPilotError`` rise; then add it
below in its place.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from driftpilot.cli import (
    adopt,
    approvals,
    backup,
    evals,
    inference,
    labels,
    notes,
    replay,
    runs,
    serve,
)
from driftpilot.cli.audit import audit_app
from driftpilot.cli.common import (
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_USAGE,
    LOG_LEVELS,
    _Guarded,
    console,
)
from driftpilot.cli.keys import keys_app
from driftpilot.cli.llm import llm_app
from driftpilot.cli.models import model_app
from driftpilot.cli.users import users_app
from driftpilot.cli.webhooks import webhooks_app

__all__ = ["EXIT_ERROR", "EXIT_INTERNAL", "EXIT_USAGE", "app", "console", "main"]

app = typer.Typer(
    cls=_Guarded,
    help="DriftPilot: keep production tabular models healthy.",
    no_args_is_help=True,
)


@app.callback()
def main(log_level: Annotated[str, typer.Option(help="Logging level.")] = "WARNING") -> None:
    from driftpilot.core.logs import setup_logging

    if log_level.upper() not in LOG_LEVELS:
        raise typer.BadParameter(
            f"{log_level!r} is not one of {', '.join(LOG_LEVELS)}", param_hint="'--log-level'"
        )
    setup_logging(log_level)
    # MLflow draws a tqdm bar per artifact download (adopting, loading a champion), which would
    # break our own progress bars and tables; a person who wants it back sets it to true.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# The top-level commands in --help order (then the groups).
for name, command in (
    ("run", runs.run),
    ("runs", runs.runs),
    ("approve", approvals.approve),
    ("reject", approvals.reject),
    ("approvals", approvals.approvals),
    ("recover", runs.recover),
    ("rollback", runs.rollback),
    ("report", runs.report),
    ("serve", serve.serve),
    ("worker", serve.worker),
    ("ui", serve.ui),
    ("replay", replay.replay),
    ("demo", evals.demo),
    ("eval", evals.eval_),
    ("tour", evals.tour),
    ("data", evals.data),
    ("labels", labels.labels),
    ("note", notes.note),
    ("notes", notes.notes),
    ("backup", backup.backup),
    ("restore", backup.restore),
):
    app.command(name)(command)
model_app.command("adopt")(adopt.model_adopt)
model_app.command("window")(inference.model_window)
model_app.command("windows")(inference.model_windows)
app.add_typer(model_app, name="model")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(llm_app, name="llm")
