"""What a chat message asks for, without an LLM: slash commands and a few plain phrases.

``parse`` never raises: a message it does not understand is ``Intent("unknown")`` (the chat
answers with what it can do), and a slash command with missing arguments is
``Intent("usage", text=<the command's usage line>)``.

A question about an operation ("how do I roll back flights?", "what would a rollback do?",
"should I approve it?") is ``Intent("howto", text=<operation>)``: it is answered, never done.
A status question ("how is flights doing?") is ``Intent("status")``. The kinds in
``MUTATIONS`` change something; the chat turns them into a proposal the person confirms (the
parser's pick is never executed on its own). Verbs with a typo ("rollbak", "aprove") are read
as the verb they are closest to.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Kind = Literal[
    "run",
    "adopt",
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
    "note",
    "notes",
    "why",
    "status",
    "howto",
    "help",
    "usage",
    "unknown",
]

USAGE = {
    "run": "/run MODEL DATASET:BATCH [ROWS]   e.g. /run flights flights:2013-07 2000",
    "adopt": "/adopt NAME MODEL_URI DATASET:BATCH TARGET [TIME_COL]   e.g. "
    "/adopt delay models:/delay@prod flights_delay:2013-01 arr_delay time_hour",
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
    "note": "/note [MODEL] [at:TIME] TEXT   e.g. /note flights at:2013-07-01 new ETL job, "
    "delays now in seconds",
    "notes": "/notes MODEL",
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


# What changes something: never done without the person's confirmation (see ui.chat). A note
# changes no model, but it is a person's free text kept for the drift analyst: it is shown and
# confirmed like the rest.
MUTATIONS = frozenset({"run", "adopt", "rollback", "schedule", "approve", "reject", "note"})


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
    uri: str | None = None  # an MLflow model to adopt (models:/..., runs:/...)
    columns: tuple[str, ...] = ()  # adopt: the target, then the time column if given
    negated: bool = False  # "don't roll back flights": nothing is asked for
    at: str | None = None  # a note: when the noted thing happened (ISO 8601, as typed)

    @property
    def acts(self) -> bool:
        """Whether the message may ask for something to be done: not a question, a status
        question or a negation (then a chat model may read it instead of the rules)."""
        return self.kind not in ("howto", "status") and not self.negated


NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
RUN_ID = r"[0-9a-f]{4,40}"


def parse(message: str, models: Iterable[str] = ()) -> Intent:
    """The intent of one chat message (see the module's docstring); ``models`` are the
    managed models' names (they let a question name its model anywhere)."""
    text = " ".join(message.strip().split())
    if text.startswith("/"):
        return _slash(text, list(models))
    text = _fix_typos(text, set(models))
    names = list(models)
    for read in (_negated, _status, _question):
        found = read(text, names)
        if found is not None:
            return found
    return _phrase(text, names)


# -- questions, status, negations, typos ------------------------------------------------------

# The words of an operation (after typo repair), and the operation they name.
_OPERATIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\broll\s*(?:ing\s+)?back|\brollbacks?\b|\brevert\b", re.I), "rollback"),
    (re.compile(r"\bapprov(?:e|al|ing)\b|\bsign\s+off\b", re.I), "approve"),
    (re.compile(r"\breject(?:ion|ing)?\b|\bdecline\b", re.I), "reject"),
    (re.compile(r"\bschedul(?:e|es|ing)\b|\bcron\b", re.I), "schedule"),
    (re.compile(r"\baudit\b", re.I), "audit"),
    (re.compile(r"\b(?:check|run|start|retrain|drift\s+check)\b", re.I), "run"),
]
_QUESTION = re.compile(
    r"^(?:how\s+(?:do|does|can|could|would|should|to)\b|what\s+(?:would|will|happens|if|"
    r"does|do|is\s+the\s+(?:way|command|difference))\b|what's\s+the\s+(?:way|command)\b|"
    r"should\s+(?:i|we)\b|(?:can|could)\s+you\s+(?:explain|tell|describe)\b|explain\b|"
    r"tell\s+me\s+(?:how|about|what)\b|when\s+(?:should|do|would|can)\b|is\s+it\s+"
    r"(?:safe|ok|okay|wise|possible)\b|why\s+(?:would|should)\b|do\s+i\s+need\b|"
    r"who\s+(?:can|may)\b|what\s+role\b|is\s+there\s+a\s+way\b|"
    r"what(?:'s|s|\s+is)\s+the\s+(?:process|way|procedure|command|difference)\b|"
    r"(?:and\s+)?if\s+(?:i|we)\b|what\s+if\b|does\s+(?:it|a|an|the|approving|rolling)\b)",
    re.I,
)
_NEGATED = re.compile(
    r"^(?:please\s+)?(?:don'?t|do\s+not|never|no\s+need\s+to)\b|"
    r"\bignore\s+(?:all\s+|any\s+)?(?:previous|prior|your|the|my)\s+(?:\w+\s+)?instructions\b",
    re.I,
)
_STATUS = [
    re.compile(rf"\bhow(?:'s|s|\s+is|\s+are)\s+(?:the\s+)?(?P<model>{NAME})\b", re.I),
    re.compile(
        rf"\bany\s+(?:problems?|issues?|trouble|drift)\s+(?:with|in|on)\s+(?:the\s+)?(?P<model>{NAME})",
        re.I,
    ),
    re.compile(rf"\b(?:status|health|state)\s+(?:of\s+|for\s+)?(?:the\s+)?(?P<model>{NAME})", re.I),
    re.compile(
        rf"\bis\s+(?:the\s+)?(?P<model>{NAME})(?:\s+model)?\s+(?:healthy|ok|okay|fine|alright|"
        r"drifting|degrading)",
        re.I,
    ),
    re.compile(rf"\b(?P<model>{NAME})(?:'s)?\s+(?:status|health)\b", re.I),
    re.compile(
        rf"\b(?:which|what)\s+(?:version\s+)?is\s+(?:the\s+)?champion\s+(?:of|for)\s+"
        rf"(?P<model>{NAME})",
        re.I,
    ),
]
_MISSPELT = {"bak": "back", "rol": "roll", "chek": "check", "chk": "check"}
_NOT_MODELS = {"the", "it", "this", "that", "things", "everything", "my", "a", "your", "you"}
# Words a typo is read as (verbs and the nouns of requests; not "model(s)" or "run(s)", which
# are too close to other words to guess).
_VERBS = [
    "rollback",
    "approve",
    "reject",
    "schedule",
    "check",
    "audit",
    "pending",
    "history",
    "status",
    "promotion",
    "champion",
    "drift",
    "run",
]
_KNOWN = {"scheduled", "schedules", "models", "model", "runs", "checked", "approved", "rejected"}


