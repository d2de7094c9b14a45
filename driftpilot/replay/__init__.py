"""What-if replay: re-decide a past control run under another policy or LLM, as a dry run.

A replay forks the run's LangGraph thread (time travel): it reads the run's checkpoints, takes
the one where the run's input stood before the first agent (``next == ("ingestion",)``), and
seeds a fresh thread in an in-memory checkpointer with its values. That thread runs the control
graph's own wiring, routers included (``graphs.control.build_control_graph``), with nodes that
re-decide from the evidence the original run had, under the replay's policy and LLM backend,
each with the agent's own pure ``decide`` (``driftpilot.replay.nodes``; the evidence is read
by ``driftpilot.replay.record``):

- the checkpointed state: the batch, the tool results each agent left in its slice, the
  recorded evaluation of the challenger (nothing is measured, trained or scored again);
- the audit record of what each agent was shown (its decision's evidence).

Where the original run stopped before the replay would go on, the evidence ends and the replay
pauses there, as the real graph pauses for an approval (a LangGraph ``interrupt``), saying what
is unknown: ``would_retrain`` (no challenger was trained), ``would_recalibrate`` (no
calibration map was fitted), ``would_accept`` (a batch the run quarantined was never analysed)
or ``waiting_approval`` (a high tier nobody answered). Runs recorded before issue 21 hold no
cause, label shift numbers, past runs or notes in their drift record: their replay reads no
label shift, no seasonality, no episode and no notes.

Why nothing is written, by construction:

- the real checkpointer is opened read-only (SQLite ``mode=ro``; on PostgreSQL, sessions with
  ``default_transaction_read_only``) and only read; the fork lives
  in an ``InMemorySaver`` that is dropped with the replay;
- the replay's ``RunContext`` holds a sealed store that raises on any use, and every node of
  the graph is replaced (checked after compiling), so no agent code can reach the audit
  database (no decision, tool call, effect or lease) or MLflow (no registration, no alias move);
- what the replay reads of the audit database goes through read transactions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from agents.context import RunContext
from driftpilot.core.errors import NotFound, PolicyViolation, RunStateError
from driftpilot.core.llm import Backend, make_backend
from driftpilot.core.policy import Policy
from driftpilot.core.settings import Settings
from driftpilot.replay.nodes import REPLAY_NODES, ReplayNode
from driftpilot.replay.record import REPLAYABLE, Evidence, _sealed_context, gather
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import ManagedModel, Run
from graphs.control import build_control_graph

__all__ = [
    "REPLAYABLE",
    "REPLAY_NODES",
    "Evidence",
    "ReplayReport",
    "ReplaySummary",
    "StepDiff",
    "WhatIf",
    "_sealed_context",
    "findings",
    "gather",
    "replay_evidence",
    "replay_model",
    "replay_run",
    "what_if",
]

# (agent, the state slice it writes), in flow order: the rows of the comparison.
STEPS = (
    ("ingestion", "ingestion"),
    ("escalation", "escalation"),
    ("drift_analyst", "drift"),
    ("optimizer", "optimizer"),
    ("retraining", "retraining"),
    ("evaluator", "evaluation"),
    ("cicd", "cicd"),
    ("approval", "approval"),
    ("promote", "promotion"),
)
# How a replay that paused where the evidence ends shows that step.
PAUSED = {
    "waiting_approval": "waiting",
    "would_retrain": "would run: challenger unknown",
    "would_recalibrate": "would recalibrate: calibrated champion unknown",
    "would_accept": "would run: never analysed",
}
# Nodes whose slice is another step's: a recalibration writes the retraining slice.
STEP_OF = {"recalibrate": "retraining"}


# -- what the replay re-decides under -------------------------------------------------------


@dataclass(frozen=True)
class WhatIf:
    """The policy and LLM backend a replay re-decides under, and where the policy came from."""

    policy: Policy
    backend: Backend
    policy_source: str


def what_if(settings: Settings, policy_path: Path | None, llm: str | None) -> WhatIf:
    """The replay's conditions: the policy file and LLM spec given, else the configured ones.

    Raises:
        ConfigError: the policy file cannot be read or is invalid; the LLM spec is unknown.
    """
    policy = Policy.load(policy_path or settings.policy_path)
    source = str(policy_path or settings.policy_path or "shipped defaults")
    return WhatIf(policy, make_backend(llm or settings.llm, settings), source)


# -- the result ------------------------------------------------------------------------------


class StepDiff(BaseModel):
    """One agent's decision in the original run and in the replay."""

    agent: str
    original: str | None = Field(description="What the run decided (None: not reached).")
    replayed: str | None = Field(description="What the replay decided (None: not reached).")
    differs: bool
    rationale: str = Field("", description="The replayed decision's rationale.")
    fallback: bool = Field(False, description="The replay's LLM failed: the policy decided.")
    notes: list[str] = Field(default_factory=list, description="Evidence reused as recorded.")


