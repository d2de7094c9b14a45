"""What-if replay: re-decide a past control run under another policy or LLM, as a dry run.

A replay forks the run's LangGraph thread (time travel): it reads the run's checkpoints, takes
the one where the run's input stood before the first agent (``next == ("ingestion",)``), and
seeds a fresh thread in an in-memory checkpointer with its values. That thread runs the control
graph's own wiring, routers included (``graphs.control.build_control_graph``), with nodes that
re-decide from the evidence the original run had, under the replay's policy and LLM backend:

- the checkpointed state: the batch, the tool results each agent left in its slice, the
  recorded evaluation of the challenger (nothing is measured, trained or scored again);
- the audit record of what each agent was shown (its decision's evidence).

Where the original run stopped before the replay would go on, the evidence ends and the replay
pauses there, as the real graph pauses for an approval (a LangGraph ``interrupt``), saying what
is unknown: ``would_retrain`` (no challenger was trained), ``would_accept`` (a batch the run
quarantined was never analysed) or ``waiting_approval`` (a high tier nobody answered).

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

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, cast

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START
from langgraph.types import interrupt
from pydantic import BaseModel, Field

from agents import cicd, evaluator, ingestion, retraining
from agents.base import AgentTool, Outcome
from agents.cicd import policy_decision, risk_inputs
from agents.context import RunContext
from agents.drift_analyst import DriftVerdict, drift_evidence, verdict_schema
from agents.evaluator import EvaluationVerdict
from agents.ingestion import IngestionDecision
from agents.optimizer import default_plan, plan_check, plan_schema
from agents.retraining import RetrainPlan
from driftpilot.core.errors import LLMError, NotFound, PolicyViolation, RunStateError
from driftpilot.core.llm import Backend, make_backend
from driftpilot.core.policy import Policy, RiskInputs
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.checkpointer import open_checkpointer
from driftpilot.store.models import ManagedModel, Run
from graphs.control import build_control_graph, run_outcome
from graphs.state import ControlState
from tools.evaluate import Comparison

REPLAYABLE = ("completed", "waiting_approval")  # a run that finished, or paused for a person
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
    "would_accept": "would run: never analysed",
}


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


# -- the evidence of the original run ---------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What the original run knew, read once: its checkpoints and its audit rows."""

    run: Run
    fork_id: str
    fork_values: dict[str, Any]
    final: dict[str, Any]
    shown: dict[str, dict[str, Any]]  # agent -> the evidence its first decision recorded
    tool_results: dict[str, Any]  # tool -> result of its first successful call
    tool_args: dict[str, Any]  # tool -> arguments of that call

    def recorded(self, agent: str, keys: Sequence[str]) -> dict[str, Any]:
        """The part of what ``agent`` was shown that it is shown again (the audit record also
        holds what only people see, e.g. report paths).

        Raises:
            RunStateError: the run's record of that decision lacks one of ``keys``.
        """
        shown = self.shown.get(agent, {})
        missing = [k for k in keys if k not in shown]
        if missing:
            raise RunStateError(
                f"run {self.run.id[:12]}: the recorded {agent} decision lacks {missing}; "
                "the run cannot be replayed"
            )
        return {k: shown[k] for k in keys}


def gather(plane: ControlPlane, run_id: str) -> Evidence:
    """Read a run's evidence: its row, its checkpoint history (read-only) and its audit rows.

    Raises:
        NotFound: no such run, or the run has no checkpoints.
        RunStateError: the run is neither completed nor waiting for approval.
    """
    run = plane.store.get(Run, run_id)
    if run.status not in REPLAYABLE:
        raise RunStateError(
            f"run {run_id[:12]} is {run.status}: only completed runs and runs waiting for "
            "approval can be replayed"
        )
    history = _history(plane.settings, run_id)
    fork = next((s for s in history if tuple(s.next) == ("ingestion",)), None)
    if fork is None:
        raise NotFound(f"run {run_id[:12]} has no checkpoint before its first agent")
    shown: dict[str, dict[str, Any]] = {}
    results: dict[str, Any] = {}
    args: dict[str, Any] = {}
    for row in plane.audit(run_id):
        if row["table"] == "decisions":
            shown.setdefault(row["agent"], json.loads(row["evidence"]))
        elif row["table"] == "tool_calls" and row["ok"] and row["tool"] not in results:
            results[row["tool"]] = json.loads(row["result"])
            args[row["tool"]] = json.loads(row["args"])
    return Evidence(
        run=run,
        fork_id=fork.config["configurable"]["checkpoint_id"],
        fork_values=dict(fork.values),
        final=dict(history[0].values),
        shown=shown,
        tool_results=results,
        tool_args=args,
    )


