"""How every agent thinks: a bounded tool-calling loop that ends in a validated decision.

The node gives the agent its evidence (the output of the deterministic tools it ran), the
bounds the policy allows, and the policy's own decision. With the ``builtin`` backend the
policy decision is taken and explained by a template. With a chat model the agent may call its
read-only tools (native tool calls or JSON text), then must answer with a decision JSON that
validates against the agent's pydantic model and lies inside the bounds. Invalid output is
retried; after the retries the policy decision is used and the fallback is recorded.

When the backend constrains output to a JSON schema (llama-server, Ollama, OpenAI), the final
decision call is grammar-constrained: the schema comes from the decision model, narrowed by the
agent to what the policy allows (``narrowed``: the allowed actions as the enum, the limits as
integer bounds), with every free-text field bounded in length. The model proposes within the
bounds; ``check`` still disposes. A call that fails in transport (connection, timeout, 5xx,
429) is retried with backoff first, each retry logged; only then does the loop give up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from driftpilot.core.errors import LLMError
from driftpilot.core.llm import Backend, as_tool_call, invoke_with_backoff, parse_json_object

D = TypeVar("D", bound=BaseModel)
PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
RATIONALE_CHARS = 200  # ~50 tokens: a 0.5B model's rationale ends long before max_tokens
TOOL_STEP_TOKENS = 80  # a tool step's answer: a JSON tool call fits, an essay does not
log = logging.getLogger(__name__)


def bounded_text(description: str, chars: int = RATIONALE_CHARS) -> Any:
    """A free-text decision field whose schema bounds its length (``maxLength``: the grammar
    of a constrained call closes the string there) and whose description says so. The bound
    is a generation limit, not a validation rule: the policy's own explanations, built by
    templates, may be longer."""
    return Field(
        description=f"{description} At most {chars} characters.",
        json_schema_extra={"maxLength": chars},
    )


def narrowed(model: type[D], **fields: dict[str, Any]) -> type[D]:
    """``model`` with its JSON schema narrowed per field, e.g. ``action={"enum": allowed}`` or
    ``window={"minimum": 1, "maximum": 6}``: the schema (and the prompt's template) say what
    the policy allows, so a constrained call can only propose that. Validation is the
    model's own; the agent's ``check`` still enforces the bounds."""

    def narrow(schema: dict[str, Any]) -> None:
        for name, override in fields.items():
            prop = schema["properties"][name]
            # An optional field's schema is anyOf [its type, null]: a keyword beside anyOf
            # does not bind its branches (llama.cpp's grammar reads the anyOf and ignores a
            # sibling enum: the real-LLM year named causes its schema had narrowed away), so
            # the override goes into every branch but null.
            branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
            for target in branches or [prop]:
                target.update(override)

    config = ConfigDict(**{**model.model_config, "json_schema_extra": narrow})
    return type(model.__name__, (model,), {"model_config": config, "__module__": model.__module__})


def decision_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The decision model's JSON schema as structured outputs want it: references inlined,
    titles dropped, every field required, no other field allowed."""
    raw = model.model_json_schema()
    defs = raw.pop("$defs", {})

    def clean(node: Any) -> Any:
        if isinstance(node, list):
            return [clean(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:  # inlined, with any keyword beside it (a narrowing) kept
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            return clean({**defs[node["$ref"].rsplit("/", 1)[-1]], **siblings})
        out = {k: clean(v) for k, v in node.items() if k not in ("title", "default")}
        if out.get("type") == "object" and "properties" in node:
            out["properties"] = {k: clean(v) for k, v in node["properties"].items()}
            out.setdefault("required", list(out["properties"]))
            out.setdefault("additionalProperties", False)
        return out

    schema: dict[str, Any] = clean(raw)
    schema["required"] = list(schema["properties"])  # a default does not make a field optional
    return schema


def decision_template(model: type[BaseModel]) -> str:
    """The decision as a JSON object to fill in: one line per field, allowed values for
    enums, the bounds of integers, the description otherwise. Small models copy a raw JSON
    schema's shape instead of answering it; a template they fill in."""
    lines = [
        f'  "{name}": <{_hint(name, prop)}>'
        for name, prop in decision_schema(model)["properties"].items()
    ]
    return "{\n" + ",\n".join(lines) + "\n}"


def _hint(name: str, prop: dict[str, Any]) -> str:
    branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:  # an optional field: its type's hint (null is "left out")
        prop = {"description": prop.get("description", name), **branches[0]}
    if "enum" in prop:
        return " | ".join(str(c) for c in prop["enum"])
    description = prop.get("description", name)
    if prop.get("type") == "integer" and {"minimum", "maximum"} <= set(prop):
        return f"integer from {prop['minimum']} to {prop['maximum']}: {description}"
    if prop.get("type") == "object" and prop.get("properties"):
        return f"{description} Names: {', '.join(prop['properties'])}"
    return str(description)


def render_prompt(agent: str, **values: Any) -> str:
    """``prompts/<agent>.md`` with its {placeholders} filled."""
    return (PROMPTS / f"{agent}.md").read_text().format(**values)


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
    transport_retries: int = 0


@dataclass(frozen=True)
class Llm:
    """The LLM an agent's ``decide`` may consult: a backend with the run's limits. It is the
    one way out of a pure decision step; with the ``builtin`` backend it returns the policy's
    decision untouched."""

    backend: Backend
    max_steps: int = 4
    retries: int = 1

    def decide(
        self,
        agent: str,
        decision_model: type[D],
        evidence: dict[str, Any],
        bounds: dict[str, Any],
        policy_decision: D,
        *,
        check: Callable[[D], None],
        tools: list[AgentTool] | None = None,
    ) -> Outcome[D]:
        """One agent decision (see ``decide``) with this backend and these limits."""
        return decide(
            agent,
            self.backend,
            decision_model,
            evidence,
            bounds,
            policy_decision,
            check=check,
            tools=tools,
            max_steps=self.max_steps,
            retries=self.retries,
        )


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
    """Run one agent decision. ``check`` raises LLMError when a decision breaks the bounds.

    ``retries`` counts invalid answers tried again; transport failures have their own budget
    (``backend.transport_retries``). Whatever fails, the policy decision is returned with
    ``fallback`` set and the reason in ``error``."""
    started = time.perf_counter()
    if backend.is_builtin:
        return Outcome(policy_decision, backend.name, backend.model_name, latency_ms=_ms(started))
    loop = _Loop(agent, backend, decision_model, evidence, bounds, tools or [], check)
    try:
        decision: D = loop.run(max_steps, retries)
        fallback, error = False, None
    except LLMError as exc:
        decision, fallback, error = policy_decision, True, str(exc)
    return Outcome(
        decision,
        backend.name,
        backend.model_name,
        fallback=fallback,
        error=error,
        tokens_in=loop.tokens_in,
        tokens_out=loop.tokens_out,
        latency_ms=_ms(started),
        tool_calls=loop.calls,
        transport_retries=loop.transport_retries,
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

        self.agent, self.backend = agent, backend
        self.decision_model, self.check = decision_model, check
        self.tools = {t.name: t for t in tools}
        self.tokens_in = self.tokens_out = self.transport_retries = 0
        self.calls: list[dict[str, Any]] = []
        tool_doc = (
            "\n".join(f"- {t.name}: {(t.fn.__doc__ or '').strip()}" for t in tools) or "(none)"
        )
        system = render_prompt(
            agent,
            decision_schema=decision_template(decision_model),
            tools=tool_doc,
            bounds=json.dumps(bounds),
        )
        self.messages: list[Any] = [
            SystemMessage(system),
            HumanMessage("Evidence:\n" + json.dumps(_rounded(evidence), default=str)),
        ]
        self.model = backend.chat_model
        if backend.structured:
            # A constrained decision follows the tool steps: a step needs only a tool call's
            # length, and tools stay in the prompt's text (JSON-text calls; a native call is
            # still run). Bound natively, a server's chat template writes them into the
            # system prompt, which the final call (no tools) would not share: on a CPU the
            # whole prompt would be evaluated twice instead of once, from the cache.
            self.model = backend.brief(TOOL_STEP_TOKENS)
        elif tools:
            # Models without native tool calling still get JSON-text tool calls.
            with contextlib.suppress(NotImplementedError):
                self.model = backend.chat_model.bind_tools(  # type: ignore[union-attr]
                    [t.as_langchain() for t in tools]
                )
        self.final_model = (
            backend.constrained(decision_model.__name__, decision_schema(decision_model))
            if backend.structured
            else None
        )

    def run(self, max_steps: int, retries: int) -> D:
        """Tool steps, then the decision. With a constraining backend an answer that is no
        valid decision ends the tool steps (it is not yet a failure): the next call is the
        constrained final one, and only its invalid answers count against ``retries``."""
        from langchain_core.messages import HumanMessage

        failures = 0
        final = self.final_model is not None and not self.tools  # nothing to look up first
        budget = max_steps + retries + (1 if self.final_model is not None else 0)
        for step in range(budget):
            reply = self._invoke(final)
            calls = [] if final else list(getattr(reply, "tool_calls", None) or [])
            text = reply.content if isinstance(reply.content, str) else json.dumps(reply.content)
            try:
                if not calls:
                    obj = parse_json_object(text)
                    call = None if final else as_tool_call(obj)
                    if call is None:
                        return self._validate(obj)
                    calls = [call]
                self._run_tools(reply, calls)
                if self.final_model is not None and step + 1 >= max_steps:
                    final = True  # the tool budget is spent: decide now
                    self.messages.append(HumanMessage("Now reply with your decision JSON."))
            except LLMError as exc:
                if self.final_model is not None and not final:
                    final = True
                    self.messages.append(
                        HumanMessage(f"Not a valid decision: {exc}. Reply with your decision JSON.")
                    )
                    continue
                failures += 1
                if failures > retries:
                    raise
                self.messages.append(
                    HumanMessage(f"Invalid answer: {exc}. Reply with one JSON decision.")
                )
        raise LLMError(f"no valid decision within {max_steps} steps")

    def _invoke(self, final: bool) -> Any:
        model = self.final_model if final else self.model
        assert model is not None

        def retried(attempt: int, exc: BaseException, pause: float) -> None:
            self.transport_retries += 1
            log.warning(
                "%s: LLM call failed in transport (%s: %s); retry %d of %d in %.1f s",
                self.agent,
                type(exc).__name__,
                exc,
                attempt,
                self.backend.transport_retries,
                pause,
            )

        try:
            reply = invoke_with_backoff(
                lambda: model.invoke(self.messages),
                retries=self.backend.transport_retries,
                backoff_s=self.backend.backoff_s,
                on_retry=retried,
            )
        except Exception as exc:  # network, timeout, provider errors: all become a fallback
            after = f" after {self.transport_retries} retries" if self.transport_retries else ""
            raise LLMError(f"chat model call failed{after}: {type(exc).__name__}: {exc}") from exc
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
                decision = self.decision_model.model_validate(_without_nulls(candidate))
                break
            except ValidationError as exc:
                errors.extend(exc.errors(include_url=False, include_input=False)[:3])
        else:
            raise LLMError(f"decision does not match the schema: {errors[:3]}")
        self.check(decision)
        return decision


def _without_nulls(obj: dict[str, Any]) -> dict[str, Any]:
    """A decision with the null entries of its nested objects left out: OpenAI's strict
    schemas turn an optional property (a citation not chosen) into a nullable one."""
    return {
        k: {n: v for n, v in value.items() if v is not None} if isinstance(value, dict) else value
        for k, value in obj.items()
    }


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