class ReplayReport(BaseModel):
    """A what-if replay of one run: per agent, the original and the replayed decision."""

    run_id: str
    model: str
    batch_id: str
    created_at: str
    policy: str = Field(description="The policy file the replay decided under.")
    backend: str = Field(description="The LLM backend the replay decided with.")
    forked_from: str = Field(description="The run's checkpoint the replay forked.")
    steps: list[StepDiff]
    original_outcome: str
    replayed_outcome: str
    stopped: str | None = Field(None, description="Why the replay paused short of a report.")
    findings: list[str] = Field(description="What the other policy or LLM would have changed.")

    @property
    def outcome_differs(self) -> bool:
        return self.original_outcome != self.replayed_outcome


class ReplaySummary(BaseModel):
    """What-if replays of a model's recent runs."""

    model: str
    policy: str
    backend: str
    runs: list[ReplayReport] = Field(description="Newest first.")
    changed: int = Field(description="Runs whose outcome would differ.")
    findings: dict[str, int] = Field(description="How many runs each finding applies to.")
    skipped: dict[str, str] = Field(
        default_factory=dict, description="Runs that cannot be replayed, with the reason."
    )


# -- replaying -----------------------------------------------------------------------------


def replay_run(plane: ControlPlane, run_id: str, scenario: WhatIf) -> ReplayReport:
    """Re-decide one run under ``scenario``, dry-run, and compare it with the original.

    Raises:
        NotFound: no such run, or it has no checkpoints.
        RunStateError: the run is not completed nor waiting for approval, or its record lacks
            evidence an agent needs.
    """
    return replay_evidence(plane.settings, gather(plane, run_id), scenario)


def replay_evidence(settings: Settings, ev: Evidence, scenario: WhatIf) -> ReplayReport:
    """Re-decide a run from its evidence (``gather``, or ``Evidence.from_record``) under
    ``scenario``, dry-run, and compare it with the original."""
    ctx = _sealed_context(settings, scenario.policy, scenario.backend)
    nodes = {name: _bound(fn, ev) for name, fn in REPLAY_NODES.items()}
    graph = build_control_graph(InMemorySaver(), nodes=nodes)
    # Every node is a replay node: no agent of the real graph can run in a replay.
    if set(graph.nodes) - {START} != set(nodes):
        raise PolicyViolation("a node of the control graph has no replay node")
    config = {"configurable": {"thread_id": f"replay-{ev.run.id}"}}
    graph.update_state(config, ev.fork_values, as_node=START)  # the fork: before ingestion
    graph.invoke(None, config, context=ctx)
    return _compare(ev, graph.get_state(config), scenario)


def _bound(fn: ReplayNode, ev: Evidence) -> Callable[..., dict[str, Any]]:
    """A replay node as a graph node: the sealed context from the runtime, the run's evidence
    bound."""

    def node(state: dict[str, Any], runtime: Runtime[RunContext]) -> dict[str, Any]:
        return fn(state, runtime.context, ev)

    return node