def _fix_typos(text: str, models: set[str]) -> str:
    """Verbs misspelt by a letter or two read as the verb ("rollbak" -> "rollback"); model
    names and short words are left alone."""
    words = text.split(" ")
    fixed = []
    for word in words:
        bare = word.strip("?.!,").lower()
        if bare in _MISSPELT and bare not in models:
            fixed.append(word.lower().replace(bare, _MISSPELT[bare]))
            continue
        known = bare in models or bare in _VERBS or bare in _KNOWN
        if known or len(bare) < 3 or not bare.isalpha():
            fixed.append(word)
            continue
        close = _swapped(bare) if len(bare) < 5 else None
        if len(bare) >= 5:
            near = difflib.get_close_matches(bare, [v for v in _VERBS if len(v) >= 5], 1, 0.8)
            close = near[0] if near else None
        fixed.append(word.lower().replace(bare, close) if close else word)
    return " ".join(fixed)


def _swapped(word: str) -> str | None:
    """The short verb ``word`` is with two neighbouring letters swapped ("rnu" -> "run")."""
    for verb in _VERBS:
        if len(verb) != len(word) or verb == word:
            continue
        diff = [i for i, (a, b) in enumerate(zip(word, verb, strict=True)) if a != b]
        if len(diff) == 2 and diff[1] == diff[0] + 1 and sorted(word) == sorted(verb):
            return verb
    return None


