"""DRIFTPILOT_LLM=openai:<model> with a base URL drives the same graph over real HTTP.

The server is a stub of the OpenAI chat-completions API on loopback (the LLM seam is the one
place a fake is allowed); the client side is the real ChatOpenAI."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pytest
import yaml

from agents import evaluator
from agents.base import TOOL_STEP_TOKENS, decision_schema
from agents.drift_verdict import verdict_schema
from driftpilot.core.settings import get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Decision, ToolCall
from tests.conftest import add_flights

pytestmark = pytest.mark.integration

DECISIONS = {
    "ingestion agent": {"action": "accept", "reason": "", "rationale": "quality ok"},
    "optimizer agent": {"family": "lightgbm", "n_trials": 3, "timeout_s": 60, "rationale": "keep"},
    "retraining agent": {"window": 1, "rationale": "new regime"},
    "evaluator agent": {"action": "promote", "rationale": "gain above zero"},
    "CI/CD agent": {
        "risk_tier": "high",
        "request_summary": "please check",
        "rationale": "season change",
    },
}


def strict_violations(schema: Any, path: str = "$") -> list[str]:
    """What OpenAI's strict structured outputs refuse in ``schema`` (a 400 'Invalid schema'
    there): an object whose properties are not all required or that allows others, and
    string-length keywords."""
    if isinstance(schema, list):
        return [v for i, n in enumerate(schema) for v in strict_violations(n, f"{path}[{i}]")]
    if not isinstance(schema, dict):
        return []
    found = [f"{path}: {k} not supported" for k in ("maxLength", "minLength") if k in schema]
    if schema.get("type") == "object" and "properties" in schema:
        if set(schema.get("required", [])) != set(schema["properties"]):
            found.append(f"{path}: every property must be required")
        if schema.get("additionalProperties") is not False:
            found.append(f"{path}: additionalProperties must be false")
    return found + [v for k, n in schema.items() for v in strict_violations(n, f"{path}.{k}")]


class Stub(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict[str, Any]]] = []
    strict: ClassVar[bool] = False  # refuse schemas as OpenAI's strict mode does
    refused: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Stub.requests.append(body)
        if Stub.strict and "response_format" in body:
            problems = strict_violations(body["response_format"]["json_schema"]["schema"])
            if problems:
                Stub.refused.extend(problems)
                error = {"error": {"message": f"Invalid schema: {problems[0]}", "code": None}}
                self._send(400, error)
                return
        system = body["messages"][0]["content"]
        message: dict[str, Any] = {"role": "assistant", "content": ""}
        if "**drift analyst**" in system:
            if not any(m["role"] == "tool" for m in body["messages"]):
                message["tool_calls"] = [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "get_column_drift",
                            "arguments": json.dumps({"column": "temp"}),
                        },
                    }
                ]
            else:
                evidence = json.loads(body["messages"][1]["content"].split("\n", 1)[1])
                share = evidence["weighted_share"]
                # Strict mode writes every citable name: those not chosen as null.
                cited = {n: None for n in evidence["citable"]} if Stub.strict else {}
                message["content"] = json.dumps(
                    {
                        "action": "retrain",
                        "severity": "high",
                        "cited_metrics": {**cited, "weighted_share": share},
                        "rationale": f"weighted_share={share} is high",
                    }
                )
        else:
            agent = next(k for k in DECISIONS if k in system)
            message["content"] = "```json\n" + json.dumps(DECISIONS[agent]) + "\n```"
        reply = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if "tool_calls" in message else "stop",
                }
            ],
            "usage": {"prompt_tokens": 321, "completion_tokens": 12, "total_tokens": 333},
        }
        self._send(200, reply)

    def _send(self, status: int, reply: dict[str, Any]) -> None:
        payload = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[str]:
    Stub.requests.clear()
    Stub.refused.clear()
    Stub.strict = False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def _july_run(
    server: str, tmp_path: Path, months: dict[str, pl.DataFrame], monkeypatch: Any
) -> tuple[ControlPlane, Any, dict[str, Decision]]:
    """A retraining July run of 'flights' with openai:stub-model deciding; its decisions."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"drift": {"retrain": "always"}}))
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(policy))
    monkeypatch.setenv("DRIFTPILOT_LLM", "openai:stub-model")
    monkeypatch.setenv("DRIFTPILOT_LLM_BASE_URL", server)
    get_settings.cache_clear()
    cp = ControlPlane()
    assert cp.backend.name == "openai"
    add_flights(cp, months["2013-01"].sample(n=8000, seed=1))
    view = cp.start_run("flights", months["2013-07"].sample(n=12000, seed=2), "2013-07")
    made = {d.agent: d for d in cp.store.list_rows(Decision, Decision.run_id == view.run_id)}
    return cp, view, made


