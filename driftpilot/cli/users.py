"""The chat's password users: ``users add``, ``users list``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from driftpilot.cli.common import AsJson, _add_row, _plane, _print_json, _role, console

users_app = typer.Typer(help="Password users of the chat (stored hashed).", no_args_is_help=True)


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
