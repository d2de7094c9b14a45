"""Alert bodies: the generic JSON alert and the Slack message of a plane event.

- ``json``: ``{"event", "model", "run_id", "at", "detail", "text", "source": "driftpilot",
  "delivery_id"}``.
- ``slack``: a Slack incoming-webhook message, ``{"text": ..., "blocks": [...]}``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from driftpilot.runs.plane import PlaneEvent

_TITLES = {
    "approval_waiting": "waits for approval",
    "promotion": "promoted a new champion",
    "rollback": "was rolled back",
    "quarantine_streak": "quarantined several batches in a row",
    "run_failed": "run failed",
    "episode_escalated": "escalated a drift episode: retrains held",
}


def summary(event: PlaneEvent) -> str:
    """One line saying what happened."""
    detail = event.detail
    run = f" (run {event.run_id[:12]})" if event.run_id else ""
    text = f"DriftPilot: {event.model} {_TITLES.get(event.kind, event.kind)}{run}"
    if event.kind == "approval_waiting":
        request = detail.get("request") or {}
        described = request.get("description") if isinstance(request, dict) else None
        if described:
            text += f": {str(described)[:300]}"
    elif event.kind == "promotion" and detail.get("version") is not None:
        text += f": champion is now v{detail['version']}"
    elif event.kind == "rollback" and detail.get("to") is not None:
        text += f": v{detail.get('from')} -> v{detail['to']} by {detail.get('by')}"
    elif event.kind == "quarantine_streak":
        text += f": {detail.get('streak')} quarantined batches"
    elif event.kind == "run_failed" and detail.get("error"):
        text += f": {str(detail['error'])[:200]}"
    elif event.kind == "episode_escalated" and detail.get("diagnosis"):
        text += f": {str(detail['diagnosis'])[:600]}"
    return text


def json_body(event: PlaneEvent) -> dict[str, Any]:
    """The generic JSON alert."""
    return {
        "source": "driftpilot",
        "event": event.kind,
        "model": event.model,
        "run_id": event.run_id,
        "at": event.at,
        "text": summary(event),
        "detail": json.loads(json.dumps(event.detail, default=str)),
    }


def slack_body(event: PlaneEvent) -> dict[str, Any]:
    """A Slack incoming-webhook message: a fallback ``text`` and Block Kit ``blocks``."""
    text = summary(event)
    fields = [
        {"type": "mrkdwn", "text": f"*Model*\n{event.model}"},
        {"type": "mrkdwn", "text": f"*Event*\n{event.kind}"},
    ]
    if event.run_id:
        fields.append({"type": "mrkdwn", "text": f"*Run*\n`{event.run_id}`"})
    fields.append({"type": "mrkdwn", "text": f"*At*\n{event.at}"})
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "section", "fields": fields},
        ],
    }


def body_of(event: PlaneEvent, fmt: str, delivery_id: str = "") -> dict[str, Any]:
    """The body of one delivery in format ``fmt``. A ``json`` body carries ``delivery_id``
    (signed with the body, so a receiver can drop a replayed or retried delivery by it);
    Slack's shape has no room for it."""
    if fmt == "slack":
        return slack_body(event)
    body = json_body(event)
    if delivery_id:
        body["delivery_id"] = delivery_id
    return body
