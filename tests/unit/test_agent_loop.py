"""The bounded tool-calling loop, driven by a scripted chat model."""

from typing import Literal

import pytest
from pydantic import BaseModel

from agents.base import AgentTool, decide
from driftpilot.core.errors import LLMError
from driftpilot.core.llm import Backend
from tests.fakes import call, say, scripted


class Verdict(BaseModel):
    action: Literal["none", "monitor", "retrain"]
    rationale: str


POLICY = Verdict(action="monitor", rationale="policy says monitor")
ALLOWED = ["none", "monitor"]


def check(v: Verdict) -> None:
    if v.action not in ALLOWED:
        raise LLMError(f"{v.action} not allowed")


def lookup(column: str) -> dict[str, float]:
    """Drift score of one column."""
    return {"column": column, "score": 4.47}  # type: ignore[dict-item]


def run(backend: Backend, retries: int = 1):  # type: ignore[no-untyped-def]
    return decide(
        "drift_analyst",
        backend,
        Verdict,
        {"drift_share": 0.6},
        {"allowed": ALLOWED},
        POLICY,
        check=check,
        tools=[AgentTool("get_column_drift", lookup)],
        retries=retries,
    )


def test_builtin_takes_the_policy_decision() -> None:
    outcome = run(Backend("builtin", "policy-templates", None))
    assert outcome.decision == POLICY and not outcome.fallback and outcome.backend == "builtin"


def test_native_tool_call_then_decision() -> None:
    backend = scripted(
        call("get_column_drift", column="temp"), say({"action": "none", "rationale": "temp=4.47"})
    )
    outcome = run(backend)
    assert outcome.decision.action == "none" and not outcome.fallback
    assert outcome.tool_calls == [
        {
            "tool": "get_column_drift",
            "args": {"column": "temp"},
            "result": {"column": "temp", "score": 4.47},
        }
    ]
    prompt = backend.chat_model.seen[0]  # type: ignore[union-attr]
    assert "drift analyst" in prompt[0].content and '"drift_share": 0.6' in prompt[1].content
    assert any(m.type == "tool" for m in backend.chat_model.seen[1])  # type: ignore[union-attr]


def test_json_text_tool_call_from_a_small_model() -> None:
    backend = scripted(
        say({"name": "get_column_drift", "arguments": {"column": "dewp"}}),
        say({"action": "monitor", "rationale": "ok"}),
    )
    outcome = run(backend)
    assert outcome.decision.action == "monitor" and outcome.tool_calls[0]["args"] == {
        "column": "dewp"
    }
    assert outcome.tokens_in == 200 and outcome.tokens_out == 40


def test_out_of_bounds_is_retried_once_then_accepted() -> None:
    backend = scripted(
        say({"action": "retrain", "rationale": "!"}), say({"action": "none", "rationale": "ok"})
    )
    outcome = run(backend)
    assert outcome.decision.action == "none" and not outcome.fallback
    assert "Invalid answer" in backend.chat_model.seen[1][-1].content  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "replies",
    [
        ["garbage", "more garbage"],
        ['{"action": "retrain", "rationale": "x"}', '{"action": "retrain", "rationale": "x"}'],
        ['{"action": "sideways", "rationale": "x"}', '{"rationale": "missing action"}'],
        ['{"name": "drop_table", "arguments": {}}', "garbage"],
    ],
)
def test_bad_answers_fall_back_to_the_policy(replies: list[str]) -> None:
    from langchain_core.messages import AIMessage

    outcome = run(scripted(*[AIMessage(content=r) for r in replies]))
    assert outcome.fallback and outcome.decision == POLICY and outcome.error


def test_a_failing_model_falls_back() -> None:
    class Broken:
        def invoke(self, messages: object) -> None:
            raise TimeoutError("read timed out")

        def bind_tools(self, tools: object) -> "Broken":
            return self

    outcome = run(Backend("openai", "m", Broken()))
    assert outcome.fallback and "TimeoutError" in (outcome.error or "")


def test_answer_wrapped_in_the_schema_shape_is_unwrapped() -> None:
    # Seen from Qwen2.5-Coder-0.5B: it echoes {"description", "properties": {...answer...}}.
    wrapped = {"description": "verdict", "properties": {"action": "none", "rationale": "calm"}}
    outcome = run(scripted(say(wrapped)))
    assert outcome.decision.action == "none" and not outcome.fallback


def test_prompt_shows_a_template_not_a_schema() -> None:
    from agents.base import decision_template

    template = decision_template(Verdict)
    assert '"action": <none | monitor | retrain>' in template and "$defs" not in template
