"""On a pipe the CLI draws a table of plain text itself, in one pass (rich takes about a
millisecond a row): line for line what rich draws at the table's natural width."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pytest
from rich.table import Table

from driftpilot.cli.common import _add_row, _CliConsole, _drawn, _Unbounded


def _piped() -> tuple[_CliConsole, io.StringIO]:
    out = io.StringIO()
    return _CliConsole(file=out, width=80), out


def _by_rich(table: Table) -> str:
    console, out = _piped()
    console.print(_Unbounded(table), soft_wrap=True)
    return out.getvalue()


def _by_cli(table: Table) -> str:
    console, out = _piped()
    assert not console.is_terminal and console.color_system is None
    console.print(table)
    return out.getvalue()


def _runs(rows: Sequence[tuple[str, ...]]) -> Table:
    table = Table("run", "model", "status", "outcome", "")
    for row in rows:
        _add_row(table, *row)
    return table


ROWS = [
    ("7478ba8d802c", "flights", "completed", "no drift that matters", ""),
    ("fdef102320cd", "crédit [eu]", "waiting for approval", "", "日本語 ✓"),
    ("3fe7", "m:1", "failed", "x" * 300, "tail"),
]


@pytest.mark.parametrize("rows", [ROWS, ROWS[:1], []], ids=["three", "one", "none"])
def test_plain_tables_are_drawn_as_rich_draws_them(rows: list[tuple[str, ...]]) -> None:
    table = _runs(rows)
    console, _ = _piped()
    assert _drawn(table, console) is not None  # drawn by the CLI, not by rich
    assert _by_cli(table) == _by_rich(table)
    assert len(_by_cli(table).splitlines()) == len(rows) + 4  # a row a line


def test_justified_columns_are_drawn_as_rich_draws_them() -> None:
    table = Table("name")
    table.add_column("count", justify="right")
    table.add_column("middle", justify="center")
    for name, count, mid in [("a", "1", "x"), ("bbbbbb", "12345", "yyyyy"), ("c", "22", "zz")]:
        _add_row(table, name, count, mid)
    console, _ = _piped()
    assert _drawn(table, console) is not None
    assert _by_cli(table) == _by_rich(table)


def test_what_is_not_plain_text_is_left_to_rich() -> None:
    titled = _runs(ROWS)
    titled.title = "runs"
    marked_up = Table("run", "outcome")
    marked_up.add_row("abc", "[bold]promoted[/]")  # a str cell is markup
    two_lines = _runs([("a", "m", "s", "line one\nline two", "")])
    console, _ = _piped()
    for table in (titled, marked_up, two_lines):
        assert _drawn(table, console) is None
        assert _by_cli(table) == _by_rich(table)
