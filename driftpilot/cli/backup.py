"""Backup and restore of a home: ``backup DEST``, ``restore SRC``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from driftpilot.cli.common import console


@contextmanager
def _progress(title: str) -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar over a service's steps (step, done, total)."""
    bar = Progress(
        TextColumn(f"{title} [bold]{{task.description}}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
    )
    task = bar.add_task("", total=None)
    with bar:
        yield lambda step, done, total: bar.update(
            task, description=step, completed=done, total=total
        )


def backup(
    dest: Annotated[Path, typer.Argument(help="A new (or empty) folder for the backup.")],
    wait: Annotated[
        bool, typer.Option(help="Wait for runs in flight to finish instead of refusing.")
    ] = False,
    reports: Annotated[
        bool, typer.Option(help="Include the rendered Evidently reports (re-renderable).")
    ] = True,
) -> None:
    """Snapshot the home: audit, MLflow, checkpoints, checkpoint log, public key, files."""
    from driftpilot.core.settings import get_settings
    from driftpilot.runs.backup import backup as take

    settings = get_settings()
    with _progress("backup") as progress:
        manifest = take(settings, dest, wait=wait, reports=reports, progress=progress)
    size = sum(f["size"] for f in manifest["files"])
    console.print(
        f"backed up {settings.home} into {dest}: {len(manifest['files'])} files, "
        f"{size / 1e6:.1f} MB, audit revision {manifest['alembic_revision']}",
        soft_wrap=True,
    )
    for role, record in manifest["stores"].items():
        if record["kind"] == "external":  # its URL without user and password (backup.redact)
            console.print(f"{role}: {record['url']} {record['note']}", soft_wrap=True)
    console.print(
        f"signed by audit key {manifest['key_fingerprint']}: note it apart from the backup "
        "(restore --expect-key)",
        soft_wrap=True,
    )
    console.print(
        "the audit key's private half is NOT in the backup: keep a copy of "
        f"{settings.audit_key_path} apart (restore --audit-key)",
        soft_wrap=True,
    )


def restore(
    src: Annotated[Path, typer.Argument(help="A folder made by `driftpilot backup`.")],
    home: Annotated[
        Path | None, typer.Option(help="The home to restore into (new or empty).")
    ] = None,
    audit_key: Annotated[
        Path | None,
        typer.Option(
            help="The audit signing key (private, PEM) kept apart from the backup: it must be "
            "the backup's, and signs on. Without it a new key signs the restored audit."
        ),
    ] = None,
    expect_key: Annotated[
        str | None,
        typer.Option(
            help="The fingerprint `driftpilot backup` printed (SHA256:...): the backup must "
            "be signed by that key."
        ),
    ] = None,
    trust_backup: Annotated[
        bool,
        typer.Option(
            help="Accept the backup's own key (or no signature) unchecked; the restore's "
            "audit row says so. Only for a backup nobody else could write."
        ),
    ] = False,
) -> None:
    """Restore a backup into an empty home (and empty databases). One of --audit-key,
    --expect-key or --trust-backup is required."""
    from driftpilot.core.settings import Settings
    from driftpilot.runs.restore import restore as put

    # Not get_settings(): it creates the home's folders, and the home must be empty.
    settings = Settings(home=home) if home is not None else Settings()
    with _progress("restore") as progress:
        done = put(
            src,
            settings,
            audit_key=audit_key,
            expect_key=expect_key,
            trust_backup=trust_backup,
            progress=progress,
        )
    console.print(
        f"restored {src} into {done['home']}: audit {done['checked']}; {done['trust']}",
        soft_wrap=True,
    )
    if done["policy"] and settings.policy_path is None:
        console.print(
            f"the risk policy is in {done['policy']}: set DRIFTPILOT_POLICY_PATH to it",
            soft_wrap=True,
        )
    if done["key"] == "new":
        console.print(
            "a new audit key signs from now on; the backup's checkpoints verify with "
            f"{settings.home / 'audit-key.previous.pub'}",
            soft_wrap=True,
        )
    console.print("check it: driftpilot audit --verify", soft_wrap=True)
