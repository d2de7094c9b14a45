"""One champion move, written once: the ``champion`` alias moved under a write-ahead intent,
then its records (the champion history, the managed model's reference and baseline, the
decision, the step's effect).

Bootstrap (the first champion), promotion (CI/CD, a compare-and-swap on the champion the
challenger beat) and rollback (back to the previous champion) all move the champion here:

1. the alias move, written ahead by the caller's ``mutate`` (an ``intent`` row, the audited
   registry call, then ``applied``, or ``reconciled`` on a replay: the crash-recovery
   intents that ``recover`` and ``verify`` read);
2. the champion history row, once per run and kind (a replay after it and before the effect
   does not add a second);
3. the managed model's fields that follow the champion (reference window, baseline);
4. the decision row (agent ``bootstrap`` or ``cicd``, action ``promote`` or ``rollback``);
5. the step's effect, last: a caller that finds it returns it instead of moving again.

The write-ahead is the caller's (``agents.context.RunContext.mutate``, one implementation for
every registry mutation): tools sit below agents, so it is passed in as a ``WriteAhead``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from driftpilot.core.settings import Settings
from driftpilot.store import AuditStore
from driftpilot.store.models import ChampionChange, Decision
from tools import registry

R = TypeVar("R")
Kind = Literal["bootstrap", "promote", "rollback"]
# The audit's agent and step (the write-ahead step, the decision's action, the step effect)
# of each kind of move.
AGENT: dict[Kind, str] = {"bootstrap": "bootstrap", "promote": "cicd", "rollback": "cicd"}
STEP: dict[Kind, Literal["promote", "rollback"]] = {
    "bootstrap": "promote",
    "promote": "promote",
    "rollback": "rollback",
}


class WriteAhead(Protocol):
    """What a champion move needs from its caller (``agents.context.RunContext`` is one)."""

    @property
    def store(self) -> AuditStore: ...

    @property
    def settings(self) -> Settings: ...

    def mutate(
        self,
        run_id: str,
        agent: str,
        step: str,
        tool: str,
        fn: Callable[[], R],
        args: dict[str, Any],
        summarize: Callable[[R], Any] = ...,
        *,
        fault: str = "",
    ) -> R: ...


@dataclass(frozen=True)
class Record:
    """What a champion move writes once the alias has moved (its caller's account of it)."""

    version: int  # the champion now
    previous: int | None  # the champion it replaced (None: there was none)
    model_fields: dict[str, Any]  # the managed model's fields that follow the champion
    rationale: str  # the decision row's
    evidence: dict[str, Any]  # the decision row's
    effect: dict[str, Any]  # the step's result, recorded last


Settle = Callable[[registry.PromotionResult], Record]


def promote(
    ctx: WriteAhead,
    run_id: str,
    model: str,
    version: int,
    *,
    expected: int | None,
    actor: str,
    settle: Settle,
    kind: Literal["bootstrap", "promote"] = "promote",
    generation: int | None = None,
    fault: str = "",
) -> dict[str, Any]:
    """Make ``version`` the champion of ``model`` if the champion is still ``expected`` (a
    compare-and-swap: None means no champion yet), and record it. ``generation`` (the
    champion generation the run saw) goes into the intent, so that a replay can tell the
    champion changed hands meanwhile. Returns the effect.

    Raises:
        ChampionMoved: the champion is no longer ``expected`` (nothing is recorded but the
            intent and the failed tool call).
    """
    args: dict[str, Any] = {"name": model, "version": version, "expected": expected}
    if generation is not None:
        args["generation"] = generation
    return _move(
        ctx,
        kind,
        run_id,
        model,
        actor,
        lambda: registry.promote(model, version, ctx.settings, expected=expected),
        args,
        settle,
        fault,
    )


def rollback(
    ctx: WriteAhead,
    op_id: str,
    model: str,
    plan: tuple[int, int],
    *,
    actor: str,
    settle: Settle,
    fault: str = "",
) -> dict[str, Any]:
    """Move the champion of ``model`` back, ``plan`` = (from, to), idempotent per ``op_id``
    (the registry keeps the rollback's key), and record it. Returns the effect.

    Raises:
        RegistryError: there is no previous champion.
    """
    args = {"name": model, "from": plan[0], "to": plan[1], "by": actor}
    return _move(
        ctx,
        "rollback",
        op_id,
        model,
        actor,
        lambda: registry.rollback(model, op_id, ctx.settings, plan=plan),
        args,
        settle,
        fault,
    )


def _move(
    ctx: WriteAhead,
    kind: Kind,
    run_id: str,
    model: str,
    actor: str,
    alias: Callable[[], registry.PromotionResult],
    args: dict[str, Any],
    settle: Settle,
    fault: str,
) -> dict[str, Any]:
    agent, step = AGENT[kind], STEP[kind]
    store = ctx.store
    done = store.effect(run_id, step)
    if done is not None:  # moved and recorded already: a replay writes nothing again
        return done
    moved = ctx.mutate(
        run_id,
        agent,
        step,
        f"registry.{step}",
        alias,
        args,
        lambda r: r.model_dump(),
        fault=fault,
    )
    record = settle(moved)
    # A replay after a crash between these records and the effect must not chain a second
    # history row or a second decision: each is written only if this run has none yet.
    if not store.list_rows(
        ChampionChange, ChampionChange.run_id == run_id, ChampionChange.action == kind
    ):
        store.record_champion(model, record.version, record.previous, kind, run_id, actor)
    store.update_model(model, **record.model_fields)
    if not store.list_rows(
        Decision, Decision.run_id == run_id, Decision.agent == agent, Decision.action == step
    ):
        # As RunContext.record writes a decision reached without an LLM (backend "none").
        store.record_decision(
            run_id, agent, step, record.rationale, record.evidence, backend="none"
        )
    store.record_effect(run_id, step, record.effect)
    return record.effect
