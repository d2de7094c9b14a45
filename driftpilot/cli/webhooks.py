"""A model's alert webhooks: ``webhooks add``, ``list``, ``remove``, ``rotate-secret``.

They open the audit store alone. ``add`` refuses a URL whose host resolves to an internal
address unless it is in ``DRIFTPILOT_ALERTS_ALLOW_HOSTS``; ``add`` and ``rotate-secret`` print
the signing secret once (stdout, the rest on stderr, as ``keys create`` does)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from driftpilot.cli.common import AsJson, _add_row, _print_json, console

if TYPE_CHECKING:
    from driftpilot.alerts.webhooks import WebhookCreated, Webhooks

webhooks_app = typer.Typer(
    help="Alert webhooks of a model (signed; internal hosts refused unless allowed).",
    no_args_is_help=True,
)
Model = Annotated[str, typer.Argument(help="Managed model name.")]
By = Annotated[str, typer.Option("--by", help="Who does it (audited).")]
WebhookId = Annotated[str, typer.Argument(help="The webhook's id (webhooks list).")]


@contextmanager
def _webhooks() -> Iterator[Webhooks]:
    from driftpilot.alerts.webhooks import Webhooks
    from driftpilot.core.settings import get_settings
    from driftpilot.store import AuditStore

    settings = get_settings()
    store = AuditStore(settings.db_url)
    try:
        yield Webhooks(store, settings.alerts)
    finally:
        store.engine.dispose()


def _show_secret(made: WebhookCreated, what: str, as_json: bool) -> None:
    if as_json:
        _print_json([made.model_dump(mode="json")])
        return
    typer.echo(
        f"webhook {made.webhook_id} of {made.model} ({made.url}, {made.format}) {what}; "
        "its signing secret, shown once:",
        err=True,
    )
    typer.echo(made.secret)


@webhooks_app.command("add")
def webhooks_add(
    model: Model,
    url: Annotated[str, typer.Argument(help="Where to POST (http or https).")],
    by: By,
    fmt: Annotated[str, typer.Option("--format", help="json or slack.")] = "json",
    event: Annotated[
        list[str] | None, typer.Option("--event", help="An event kind (repeat; default: all).")
    ] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    as_json: AsJson = False,
) -> None:
    """Post a model's alerts to URL, signed with a secret printed once."""
    from pydantic import ValidationError

    from driftpilot.alerts.webhooks import EVENT_KINDS, WebhookSpec

    fields: dict[str, object] = {"url": url, "format": fmt, "description": description}
    if event:
        fields["events"] = event
    try:
        spec = WebhookSpec.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = str(first["loc"][0]) if first["loc"] else "url"
        hint = f" (events: {', '.join(EVENT_KINDS)})" if where == "events" else ""
        option = {"url": "URL", "format": "'--format'", "events": "'--event'"}.get(where, where)
        raise typer.BadParameter(f"{first['msg']}{hint}", param_hint=option) from None
    with _webhooks() as hooks:
        made = hooks.add(model, spec, by)
    _show_secret(made, "added", as_json)


@webhooks_app.command("list")
def webhooks_list(model: Model, as_json: AsJson = False) -> None:
    """A model's webhooks, URLs redacted (never their secrets)."""
    with _webhooks() as hooks:
        views = hooks.of_model(model)
    if as_json:
        _print_json([v.model_dump(mode="json") for v in views])
        return
    if not views:
        console.print(f"{model} has no webhooks")
        return
    table = Table("webhook", "url", "format", "events", "by", "created")
    for v in views:
        _add_row(
            table, v.webhook_id, v.url, v.format, ", ".join(v.events), v.created_by, v.created_at
        )
    console.print(table)


@webhooks_app.command("remove")
def webhooks_remove(model: Model, webhook_id: WebhookId, by: By) -> None:
    """Stop posting to one webhook."""
    with _webhooks() as hooks:
        hooks.remove(model, webhook_id, by)
    console.print(f"webhook {webhook_id} of {model} removed")


@webhooks_app.command("rotate-secret")
def webhooks_rotate_secret(
    model: Model, webhook_id: WebhookId, by: By, as_json: AsJson = False
) -> None:
    """Give a webhook a new signing secret, printed once (the old one stops at once)."""
    with _webhooks() as hooks:
        made = hooks.rotate_secret(model, webhook_id, by)
    _show_secret(made, "has a new secret", as_json)
