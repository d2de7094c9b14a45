"""The only fake: a scripted chat model at the LLM seam."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage
from pydantic import Field

from driftpilot.core.llm import Backend


class ScriptedChatModel(FakeMessagesListChatModel):
    """Replies with the scripted messages in order; records every prompt it was sent.

    langchain's fake models raise NotImplementedError on bind_tools; binding returns self.
    """

    seen: list[Any] = Field(default_factory=list)

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        self.seen.append(messages)
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def say(obj: Any) -> AIMessage:
    """A reply whose text is the JSON of ``obj`` (fenced, as small models write it)."""
    return AIMessage(
        content=f"```json\n{json.dumps(obj)}\n```",
        usage_metadata={"input_tokens": 100, "output_tokens": 20, "total_tokens": 120},
    )


def call(name: str, **args: Any) -> AIMessage:
    """A native tool call."""
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call_{name}"}])


def scripted(*replies: AIMessage) -> Backend:
    model = ScriptedChatModel(responses=list(replies))
    return Backend("scripted", "scripted-test-model", model)
