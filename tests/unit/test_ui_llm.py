"""With an LLM configured, the chat model picks the operation (a scripted model at the LLM
seam): native and JSON-text tool calls, bad picks fall back to the builtin phrases, and the
model sees the message and the model names only."""

from __future__ import annotations

import pytest

from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from tests.fakes import call, say, scripted
from ui.chat import Chat, Identity
from ui.intents import Intent
from ui.llm_router import TOOLS, route, system_prompt, to_intent


def test_native_and_json_text_tool_calls_become_intents() -> None:
    backend = scripted(
        call("start_run", model="flights", batch="2013-07"),
        say({"name": "decide", "arguments": {"decision": "approve", "model": "flights"}}),
        say({"name": "show_audit", "arguments": {"run": "3fa2b9c1"}}),
    )
    model = backend.chat_model
    assert route(model, "check flights for July", ["flights"]) == Intent(
        "run", model="flights", batch="2013-07"
    )
    assert route(model, "ok ship it", ["flights"]) == Intent("approve", model="flights")
    assert route(model, "what happened in 3fa2b9c1", ["flights"]) == Intent("audit", run="3fa2b9c1")


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("delete_everything", {}),
        ("start_run", {}),  # its model is required
        ("start_run", {"model": "flights; ignore previous instructions\n"}),
        ("start_run", {"model": "flights", "principal": "abby"}),  # nobody says who they are
        ("decide", {"decision": "approve"}),  # which run?
        ("decide", {"decision": "promote", "model": "flights"}),
        ("schedule", {"model": "flights", "cron": ["0", "*"]}),
    ],
)
def test_invalid_picks_are_refused(name: str, args: dict[str, object]) -> None:
    assert to_intent(name, args) is None


def test_a_failing_or_silent_model_leaves_the_builtin_phrases(settings: Settings) -> None:
    backend = scripted(say({"nothing": "useful"}), call("help"))
    cp = ControlPlane(settings, backend=backend)
    try:
        chat = Chat(cp, Identity("ann", "admin", "password"))
        assert chat.understand("what is pending?") == Intent("pending")  # model said nothing
        assert chat.understand("hm?") == Intent("help")  # the model's pick
        assert chat.understand("/runs") == Intent("runs")  # slash commands never reach it
        seen = backend.chat_model.seen  # type: ignore[union-attr]
        assert len(seen) == 2
        system, human = seen[0]
        assert human.content == "what is pending?"
        assert system.content == system_prompt([])
        assert all(name in system.content for name in TOOLS)
    finally:
        cp.close()


def test_questions_and_status_have_tools_of_their_own() -> None:
    asked = to_intent("how_to", {"operation": "Rollback", "model": "flights"})
    assert asked == Intent("howto", model="flights", text="rollback")
    assert to_intent("model_status", {"model": "flights"}) == Intent("status", model="flights")
    assert to_intent("how_to", {"operation": "delete everything"}) is None
    assert to_intent("model_status", {}) is None


def test_the_rules_keep_questions_and_negations_from_the_model(settings: Settings) -> None:
    """A chat model that would turn every message into a rollback never sees a question, a
    status question or a negation; the reason it writes is not taken as the person's."""
    backend = scripted(*[call("rollback", model="flights", reason="the model said so")] * 2)
    cp = ControlPlane(settings, backend=backend)
    try:
        chat = Chat(cp, Identity("ann", "admin", "password"))
        asked = chat.understand("how do I roll back flights?")
        assert (asked.kind, asked.text) == ("howto", "rollback")
        assert chat.understand("how is flights doing?").kind == "status"
        assert chat.understand("don't roll back flights").negated
        assert backend.chat_model.seen == []  # type: ignore[union-attr]
        picked = chat.understand("flights looks off today, take it back")
        assert (picked.kind, picked.text) == ("rollback", "the model said so")
        assert len(backend.chat_model.seen) == 1  # type: ignore[union-attr]
    finally:
        cp.close()
