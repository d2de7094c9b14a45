"""The replay's nodes: each agent re-decides with its own ``decide`` from the evidence the
original run recorded, under the replay's policy and LLM; nothing is gathered again and no
effect is applied (a replay node writes only its slice of the fork's state).

The evidence an agent's ``decide`` takes is rebuilt from the record: the tool results the run
audited (quality verdict, Evidently's tests, the effect sizes, the comparison, the risk inputs)
and what its decision recorded (performance, history, rejected attempts, batches available).
Where the run stopped before the replay would go on, the evidence ends and the replay pauses
(a LangGraph ``interrupt``) saying what is unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NoReturn, cast

from langgraph.types import interrupt

from agents import cicd, drift_analyst, evaluator, ingestion, optimizer, retraining
from agents.base import Outcome
from agents.context import RunContext
from agents.drift_causes import LabelShift
from agents.drift_reading import DriftAnalystEvidence
from driftpilot.core.errors import RunStateError
from driftpilot.core.policy import Policy, RiskInputs
from driftpilot.replay.record import Evidence
from driftpilot.store.notes import NoteView
from graphs.control import run_outcome
from graphs.state import ControlState
from tools.drift import DriftResult
from tools.evaluate import Comparison
from tools.quality import QualityVerdict
from tools.shift import DomainCheck, ShiftResult

ReplayNode = Callable[[dict[str, Any], RunContext, Evidence], dict[str, Any]]


def _evidence_ends(node: str, outcome: str, why: str) -> NoReturn:
    """Pause the replay: the original run never got this far, so nothing is known to
    re-decide from. A replay is never resumed."""
    interrupt({"node": node, "outcome": outcome, "why": why})
    raise RunStateError("a what-if replay cannot be resumed")


def _meta(outcome: Outcome[Any], rationale: str, notes: Sequence[str] = ()) -> dict[str, Any]:
    """How a replayed decision was reached (kept in its slice, for the report)."""
    return {"rationale": rationale, "fallback": outcome.fallback, "notes": list(notes)}


def _reused(answer: dict[str, Any]) -> dict[str, Any]:
    note = f"the recorded answer is reused: {answer['decision']} by {answer['approver']}"
    return {"rationale": note, "fallback": False, "notes": []}


def _ingestion(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    shown = ev.recorded("ingestion", ("verdict", "errors"))
    evidence = ingestion.IngestionEvidence(verdict=QualityVerdict.model_validate(shown["verdict"]))
    ruling = ingestion.decide(evidence, ctx.policy, ctx.llm)
    decision = ruling.outcome.decision
    action: str = decision.action
    if action == "quarantine" and ev.final.get("escalation") is not None:
        action = "escalate"  # the run put this batch to a person: so does its replay
    meta = _meta(ruling.outcome, decision.rationale)
    return {"ingestion": {**ev.final["ingestion"], "action": action, "replay": meta}}


def _escalation(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    answer = ev.final.get("escalation")
    if answer is None:
        _evidence_ends(
            "escalation",
            "waiting_approval",
            "the batch was put to a person and nobody answered in the run: it would wait",
        )
    update: dict[str, Any] = {"escalation": {**answer, "replay": _reused(answer)}}
    if answer.get("accepted"):
        update["ingestion"] = {**state["ingestion"], "action": "accept"}
    return update


def _drift(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    """Re-decide from the recorded measurements. The effect sizes were judged material at the
    recorded run's thresholds: the replay reuses them as measured."""
    if "drift" not in ev.final:
        _evidence_ends(
            "drift_analyst",
            "would_accept",
            "the replay accepts a batch the run quarantined: its drift was never analysed",
        )
    shown = ev.recorded("drift_analyst", ("domain_classifier", "performance", "history"))
    domain = shown["domain_classifier"]
    evidence = DriftAnalystEvidence(
        drift=DriftResult.model_validate(ev.result("drift.data_drift")),
        shift=ShiftResult.model_validate(ev.result("shift.effect_sizes")),
        domain=DomainCheck.model_validate(domain) if domain else None,
        performance=shown["performance"],
        history=shown["history"],
        **_cause_evidence(ev),
    )
    ruling = drift_analyst.decide(evidence, ctx.policy, ctx.llm)
    verdict = ruling.outcome.decision
    replayed = {
        "action": verdict.action,
        "severity": verdict.severity,
        **drift_analyst.drift_slice(ruling),
    }
    meta = _meta(ruling.outcome, verdict.rationale)
    return {"drift": {**ev.final["drift"], **replayed, "replay": meta}}


def _cause_evidence(ev: Evidence) -> dict[str, Any]:
    """What a run since issue 21 recorded for its cause and episode: the label shift numbers,
    its past runs as it read them, its notes and a person's request. A run recorded before
    lacks them: its replay reads no label shift, no seasonality, no episode and no notes (the
    numbers' cause is then world_change or unknown)."""
    record = ev.shown.get("drift_analyst", {})
    label = ev.tool_results.get("shift.label_shift")
    return {
        "label_shift": LabelShift.model_validate(label) if label else None,
        "past": list(record.get("past") or []),
        "run_id": str(record.get("run_id") or ev.run.id),
        "request": record.get("request") or ev.fork_values.get("request") or None,
        "notes": [NoteView.model_validate(n) for n in record.get("note_views") or []],
    }


