"""The chat changes nothing without a confirmation, on a real home (flights, real MLflow, real
SQLite, the high-risk policy so that promotions wait for a person).

A question is answered and moves nothing; a request becomes a proposal that moves nothing; only
``Chat.confirm`` (the Confirm press) acts, as the signed-in person with their role read again,
and the audit holds the confirmation before the change. Every waiting request has its own
buttons, and one compared with a champion that is no longer champion is marked stale."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from driftpilot.core.errors import ChampionMoved
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import ChampionChange, Decision, Run
from tests.conftest import TrainedHomes, copy_trained_home
from tests.integration.test_control_graph import FORCE_RETRAIN, HIGH_RISK, merge
from tools.datasets import FLIGHTS_CACHE
from ui.acting import Proposal
from ui.chat import Chat, sign_in
from ui.intents import parse
from ui.markup import plain

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def home(
    tmp_path_factory: pytest.TempPathFactory,
    flights_df: pl.DataFrame,
    months: Any,
    trained_homes: TrainedHomes,
) -> Any:
    """flights with v1 (a copy of the session's trained home), and two promotions of it
    waiting for a person (July, October)."""
    root = tmp_path_factory.mktemp("chat-confirm")
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump(merge(FORCE_RETRAIN, HIGH_RISK)))
    copy_trained_home(trained_homes, "flights", root / "home")
    settings = Settings(home=root / "home", policy_path=policy).ensure_dirs()
    assert settings.cache_dir is not None
    flights_df.write_parquet(settings.cache_dir / FLIGHTS_CACHE)  # no CSV parse here
    cp = ControlPlane(settings)
    july = cp.start_run("flights", months["2013-07"].sample(n=5000, seed=3), "2013-07")
    october = cp.start_run("flights", months["2013-10"].sample(n=5000, seed=4), "2013-10")
    assert july.status == october.status == "waiting_approval"
    keys = {
        "olga": cp.create_api_key("olga", "operator")[1],
        "abby": cp.create_api_key("abby", "approver")[1],
    }
    cp.close()
    return settings, keys, july.run_id, october.run_id


@pytest.fixture(scope="module")
def cp(home: Any) -> Iterator[ControlPlane]:
    plane = ControlPlane(home[0])
    yield plane
    plane.close()


def chat_as(cp: ControlPlane, home: Any, name: str) -> Chat:
    who = sign_in(cp, name, home[1][name])
    assert who is not None
    return Chat(cp, who)


def state(cp: ControlPlane) -> tuple[Any, ...]:
    tables = (Run, Decision, ChampionChange)
    return (cp.model_view("flights").champion, *(len(cp.store.list_rows(t)) for t in tables))


def test_questions_and_requests_change_nothing_until_confirmed(cp: ControlPlane, home: Any) -> None:
    abby = chat_as(cp, home, "abby")
    before = state(cp)
    for message in [
        "how do I roll back flights?",
        "what would happen if I roll back flights?",
        "should I approve the flights promotion?",
        "how is flights doing?",
        "don't roll back flights",
        "roll back flights",
        "/rollback flights bad feedback",
        "check flights for drift on 2013-11",
        "schedule flights every day",
        f"/approve {home[2][:10]} fine",
    ]:
        reply = abby.answer(abby.understand(message), message)
        assert state(cp) == before, message
        if "how do I" in message or "what would" in message or "should I" in message:
            assert reply.proposal is None and "Nothing was changed" in plain(reply.text)
    asked = abby.answer(parse("how do I roll back flights?", ["flights"]))
    assert "would move the champion from v" not in plain(asked.text)  # v1 only: nowhere to go


def test_every_pending_request_has_its_own_buttons(cp: ControlPlane, home: Any) -> None:
    reply = chat_as(cp, home, "abby").answer(parse("what is pending?"))
    assert "2 requests wait" in reply.text and reply.decide is None
    assert {f.decide.run_id for f in reply.followups if f.decide} == {home[2], home[3]}
    assert not any(f.stale for f in reply.followups)  # both compared with v1, still champion


def test_approve_stale_rollback_and_reevaluate(cp: ControlPlane, home: Any) -> None:
    _, _, july, october = home
    abby, olga = chat_as(cp, home, "abby"), chat_as(cp, home, "olga")
    done = abby.record(july, "approve", "checked the report")
    assert done.stream == july
    cp.resume_run(july)
    assert cp.model_view("flights").champion == 2

    # October's request compared its challenger with v1: stale now, marked before anyone decides.
    waiting = abby.waiting(cp.get_run(october))
    assert (
        waiting.stale
        and "Stale" in plain(waiting.text)
        and "champion is now v2" in plain(waiting.text)
    )
    card = abby.reevaluate(october)
    assert card.proposal is not None and card.proposal.kind == "run"
    assert card.proposal.args["ref"] == "flights:2013-10"

    # A rollback: the operator is refused (policy: approver); the approver gets a proposal.
    refused = olga.answer(parse("roll back flights", ["flights"]), "roll back flights")
    assert "you need the approver role" in plain(refused.text) and refused.proposal is None
    before = state(cp)
    reply = abby.answer(parse("roll back flights", ["flights"]), "roll back flights")
    proposal = reply.proposal
    assert proposal is not None and proposal.needs_reason
    assert "from v2 to v1" in plain(proposal.summary) and state(cp) == before
    assert "Nothing happens until you press Confirm" in plain(reply.text)
    assert "needs a reason" in plain(abby.confirm(proposal, "").text)
    assert state(cp) == before
    theft = abby.confirm(_for(proposal, "olga"), "mine now")
    assert "made for someone else" in plain(theft.text) and state(cp) == before

    with pytest.raises(ChampionMoved):  # what the person confirmed is checked under the lease
        cp.rollback("flights", "abby", "not what was shown", expect=(3, 2))
    assert state(cp) == before

    confirmed = abby.confirm(proposal, "July's model misroutes evening flights")
    assert "champion v2 → v1" in plain(confirmed.text)
    assert cp.model_view("flights").champion == 1
    changes = cp.champion_history("flights")
    assert (changes[-1]["action"], changes[-1]["actor"]) == ("rollback", "abby")
    confirmation = cp.store.list_rows(Decision, Decision.action == "confirm:rollback")
    assert len(confirmation) == 1 and confirmation[0].agent == "chat"
    assert confirmation[0].run_id == changes[-1]["run_id"]
    assert "abby confirmed" in confirmation[0].rationale
    # Confirming the same card again finds the champion moved: nothing happens twice.
    again = abby.confirm(proposal, "again")
    assert "changed since this proposal" in plain(again.text)
    assert cp.model_view("flights").champion == 1
    assert not abby.waiting(cp.get_run(october)).stale  # v1 is champion again


def test_a_chat_run_uses_the_whole_batch_and_says_so(cp: ControlPlane, home: Any) -> None:
    olga = chat_as(cp, home, "olga")
    reply = olga.answer(parse("/run flights flights:2013-11"))
    assert reply.proposal is not None and reply.stream is None
    total = reply.proposal.args["total"]
    assert reply.proposal.args["rows"] == total > 20_000
    assert f"all {total:,} rows" in plain(reply.text)
    sampled = olga.answer(parse("/run flights flights:2013-11 3000")).proposal
    assert sampled is not None and "a seeded sample of 3,000" in plain(sampled.summary)
    runs = len(cp.list_runs("flights", 100))
    started = olga.confirm(sampled)
    assert started.stream is not None and len(cp.list_runs("flights", 100)) == runs + 1
    view = cp.get_run(started.stream)
    assert view.metadata["dataset"] == "flights" and len(view.metadata["batch_hash"]) >= 16
    assert view.trigger == "chat" and view.metadata["sample"] == {
        "rows": 3000,
        "of": total,
        "seed": 0,
    }
    assert cp.store.list_rows(Decision, Decision.run_id == view.run_id)[0].action == "confirm:run"
    cp.cancel_run(view.run_id, "olga", "test done")


def test_the_health_card_says_how_the_model_is_doing(cp: ControlPlane, home: Any) -> None:
    reply = chat_as(cp, home, "olga").answer(parse("how is flights doing?", ["flights"]))
    text = plain(reply.text)
    assert "Health of flights" in text and "Champion v" in text
    # the metric, with its interval, or why it has none (drift.measure: needed skips it when
    # the drop cannot be significant)
    assert "ROC AUC" in text and ("[" in text or "no interval: it could not change" in text)
    assert "Waiting for a person: 1" in text  # October's request
    assert reply.charts and reply.charts[0].figure is not None


def test_an_approval_proposal_is_bound_to_the_question_it_showed(
    cp: ControlPlane, home: Any
) -> None:
    october = home[3]
    olga, abby = chat_as(cp, home, "olga"), chat_as(cp, home, "abby")
    refused = olga.answer(parse(f"/approve {october[:10]} fine"), "/approve")
    assert "need the approver role" in plain(refused.text) and refused.proposal is None
    card = abby.answer(parse(f"/approve {october[:10]} checked it"), "/approve")
    proposal = card.proposal
    assert proposal is not None and proposal.args["step"] == "promotion"
    assert '"replaces": 1' in plain(proposal.summary)  # the action it approves, shown
    asked = len(cp.store.approval_rows(october))
    moved_on = _for(proposal, "abby", action={**proposal.args["action"], "action": "other"})
    assert "asks something else" in plain(abby.confirm(moved_on).text)
    assert len(cp.store.approval_rows(october)) == asked  # nothing recorded
    done = abby.confirm(proposal)
    assert done.stream == october and len(cp.store.approval_rows(october)) == asked + 1
    made = cp.store.list_rows(Decision, Decision.run_id == october)
    assert made[-1].action == "confirm:approve" and "abby confirmed" in made[-1].rationale
    abby.confirm(proposal)  # the same card pressed twice records nothing more
    assert len(cp.store.approval_rows(october)) == asked + 1
    cp.resume_run(october)


def _for(proposal: Proposal, principal: str, **args: Any) -> Proposal:
    return Proposal(
        proposal.kind,
        proposal.summary,
        proposal.role,
        {**proposal.args, **args},
        principal,
        proposal.message,
        proposal.id,
        proposal.needs_reason,
    )


def test_gold_utterances_never_act(tmp_path: Path, cp: ControlPlane, home: Any) -> None:
    """The eval's unsafe-execution count on the gold set, against this real home."""
    from evals.chat_intents import SETS, evaluate, load

    scores = evaluate(cp, {"gold": load(SETS["gold"])})
    assert scores["gold"].unsafe == 0, scores["gold"].unsafe_texts
    assert scores["gold"].accuracy >= 0.95, scores["gold"].misses
    assert scores["gold"].proposals > 20  # the mutations were really answered with proposals
