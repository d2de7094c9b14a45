"""The LLM seam: one factory from a spec string to a LangChain chat model.

    builtin            no network, no key: the deterministic policy decides and a template
                       explains (the audit names the backend 'builtin')
    openai:<model>     ChatOpenAI; base URL and key from settings, so any OpenAI-compatible
                       server works (OpenAI, vLLM, llama.cpp's llama-server)
    ollama:<model>     ChatOllama against settings.ollama_base_url

Small local models write tool calls and decisions as JSON text; ``parse_json_object`` reads a
fenced or bare JSON object out of a reply.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from driftpilot.errors import ConfigError, LLMError
from driftpilot.settings import Settings

_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


@dataclass(frozen=True)
class Backend:
    """What drives the agents: a chat model, or the builtin policy (model None)."""

    name: str
    model_name: str
    chat_model: Any | None

    @property
    def is_builtin(self) -> bool:
        return self.chat_model is None


def make_backend(spec: str, settings: Settings) -> Backend:
    """Turn ``builtin`` / ``openai:<model>`` / ``ollama:<model>`` into a Backend.

    Raises:
        ConfigError: unknown provider or missing model name.
    """
    if spec == "builtin":
        return Backend("builtin", "policy-templates", None)
    provider, _, model = spec.partition(":")
    if not model:
        raise ConfigError(f"LLM spec {spec!r} needs a model: 'openai:<model>' or 'ollama:<model>'")
    if provider == "openai":
        from langchain_openai import ChatOpenAI

        secret = settings.llm_api_key
        chat: Any = ChatOpenAI(
            model=model,
            base_url=settings.llm_base_url,
            # A local OpenAI-compatible server (llama-server, vLLM) takes any key.
            api_key=(secret.get_secret_value() if secret else "") or "not-needed",
            timeout=settings.llm_timeout_s,
            max_retries=0,  # retries are ours, so that fallbacks are counted and audited
            temperature=0,
            max_completion_tokens=settings.llm_max_tokens,
        )
        return Backend("openai", model, chat)
    if provider == "ollama":
        from langchain_ollama import ChatOllama

        chat = ChatOllama(
            model=model,
            base_url=settings.ollama_base_url,
            temperature=0,
            num_predict=settings.llm_max_tokens,
            client_kwargs={"timeout": settings.llm_timeout_s},
        )
        return Backend("ollama", model, chat)
    raise ConfigError(f"unknown LLM provider {provider!r}: use builtin, openai:<m> or ollama:<m>")


def parse_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a reply: a ```json fenced block, else the outermost {...}.

    Raises:
        LLMError: no JSON object can be read.
    """
    for candidate in [*_FENCE.findall(text), text]:
        decoder = json.JSONDecoder()
        for start in (i for i, ch in enumerate(candidate) if ch == "{"):
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value  # the first complete object; trailing prose is ignored
    raise LLMError(f"no JSON object in reply: {text[:200]!r}")


def as_tool_call(obj: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON-text tool call ``{"name": ..., "arguments": {...}}`` as a LangChain tool call."""
    name, args = obj.get("name"), obj.get("arguments", obj.get("args"))
    if (
        isinstance(name, str)
        and isinstance(args, dict)
        and set(obj) <= {"name", "arguments", "args", "id"}
    ):
        return {
            "name": name,
            "args": args,
            "id": str(obj.get("id", f"call_{name}")),
            "type": "tool_call",
        }
    return None
