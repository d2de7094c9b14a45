"""A scripted reference chat model that reads notes: ``--llm reference`` in the evals.

It proves the notes plumbing end to end (a note added to the store, gathered for the batch's
window, shown to the drift analyst in its delimited block, its cause and citation checked by
the policy), so the scenario suite can say what reading notes is worth before any real model
is asked. It is not a language model: it answers the **drift analyst** only, from keywords.

- It reads every ``<note ...>`` element in the messages it is shown. The first note whose
  words name a cause (``KEYWORDS``, checked in that order: a defect outranks a campaign, a
  campaign a prevalence change, that a change of the world) decides the cause, and its id is
  cited.
- The action follows the cause, within the policy's ``allowed`` actions (narrowed by the
  bounds' ``by_cause`` entry for it; a cause absent there cannot be named): a pipeline defect or
  an expected change is watched (``monitor``; never a retrain), a label shift recalibrated, a
  world change takes the policy's ``default``. An action the bounds do not allow falls back
  to the default.
- Without a note that names a cause it returns the policy's default and the cause the numbers
  read (found in the bounds or the evidence it is shown), so it decides exactly as ``builtin``.
- Every other agent gets a reply that is no decision (``DEFER``): the agent falls back to
  the policy's decision, as with ``builtin`` (the audit counts those as fallbacks, by design).

The chat model sees what any backend sees: the system prompt (the decision template, with the
allowed actions and causes as enums, and ``Policy bounds: {...}``) and the evidence message.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from driftpilot.core.llm import Backend

NAME = "reference"
DEFER = "DEFER: the reference model decides only the drift analyst's cause; the policy decides."
# Words (lower case, matched on word boundaries) that make a note name a cause; first match wins.
KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "pipeline_defect",
        (
            "etl",
            "deploy",
            "deployed",
            "release",
            "pipeline",
            "join",
            "encoder",
            "fahrenheit",
            "celsius",
            "units",
            "schema",
            "ingest",
            "bug",
            "written as 0",
            "backfill",
        ),
    ),
    (
        "expected_change",
        ("campaign", "same as last year", "seasonal", "every year", "holiday season"),
    ),
    ("label_shift", ("prevalence", "base rate", "share of delayed", "more positives")),
    (
        "world_change",
        ("supplier", "new customer", "segment", "new fleet", "policy changed", "new rules"),
    ),
)
# A note element has an id: the header's own mention of "<note>" is no note.
_NOTE = re.compile(r"<note\s+id=\"?(\d+)\"?[^>]*>(.*?)</note>", re.DOTALL | re.IGNORECASE)
_FIELD = re.compile(r'^\s*"(\w+)": <(.*)>,?\s*$', re.MULTILINE)
_BOUNDS = re.compile(r"^Policy bounds: (\{.*\})\s*$", re.MULTILINE)
# The cause's action when a note names it (world_change and unknown keep the default).
_WATCH = ("monitor", "none")


def note_cause(text: str) -> tuple[str, list[int]] | None:
    """The cause the first note in ``text`` that names one says, and that note's id; None
    when no note names a cause."""
    for note_id, body in _NOTE.findall(text):
        words = html.unescape(body).lower()
        for cause, keys in KEYWORDS:
            if any(re.search(rf"\b{re.escape(k)}\b", words) for k in keys):
                return cause, [int(note_id)]
    return None


def template_fields(system: str) -> dict[str, str]:
    """The decision template's fields and their hints (``"name": <hint>`` lines)."""
    return dict(_FIELD.findall(system))


def policy_bounds(system: str) -> dict[str, Any]:
    """The ``Policy bounds: {...}`` the prompt shows ({} when absent or unreadable)."""
    found = _BOUNDS.search(system)
    if not found:
        return {}
    try:
        value = json.loads(found.group(1))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def numbers_cause(*sources: Any) -> str | None:
    """The cause the numbers read: the first ``cause`` string (or ``cause.cause``) found in
    the bounds or the evidence, searched breadth first."""
    queue = list(sources)
    while queue:
        node = queue.pop(0)
        if isinstance(node, dict):
            value = node.get("cause")
            if isinstance(value, str):
                return value
            if isinstance(value, dict) and isinstance(value.get("cause"), str):
                return str(value["cause"])
            queue.extend(node.values())
        elif isinstance(node, list):
            queue.extend(node)
    return None


