"""The LLM seam: one factory from a spec string to a LangChain chat model.

    builtin            no network, no key: the deterministic policy decides and a template
                       explains (the audit names the backend 'builtin')
    openai:<model>     ChatOpenAI; base URL and key from settings, so any OpenAI-compatible
                       server works (OpenAI, vLLM, llama.cpp's llama-server)
    ollama:<model>     ChatOllama against settings.ollama_base_url

Both network backends support grammar-constrained output: ``Backend.constrained`` binds a JSON
schema (``response_format`` json_schema for OpenAI-compatible servers, ``format`` for Ollama),
so a final decision is always JSON of the decision's shape. Transport failures (connection
refused or reset, timeouts, 5xx, 429) are retried with exponential backoff by
``invoke_with_backoff`` before anything falls back. Small local models write tool calls as JSON
text; ``parse_json_object`` reads a fenced or bare JSON object out of a reply.

The local server (the opt-in real-LLM tier): ``make llm-local`` builds llama.cpp's
``llama-server`` and assembles Qwen2.5-Coder-0.5B into ``settings.llm_cache``;
``local_server`` runs it on a free loopback port for as long as a ``with`` block lasts.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from driftpilot.core.errors import ConfigError, LLMError
from driftpilot.core.settings import Settings

log = logging.getLogger(__name__)
_FENCE = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)
T = TypeVar("T")

LOCAL_MODEL = "qwen2.5-coder-0.5b-q4_k_m.gguf"  # what evals/real_llm_setup.sh assembles
LOCAL_MODEL_NAME = "qwen2.5-coder-0.5b"
LOCAL_CONTEXT = 8192  # tokens; one slot (-np 1), so the whole context serves one request


@dataclass(frozen=True)
class Backend:
    """What drives the agents: a chat model, or the builtin policy (model None).

    ``structured``: the server takes a JSON schema that constrains the answer (see
    ``constrained``). ``transport_retries`` / ``backoff_s``: how often, and after how long a
    first pause (doubling), a call that failed in transport is tried again. A backend built by
    hand (tests) retries nothing unless told to."""

    name: str
    model_name: str
    chat_model: Any | None
    structured: bool = False
    transport_retries: int = 0
    backoff_s: float = 0.5
    strict_subset: bool = False

    @property
    def is_builtin(self) -> bool:
        return self.chat_model is None

    def brief(self, tokens: int) -> Any:
        """The chat model with its answers cut at ``tokens``: enough for a JSON tool call,
        not for an essay (a small model that rambles instead of calling a tool costs seconds
        per token on a busy CPU; the constrained decision call follows anyway)."""
        if self.chat_model is None or self.name not in ("openai", "ollama"):
            return self.chat_model
        field = "num_predict" if self.name == "ollama" else "max_tokens"
        return self.chat_model.model_copy(update={field: tokens})

    def constrained(self, name: str, schema: dict[str, Any]) -> Any:
        """The chat model bound to answer JSON valid against ``schema`` (grammar-constrained
        on llama-server and Ollama; OpenAI's structured outputs).

        Raises:
            LLMError: the backend cannot constrain its output.
        """
        if self.chat_model is None or not self.structured:
            raise LLMError(f"backend {self.name!r} does not take a JSON schema")
        if self.name == "ollama":
            return self.chat_model.bind(format=schema)
        if self.strict_subset:
            schema = openai_strict(schema)
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True},
        }
        return self.chat_model.bind(response_format=response_format)


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
    retries, backoff = settings.llm_transport_retries, settings.llm_backoff_s
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
        strict = settings.llm_schema_dialect == "openai-strict" or (
            settings.llm_schema_dialect == "auto"
            and (not settings.llm_base_url or "api.openai.com" in settings.llm_base_url)
        )
        return Backend("openai", model, chat, True, retries, backoff, strict)
    if provider == "ollama":
        from langchain_ollama import ChatOllama

        chat = ChatOllama(
            model=model,
            base_url=settings.ollama_base_url,
            temperature=0,
            num_predict=settings.llm_max_tokens,
            client_kwargs={"timeout": settings.llm_timeout_s},
        )
        return Backend("ollama", model, chat, True, retries, backoff)
    raise ConfigError(f"unknown LLM provider {provider!r}: use builtin, openai:<m> or ollama:<m>")


_NOT_IN_STRICT = ("maxLength", "minLength")


def openai_strict(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` in the subset OpenAI's strict structured outputs accept: every property of
    every object required (one that was optional becomes nullable: the decision reads a null
    as left out) and no string-length keywords (the field's description still states the
    bound). llama-server and vLLM take the full schema, whose lengths bound the grammar."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: walk(v) for k, v in node.items() if k not in _NOT_IN_STRICT}
        if out.get("type") == "object" and isinstance(out.get("properties"), dict):
            required = set(node.get("required", []))
            out["properties"] = {
                name: prop if name in required else {"anyOf": [prop, {"type": "null"}]}
                for name, prop in out["properties"].items()
            }
            out["required"] = list(out["properties"])
            out["additionalProperties"] = False
        return out

    result: dict[str, Any] = walk(schema)
    return result


def is_transient(exc: BaseException) -> bool:
    """A failure in transport that a later try may not meet: connection refused or reset,
    a timeout, a 5xx or a 429 answer. A 4xx (bad request, bad key) is not: retrying it only
    delays the fallback."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status == 429 or status >= 500
    if isinstance(exc, ConnectionError | TimeoutError):  # ollama's client raises ConnectionError
        return True
    import httpx

    if isinstance(exc, httpx.TransportError):
        return True
    import openai

    # APITimeoutError is an APIConnectionError; both wrap the httpx error that caused them.
    return isinstance(exc, openai.APIConnectionError)


def invoke_with_backoff(
    call: Callable[[], T],
    *,
    retries: int,
    backoff_s: float,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, tried again up to ``retries`` times after a transient failure, waiting
    ``backoff_s``, then twice as long each time. ``on_retry(attempt, error, pause)`` is told of
    every retry (the agents log and count them). A permanent failure, or the last transient
    one, is raised as it came."""
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == retries or not is_transient(exc):
                raise
            pause = backoff_s * 2**attempt
            if on_retry is not None:
                on_retry(attempt + 1, exc, pause)
            sleep(pause)
    raise AssertionError("unreachable: the last attempt returns or raises")


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


# -- the local llama-server (opt-in real-LLM tier) ---------------------------------------------


def local_paths(settings: Settings, model: Path | None = None) -> tuple[Path, Path]:
    """The built ``llama-server`` and the model file it serves.

    Raises:
        ConfigError: either is missing; the message says how to build them.
    """
    cache = settings.llm_cache.expanduser()
    binary, gguf = cache / "llama-server", (model or cache / LOCAL_MODEL).expanduser()
    missing = [str(p) for p in (binary, gguf) if not p.exists()]
    if missing:
        raise ConfigError(
            f"the local LLM is not built ({', '.join(missing)} missing): run `make llm-local` "
            f"(builds llama-server and assembles the model into {cache}, ~10 min)"
        )
    return binary, gguf


def server_command(settings: Settings, port: int, model: Path | None = None) -> list[str]:
    """The llama-server command line: loopback only, one slot with the whole context (the
    agents' prompts are 1-3k tokens; the default four slots would split the context)."""
    binary, gguf = local_paths(settings, model)
    return [
        str(binary),
        *("-m", str(gguf), "--host", "127.0.0.1", "--port", str(port)),
        *("-c", str(LOCAL_CONTEXT), "-np", "1", "--alias", LOCAL_MODEL_NAME),
    ]


def free_port() -> int:
    """A loopback TCP port free at the time of asking."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    """Wait until ``base``/health answers 200 (the model is loaded).

    Raises:
        LLMError: the server exited, or was not healthy within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LLMError(f"llama-server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet, or 503 while the model loads
        time.sleep(0.25)
    raise LLMError(f"llama-server at {base} was not healthy within {timeout_s:.0f} s")


@contextmanager
def local_server(
    settings: Settings,
    port: int | None = None,
    model: Path | None = None,
    log_path: Path | None = None,
) -> Iterator[str]:
    """Run the local llama-server for the ``with`` block; yields its OpenAI base URL
    (``http://127.0.0.1:<port>/v1``). The server is stopped (terminate, then kill) on exit.

    Raises:
        ConfigError: not built (see ``local_paths``).
        LLMError: it did not come up.
    """
    port = port or free_port()
    command = server_command(settings, port, model)
    sink = log_path.open("ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            sink.close()  # type: ignore[union-attr]