def _optimizer(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    if "optimizer" not in ev.final:
        _evidence_ends(
            "optimizer",
            "would_retrain",
            "the run did not retrain: no challenger was trained, how it would compare is unknown",
        )
    shown = ev.recorded("optimizer", ("champion_family", "drift"))
    evidence = optimizer.OptimizerEvidence(
        **shown, rejected_attempts=ev.shown["optimizer"].get("rejected_attempts", [])
    )
    ruling = optimizer.decide(evidence, ctx.policy, ctx.llm)
    plan, original = ruling.outcome.decision, ev.final["optimizer"]
    notes = []
    if (plan.family, plan.n_trials) != (original["family"], original["n_trials"]):
        notes.append(
            f"the recorded study ({original['family']}, {original['n_trials']} trials) is "
            "reused: this plan was not run"
        )
    replayed = {"family": plan.family, "n_trials": plan.n_trials}
    meta = _meta(ruling.outcome, plan.rationale, notes)
    return {"optimizer": {**original, **replayed, "replay": meta}}


def _retraining(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    shown = ev.recorded("retraining", ("available_batches", "drift", "optimizer"))
    evidence = retraining.RetrainingEvidence(
        **shown,
        rejected_windows=ev.shown["retraining"].get("rejected_windows", []),
        material=bool(state["drift"].get("material")),
    )
    ruling = retraining.decide(evidence, ctx.policy, ctx.llm)
    plan, original = ruling.outcome.decision, ev.final["retraining"]
    notes = []
    if plan.window != original["window"]:
        notes.append(
            f"the challenger was trained on the last {original['window']} "
            "batches: its recorded evaluation is reused"
        )
    meta = _meta(ruling.outcome, plan.rationale, notes)
    return {"retraining": {**original, "window": plan.window, "replay": meta}}


def _recalibrate(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    """Reuse the run's recalibrated champion; a run that did not recalibrate has none to judge
    (the calibration map is fitted on the batch, not decided: nothing to re-decide)."""
    original = ev.final.get("retraining") or {}
    if original.get("kind") != "recalibrate":
        _evidence_ends(
            "recalibrate",
            "would_recalibrate",
            "the run did not recalibrate: no calibration map was fitted, how it would compare "
            "is unknown",
        )
    note = "the recorded calibration map is reused: nothing is fitted again"
    meta = {"rationale": note, "fallback": False, "notes": [note]}
    return {"retraining": {**original, "replay": meta}}


def _evaluator(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    if "evaluator" not in ev.shown:
        raise RunStateError(f"run {ev.run.id[:12]} retrained but recorded no evaluation")
    cmp = Comparison.model_validate(ev.shown["evaluator"])
    rules = ctx.policy.evaluator
    notes = []
    # The metric is the model's own (ManagedModel.metric), which no policy changes.
    if (rules.confidence, rules.n_boot) != (cmp.confidence, cmp.n_boot):
        notes.append(
            f"the recorded comparison ({cmp.metric}, {cmp.confidence:.0%} interval, "
            f"{cmp.n_boot} resamples) is reused: nothing is scored again"
        )
    champion = ev.final["evaluation"].get("champion_version")
    shown = ev.shown["evaluator"]
    # What forced a reject whatever the gain is part of the evidence: a replay under the same
    # policy must not promote what the run could not.
    evidence = evaluator.EvaluatorEvidence(
        comparison=cmp,
        champion_version=champion,
        training_defect=shown.get("training_defect"),
        holdout_too_small=shown.get("holdout_too_small"),
    )
    ruling = evaluator.decide(evidence, ctx.policy, ctx.llm)
    verdict = ruling.outcome.decision
    meta = _meta(ruling.outcome, verdict.rationale, notes)
    return {"evaluation": {**ev.final["evaluation"], "action": verdict.action, "replay": meta}}


def _risk_inputs(state: dict[str, Any], ev: Evidence) -> RiskInputs:
    """What the risk rules look at: as the run's cicd agent recorded it, or, if the run never
    got there, built from the state the way agents.cicd builds it."""
    recorded = ev.tool_args.get("policy.assess_risk")
    if recorded is not None:
        return RiskInputs.model_validate(recorded)
    family = ev.recorded("optimizer", ("champion_family",))["champion_family"]
    return cicd.risk_inputs(state["evaluation"], state["retraining"], family)


def _cicd(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    evaluation, retrained = state["evaluation"], state["retraining"]
    recorded = ev.final.get("cicd") or {}
    summary = recorded.get("summary") or (
        f"Promote {state['model']}'s challenger ({retrained['family']}) over "
        f"v{evaluation.get('champion_version')}: gain {evaluation['gain']:+.4f}."
    )
    evidence = cicd.CicdEvidence(
        version=recorded.get("version") or retrained.get("version"),
        inputs=_risk_inputs(state, ev),
        summary=summary,
    )
    ruling = cicd.decide(evidence, ctx.policy, ctx.llm)
    meta = _meta(ruling.outcome, ruling.outcome.decision.rationale)
    slice_ = {"tier": ruling.tier, "reasons": ruling.risk.reasons, "summary": summary}
    return {"cicd": {**slice_, "replay": meta}}


def _approval(state: dict[str, Any], ctx: RunContext, ev: Evidence) -> dict[str, Any]:
    answer = ev.final.get("approval")
    if answer is None:
        _evidence_ends(
            "approval",
            "waiting_approval",
            "the promotion is high risk and nobody answered it in the run: it would wait for "
            "an approval",
        )
    return {"approval": {**answer, "replay": _reused(answer)}}


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


REPLAY_NODES: dict[str, ReplayNode] = {
    "ingestion": _ingestion,
    "escalation": _escalation,
    "drift_analyst": _drift,
    "optimizer": _optimizer,
    "retraining": _retraining,
    "recalibrate": _recalibrate,
    "evaluator": _evaluator,
    "cicd": _cicd,
    "approval": _approval,
    "promote": _promote,
    "report": _report,
}