def test_openai_compatible_server_drives_the_graph(
    server: str, tmp_path: Path, settings: Any, months: dict[str, pl.DataFrame], monkeypatch: Any
) -> None:
    cp, view, made = _july_run(server, tmp_path, months, monkeypatch)
    llm_made = [made[a] for a in ("ingestion", "drift_analyst", "optimizer", "retraining")]
    assert all(
        d.backend == "openai" and d.llm_model == "stub-model" and not d.fallback for d in llm_made
    )
    assert made["drift_analyst"].tokens_in == 2 * 321  # tool call round trip + decision
    assert json.loads(made["drift_analyst"].flags) == []  # cited the real weighted_share
    calls = [c.tool for c in cp.store.list_rows(ToolCall, ToolCall.run_id == view.run_id)]
    assert "llm:get_column_drift" in calls
    assert Stub.requests[0]["model"] == "stub-model"
    assert made["evaluator"].action == "promote" and not made["evaluator"].fallback
    assert made["cicd"].action == "risk:high"  # the LLM asked for high; a tier only goes up
    assert view.status == "waiting_approval"
    _assert_final_decisions_asked_for_their_schema()


def _requests_of(agent: str) -> list[dict[str, Any]]:
    return [r for r in Stub.requests if agent in r["messages"][0]["content"]]


def _assert_final_decisions_asked_for_their_schema() -> None:
    """Agents without tools ask for their decision constrained by its JSON schema, narrowed to
    the policy's bounds; the drift analyst's tool steps are not constrained."""
    (evaluation,) = _requests_of("evaluator agent")
    fmt = evaluation["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["name"] == "EvaluationVerdict"
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["action", "rationale"] and not schema["additionalProperties"]
    assert set(schema["properties"]["action"]["enum"]) <= {"promote", "reject"}
    assert schema["properties"]["rationale"]["maxLength"] == 200
    (plan,) = _requests_of("optimizer agent")
    trials = plan["response_format"]["json_schema"]["schema"]["properties"]["n_trials"]
    assert trials["type"] == "integer" and {"minimum", "maximum"} <= set(trials)
    (window,) = _requests_of("retraining agent")
    bounded = window["response_format"]["json_schema"]["schema"]["properties"]["window"]
    assert bounded["minimum"] >= 1 and bounded["maximum"] >= bounded["minimum"]
    # The tool step: tools in the prompt's text (not bound: the final call shares its prompt
    # prefix), answer cut short, no schema; the stub's native tool call was still run.
    drift = _requests_of("**drift analyst**")
    assert "get_column_drift" in drift[0]["messages"][0]["content"]
    assert "tools" not in drift[0] and "response_format" not in drift[0]
    assert drift[0]["max_completion_tokens"] == TOOL_STEP_TOKENS


def test_strict_openai_is_sent_the_subset_it_accepts(
    server: str, tmp_path: Path, settings: Any, months: dict[str, pl.DataFrame], monkeypatch: Any
) -> None:
    """OpenAI's strict mode refuses an optional property or a string length: every agent is
    sent the strict subset, and a citation written as null reads as one left out."""
    Stub.strict = True
    monkeypatch.setenv("DRIFTPILOT_LLM_SCHEMA_DIALECT", "openai-strict")
    _, view, made = _july_run(server, tmp_path, months, monkeypatch)
    assert Stub.refused == [] and view.status == "waiting_approval"
    assert set(made) >= {"ingestion", "drift_analyst", "optimizer", "retraining", "evaluator"}
    assert not any(d.fallback for d in made.values()), {a: d.flags for a, d in made.items()}
    asked = [r for r in Stub.requests if "response_format" in r]
    assert {r["response_format"]["json_schema"]["name"] for r in asked} >= {"EvaluationVerdict"}
    drift = made["drift_analyst"]
    assert list(json.loads(drift.evidence)["cited_metrics"]) == ["weighted_share"]
    assert json.loads(drift.flags) == []
    # What was sent passes the stub's check; the full schemas would have been refused.
    sent = _requests_of("evaluator agent")[0]["response_format"]["json_schema"]["schema"]
    assert strict_violations(sent) == []
    full = decision_schema(evaluator.verdict_schema(["promote", "reject"]))
    assert strict_violations(full) == ["$.properties.rationale: maxLength not supported"]
    citations = decision_schema(verdict_schema(["retrain"], {"weighted_share": 0.2, "temp": 1.0}))
    assert "$.properties.cited_metrics: every property must be required" in (
        strict_violations(citations)
    )
