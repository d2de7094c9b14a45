"""The control graph: one run of one managed model on one batch (see DESIGN.md).

ingestion -> drift_analyst -> optimizer -> retraining -> evaluator -> cicd -> promote -> report
    |  ^           |  |                        |        ^    |          |
    |  |           |  +-> recalibrate ---------|--------+    |          |
    |  |           +-> report         report <-+   report <--+          +-> approval (interrupt)
    |  +-- accept --+                                                        approve -> promote
    +-> escalation (interrupt, after max_consecutive_quarantines)            reject  -> report
    |       reject -> report
    +-> report (quarantine)

A retrain whose owner's trainer failed goes from retraining to report (challenger_failed).
A label shift goes to recalibrate (agents.recalibration: the champion plus a calibration map,
logged like a retrain's challenger), then on to the evaluator like a retrain, or to report
when the champion cannot carry a map (challenger_failed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from agents import cicd, drift_analyst, evaluator, ingestion, optimizer, recalibration, retraining
from agents.context import RunContext
from driftpilot.core.errors import ApprovalError
from driftpilot.core.faults import fault_point
from driftpilot.store.models import ChampionChange, Decision, Run, ToolCall
from graphs.state import (
    SLICES,
    ControlState,
    after_approval,
    after_cicd,
    after_drift,
    after_escalation,
    after_evaluation,
    after_ingestion,
    after_retraining,
)
from tools import drift_report

log = logging.getLogger(__name__)

Node = Callable[..., dict[str, Any]]  # fn(state, runtime: Runtime[RunContext]) -> the update


def build_control_graph(checkpointer: Any, *, nodes: Mapping[str, Node] | None = None) -> Any:
    """Assemble and compile the control graph.

    The run context (``agents.context.RunContext``: settings, audit store, policy, LLM
    backend) is LangGraph's run context (``context_schema``): whoever invokes the graph passes
    it (``graph.invoke(input, config, context=ctx)``) and every node reads it from its
    ``runtime``; the graph holds none.

    Args:
        checkpointer: a LangGraph checkpointer (SQLite in the home directory) — it makes the
            approval wait durable across restarts.
        nodes: node functions ``fn(state, runtime)`` that replace the named ones (none by
            default). The what-if replay (driftpilot.replay) swaps in nodes that re-decide from
            a past run's recorded evidence, so that it walks this very wiring, routers included.

    Raises:
        ValueError: ``nodes`` names a node this graph does not have.
    """
    functions: dict[str, Node] = {
        "ingestion": ingestion.node,
        "escalation": ingestion.escalation,
        "drift_analyst": drift_analyst.node,
        "optimizer": optimizer.node,
        "retraining": retraining.node,
        "recalibrate": recalibration.node,
        "evaluator": evaluator.node,
        "cicd": cicd.node,
        "approval": approval_node,
        "promote": promote_node,
        "report": report_node,
    }
    unknown = set(nodes or {}) - set(functions)
    if unknown:
        raise ValueError(f"the control graph has no node {sorted(unknown)}")
    functions.update(nodes or {})
    graph = StateGraph(ControlState, context_schema=RunContext)
    for name, function in functions.items():
        graph.add_node(name, function)

    graph.add_edge(START, "ingestion")
    graph.add_conditional_edges("ingestion", after_ingestion)
    graph.add_conditional_edges("escalation", after_escalation)
    graph.add_conditional_edges("drift_analyst", after_drift)
    graph.add_edge("optimizer", "retraining")
    graph.add_conditional_edges("retraining", after_retraining)
    graph.add_conditional_edges("recalibrate", after_retraining)  # like a retrain's challenger
    graph.add_conditional_edges("evaluator", after_evaluation)
    graph.add_conditional_edges("cicd", after_cicd)
    graph.add_conditional_edges("approval", after_approval)
    graph.add_edge("promote", "report")
    graph.add_edge("report", END)
    return graph.compile(checkpointer=checkpointer)


def promote_node(state: ControlState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Move the champion (``agents.cicd.promote``) with the run's context."""
    return cicd.promote(dict(state), runtime.context)


