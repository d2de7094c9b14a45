"""Plane events: what a person may want to be told about (a run waiting for approval, a
promotion, a rollback, a streak of quarantined batches, a failed run). Alerts and webhooks
subscribe; a listener never holds a run up."""

from __future__ import annotations

import logging
from typing import Any

from driftpilot.core.episodes import episode_of, escalated_now
from driftpilot.runs.views import EventKind, Listener, PlaneEvent, RunView
from driftpilot.store import AuditStore
from driftpilot.store.models import Run

log = logging.getLogger(__name__)
QUARANTINE_STREAK = 2  # consecutive quarantined batches of one model that make an alert


class Events:
    """The listeners of one ControlPlane and what its runs are worth telling them."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self.listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every PlaneEvent this process produces (after the fact: a run
        is never held up by a listener, and a listener that raises is logged and skipped)."""
        self.listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no-op if it was not subscribed)."""
        if listener in self.listeners:
            self.listeners.remove(listener)

    def emit(self, kind: EventKind, model: str, run_id: str | None, detail: dict[str, Any]) -> None:
        event = PlaneEvent(kind=kind, model=model, run_id=run_id, detail=detail)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, kind)

    def announce(self, view: RunView) -> None:
        """Emit what a run that just stopped (finished, paused or failed) is worth telling."""
        if view.status == "waiting_approval":
            request = view.approval_request or {}
            self.emit("approval_waiting", view.model, view.run_id, {"request": request})
        elif view.status == "failed":
            error = view.summary.get("error")
            self.emit(
                "run_failed", view.model, view.run_id, {"error": view.outcome, "detail": error}
            )
        elif view.outcome == "promoted":
            promotion = view.summary.get("promotion") or {}
            self.emit("promotion", view.model, view.run_id, dict(promotion))
        elif view.outcome == "quarantined":
            recent = self.store.list_rows(
                Run,
                Run.model == view.model,
                Run.status == "completed",
                order=Run.updated_at.desc(),
                limit=QUARANTINE_STREAK,
            )
            if len(recent) == QUARANTINE_STREAK and all(r.outcome == "quarantined" for r in recent):
                self.emit("quarantine_streak", view.model, view.run_id, {"streak": len(recent)})
        if view.status == "completed" and escalated_now(view.summary):
            # once per escalation: the run that made it, not each held batch after it
            episode = episode_of(view.summary)
            detail = episode.model_dump(mode="json") if episode is not None else {}
            self.emit("episode_escalated", view.model, view.run_id, detail)