def _history(settings: Settings, run_id: str) -> list[Any]:
    """The run's checkpoints, newest first, read through a read-only checkpointer (a write
    through it fails), with the control graph as the reader (nodes never run)."""
    checkpoints = open_checkpointer(settings, read_only=True)
    try:
        reader = build_control_graph(None, _sealed_context(settings), checkpoints.saver)
        return list(reader.get_state_history({"configurable": {"thread_id": run_id}}))
    finally:
        checkpoints.close()


class _SealedStore:
    """Stands in for the audit store in a replay: any use raises, so nothing a replay runs
    can write a decision, a tool call, an effect or a lease, or reach MLflow through a node.
    A PolicyViolation, not a RunStateError: it is a bug to fix, never a run to skip."""

    def __getattr__(self, name: str) -> NoReturn:
        raise PolicyViolation(f"a what-if replay must not use the audit store (tried {name!r})")


def _sealed_context(
    settings: Settings, policy: Policy | None = None, backend: Backend | None = None
) -> RunContext:
    sealed: Any = _SealedStore()
    return RunContext(settings, sealed, policy or Policy(), backend or Backend("", "", None))


# -- replay nodes: re-decide from the evidence -----------------------------------------------


def _evidence_ends(node: str, outcome: str, why: str) -> NoReturn:
    """Pause the replay: the original run never got this far, so nothing is known to
    re-decide from. A replay is never resumed."""
    interrupt({"node": node, "outcome": outcome, "why": why})
    raise RunStateError("a what-if replay cannot be resumed")


def _meta(outcome: Outcome[Any], rationale: str, notes: Sequence[str] = ()) -> dict[str, Any]:
    """How a replayed decision was reached (kept in its slice, for the report)."""
    return {"rationale": rationale, "fallback": outcome.fallback, "notes": list(notes)}


def _within(field: str, allowed: Sequence[str]) -> Callable[[BaseModel], None]:
    """A decision check: ``field`` must be one of the policy's ``allowed`` values."""

    def check(decision: BaseModel) -> None:
        value = getattr(decision, field)
        if value not in allowed:
            raise LLMError(f"{field} {value!r} not allowed; allowed: {list(allowed)}")

    return check