def approval_node(state: ControlState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Wait for a person. The decision itself is recorded in the audit store (by the service,
    which checks the approver is not the requester) before the graph is resumed; this node runs
    again from its top on resume, so it does nothing but read."""
    ctx = runtime.context
    rows = ctx.store.approval_rows(state["run_id"])
    if len(rows) < 2:
        fault_point("before_interrupt")
        interrupt(json.loads(rows[0].payload))
        rows = ctx.store.approval_rows(state["run_id"])
    if len(rows) < 2:
        raise ApprovalError(
            f"run {state['run_id']} was resumed without a recorded approval decision"
        )
    answer = rows[1]
    return {
        "approval": {
            "decision": answer.decision,
            "approver": answer.principal,
            "comment": answer.comment,
        },
        "events": [f"{answer.decision} by {answer.principal}"],
    }


def report_node(state: ControlState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Name the outcome and write it, with the run's summary, to the runs table."""
    ctx = runtime.context
    outcome = run_outcome(state)
    summary = {key: state.get(key) for key in SLICES}
    # A process whose lease was taken over must not write the run's end: the new holder does.
    ctx.require_lease(state["model"], state["run_id"])
    ctx.store.update_run(state["run_id"], status="completed", outcome=outcome, summary=summary)
    # No report retention here: reports are written after runs (driftpilot.runs.reports), which
    # applies it under the report folder's lock each time it writes one.
    return {"outcome": outcome, "events": [outcome]}


def prune_reports(ctx: RunContext, model: str) -> list[Path]:
    """Apply the report retention to ``model``'s reports (after a new one is written): the newest
    ``report_retention`` Evidently reports stay, and so does every report of a run that moved
    the champion (why it moved) or that waits for an approval (its approver reads it). The
    audit keeps each report's sha256, so a kept one can be checked and a pruned one named."""
    assert ctx.settings.reports_dir is not None
    keepers = {
        c.run_id
        for c in ctx.store.list_rows(
            ChampionChange, ChampionChange.model == model, ChampionChange.action == "promote"
        )
    }
    keepers |= {
        r.id for r in ctx.store.list_rows(Run, Run.model == model, Run.status == "waiting_approval")
    }
    protected = [
        report
        for d in ctx.store.list_rows(
            Decision, Decision.run_id.in_(keepers), Decision.agent == "drift_analyst"
        )
        if (report := json.loads(d.evidence).get("report"))
    ]
    # Reports rendered after the decision (driftpilot.runs.reports) are audited as tool calls.
    protected += [
        report
        for c in ctx.store.list_rows(
            ToolCall, ToolCall.run_id.in_(keepers), ToolCall.tool == "drift.render_report"
        )
        if (report := json.loads(c.result).get("path"))
    ]
    keep = ctx.settings.report_retention
    if ctx.settings.cache_dir is not None:  # plain copies the chat attached: made again on demand
        drift_report.prune_reports(ctx.settings.cache_dir / "reports", keep, [])
    return drift_report.prune_reports(ctx.settings.reports_dir / model, keep, protected)


def run_outcome(state: ControlState) -> str:
    """The outcome a finished run reports, named from the decisions in its state."""
    if state["ingestion"]["action"] in ("quarantine", "escalate"):
        return "quarantined"
    if state["drift"]["action"] not in ("retrain", "recalibrate"):
        return f"no_retrain:{state['drift']['action']}"
    if state["retraining"].get("failed"):
        return "challenger_failed"
    if state["evaluation"]["action"] == "reject":
        return "challenger_rejected"
    promotion = state.get("promotion")
    if promotion:
        return "superseded" if promotion.get("status") == "superseded" else "promoted"
    return "approval_rejected"