def replay_model(plane: ControlPlane, model: str, last: int, scenario: WhatIf) -> ReplaySummary:
    """Replay a model's ``last`` completed or waiting runs (newest first) and sum up what
    would have changed. A run whose record cannot be replayed is listed with the reason.

    Raises:
        NotFound: no such model.
    """
    plane.store.get(ManagedModel, model)
    runs = plane.store.list_rows(
        Run,
        Run.model == model,
        Run.status.in_(REPLAYABLE),
        order=Run.created_at.desc(),
        limit=last,
    )
    reports: list[ReplayReport] = []
    skipped: dict[str, str] = {}
    for run in runs:
        try:
            reports.append(replay_run(plane, run.id, scenario))
        except (NotFound, RunStateError) as exc:  # reported per run, the others still count
            skipped[run.id] = str(exc)
    counts = Counter(finding for report in reports for finding in report.findings)
    return ReplaySummary(
        model=model,
        policy=scenario.policy_source,
        backend=_backend_name(scenario.backend),
        runs=reports,
        changed=sum(r.outcome_differs for r in reports),
        findings=dict(counts),
        skipped=skipped,
    )


def _backend_name(backend: Backend) -> str:
    return "builtin" if backend.is_builtin else f"{backend.name}:{backend.model_name}"


# -- comparing -------------------------------------------------------------------------------


def _label(key: str, piece: dict[str, Any] | None) -> str | None:
    """A decision as one short label: action, tier or route."""
    if piece is None:
        return None
    labels: dict[str, Callable[[dict[str, Any]], str]] = {
        "ingestion": lambda s: s["action"],
        "escalation": lambda s: f"{s['decision']} by {s['approver']}",
        "drift": lambda s: f"{s['action']} ({s['severity']})",
        "optimizer": lambda s: f"tune:{s['family']} x{s['n_trials']}",
        "retraining": lambda s: f"train:{s['window']}",
        "evaluation": lambda s: s["action"],
        "cicd": lambda s: f"risk:{s['tier']}",
        "approval": lambda s: f"{s['decision']} by {s['approver']}",
        "promotion": lambda s: s["status"],
    }
    return labels[key](piece)


def _compare(ev: Evidence, snapshot: Any, scenario: WhatIf) -> ReplayReport:
    """Line up the original run's decisions with the replay's, step by step."""
    values = snapshot.values
    pause = next((i.value for task in snapshot.tasks for i in task.interrupts), None)
    waiting = ev.run.status == "waiting_approval"
    steps = []
    for agent, key in STEPS:
        original = _label(key, ev.final.get(key))
        if original is None and waiting and agent == "approval":
            original = PAUSED["waiting_approval"]
        replayed = _label(key, values.get(key))
        if pause is not None and STEP_OF.get(pause["node"], pause["node"]) == agent:
            replayed = PAUSED[pause["outcome"]]
        if original is None and replayed is None:
            continue
        meta = (values.get(key) or {}).get("replay", {})
        steps.append(
            StepDiff(
                agent=agent,
                original=original,
                replayed=replayed,
                differs=original != replayed,
                rationale=meta.get("rationale", ""),
                fallback=meta.get("fallback", False),
                notes=meta.get("notes", []),
            )
        )
    return ReplayReport(
        run_id=ev.run.id,
        model=ev.run.model,
        batch_id=ev.run.batch_id,
        created_at=ev.run.created_at,
        policy=scenario.policy_source,
        backend=_backend_name(scenario.backend),
        forked_from=ev.fork_id,
        steps=steps,
        original_outcome=ev.run.outcome or ev.run.status,
        replayed_outcome=values.get("outcome") or (pause or {}).get("outcome", "unknown"),
        stopped=pause["why"] if pause else None,
        findings=findings(ev.final, values),
    )


def findings(original: dict[str, Any], replayed: dict[str, Any]) -> list[str]:
    """What the replay would have done differently, in words people count across runs."""

    def pair(key: str, field: str) -> tuple[Any, Any]:
        return (original.get(key) or {}).get(field), (replayed.get(key) or {}).get(field)

    out = []
    was, now = pair("ingestion", "action")
    if was and now and was != now:
        out.append("would have accepted the batch" if now == "accept" else "would have quarantined")
    was, now = pair("drift", "action")
    if now == "retrain" and was != "retrain":
        out.append("would have retrained")
    if was == "retrain" and now not in (None, "retrain"):
        out.append("would not have retrained")
    was, now = pair("evaluation", "action")
    if was and now and was != now:
        out.append(f"challenger would have been {'accepted' if now == 'promote' else 'rejected'}")
    was, now = pair("cicd", "tier")
    if was and now and was != now:
        out.append(
            "promotion would have needed approval"
            if now == "high"
            else "promotion would not have needed approval"
        )
    return out