def _ingestion(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    shown = ev.recorded("ingestion", ("verdict", "errors"))
    ok = bool(shown["verdict"]["ok"])
    allowed = ctx.policy.ingestion_allowed(ok)
    original = ev.final["ingestion"]
    reason = original.get("reason") or "; ".join(shown["errors"])
    fallback = IngestionDecision(
        action="accept" if ok else "quarantine",
        reason="" if ok else reason,
        rationale=f"Quality checks {'passed' if ok else 'failed: ' + reason}: "
        f"the policy allows {allowed}.",
    )
    issues = shown["verdict"].get("issues", [])

    def list_quality_issues() -> list[dict[str, Any]]:
        """Every quality finding of the batch: check, severity, column, value, message."""
        return list(issues)

    outcome = ctx.decide(
        "ingestion",
        ingestion.decision_schema_for(allowed),
        shown,
        {"allowed": allowed},
        fallback,
        check=_within("action", allowed),
        tools=[AgentTool("list_quality_issues", list_quality_issues)],
    )
    decision = outcome.decision
    meta = _meta(outcome, decision.rationale)
    action: str = decision.action
    if action == "quarantine" and ev.final.get("escalation") is not None:
        action = "escalate"  # the run put this batch to a person: so does its replay
    return {"ingestion": {**original, "action": action, "replay": meta}}


def _escalation(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    answer = ev.final.get("escalation")
    if answer is None:
        _evidence_ends(
            "escalation",
            "waiting_approval",
            "the batch was put to a person and nobody answered in the run: it would wait",
        )
    note = f"the recorded answer is reused: {answer['decision']} by {answer['approver']}"
    update: dict[str, Any] = {
        "escalation": {**answer, "replay": {"rationale": note, "fallback": False, "notes": []}}
    }
    if answer.get("accepted"):
        update["ingestion"] = {**state["ingestion"], "action": "accept"}
    return update


def _drift_tools(ev: Evidence) -> list[AgentTool]:
    """The analyst's read-only tools, answering from the recorded effect sizes and tests."""
    effects = (ev.tool_results.get("shift.effect_sizes") or {}).get("columns", [])
    tests = (ev.tool_results.get("drift.data_drift") or {}).get("columns", [])

    def get_column_drift(column: str) -> dict[str, Any]:
        """One column's effect size (measure, value, threshold, material, importance) and
        Evidently's test on it (method, score, threshold, drifted)."""
        effect = next((c for c in effects if c.get("column") == column), None)
        test = next((c for c in tests if c.get("column") == column), None)
        if effect is None and test is None:
            return {"error": f"no column {column!r}"}
        return {"effect": effect, "evidently": test}

    def list_drifted_columns() -> list[str]:
        """Columns that shifted materially (effect size at or above its threshold), most
        shifted first."""
        return [c["column"] for c in effects if c.get("material")]

    return [
        AgentTool("get_column_drift", get_column_drift),
        AgentTool("list_drifted_columns", list_drifted_columns),
    ]


def _drift(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    """Re-decide from the recorded measurements. The effect sizes were judged material at the
    recorded run's thresholds: the replay reuses the weighted share as measured."""
    if "drift" not in ev.final:
        _evidence_ends(
            "drift_analyst",
            "would_accept",
            "the replay accepts a batch the run quarantined: its drift was never analysed",
        )
    keys = ("weighted_share", "material_share", "shifted_columns", "domain_classifier")
    shown = ev.recorded("drift_analyst", (*keys, "evidently", "performance", "history"))
    perf = shown["performance"]
    bounds = ctx.policy.drift_bounds(
        drift_evidence(shown["weighted_share"], perf, shown["history"])
    )
    shown["signals"] = bounds.signals  # the agent is shown the signals of the policy in force
    # As agents.drift_analyst: a batch with no testable column is watched, never drift-free.
    nothing = shown["evidently"]["n_tested"] == 0 and not shown["shifted_columns"]
    action = "monitor" if nothing and "monitor" in bounds.allowed else bounds.default
    signals = "; ".join(bounds.signals) or "no signal"
    fallback = DriftVerdict(
        action=action,
        severity=bounds.severity,
        cited_metrics={"weighted_share": shown["weighted_share"]},
        rationale=f"weighted_share={shown['weighted_share']:.4f}. Signals: {signals}. "
        f"Policy: {action} (severity {bounds.severity}).",
    )
    # The numbers the run offered for citation (older records: the weighted share alone).
    cite = ev.shown["drift_analyst"].get("citable") or {
        "weighted_share": round(shown["weighted_share"], 4)
    }
    outcome = ctx.decide(
        "drift_analyst",
        verdict_schema(bounds.allowed, cite),
        {**shown, "citable": cite},
        bounds.model_dump(),
        fallback,
        check=_within("action", bounds.allowed),
        tools=_drift_tools(ev),
    )
    verdict = outcome.decision
    replayed = {"action": verdict.action, "severity": verdict.severity}
    return {"drift": {**ev.final["drift"], **replayed, "replay": _meta(outcome, verdict.rationale)}}


def _optimizer(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    if "optimizer" not in ev.final:
        _evidence_ends(
            "optimizer",
            "would_retrain",
            "the run did not retrain: no challenger was trained, how it would compare is unknown",
        )
    shown = ev.recorded("optimizer", ("champion_family", "drift"))
    limits = ctx.policy.optimizer
    fallback = default_plan(limits, shown["champion_family"])
    outcome = ctx.decide(
        "optimizer",
        plan_schema(limits),
        shown,
        limits.model_dump(),
        fallback,
        check=plan_check(limits),
    )
    plan, original = outcome.decision, ev.final["optimizer"]
    notes = []
    if (plan.family, plan.n_trials) != (original["family"], original["n_trials"]):
        notes.append(
            f"the recorded study ({original['family']}, {original['n_trials']} trials) is "
            "reused: this plan was not run"
        )
    replayed = {"family": plan.family, "n_trials": plan.n_trials}
    return {"optimizer": {**original, **replayed, "replay": _meta(outcome, plan.rationale, notes)}}


def _retraining(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    shown = ev.recorded("retraining", ("available_batches", "drift", "optimizer"))
    limits = ctx.policy.retraining
    available = shown["available_batches"]
    upper = min(limits.max_window, max(available, limits.min_window))
    fallback = RetrainPlan(
        window=min(limits.default_window, upper),
        rationale=f"Policy default window ({available} batches available).",
    )

    def check(plan: RetrainPlan) -> None:
        if not limits.min_window <= plan.window <= upper:
            raise LLMError(f"window {plan.window} outside {limits.min_window}-{upper}")

    outcome = ctx.decide(
        "retraining",
        retraining.plan_schema(limits.min_window, upper),
        shown,
        {"min": limits.min_window, "max": upper},
        fallback,
        check=check,
    )
    plan, original = outcome.decision, ev.final["retraining"]
    notes = []
    if plan.window != original["window"]:
        notes.append(
            f"the challenger was trained on the last {original['window']} "
            "batches: its recorded evaluation is reused"
        )
    meta = _meta(outcome, plan.rationale, notes)
    return {"retraining": {**original, "window": plan.window, "replay": meta}}


def _evaluator(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    if "evaluator" not in ev.shown:
        raise RunStateError(f"run {ev.run.id[:12]} retrained but recorded no evaluation")
    cmp = Comparison.model_validate(ev.shown["evaluator"])
    rules = ctx.policy.evaluator
    notes = []
    if (rules.metric, rules.confidence, rules.n_boot) != (cmp.metric, cmp.confidence, cmp.n_boot):
        notes.append(
            f"the recorded comparison ({cmp.metric}, {cmp.confidence:.0%} interval, "
            f"{cmp.n_boot} resamples) is reused: nothing is scored again"
        )
    allowed = ctx.policy.evaluator_allowed(cmp.ci_low)
    # The live agent's own template: the words follow the interval (better, worse, neither).
    fallback = EvaluationVerdict(action=allowed[0], rationale=evaluator.template(cmp, allowed[0]))
    outcome = ctx.decide(
        "evaluator",
        evaluator.verdict_schema(allowed),
        evaluator.verdict_evidence(cmp),
        {"allowed": allowed},
        fallback,
        check=_within("action", allowed),
    )
    verdict = outcome.decision
    meta = _meta(outcome, verdict.rationale, notes)
    return {"evaluation": {**ev.final["evaluation"], "action": verdict.action, "replay": meta}}


def _risk_inputs(state: dict[str, Any], ev: Evidence) -> RiskInputs:
    """What the risk rules look at: as the run's cicd agent recorded it, or, if the run never
    got there, built from the state the way agents.cicd builds it."""
    recorded = ev.tool_args.get("policy.assess_risk")
    if recorded is not None:
        return RiskInputs.model_validate(recorded)
    family = ev.recorded("optimizer", ("champion_family",))["champion_family"]
    return risk_inputs(state["evaluation"], state["retraining"], family)


def _cicd(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    inputs = _risk_inputs(state, ev)
    risk = ctx.policy.assess_risk(inputs)
    evaluation, retrained = state["evaluation"], state["retraining"]
    summary = (ev.final.get("cicd") or {}).get("summary") or (
        f"Promote {state['model']}'s challenger ({retrained['family']}) over "
        f"v{evaluation.get('champion_version')}: gain {evaluation['gain']:+.4f}."
    )
    fallback = policy_decision(risk, summary)
    outcome = ctx.decide(
        "cicd",
        cicd.decision_schema_for(risk.tier),
        {"risk": risk.model_dump(), "inputs": inputs.model_dump()},
        {"policy_tier": risk.tier, "may_only_raise": True},
        fallback,
        check=lambda d: None,
    )
    tier = Policy.raise_tier(risk.tier, outcome.decision.risk_tier)  # the LLM only raises it
    meta = _meta(outcome, outcome.decision.rationale)
    return {"cicd": {"tier": tier, "reasons": risk.reasons, "summary": summary, "replay": meta}}


def _approval(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    answer = ev.final.get("approval")
    if answer is None:
        _evidence_ends(
            "approval",
            "waiting_approval",
            "the promotion is high risk and nobody answered it in the run: it would wait for "
            "an approval",
        )
    note = f"the recorded answer is reused: {answer['decision']} by {answer['approver']}"
    return {"approval": {**answer, "replay": {"rationale": note, "fallback": False, "notes": []}}}


def _promote(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    """Say what would be promoted; move nothing (the real node's authorisation still holds:
    a tier other than low needs an approver)."""
    tier, retrained = state["cicd"]["tier"], state["retraining"]
    approver = (state.get("approval") or {}).get("approver") if tier != "low" else None
    Policy.check_promotion(tier, approver)
    # A champion that had moved since the evaluation (as recorded) has moved in the replay too.
    status = (ev.final.get("promotion") or {}).get("status", "promoted")
    notes = ["the champion had moved since the evaluation"] if status == "superseded" else []
    promotion = {
        "status": status,
        # The version the run's cicd registered (runs before it: retraining registered it).
        "version": (ev.final.get("cicd") or {}).get("version") or retrained.get("version"),
        "previous": state["evaluation"].get("champion_version"),
        "approved_by": approver or "policy:low-risk",
        "dry_run": True,
        "replay": {"rationale": "dry run: nothing moved", "fallback": False, "notes": notes},
    }
    return {"promotion": promotion}


def _report(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    outcome = run_outcome(cast(ControlState, state))
    return {"outcome": outcome, "events": [f"replayed: {outcome}"]}


REPLAY_NODES: dict[str, Callable[..., dict[str, Any]]] = {
    "ingestion": _ingestion,
    "escalation": _escalation,
    "drift_analyst": _drift,
    "optimizer": _optimizer,
    "retraining": _retraining,
    "evaluator": _evaluator,
    "cicd": _cicd,
    "approval": _approval,
    "promote": _promote,
    "report": _report,
}


# -- replaying -----------------------------------------------------------------------------


def replay_run(plane: ControlPlane, run_id: str, scenario: WhatIf) -> ReplayReport:
    """Re-decide one run under ``scenario``, dry-run, and compare it with the original.

    Raises:
        NotFound: no such run, or it has no checkpoints.
        RunStateError: the run is not completed nor waiting for approval, or its record lacks
            evidence an agent needs.
    """
    ev = gather(plane, run_id)
    ctx = _sealed_context(plane.settings, scenario.policy, scenario.backend)
    nodes = {name: partial(fn, ev=ev) for name, fn in REPLAY_NODES.items()}
    graph = build_control_graph(scenario.backend, ctx, InMemorySaver(), nodes=nodes)
    # Every node is a replay node: no agent of the real graph can run in a replay.
    if set(graph.nodes) - {START} != set(nodes):
        raise PolicyViolation("a node of the control graph has no replay node")
    config = {"configurable": {"thread_id": f"replay-{run_id}"}}
    graph.update_state(config, ev.fork_values, as_node=START)  # the fork: before ingestion
    graph.invoke(None, config)
    return _compare(ev, graph.get_state(config), scenario)


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
        if pause is not None and pause["node"] == agent:
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
