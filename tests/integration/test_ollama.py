"""DRIFTPILOT_LLM=ollama:<model> over real HTTP: the real ChatOllama client against a loopback
server implementing the subset of Ollama's ``/api/chat`` the backend uses (POST, streamed
NDJSON chunks, ``format`` with a JSON schema, token counts on the last chunk). The server is
the fake at the LLM seam; it can be told to fail first (503, 429, 400)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agents.base import decide, decision_schema, narrowed
from agents.evaluator import EvaluationVerdict
from driftpilot.core.errors import LLMError
from driftpilot.core.llm import make_backend
from driftpilot.core.settings import Settings

pytestmark = pytest.mark.integration

ANSWER = {"action": "promote", "rationale": "gain +0.0210, CI +0.0080 to +0.0340 above zero"}


class OllamaStub(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []
    fail_first: ClassVar[list[int]] = []  # statuses to answer before the real reply

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        assert self.path == "/api/chat", self.path
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        OllamaStub.requests.append(body)
        if OllamaStub.fail_first:
            status = OllamaStub.fail_first.pop(0)
            payload = json.dumps({"error": f"stub says {status}"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        text = json.dumps(ANSWER)
        half = len(text) // 2
        chunks = [
            {"model": body["model"], "message": {"role": "assistant", "content": text[:half]}},
            {"model": body["model"], "message": {"role": "assistant", "content": text[half:]}},
            {
                "model": body["model"],
                "message": {"role": "assistant", "content": ""},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 210,
                "eval_count": 31,
            },
        ]
        for chunk in chunks:
            chunk.setdefault("created_at", "2026-12-01T00:00:00Z")
            chunk.setdefault("done", False)
        payload = b"".join(json.dumps(c).encode() + b"\n" for c in chunks)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def ollama_url() -> Iterator[str]:
    OllamaStub.requests.clear()
    OllamaStub.fail_first.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), OllamaStub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _decide(url: str, tmp_path: Path, allowed: list[str]) -> Any:
    settings = Settings(home=tmp_path, ollama_base_url=url, llm_backoff_s=0.05, _env_file=None)
    backend = make_backend("ollama:qwen2.5-coder:0.5b", settings)
    model = narrowed(EvaluationVerdict, action={"enum": allowed})
    policy = EvaluationVerdict(action="reject", rationale="policy")

    def check(v: EvaluationVerdict) -> None:
        if v.action not in allowed:
            raise LLMError(f"{v.action} not allowed")

    evidence = {"gain": 0.021, "ci_low": 0.008, "ci_high": 0.034, "significant": True}
    outcome = decide(
        "evaluator", backend, model, evidence, {"allowed": allowed}, policy, check=check
    )
    return outcome, decision_schema(model)


def test_the_decision_request_carries_the_schema_and_the_answer_is_parsed(
    ollama_url: str, tmp_path: Path
) -> None:
    outcome, schema = _decide(ollama_url, tmp_path, ["promote", "reject"])
    assert not outcome.fallback, outcome.error
    assert (
        outcome.decision.action == "promote" and outcome.decision.rationale == ANSWER["rationale"]
    )
    assert (outcome.backend, outcome.llm_model) == ("ollama", "qwen2.5-coder:0.5b")
    assert (outcome.tokens_in, outcome.tokens_out) == (210, 31)
    (request,) = OllamaStub.requests  # no tools: the first call is the constrained decision
    assert request["model"] == "qwen2.5-coder:0.5b" and request["stream"] is True
    assert request["format"] == schema
    assert request["format"]["properties"]["action"]["enum"] == ["promote", "reject"]
    assert request["format"]["properties"]["rationale"]["maxLength"] == 200
    assert request["format"]["required"] == ["action", "rationale"]
    assert request["format"]["additionalProperties"] is False
    assert "Evidence:" in request["messages"][1]["content"]


@pytest.mark.parametrize("status", [503, 429])
def test_a_transient_failure_is_retried_not_fallen_back(
    ollama_url: str, tmp_path: Path, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    OllamaStub.fail_first.append(status)
    outcome, _ = _decide(ollama_url, tmp_path, ["promote", "reject"])
    assert not outcome.fallback, outcome.error
    assert outcome.transport_retries == 1 and len(OllamaStub.requests) == 2
    assert outcome.decision.action == "promote"
    assert any("failed in transport" in r.getMessage() for r in caplog.records)


def test_transient_failures_past_the_budget_fall_back_with_the_reason(
    ollama_url: str, tmp_path: Path
) -> None:
    OllamaStub.fail_first.extend([503] * 10)
    outcome, _ = _decide(ollama_url, tmp_path, ["promote", "reject"])
    assert outcome.fallback and outcome.decision.action == "reject"
    assert "after 3 retries" in (outcome.error or "") and "ResponseError" in (outcome.error or "")
    assert len(OllamaStub.requests) == 4  # the call and its 3 retries, then the policy decides


def test_a_client_error_is_not_retried(ollama_url: str, tmp_path: Path) -> None:
    OllamaStub.fail_first.append(400)
    outcome, _ = _decide(ollama_url, tmp_path, ["promote", "reject"])
    # A 400 will not go away by asking again: the policy decides at once.
    assert outcome.fallback and outcome.transport_retries == 0
    assert len(OllamaStub.requests) == 1 and "400" in (outcome.error or "")


def test_connection_refused_is_retried_then_falls_back(tmp_path: Path) -> None:
    from driftpilot.core.llm import free_port

    outcome, _ = _decide(f"http://127.0.0.1:{free_port()}", tmp_path, ["reject"])
    assert outcome.fallback and outcome.transport_retries == 3
    assert "Connection refused" in (outcome.error or "")
