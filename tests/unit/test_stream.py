"""The stream runner's own logic (driftpilot/stream.py): what a waiting run is asked, in which
order its questions are answered, and how a stream is cut into a bootstrap and its runs.

The plane here is a recorder that plays a run's questions back (the control runs themselves
are the integration tests' and the demo test's); it keeps the calls the runner made."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from rich.console import Console

from driftpilot.runs.plane import ModelView, RunView
from driftpilot.stream import (
    Columns,
    Wait,
    answer_waits,
    leave_waiting,
    progress_bar,
    run_stream,
    wait_of,
)
from tools.datasets import FLIGHTS

ESCALATION = {"step": "escalation", "description": "Model m has had 2 batches quarantined..."}
PROMOTION = {"step": "promotion", "description": "Promote m v2...\nHigh risk because: x."}


def view(run_id: str, *, asks: dict[str, Any] | None, tier: str | None = None) -> RunView:
    return RunView(
        run_id=run_id,
        model="m",
        batch_id=f"batch-{run_id}",
        status="waiting_approval" if asks else "completed",
        outcome=None if asks else "promoted",
        requested_by="someone",
        created_at="2026-01-01",
        summary={"cicd": {"tier": tier, "reasons": ["max_divergence"]}} if tier else {},
        approval_request=asks,
    )


class Recorder:
    """A plane whose runs ask the questions given, one after the other."""

    def __init__(self, questions: list[tuple[dict[str, Any], str | None]]) -> None:
        self.questions = questions
        self.calls: list[tuple[Any, ...]] = []

    def _next(self, run_id: str) -> RunView:
        if not self.questions:
            return view(run_id, asks=None)
        asks, tier = self.questions.pop(0)
        return view(run_id, asks=asks, tier=tier)

    def add_model(self, name: str, initial: pl.DataFrame, **kwargs: Any) -> ModelView:
        self.calls.append(("add", name, initial.height, kwargs))
        return ModelView(
            name=name,
            target=kwargs["target"],
            family=kwargs["family"],
            metric="roc_auc",
            champion=1,
            baseline=0.7,
            features=[],
        )

    def start_run(self, model: str, frame: pl.DataFrame, batch_id: str, **kwargs: Any) -> RunView:
        self.calls.append(("run", model, batch_id, frame.height, kwargs))
        return self._next(batch_id)

    def decide(
        self, run_id: str, decision: str, approver: str, comment: str, *, step: str
    ) -> RunView:
        self.calls.append(("decide", run_id, decision, approver, step))
        return self._next(run_id)


def test_a_waiting_run_says_why_it_waits() -> None:
    escalation = wait_of(view("r1", asks=ESCALATION))
    assert escalation is not None and escalation.step == "escalation"
    assert "escalated" in escalation.headline and "promotion" not in escalation.headline
    assert escalation.tier is None and escalation.description == ESCALATION["description"]
    promotion = wait_of(view("r2", asks=PROMOTION, tier="high"))
    assert promotion is not None and promotion.step == "promotion"
    assert promotion.headline == "High-risk promotion waits for a person"
    assert promotion.reasons == ("max_divergence",)
    assert wait_of(view("r3", asks=None)) is None


def test_both_questions_are_answered_in_turn_with_their_step() -> None:
    plane = Recorder([(PROMOTION, "high")])  # after the escalation's answer: the promotion
    seen: list[str] = []

    def approve(wait: Wait) -> tuple[str, str, str]:
        seen.append(wait.step)
        return "approve", "bob", "ok"

    ended, asked = answer_waits(plane, view("r1", asks=ESCALATION), approve)  # type: ignore[arg-type]
    assert seen == ["escalation", "promotion"] and [w.step for w in asked] == seen
    assert [c[4] for c in plane.calls] == ["escalation", "promotion"]  # each bound to its step
    assert ended.status == "completed"


def test_a_run_left_waiting_is_not_decided() -> None:
    plane = Recorder([])
    ended, asked = answer_waits(plane, view("r1", asks=PROMOTION, tier="high"), leave_waiting)  # type: ignore[arg-type]
    assert ended.status == "waiting_approval" and len(asked) == 1 and plane.calls == []


def test_the_stream_trains_on_the_initial_batches_and_runs_the_rest_in_order() -> None:
    batches = [(f"b{i}", pl.DataFrame({"x": list(range(i + 1))})) for i in range(5)]
    plane = Recorder([(PROMOTION, "high")])  # the first run waits once
    columns = Columns.builtin("flights", source=True)
    with progress_bar(None) as progress:
        stream = run_stream(
            plane,  # type: ignore[arg-type]
            "m",
            columns,
            batches,
            trigger="eval",
            requester="ev",
            answer=lambda w: ("reject", "bob", "no"),
            initial=2,
            progress=progress,
        )
        assert progress.tasks[0].completed == 3
    add = plane.calls[0]
    assert add[:3] == ("add", "m", 1 + 2)  # the first two batches, concatenated
    assert add[3]["source"] == "flights" and add[3]["principal"] == "ev"
    assert add[3]["numeric"] == FLIGHTS.numeric and add[3]["target"] == FLIGHTS.target
    assert add[3]["task"] == "binary"  # the dataset's task, said, not left to inference
    assert [r.index for r in stream.runs] == [2, 3, 4]
    assert [r.batch_id for r in stream.runs] == ["b2", "b3", "b4"]
    assert [len(r.waits) for r in stream.runs] == [1, 0, 0]
    assert ("decide", "b2", "reject", "bob", "promotion") in plane.calls
    assert stream.model.champion == 1 and stream.bootstrap_s >= 0
    with pytest.raises(ValueError, match="need more than"):
        run_stream(plane, "m", columns, batches[:2], trigger="t", requester="r", initial=2)  # type: ignore[arg-type]


def test_builtin_columns() -> None:
    assert Columns.builtin("flights").source == ""
    assert Columns.builtin("flights").categorical == FLIGHTS.categorical
    assert Columns.builtin("flights_delay").task == "regression"
    assert Columns.builtin("flights_delay_class").task == "multiclass"
    with pytest.raises(ValueError, match="unknown dataset"):
        Columns.builtin("nope")
    assert progress_bar(Console()).disable is False and progress_bar(None).disable is True


def test_the_demo_names_the_question_a_run_waits_on() -> None:
    from driftpilot.demo import _answerer

    console = Console(record=True, width=200)
    escalation = wait_of(view("r1", asks=ESCALATION))
    promotion = wait_of(view("r2", asks=PROMOTION, tier="high"))
    assert escalation is not None and promotion is not None
    assert _answerer(console, None, "carol", False)(escalation) == (
        "approve",
        "carol",
        "approved with --approve-as in the demo",
    )
    assert _answerer(console, None, None, False)(promotion) is None  # left waiting
    text = console.export_text()
    first, second = text.split("(--approve-as).")
    assert "Quarantine streak escalated" in first and "High-risk" not in first
    assert "High-risk promotion waits for a person" in second
    assert "driftpilot approve r2 --as NAME" in text
