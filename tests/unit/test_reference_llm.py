"""The scripted reference chat model (evals.reference_llm): it reads the notes it is shown,
names their cause with the note's id, keeps to the policy's bounds, and otherwise answers as
the policy would; every other agent is deferred to the policy."""

import json
from typing import Any

from driftpilot.store.notes import NoteView, notes_block
from evals.reference_llm import DEFER, answer, note_cause, reference_backend

TEMPLATE = """{
  "action": <none | monitor | retrain>,
  "severity": <none | low | medium | high>,
  "cited_metrics": <1 to 3 metrics. Names: weighted_share>,
  "rationale": <Why.>,
  "cause": <pipeline_defect | expected_change | world_change | label_shift | unknown>,
  "cited_notes": <ids of the notes the cause rests on>
}"""


def _system(bounds: dict[str, Any]) -> str:
    return (
        "You are the **drift analyst** of DriftPilot.\n\n"
        f"Policy bounds: {json.dumps(bounds)}\n\n"
        f"When you are done, reply with ONE JSON object:\n{TEMPLATE}"
    )


BOUNDS = {
    "allowed": ["monitor", "retrain"],
    "default": "retrain",
    "severity": "high",
    "cause": "world_change",
    "by_cause": {"pipeline_defect": ["monitor"], "expected_change": ["monitor"]},
}


def _note(i: int, text: str) -> NoteView:
    from datetime import UTC, datetime

    moment = datetime(2030, 1, 4, 0, 30, tzinfo=UTC)
    return NoteView(
        id=i, model="m", text=text, at=moment, by="ops", created_at=moment, sha256="0" * 64
    )


def _verdict(notes: list[NoteView], bounds: dict[str, Any] = BOUNDS) -> dict[str, Any]:
    evidence = {"citable": {"weighted_share": 0.42, "metric_drop": 0.08}}
    if notes:
        evidence["notes"] = notes_block(notes)  # type: ignore[assignment]
    reply = answer([("system", _system(bounds)), ("human", "Evidence:\n" + json.dumps(evidence))])
    body = reply.removeprefix("```json\n").removesuffix("\n```")
    verdict: dict[str, Any] = json.loads(body)
    return verdict


def test_a_deploy_note_names_a_defect_and_stops_the_retrain() -> None:
    verdict = _verdict([_note(3, "Team lunch moved."), _note(7, "ETL release 4.2 switched temp")])
    assert verdict["cause"] == "pipeline_defect" and verdict["cited_notes"] == [7]
    assert verdict["action"] == "monitor"  # by_cause narrows: never train on broken data
    assert verdict["cited_metrics"] == {"weighted_share": 0.42, "metric_drop": 0.08}
    assert "weighted_share" in verdict["rationale"]


def test_a_campaign_note_reads_as_expected_and_watches() -> None:
    verdict = _verdict([_note(1, "Spring campaign, same as last year.")])
    assert verdict["cause"] == "expected_change" and verdict["action"] == "monitor"


def test_without_a_telling_note_it_answers_as_the_policy() -> None:
    for notes in ([], [_note(2, "Alice is on call this week instead of Bob.")]):
        verdict = _verdict(notes)
        assert verdict["cause"] == "world_change" and verdict["cited_notes"] == []
        assert verdict["action"] == "retrain" and verdict["severity"] == "high"


def test_a_cause_the_policy_does_not_let_be_named_is_not_named() -> None:
    verdict = _verdict([_note(4, "The share of delayed flights is up: prevalence moved.")])
    assert verdict["cause"] == "world_change" and verdict["action"] == "retrain"


def test_escaped_note_text_is_read_and_text_outside_notes_is_not() -> None:
    assert note_cause("a deploy happened, outside any note") is None
    assert note_cause('<note id="5" at="x">Deploy &amp; rollback of the ETL</note>') == (
        "pipeline_defect",
        [5],
    )


def test_other_agents_are_deferred_and_the_backend_speaks_langchain() -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    assert answer([("system", "You are the **evaluator**."), ("human", "{}")]) == DEFER
    backend = reference_backend()
    assert not backend.is_builtin and backend.name == "reference"
    assert backend.chat_model is not None
    reply = backend.chat_model.invoke(
        [SystemMessage(_system(BOUNDS)), HumanMessage('Evidence:\n{"citable": {}}')]
    )
    assert json.loads(reply.content.removeprefix("```json\n").removesuffix("\n```"))["action"]
    assert backend.chat_model.bind_tools([]) is backend.chat_model


def test_a_note_may_ask_to_watch_where_the_numbers_allowed_only_none() -> None:
    quiet = {
        "allowed": ["none"],
        "default": "none",
        "severity": "none",
        "cause": "unknown",
        "by_cause": {"unknown": ["none"], "pipeline_defect": ["monitor"]},
    }
    verdict = _verdict([_note(2, "Deployed a new encoder for temp.")], quiet)
    assert verdict["action"] == "monitor" and verdict["cause"] == "pipeline_defect"
