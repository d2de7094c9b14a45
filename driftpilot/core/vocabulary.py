"""One vocabulary for what a run is and what it came to, shared by the API, CLI, chat and SSE.

Machine names (``completed``, ``no_retrain:none``) are what JSON carries and what code compares;
people read the labels below (the CLI and the chat). The LangGraph-compatible routes keep
LangGraph Platform's run statuses; ``LANGGRAPH_STATUS`` is the documented mapping:

====================  ==================  =============================================
DriftPilot status     LangGraph status    meaning
====================  ==================  =============================================
pending               pending             queued, not started
running               running             an agent is working on it
waiting_approval      interrupted         waits for a person (``pending`` once decided)
completed             success             ended; its ``outcome`` says how
failed                error               stopped by an error, a cancel or recovery
====================  ==================  =============================================
"""

from __future__ import annotations

STATUSES: dict[str, str] = {
    "pending": "queued",
    "running": "running",
    "waiting_approval": "waiting for approval",
    "completed": "completed",
    "failed": "failed",
}

LANGGRAPH_STATUS: dict[str, str] = {
    "pending": "pending",
    "running": "running",
    "waiting_approval": "interrupted",
    "completed": "success",
    "failed": "error",
}

OUTCOMES: dict[str, str] = {
    "quarantined": "batch quarantined",
    "no_retrain:none": "no drift that matters",
    "no_retrain:monitor": "drift watched, no retrain",
    "challenger_rejected": "retrained, challenger not better",
    "challenger_failed": "retrain failed: the trainer gave no usable challenger",
    "promoted": "new champion promoted",
    "superseded": "approved, but the champion had moved (superseded)",
    "approval_rejected": "promotion rejected by a person",
    "cancelled": "cancelled",
    "unrecoverable": "lost in a crash (recovered as failed)",
    "rollback": "rolled back",
}

TRIGGERS: dict[str, str] = {
    "cli": "command line",
    "api": "REST API",
    "chat": "chat",
    "schedule": "schedule",
    "demo": "demo",
    "window": "inference window",
}


def status_label(status: str | None) -> str:
    """The words for a run status (an unknown one is shown as it is)."""
    if not status:
        return ""
    return STATUSES.get(status, status.replace("_", " "))


def outcome_label(outcome: str | None) -> str:
    """The words for a run outcome; an error's class name (a failed run) is kept as it is."""
    if not outcome:
        return ""
    return OUTCOMES.get(outcome, outcome)


def trigger_label(trigger: str | None) -> str:
    if not trigger:
        return ""
    return TRIGGERS.get(trigger, trigger)
