"""API keys of the REST API: ``keys create``, ``keys list``, ``keys revoke``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from driftpilot.cli.common import AsJson, _add_row, _plane, _print_json, _role, console

keys_app = typer.Typer(help="API keys of the REST API (stored hashed).", no_args_is_help=True)


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
