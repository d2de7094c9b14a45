"""The chat's list answers, each a markdown table: ``/models``, ``/runs [MODEL]``,
``/notes MODEL`` and ``/schedules [MODEL]``.

They only read (the service façade, the scheduler) and never change anything; every cell from
data goes through ``ui.markup``. Kept apart from ``ui.chat`` (permissions and dispatch), as
``ui.health`` keeps the health card, so a column added to a table touches only this module.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from driftpilot.core import metric_text
from driftpilot.core.episodes import episode_of, label
from driftpilot.core.errors import ConfigError
from driftpilot.core.vocabulary import outcome_label, status_label, trigger_label
from ui import markup
from ui.intents import USAGE
from ui.replies import Reply

if TYPE_CHECKING:
    from ui.chat import Chat


def models(chat: Chat) -> Reply:
    """Every managed model: its champion, family, metric with its baseline, feature count."""
    rows = [
        f"| {markup.cell(m.name)} | v{m.champion} | {markup.cell(m.family)} | "
        f"{markup.cell(_metric(m.metric))} | {metric_text.value(m.metric, m.baseline)} | "
        f"{len(m.features)} |"
        for m in chat.cp.list_models()
    ]
    if not rows:
        return Reply("No managed model yet (`driftpilot model add ...`).")
    head = "| model | champion | family | metric | baseline | features |\n" + "|---" * 6 + "|"
    return Reply(head + "\n" + "\n".join(rows))


def runs(chat: Chat, model: str | None) -> Reply:
    """The latest 15 runs (of ``model``, or of every model), newest first."""
    views = chat.cp.list_runs(model, 15)
    if not views:
        suffix = "" if model is None else f" ({markup.text(model)})"
        return Reply("No runs yet." + suffix)
    lines = [
        "| run | model | batch | status | outcome | trigger | requested by | started | episode |"
    ]
    lines.append("|---" * 9 + "|")
    for v in views:
        trigger = trigger_label(v.trigger)
        if v.schedule_id:
            trigger += f" {v.schedule_id[:8]}"
        lines.append(
            f"| {markup.code(v.run_id[:12])} | {markup.cell(v.model)} | "
            f"{markup.cell(v.batch_id)} | {markup.cell(status_label(v.status))} | "
            f"{markup.cell(outcome_label(v.outcome))} | {markup.cell(trigger)} | "
            f"{markup.cell(v.requested_by)} | {markup.cell(v.created_at[:19])} | "
            f"{markup.cell(label(episode_of(v.summary, v.run_id)))} |"
        )
    return Reply("\n".join(lines))


def notes(chat: Chat, model: str) -> Reply:
    """A model's notes, oldest first, each beside the run it falls in."""
    from driftpilot.runs.notes import model_notes, runs_for_notes

    views = model_notes(chat.cp.store, model)
    if not views:
        return Reply(f"No notes on {markup.text(model)} yet (`/note {model} TEXT`).")
    places = runs_for_notes(chat.cp.store, model, views)
    lines = ["| note | at (UTC) | by | run | text |", "|---" * 5 + "|"]
    for v in views:
        place = places.get(v.id)
        run = "-"
        if place is not None:
            how = "its batch" if place.how == "batch" else "next run"
            run = f"{markup.code(place.run_id[:12])} ({how})"
        lines.append(
            f"| {v.id} | {v.at:%Y-%m-%d %H:%M} | {markup.cell(v.by)} | {run} | "
            f"{markup.cell(v.text)} |"
        )
    return Reply("\n".join(lines))


def schedules(chat: Chat, model: str | None) -> Reply:
    """The schedules (of ``model``, or of every model).

    Raises:
        ConfigError: the chat was started without a scheduler.
    """
    if chat.scheduler is None:
        raise ConfigError("schedules are not available in this chat")
    views = chat.scheduler().list_schedules(model)
    if not views:
        return Reply("No schedules yet: `" + USAGE["schedule"] + "`.")
    lines = ["| id | model | cron | source | enabled | next | by |", "|---" * 7 + "|"]
    for v in views:
        lines.append(
            f"| {markup.code(v.cron_id[:8])} | {markup.cell(v.model)} | "
            f"{markup.code(v.schedule)} {markup.cell(v.timezone)} | "
            f"{markup.code(short_json(v.payload.get('source')))} | "
            f"{'yes' if v.enabled else 'no'} | {markup.cell((v.next_run_date or '')[:19])} | "
            f"{markup.cell(v.created_by)} |"
        )
    return Reply("\n".join(lines))


def short_json(value: Any) -> str:
    """``value`` as one line of JSON, cut at 300 characters (a cell or a code span; the chat's
    cards use it too)."""
    return json.dumps(value, default=str, separators=(", ", ": "))[:300]


def _metric(name: str) -> str:
    """ "RMSE (lower is better)": the model's metric by its label, with its direction."""
    return f"{metric_text.label(name)} ({metric_text.direction(name)})"
