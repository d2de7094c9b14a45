"""With an LLM configured, the chat model picks which façade operation a free-text message asks
for: the operations are offered as tools, and the model answers with one tool call (native, or
JSON text ``{"name": ..., "arguments": {...}}`` as small local models write it).

Routing is one step. The model sees the person's message, the names of the managed models and
the tools, nothing else: no batch data, no audit rows, no results. Its pick becomes an
``Intent`` that goes through the same permission checks as a typed command, and nothing it picks
is done by itself: a change becomes a proposal the signed-in person confirms, "approve" shows
the buttons. A question about an operation is ``how_to`` (answered, never done). A failure
(error, no tool call, an unknown tool, bad arguments) returns None and the chat falls back to
its builtin phrases.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from driftpilot.core.llm import as_tool_call, parse_json_object
from ui.intents import Intent

log = logging.getLogger(__name__)

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:*/ -]{0,99}$")

# name: (description, {argument: description}, required arguments)
TOOLS: dict[str, tuple[str, dict[str, str], tuple[str, ...]]] = {
    "start_run": (
        "Check a managed model for drift on a batch (starts a control run).",
        {"model": "managed model name", "batch": "batch id such as 2013-07 (optional)"},
        ("model",),
    ),
    "list_runs": ("List recent runs.", {"model": "only this model (optional)"}, ()),
    "pending_approvals": ("What waits for a person's approval.", {}, ()),
    "decide": (
        "Offer the approve or reject buttons for a waiting promotion.",
        {
            "decision": "approve or reject",
            "model": "managed model name (or give run)",
            "run": "run id prefix (or give model)",
        },
        ("decision",),
    ),
    "show_audit": ("The audit of one run.", {"run": "run id prefix"}, ("run",)),
    "explain": (
        "Why the agents acted on a batch.",
        {"batch": "batch id or month such as 2013-07 or 07 (optional)"},
        (),
    ),
    "champion_history": (
        "A model's champion metric across batches.",
        {"model": "managed model name"},
        ("model",),
    ),
    "rollback": (
        "Move a model's champion back to the previous version.",
        {"model": "managed model name", "reason": "why (optional)"},
        ("model",),
    ),
    "schedule": (
        "Schedule runs of a model with a five-field cron.",
        {"model": "managed model name", "cron": "five-field cron, e.g. 0 * * * *"},
        ("model", "cron"),
    ),
    "model_status": (
        "How a model is doing: its champion, last runs, drift and metric trends.",
        {"model": "managed model name"},
        ("model",),
    ),
    "how_to": (
        "Answer a QUESTION about an operation (how do I..., what would..., should I...): "
        "explains it and changes nothing. Use this, not the operation, for any question.",
        {
            "operation": "rollback, approve, reject, schedule, audit or run",
            "model": "managed model name (optional)",
        },
        ("operation",),
    ),
    "help": ("What the chat can do.", {}, ()),
}
OPERATIONS = ("rollback", "approve", "reject", "schedule", "audit", "run")


def tool_schemas() -> list[dict[str, Any]]:
    """The tools in OpenAI's function format (what ``bind_tools`` takes)."""
    return [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": description,
                "parameters": {
                    "type": "object",
                    "properties": {
                        arg: {"type": "string", "description": text} for arg, text in args.items()
                    },
                    "required": list(required),
                },
            },
        }
        for name, (description, args, required) in TOOLS.items()
    ]


def system_prompt(models: list[str]) -> str:
    lines = [
        "You route requests to DriftPilot, an MLOps control plane. Pick exactly one tool for "
        "the user's message and answer with the tool call only, as JSON "
        '{"name": "<tool>", "arguments": {...}} if you cannot call tools natively. A question '
        "about an operation is how_to; nothing you pick is done before the user confirms it.",
        f"Managed models: {', '.join(models) or 'none'}.",
        "Tools:",
    ]
    for name, (description, args, _) in TOOLS.items():
        lines.append(f"- {name}({', '.join(args)}): {description}")
    return "\n".join(lines)


def route(chat_model: Any, message: str, models: list[str]) -> Intent | None:
    """The intent the chat model picks for ``message`` (None: no usable pick)."""
    from langchain_core.messages import HumanMessage, SystemMessage

    prompt = [SystemMessage(system_prompt(models)), HumanMessage(message[:2000])]
    try:
        try:
            bound = chat_model.bind_tools(tool_schemas())
        except NotImplementedError:
            bound = chat_model
        reply = bound.invoke(prompt)
        calls = list(getattr(reply, "tool_calls", None) or [])
        if not calls and isinstance(reply.content, str) and reply.content.strip():
            call = as_tool_call(parse_json_object(reply.content))
            calls = [call] if call else []
    except Exception as exc:  # a dead server, a timeout, garbage: the builtin phrases answer
        log.warning("LLM routing failed: %s", exc)
        return None
    if not calls:
        return None
    return to_intent(calls[0].get("name"), calls[0].get("args") or {})


def to_intent(name: Any, args: dict[str, Any]) -> Intent | None:
    """A tool call as an Intent, or None when the tool or its arguments are not valid."""
    if name not in TOOLS:
        return None
    _, allowed, required = TOOLS[name]
    clean: dict[str, str] = {}
    for key, value in args.items():
        if key not in allowed or not isinstance(value, str | int):
            return None
        text = str(value).strip()
        if text and not _LABEL.match(text) and key != "reason":
            return None
        if text:
            clean[key] = text[:200]
    if any(key not in clean for key in required):
        return None
    model, run, batch = clean.get("model"), clean.get("run"), clean.get("batch")
    if name == "start_run":
        return Intent("run", model=model, batch=batch)
    if name == "list_runs":
        return Intent("runs", model=model)
    if name == "pending_approvals":
        return Intent("pending")
    if name == "decide":
        decision = clean["decision"].lower()
        if decision not in ("approve", "reject") or not (model or run):
            return None
        return Intent(decision, model=None if run else model, run=run)  # type: ignore[arg-type]
    if name == "show_audit":
        return Intent("audit", run=run)
    if name == "explain":
        return Intent("why", batch=batch)
    if name == "champion_history":
        return Intent("history", model=model)
    if name == "rollback":
        return Intent("rollback", model=model, text=clean.get("reason", ""))
    if name == "schedule":
        return Intent("schedule", model=model, cron=clean["cron"])
    if name == "model_status":
        return Intent("status", model=model)
    if name == "how_to":
        operation = clean["operation"].lower()
        return Intent("howto", model=model, text=operation) if operation in OPERATIONS else None
    return Intent("help")
