"""How every agent thinks: a bounded tool-calling loop that ends in a validated decision.

The node gives the agent its evidence (the output of the deterministic tools it ran), the
bounds the policy allows, and the policy's own decision. With the ``builtin`` backend the
policy decision is taken and explained by a template. With a chat model the agent may call its
read-only tools (native tool calls or JSON text), then must answer with a decision JSON that
validates against the agent's pydantic model and lies inside the bounds. Invalid output is
retried; after the retries the policy decision is used and the fallback is recorded.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError

from driftpilot.errors import LLMError
from driftpilot.llm import Backend, as_tool_call, parse_json_object

D = TypeVar("D", bound=BaseModel)
PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


@dataclass
class AgentTool:
    """A read-only tool an agent may call: a typed function whose docstring the LLM reads."""

    name: str
    fn: Callable[..., Any]

    def as_langchain(self) -> Any:
        from langchain_core.tools import StructuredTool

        return StructuredTool.from_function(self.fn, name=self.name)


@dataclass
class Outcome(Generic[D]):
    """A decision and how it was reached (all of it goes to the audit record)."""

    decision: D
    backend: str
    llm_model: str
    fallback: bool = False
    error: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: float = 0.0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def decision_template(model: type[BaseModel]) -> str:
    """The decision as a JSON object to fill in: one line per field, allowed values for
    literals, the description otherwise. Small models copy a raw JSON schema's shape instead of
    answering it; a template they fill in."""
    lines = []
    for name, info in model.model_fields.items():
        choices = get_args(info.annotation) if get_origin(info.annotation) is Literal else ()
        hint = " | ".join(str(c) for c in choices) if choices else info.description or name
        lines.append(f'  "{name}": <{hint}>')
    return "{\n" + ",\n".join(lines) + "\n}"


def render_prompt(agent: str, **values: Any) -> str:
    """``prompts/<agent>.md`` with its {placeholders} filled."""
    return (PROMPTS / f"{agent}.md").read_text().format(**values)


def decide(
    agent: str,
    backend: Backend,
    decision_model: type[D],
    evidence: dict[str, Any],
    bounds: dict[str, Any],
    policy_decision: D,
    *,
    check: Callable[[D], None],
    tools: list[AgentTool] | None = None,
    max_steps: int = 4,
    retries: int = 1,
) -> Outcome[D]:
    """Run one agent decision. ``check`` raises LLMError when a decision breaks the bounds."""
    started = time.perf_counter()
    if backend.is_builtin:
        return Outcome(policy_decision, backend.name, backend.model_name, latency_ms=_ms(started))
    loop = _Loop(agent, backend, decision_model, evidence, bounds, tools or [], check)
    try:
        decision = loop.run(max_steps, retries)
        return Outcome(
            decision,
            backend.name,
            backend.model_name,
            tokens_in=loop.tokens_in,
            tokens_out=loop.tokens_out,
            latency_ms=_ms(started),
            tool_calls=loop.calls,
        )
    except LLMError as exc:
        return Outcome(
            policy_decision,
            backend.name,
            backend.model_name,
            fallback=True,
            error=str(exc),
            tokens_in=loop.tokens_in,
            tokens_out=loop.tokens_out,
            latency_ms=_ms(started),
            tool_calls=loop.calls,
        )


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class _Loop(Generic[D]):
    def __init__(
        self,
        agent: str,
        backend: Backend,
        decision_model: type[D],
        evidence: dict[str, Any],
        bounds: dict[str, Any],
        tools: list[AgentTool],
        check: Callable[[D], None],
    ) -> None:
        from langchain_core.messages import HumanMessage, SystemMessage

        self.decision_model, self.check = decision_model, check
        self.tools = {t.name: t for t in tools}
        self.tokens_in = self.tokens_out = 0
        self.calls: list[dict[str, Any]] = []
        schema = decision_template(decision_model)
        tool_doc = (
            "\n".join(f"- {t.name}: {(t.fn.__doc__ or '').strip()}" for t in tools) or "(none)"
        )
        system = render_prompt(
            agent, decision_schema=schema, tools=tool_doc, bounds=json.dumps(bounds)
        )
        self.messages: list[Any] = [
            SystemMessage(system),
            HumanMessage("Evidence:\n" + json.dumps(_rounded(evidence), default=str)),
        ]
        self.model = backend.chat_model
        if tools:
            # Models without native tool calling still get JSON-text tool calls.
            with contextlib.suppress(NotImplementedError):
                self.model = backend.chat_model.bind_tools(  # type: ignore[union-attr]
                    [t.as_langchain() for t in tools]
                )

    def run(self, max_steps: int, retries: int) -> D:
        from langchain_core.messages import HumanMessage

        failures = 0
        for _ in range(max_steps + retries):
            reply = self._invoke()
            calls = list(getattr(reply, "tool_calls", None) or [])
            text = reply.content if isinstance(reply.content, str) else json.dumps(reply.content)
            try:
                if not calls:
                    obj = parse_json_object(text)
                    call = as_tool_call(obj)
                    if call is None:
                        return self._validate(obj)
                    calls = [call]
                self._run_tools(reply, calls)
            except LLMError as exc:
                failures += 1
                if failures > retries:
                    raise
                self.messages.append(
                    HumanMessage(f"Invalid answer: {exc}. Reply with one JSON decision.")
                )
        raise LLMError(f"no valid decision within {max_steps} steps")

    def _invoke(self) -> Any:
        assert self.model is not None
        try:
            reply = self.model.invoke(self.messages)
        except Exception as exc:  # network, timeout, provider errors: all become a fallback
            raise LLMError(f"chat model call failed: {type(exc).__name__}: {exc}") from exc
        usage = getattr(reply, "usage_metadata", None) or {}
        self.tokens_in += int(usage.get("input_tokens", 0))
        self.tokens_out += int(usage.get("output_tokens", 0))
        self.messages.append(reply)
        return reply

    def _run_tools(self, reply: Any, calls: list[dict[str, Any]]) -> None:
        from langchain_core.messages import HumanMessage, ToolMessage

        native = bool(getattr(reply, "tool_calls", None))
        for call in calls:
            tool = self.tools.get(call["name"])
            if tool is None:
                raise LLMError(f"unknown tool {call['name']!r}; tools: {sorted(self.tools)}")
            try:
                result = tool.fn(**call["args"])
            except TypeError as exc:
                raise LLMError(f"bad arguments for {call['name']}: {exc}") from exc
            self.calls.append({"tool": call["name"], "args": call["args"], "result": result})
            content = json.dumps(result, default=str)
            if native:
                self.messages.append(ToolMessage(content, tool_call_id=call["id"]))
            else:
                self.messages.append(HumanMessage(f"Result of {call['name']}: {content}"))

    def _validate(self, obj: dict[str, Any]) -> D:
        # Small models sometimes wrap the answer in the schema's shape: {"properties": {...}}.
        inner = obj.get("properties")
        candidates = [obj, inner] if isinstance(inner, dict) else [obj]
        errors: list[Any] = []
        for candidate in candidates:
            try:
                decision = self.decision_model.model_validate(candidate)
                break
            except ValidationError as exc:
                errors.extend(exc.errors(include_url=False, include_input=False)[:3])
        else:
            raise LLMError(f"decision does not match the schema: {errors[:3]}")
        self.check(decision)
        return decision


def _rounded(value: Any, digits: int = 4) -> Any:
    """Evidence with floats cut to 4 decimals: 0.30312711105076745 costs a small model ~8
    tokens and says nothing 0.3031 does not."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v, digits) for v in value]
    return value
