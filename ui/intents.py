"""What a chat message asks for, without an LLM: slash commands and a few plain phrases.

``parse`` never raises: a message it does not understand is ``Intent("unknown")`` (the chat
answers with what it can do), and a slash command with missing arguments is
``Intent("usage", text=<the command's usage line>)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal[
    "run",
    "runs",
    "pending",
    "approve",
    "reject",
    "audit",
    "rollback",
    "schedule",
    "schedules",
    "models",
    "history",
    "why",
    "help",
    "usage",
    "unknown",
]

USAGE = {
    "run": "/run MODEL DATASET:BATCH [ROWS]   e.g. /run flights flights:2013-07 2000",
    "runs": "/runs [MODEL]",
    "pending": "/pending",
    "approve": "/approve RUN [COMMENT]",
    "reject": "/reject RUN [COMMENT]",
    "audit": "/audit RUN",
    "rollback": "/rollback MODEL [REASON]",
    "schedule": "/schedule MODEL CRON SOURCE   e.g. /schedule flights 0 * * * * flights:2013-02",
    "schedules": "/schedules [MODEL]",
    "models": "/models",
    "history": "/history MODEL",
    "help": "/help",
}

MONTHS = {
    name: f"{i:02d}"
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
EVERY = {
    "minute": "* * * * *",
    "hour": "0 * * * *",
    "day": "0 6 * * *",
    "week": "0 6 * * 1",
    "month": "0 6 1 * *",
}


@dataclass(frozen=True)
class Intent:
    kind: Kind
    model: str | None = None
    batch: str | None = None  # DATASET:BATCH, or a bare batch id / month for "why"
    run: str | None = None
    rows: int | None = None
    cron: str | None = None
    source: str | None = None
    text: str = ""  # a comment, a reason, or a usage line


NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
RUN_ID = r"[0-9a-f]{4,40}"


def parse(message: str) -> Intent:
    """The intent of one chat message (see the module's docstring)."""
    text = " ".join(message.strip().split())
    if text.startswith("/"):
        return _slash(text)
    return _phrase(text)


def _usage(kind: str) -> Intent:
    return Intent("usage", text=USAGE[kind])


def _slash(text: str) -> Intent:
    command, *args = text[1:].split(" ")
    command = command.lower()
    rest = " ".join(args[1:])
    if command == "help":
        return Intent("help")
    if command in ("pending", "approvals"):
        return Intent("pending")
    if command == "models":
        return Intent("models")
    if command == "runs":
        return Intent("runs", model=args[0] if args else None)
    if command == "schedules":
        return Intent("schedules", model=args[0] if args else None)
    if command not in USAGE:
        return Intent("unknown", text=text)
    if not args:
        return _usage(command)
    if command == "run":
        if len(args) < 2 or ":" not in args[1]:
            return _usage("run")
        rows = args[2] if len(args) > 2 else None
        if rows is not None and not rows.isdigit():
            return _usage("run")
        return Intent("run", model=args[0], batch=args[1], rows=int(rows) if rows else None)
    if command in ("approve", "reject"):
        return Intent(command, run=args[0], text=rest)  # type: ignore[arg-type]
    if command == "audit":
        return Intent("audit", run=args[0])
    if command == "rollback":
        return Intent("rollback", model=args[0], text=rest)
    if command == "history":
        return Intent("history", model=args[0])
    # schedule MODEL <five cron fields> SOURCE
    if len(args) != 7:
        return _usage("schedule")
    return Intent("schedule", model=args[0], cron=" ".join(args[1:6]), source=args[6])


_PHRASES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(rf"\b(?P<verb>approve|reject)\s+(?:the\s+)?(?:run\s+)?(?P<target>{NAME})", re.I),
        "decide",
    ),
    (re.compile(r"\b(?:pending|waiting|approvals)\b", re.I), "pending"),
    (re.compile(rf"\broll\s*back\s+(?:the\s+)?(?P<model>{NAME})", re.I), "rollback"),
    (re.compile(rf"\baudit\s+(?:of\s+|for\s+)?(?:run\s+)?(?P<run>{RUN_ID})\b", re.I), "audit"),
    (
        re.compile(
            rf"\bschedule\s+(?P<model>{NAME})\s+every\s+(?P<every>minute|hour|day|week|month)\b",
            re.I,
        ),
        "schedule",
    ),
    (
        re.compile(r"\bwhy\b(?:.*?\bin\s+(?P<when>\d{4}-\d{2}|[A-Za-z]+))?", re.I),
        "why",
    ),
    (re.compile(r"\b(?:list|show|recent)\s+(?:the\s+|my\s+)?runs\b|^runs$", re.I), "runs"),
    (re.compile(r"\b(?:list|show)\s+(?:the\s+)?schedules\b|^schedules$", re.I), "schedules"),
    (re.compile(rf"\b(?:history|champions?)\s+(?:of\s+)?(?P<model>{NAME})", re.I), "history"),
    (
        re.compile(
            rf"\b(?:check|run)\s+(?P<model>{NAME})(?:\s+for\s+drift)?"
            r"(?:\s+(?:on|with|in)\s+(?P<batch>\S+))?",
            re.I,
        ),
        "run",
    ),
    (re.compile(r"\bmodels\b", re.I), "models"),
    (re.compile(r"^(?:help|\?|what can you do\??|hi|hello)$", re.I), "help"),
]


def _phrase(text: str) -> Intent:
    for pattern, kind in _PHRASES:
        found = pattern.search(text)
        if found is None:
            continue
        groups = found.groupdict()
        if kind == "run":
            model = groups["model"]
            if model.lower() in ("the", "for", "all", "a", "my"):
                continue
            batch = (groups.get("batch") or "").rstrip("?.!") or None
            return Intent("run", model=model, batch=batch)
        if kind == "decide":
            target = groups["target"].rstrip("?.!")
            verb = groups["verb"].lower()
            is_run = re.fullmatch(RUN_ID, target) is not None
            return Intent(
                verb,  # type: ignore[arg-type]
                run=target if is_run else None,
                model=None if is_run else target,
            )
        if kind == "schedule":
            every = groups["every"].lower()
            return Intent("schedule", model=groups["model"], cron=EVERY[every])
        if kind == "why":
            when = groups.get("when")
            month = MONTHS.get(when.lower()) if when else None
            return Intent("why", batch=month or when, text=text)
        return Intent(kind, model=groups.get("model"), run=groups.get("run"))  # type: ignore[arg-type]
    return Intent("unknown", text=text)
