"""The long-running processes: ``serve`` (the REST API), ``worker`` (the task queue's
worker), ``ui`` (the chat)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from driftpilot.cli.common import _error, _plane, console

# sysexits.h: a temporary failure, worth starting again (the database went away).
EX_TEMPFAIL = 75


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
        for name in ("api", "driftpilot.execution"):  # start-up recovery is worth seeing
            logging.getLogger(name).setLevel(logging.INFO)
    serve_api(host, port, plane=plane)


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
    SIGTERM/SIGINT, then finish the runs in progress and exit (0). Any number, on any machine,
    against one DRIFTPILOT_DB_URL. Losing the database exits 75 (EX_TEMPFAIL): restart it."""
    from driftpilot.execution.queue import QUEUES
    from driftpilot.runtime import build_runtime

    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    if not chosen or set(chosen) - set(QUEUES):
        raise typer.BadParameter(f"queues are {', '.join(QUEUES)}", param_hint="'--queues'")
    # The queue's jobs fire the scheduler's schedules (glob sources read under the API's
    # batch roots); runs execute in the queue's jobs, not in an in-process executor.
    runtime = build_runtime(executor=False, alerts=False, queue=True)
    with _exit_tempfail_on_lost_database(), runtime.start():
        assert runtime.queue is not None
        if not logging.getLogger().isEnabledFor(logging.INFO):
            logging.getLogger("procrastinate").setLevel(logging.INFO)  # job starts and ends
        runtime.queue.run_worker(concurrency=concurrency, queues=chosen, name=name)


@contextmanager
def _exit_tempfail_on_lost_database() -> Iterator[None]:
    """A worker that lost its database exits ``EX_TEMPFAIL`` (75) with one line on stderr:
    a supervisor restarting on failure (systemd's Restart=on-failure) starts it again. A stop
    asked by SIGTERM/SIGINT returns normally (0)."""
    import psycopg
    import sqlalchemy.exc
    from procrastinate.exceptions import ConnectorException

    from driftpilot.execution.queue import QueueLost

    try:
        yield
    except QueueLost as exc:
        _error(str(exc))
        raise typer.Exit(EX_TEMPFAIL) from None
    except (ConnectorException, psycopg.OperationalError, sqlalchemy.exc.OperationalError) as exc:
        _error(f"the worker lost its database: {exc.__cause__ or exc}")
        raise typer.Exit(EX_TEMPFAIL) from None


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