def action_for(cause: str | None, bounds: dict[str, Any], allowed: list[str]) -> str:
    """The action a cause read from a note asks for, within ``allowed``; the policy default
    otherwise."""
    default = str(bounds.get("default") or (allowed[0] if allowed else "monitor"))
    if cause == "pipeline_defect":
        wanted = list(_WATCH)  # watch broken data, never train on it
    elif cause == "expected_change":
        # Nothing to do about what the model has seen before: the default if it watches.
        wanted = [default, *_WATCH] if default in _WATCH else list(_WATCH)
    elif cause == "label_shift":
        wanted = ["recalibrate", default]
    else:
        wanted = [default]
    return next((a for a in wanted if a in allowed), allowed[0] if allowed else default)


def drift_reply(system: str, evidence: dict[str, Any], shown: str) -> dict[str, Any]:
    """The drift analyst's verdict (see the module docstring), fitted to the template's
    fields: ``cause`` and ``cited_notes`` only when the template has them."""
    fields = template_fields(system)
    bounds = policy_bounds(system)
    allowed = [a.strip() for a in fields.get("action", "").split("|") if a.strip()]
    allowed = allowed or [str(a) for a in bounds.get("allowed") or []]
    read = note_cause(shown)
    by_cause = bounds.get("by_cause")
    if read and isinstance(by_cause, dict) and by_cause:
        # The policy names the causes an analyst may name, each with what it allows: a cause
        # outside that map cannot be named, and its actions narrow the bounds.
        if read[0] in by_cause:
            # What that cause allows is the policy's own list (monitor stays possible even
            # where the numbers' bounds allowed only none).
            allowed = [str(a) for a in by_cause[read[0]]] or allowed
        else:
            read = None
    cause, cited = read if read else (numbers_cause(bounds, evidence), [])
    action = action_for(cause if read else None, bounds, allowed)
    citable = evidence.get("citable") or {}
    cite = {k: citable[k] for k in list(citable)[:2]}
    named = ", ".join(f"{k} {v:g}" for k, v in cite.items()) or "no metric"
    why = f"note {cited[0]} reads {cause}" if read and cited else f"cause {cause or 'unknown'}"
    reply: dict[str, Any] = {
        "action": action,
        "severity": bounds.get("severity") or "low",
        "cited_metrics": cite,
        "rationale": f"{named}; {why}; {action}."[:200],
    }
    if "cause" in fields:
        causes = [c.strip() for c in fields["cause"].split("|")]
        reply["cause"] = cause if cause in causes else "unknown"
    if "cited_notes" in fields:
        reply["cited_notes"] = cited
    return reply


def answer(texts: list[tuple[str, str]]) -> str:
    """The reply to a conversation given as (role, text) pairs: a drift analyst's verdict as
    fenced JSON, or ``DEFER`` for any other agent."""
    system = next((t for role, t in texts if role == "system"), "")
    if "**drift analyst**" not in system:
        return DEFER
    # Notes are read where data is shown (the messages after the system prompt, and the
    # strings inside the evidence JSON), never in the prompt's own text.
    shown = [t for role, t in texts if role != "system"]
    evidence: dict[str, Any] = {}
    for role, text in texts:
        if role == "human" and text.startswith("Evidence:"):
            try:
                evidence = json.loads(text.removeprefix("Evidence:").strip())
            except ValueError:
                evidence = {}
    shown += _strings(evidence)
    return f"```json\n{json.dumps(drift_reply(system, evidence, chr(10).join(shown)))}\n```"


def _strings(node: Any) -> list[str]:
    """Every string inside a JSON value (a notes block shown as an evidence field)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


def reference_backend() -> Backend:
    """The reference model as a backend (unconstrained: it answers JSON text)."""
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class ReferenceChat(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "driftpilot-reference"

        def _generate(
            self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            texts = [(m.type, m.content if isinstance(m.content, str) else "") for m in messages]
            message = AIMessage(content=answer(texts))
            return ChatResult(generations=[ChatGeneration(message=message)])

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self  # it looks nothing up: every number it needs is in the evidence

    return Backend(NAME, "keyword-notes-v1", ReferenceChat())