def _operation(text: str) -> str | None:
    return next((op for pattern, op in _OPERATIONS if pattern.search(text)), None)


def _mentioned(text: str, models: list[str]) -> str | None:
    lowered = f" {text.lower()} "
    return next((m for m in models if re.search(rf"\b{re.escape(m.lower())}\b", lowered)), None)


def _negated(text: str, models: list[str]) -> Intent | None:
    """ "don't roll back flights": nothing to do; said as an unknown request, never acted on."""
    return Intent("unknown", text=text, negated=True) if _NEGATED.search(text) else None


def _status(text: str, models: list[str]) -> Intent | None:
    for pattern in _STATUS:
        found = pattern.search(text)
        if found is None:
            continue
        model = found.group("model").rstrip("?.!'")
        if model.lower() in _NOT_MODELS or (models and model not in models):
            model = _mentioned(text, models) or ""
        if model.lower() in ("doing", "going", "looking") or not model:
            continue
        return Intent("status", model=model)
    if models and re.search(r"\bhow(?:'s|s|\s+is)\b.*\b(?:doing|looking)\b", text, re.I):
        model = _mentioned(text, models)
        if model is not None:
            return Intent("status", model=model)
    return None


def _question(text: str, models: list[str]) -> Intent | None:
    """A question about an operation: answered with how it works, never executed."""
    if not _QUESTION.search(text):
        return None
    operation = _operation(text)
    if operation is None:
        return None
    model = _mentioned(text, models)
    if model is None:
        found = re.search(rf"\b(?:back|approve|reject|schedule|check|run)\s+(?P<m>{NAME})", text)
        candidate = found.group("m").rstrip("?.!") if found else None
        model = candidate if candidate and candidate.lower() not in _NOT_MODELS else None
    return Intent("howto", model=model, text=operation)


def _usage(kind: str) -> Intent:
    return Intent("usage", text=USAGE[kind])


def _slash(text: str, models: list[str]) -> Intent:
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
    if command == "notes":
        only = models[0] if len(models) == 1 else None
        return Intent("notes", model=args[0] if args else only) if args or only else _usage("notes")
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
    if command == "adopt":
        if len(args) not in (4, 5) or ":" not in args[2]:
            return _usage("adopt")
        return Intent("adopt", model=args[0], uri=args[1], batch=args[2], columns=tuple(args[3:]))
    if command == "rollback":
        return Intent("rollback", model=args[0], text=rest)
    if command == "history":
        return Intent("history", model=args[0])
    if command == "note":
        return _note(args, models)
    # schedule MODEL <five cron fields> SOURCE
    if len(args) != 7:
        return _usage("schedule")
    return Intent("schedule", model=args[0], cron=" ".join(args[1:6]), source=args[6])


_AT = re.compile(r"^at:\S+$", re.I)  # the note's time, checked when it is proposed


def _note(args: list[str], models: list[str]) -> Intent:
    """``/note [MODEL] [at:TIME] TEXT``: the model may be left out when only one is managed
    (then a first word that is no model is the note's). The text is the note's as typed
    (whitespace folded); the service sanitises and limits it when it is confirmed."""
    model: str | None = None
    if models and args[0] not in models and len(models) == 1:
        model = models[0]
    else:
        model, args = args[0], args[1:]
    at = None
    if args and _AT.match(args[0]):
        at, args = args[0][3:], args[1:]
    if not args:
        return _usage("note")
    return Intent("note", model=model, text=" ".join(args), at=at)


