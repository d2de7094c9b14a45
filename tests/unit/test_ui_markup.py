"""Nothing a person reads is parsed as markup unless written as markup: every outcome, action
and actor string, and any text at all, reads back as itself through the chat's renderer."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftpilot.core.vocabulary import OUTCOMES, STATUSES, TRIGGERS
from driftpilot.runs.plane import RunView
from ui import health, markup

# What the agents and people write into the audit (actions, outcomes, actors).
STRINGS = [
    "tune:lightgbm",
    "tune:catboost",
    "risk:high",
    "risk:low",
    "policy:low-risk",
    "no_retrain:none",
    "no_retrain:monitor",
    "confirm:rollback",
    "retrain:window=3",
    "**bold** _it_ `code` <b>html</b> [link](http://x) | pipe",
    "ann\u200b :smile: :::note\nhidden",
    "1. not a list",
    "# not a heading",
    "- not a bullet",
    "&amp; &lt;",
    "$x^2$",
    *OUTCOMES,
    *OUTCOMES.values(),
    *STATUSES.values(),
    *TRIGGERS,
]

# A directive (remark-directive, which the chat's markdown uses) starts at an unescaped colon
# followed by a letter: "tune:lightgbm" once rendered as "tune".
DIRECTIVE = re.compile(r"(?<!\\):[A-Za-z{\[]")


def folded(value: str) -> str:
    return " ".join(value.split())


@pytest.mark.parametrize("value", STRINGS)
def test_each_known_string_reads_as_itself(value: str) -> None:
    shown = markup.text(value)
    assert markup.plain(shown) == folded(value)
    assert DIRECTIVE.search(shown) is None
    cell = "| a |\n|---|\n| " + markup.cell(value) + " |"
    assert markup.plain(cell) == "a " + folded(value)  # one cell: a "|" did not split it
    assert markup.plain(markup.code(value)) == folded(value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=80))
def test_any_text_reads_as_itself(value: str) -> None:
    shown = markup.text(value)
    assert markup.plain(shown) == folded(value).strip()
    assert DIRECTIVE.search(shown) is None


def test_a_health_card_shows_outcomes_and_actors_whole() -> None:
    """The chat's own table renderer, fed with every outcome and a hostile actor."""
    now = datetime.now(UTC).isoformat()
    views = [
        RunView(
            run_id=f"{i:032x}",
            model="flights",
            batch_id="2013-07",
            status="completed",
            outcome=outcome,
            requested_by="policy:low-risk",
            created_at=now,
            summary={},
            trigger="schedule",
        )
        for i, outcome in enumerate(OUTCOMES)
    ]
    shown = markup.plain("\n".join(health._runs_table(views)))
    for label in OUTCOMES.values():
        assert label in shown
    assert shown.count("policy:low-risk") == len(OUTCOMES)
