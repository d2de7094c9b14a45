"""What every command shares: the one-line error guard, the console and tables, the
``--json`` option, the plane, alert delivery, built-in batches by name, a run's line."""

from __future__ import annotations

import functools
import json
import logging
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# Typer 0.29 vendors click: the Context its groups take and the errors it raises live here.
from typer._click import ClickException, Context
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from driftpilot.core.errors import DriftPilotError
from driftpilot.core.vocabulary import outcome_label, status_label

if TYPE_CHECKING:
    from driftpilot.runs.reads import Reads
    from driftpilot.runs.trust import Trust
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


UNBOUNDED = 100_000  # columns a table may take on a pipe: more than any row needs


class _Unbounded:
    """A table rendered at its natural width, however wide the console says it is."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield from console.render(self.table, options.update_width(UNBOUNDED))


def _one_line(cell: Any) -> str | None:
    """A cell's text when it is one line of plain text rich draws as it is (no markup, no
    style of its own, no tab or control character); None otherwise."""
    if isinstance(cell, str):
        text = None if "[" in cell or ":" in cell else cell  # a str is markup (and emoji codes)
    elif isinstance(cell, Text) and cell.justify is None and not cell.spans and not cell.style:
        text = cell.plain
    else:
        return None
    return text if text is not None and text.isprintable() else None


def _drawn(table: Table, console: Console) -> list[str] | None:
    """The lines rich draws for ``table`` at its natural width without colour, drawn here in
    one pass; None (rich draws it) unless the table has rich's default layout and every cell
    is one line of plain text (``_add_row``'s). rich measures and wraps each cell: about a
    millisecond a row, a second for the audit trail of a hundred runs."""
    box = table.box
    default_layout = (
        box is not None
        and table.show_header
        and table.show_edge
        and table.pad_edge
        and table.padding == (0, 1, 0, 1)
        and not (table.title or table.caption or table.show_footer or table.show_lines)
        and not (table.collapse_padding or table.leading or table.row_styles or table.expand)
        and table.width is None
        and table.min_width is None
    )
    if box is None or not default_layout:
        return None
    columns: list[list[str]] = []
    for column in table.columns:
        if column.width or column.min_width or column.max_width or column.ratio:
            return None
        if column.justify not in ("left", "right", "center"):
            return None
        cells = [_one_line(cell) for cell in (column.header, *column.cells)]
        if any(cell is None for cell in cells):
            return None
        columns.append([cell or "" for cell in cells])
    if not columns:
        return None
    widths = [max(cell_len(cell) for cell in cells) for cells in columns]
    justify = [column.justify for column in table.columns]
    lines = [
        [_fit(cells[i], w, j) for cells, w, j in zip(columns, widths, justify, strict=True)]
        for i in range(len(columns[0]))
    ]
    safe = console.safe_box if table.safe_box is None else table.safe_box
    box = box.substitute(console.options, safe=safe)  # ASCII where the output is not UTF-8
    padded = [w + 2 for w in widths]
    drawn = [box.get_top(padded).rstrip("\n")]
    drawn.append(box.head_left + box.head_vertical.join(lines[0]) + box.head_right)
    drawn.append(box.get_row(padded, "head", edge=True).rstrip("\n"))
    drawn += [box.mid_left + box.mid_vertical.join(row) + box.mid_right for row in lines[1:]]
    drawn.append(box.get_bottom(padded).rstrip("\n"))
    return drawn


def _fit(text: str, width: int, justify: str) -> str:
    """``text`` in a cell ``width`` wide with its padding of one space on each side."""
    gap = width - cell_len(text)
    left = {"left": 0, "right": gap, "center": gap // 2}[justify]
    return " " * (left + 1) + text + " " * (gap - left + 1)


class _CliConsole(Console):
    """rich as usual on a terminal. On a pipe or a file (a log, ``| grep``) rich would wrap
    everything at 80 columns, a word per line in a narrow column: there lines are printed
    unwrapped and tables at their natural width, so one row stays one line (a table of
    plain text is drawn by ``_drawn``, as rich would, in a fraction of the time)."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if self.is_terminal:
            super().print(*objects, **kwargs)
            return
        kwargs.setdefault("soft_wrap", True)  # no wrapping, no cropping at the width
        super().print(*(self._unbounded(o) for o in objects), **kwargs)

    def _unbounded(self, renderable: Any) -> Any:
        if not isinstance(renderable, Table):
            return renderable
        drawn = _drawn(renderable, self) if self.color_system is None else None
        return _Unbounded(renderable) if drawn is None else Text("\n".join(drawn))


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


def _plane() -> Any:
    from driftpilot.runs.plane import ControlPlane

    return ControlPlane()


def _reads(*, with_state: bool) -> Reads:
    """The plane's read models (``driftpilot.runs.reads.Reads``) on the audit store alone:
    the plane's run views (their reports' status included).

    The read-only commands use them instead of the plane, whose imports (agents, tools,
    LangGraph, NumPy, Polars) take seconds before anything is printed. ``with_state``: a run
    waiting for approval carries the state it checkpointed, as the plane gives it (``--json``);
    the control graph is built for that only when such a run is shown. Without it the summary
    of a waiting run is empty: the tables do not show it, and reading a checkpoint imports
    LangGraph (about a second)."""
    from driftpilot.core.settings import get_settings
    from driftpilot.runs.reads import Reads
    from driftpilot.store import AuditStore

    settings = get_settings()
    graph = functools.cache(lambda: _plane().graph) if with_state else None
    return Reads(AuditStore(settings.db_url), graph, settings)  # with report statuses


def _trust() -> Trust:
    """Verification and signing of the audit (``driftpilot.runs.trust.Trust``), without the
    plane (see ``_reads``)."""
    from driftpilot.core.settings import get_settings
    from driftpilot.runs.trust import Trust
    from driftpilot.store import AuditStore

    settings = get_settings()
    return Trust(AuditStore(settings.db_url), settings)


ALERT_GRACE_S = 10.0  # how long a command waits, at most, for its alerts to be delivered


@contextmanager
def _alerting(plane: Any) -> Iterator[None]:
    """Deliver the webhooks of what this command does (an approval waiting, a promotion, a
    rollback, a failed run) before it exits; a dead endpoint costs at most ALERT_GRACE_S."""
    from driftpilot.runtime import build_runtime

    runtime = build_runtime(plane=plane, executor=False, scheduler=False).start()
    assert runtime.alerts is not None
    try:
        yield
    finally:
        if not runtime.alerts.wait_idle(ALERT_GRACE_S):
            _error(f"alerts not delivered within {ALERT_GRACE_S:.0f} s were dropped (audited)")
        runtime.close()  # stops the alerts; the plane stays the command's


def _spec(dataset: str) -> DatasetSpec:
    """The built-in dataset's spec; an unknown name is bad usage."""
    from tools.datasets import BUILTIN_SPECS

    if dataset not in BUILTIN_SPECS:
        raise typer.BadParameter(
            f"unknown dataset {dataset!r}; built-in datasets: {', '.join(sorted(BUILTIN_SPECS))}"
        )
    return BUILTIN_SPECS[dataset]


def _dataset_batch(from_dataset: str | None) -> tuple[DatasetSpec, str]:
    """The dataset and batch id named by '--from-dataset flights:2013-03' (nothing is read)."""
    if from_dataset is None or ":" not in from_dataset:
        raise UsageError("give --batch PATH or --from-dataset NAME:BATCH_ID (e.g. flights:2013-03)")
    name, batch_id = from_dataset.split(":", 1)
    return _spec(name), batch_id


def _batch_from(batch: Path | None, from_dataset: str | None) -> tuple[Any, str]:
    """A batch and its id: a file's path (checked, not read: the run streams it in, so a batch
    bigger than memory goes through), or a built-in dataset's frame ('flights:2013-03')."""
    from driftpilot.core.settings import get_settings
    from driftpilot.sources import resolver
    from tools.data import load_table

    if batch is not None:
        load_table(batch, lazy=True)  # a missing file or an unknown type fails here, clearly
        return batch, batch.stem
    spec, batch_id = _dataset_batch(from_dataset)
    name = spec.name
    batches = resolver.frames(name, get_settings())  # read once per process
    if batch_id not in batches:
        raise typer.BadParameter(f"{name} has no batch {batch_id!r}; batches: {', '.join(batches)}")
    return batches[batch_id], batch_id


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
    for line in _episode_lines(view.summary, view.run_id):
        console.print(escape(line))
    if view.status == "failed":
        _error(f"run {view.run_id[:12]} failed: {view.summary.get('error') or view.outcome}")
        raise typer.Exit(EXIT_ERROR)


def _episode_lines(summary: dict[str, Any], run_id: str | None = None) -> list[str]:
    """The run's drift episode in words: its state, the challengers lost against the limit,
    and, escalated, the diagnosis (what was tried and why it lost). Nothing for a run that
    recorded no episode."""
    from driftpilot.core.episodes import episode_of, label, lifted_by

    ep = episode_of(summary, run_id)
    if ep is None:
        return []
    lines = [f"episode {ep.id[:12] or '?'}: {label(ep)} ({ep.batches} batches)"]
    lines += [f"  evidence changed: {change}" for change in lifted_by(summary)]
    if ep.state == "escalated" and ep.diagnosis:
        lines.append(f"  escalated: {ep.diagnosis}")
    return lines


def _run_prefix(given: str, hint: str = "'RUN_ID'") -> str:
    """A run id or a prefix of one, as given; an empty one (a script's unset variable) is bad
    usage, not the prefix of every run."""
    if not given.strip():
        raise typer.BadParameter("give a run id or a unique prefix of one", param_hint=hint)
    return given


def _role(role: str) -> str:
    from driftpilot.core.identity import ROLES

    if role not in ROLES:
        raise typer.BadParameter(
            f"unknown role {role!r}; roles: {', '.join(ROLES)}", param_hint="'--role'"
        )
    return role