_PHRASES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(rf"\b(?P<verb>approve|reject)\s+(?:the\s+)?(?:run\s+)?(?P<target>{NAME})", re.I),
        "decide",
    ),
    (re.compile(r"\b(?:pending|waiting|approvals)\b", re.I), "pending"),
    (
        re.compile(rf"\b(?:roll\s*back|revert)\s+(?:the\s+)?(?P<model>{NAME})", re.I),
        "rollback",
    ),
    (re.compile(rf"\baudit\s+(?:of\s+|for\s+)?(?:run\s+)?(?P<run>{RUN_ID})\b", re.I), "audit"),
    (
        re.compile(
            rf"\bschedule\s+(?P<model>{NAME})\s+every\s+(?P<every>minute|hour|day|week|month)\b",
            re.I,
        ),
        "schedule",
    ),
    (re.compile(r"\bwhy\b", re.I), "why"),
    (
        re.compile(
            r"\b(?:list|show|recent)\s+(?:me\s+)?(?:the\s+|my\s+)?(?:recent\s+)?runs\b|^runs$", re.I
        ),
        "runs",
    ),
    (
        re.compile(
            r"\b(?:list|show)\s+(?:me\s+)?(?:the\s+)?schedules\b|^schedules$|"
            r"\bwhat(?:'s|\s+is)\s+scheduled\b",
            re.I,
        ),
        "schedules",
    ),
    (
        re.compile(
            rf"\b(?:history|champions?)\s+(?:of\s+)?(?P<model>{NAME})|"
            rf"\b(?P<owner>{NAME})\s+champion\s+history\b",
            re.I,
        ),
        "history",
    ),
    (
        re.compile(
            rf"\b(?:check|run|drift\s+check\s+(?:on|of|for))\s+(?P<model>{NAME})"
            r"(?:\s+for\s+drift)?(?:\s+(?:on|with|in|for|against)\s+(?P<batch>\S+))?",
            re.I,
        ),
        "run",
    ),
    (re.compile(r"\bmodels\b", re.I), "models"),
    (
        re.compile(r"^(?:help|\?|hi|hello|hey)[!.]?$|\bwhat\s+can\s+you\s+do\b", re.I),
        "help",
    ),
]
_BATCH_ID = re.compile(r"\b\d{4}-\d{2}(?:-\d{2})?\b")


def _when(text: str) -> str | None:
    """The batch a question names: an id like 2013-07, or a month by name ("in July")."""
    found = _BATCH_ID.search(text)
    if found is not None:
        return found.group(0)
    for word in re.findall(r"[A-Za-z]+", text):
        month = MONTHS.get(word.lower())
        if month is not None and (word.lower() != "may" or re.search(r"\bin\s+may\b", text, re.I)):
            return month
    return None


def _model_of(captured: str | None, text: str, models: list[str]) -> str | None:
    """The model a phrase names: what the pattern caught, unless that is no managed model and
    a managed model is named elsewhere in the message."""
    if captured is not None:
        captured = captured.rstrip("?.!,'")
    if models and captured not in models:
        return _mentioned(text, models) or captured
    return captured


def _phrase(text: str, models: list[str]) -> Intent:
    for pattern, kind in _PHRASES:
        found = pattern.search(text)
        if found is None:
            continue
        groups = found.groupdict()
        if kind == "run":
            model = _model_of(groups["model"], text, models)
            if model is None or model.lower() in ("the", "for", "all", "a", "my", "on"):
                continue
            given = (groups.get("batch") or "").rstrip("?.!") or None
            batch = given if given and ":" in given else (_when(text) or given)
            return Intent("run", model=model, batch=batch)
        if kind == "decide":
            target = groups["target"].rstrip("?.!")
            verb = groups["verb"].lower()
            is_run = re.fullmatch(RUN_ID, target) is not None
            return Intent(
                verb,  # type: ignore[arg-type]
                run=target if is_run else None,
                model=None if is_run else _model_of(target, text, models),
            )
        if kind == "schedule":
            every = groups["every"].lower()
            return Intent("schedule", model=groups["model"], cron=EVERY[every])
        if kind == "why":
            return Intent("why", batch=_when(text), text=text)
        if kind == "runs":
            return Intent("runs", model=_mentioned(text, models))
        if kind == "history":
            return Intent(
                "history", model=_model_of(groups["model"] or groups["owner"], text, models)
            )
        model = _model_of(groups.get("model"), text, models) if groups.get("model") else None
        return Intent(kind, model=model, run=groups.get("run"))  # type: ignore[arg-type]
    return Intent("unknown", text=text)
