"""CI/CD: the policy sets the risk tier of the promotion (the LLM may raise it, never lower it);
low risk promotes at once, high risk writes an approval request and waits for a person.

The challenger (an MLflow run with its logged model) is registered as a version here, and
only here: it is about to be promoted (low risk) or put to an approver (high risk, before the
interrupt, so the request names a version)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from agents.base import Llm, Outcome, bounded_text, narrowed
from agents.context import RunContext
from agents.explain import change_unit
from driftpilot.core.metric_text import direction
from driftpilot.core.policy import Policy, RiskAssessment, RiskInputs, RiskTier
from driftpilot.core.tasks import METRICS
from driftpilot.store.audit import promotion_action
from tools import champion, registry

NAME = "cicd"


class CicdDecision(BaseModel):
    """The release decision for the challenger."""

    risk_tier: Literal["low", "high"] = Field(
        description="Proposed tier; can only raise the policy's."
    )
    request_summary: str = bounded_text("One paragraph for the approver: what changes and why.")
    rationale: str = bounded_text("Why this tier.")


def decision_schema_for(policy_tier: RiskTier) -> type[CicdDecision]:
    """The decision as the LLM must write it: the tier may only go up, so after a high
    policy tier "high" is the one choice left."""
    tiers = ["high"] if policy_tier == "high" else ["low", "high"]
    return narrowed(CicdDecision, risk_tier={"enum": tiers})


def risk_inputs(
    evaluation: dict[str, Any], retraining: dict[str, Any], champion_family: str
) -> RiskInputs:
    """What the risk rules look at, from the evaluator's and the retraining's slices."""
    has_champion = evaluation.get("champion_version") is not None
    return RiskInputs(
        task=evaluation.get("task", "binary"),  # comparisons name their task (older: binary)
        has_champion=has_champion,
        champion_family=champion_family if has_champion else None,
        challenger_family=retraining["family"],
        gain=evaluation["gain"],
        ci_low=evaluation["ci_low"],
        ci_high=evaluation["ci_high"],
        divergence=evaluation["prediction_divergence"],
        window_quality_warnings=retraining["window_quality_warnings"],
    )


def policy_decision(risk: RiskAssessment, summary: str) -> CicdDecision:
    """The policy's own decision: its tier, with every rule that fired as the rationale."""
    reasons = "; ".join(risk.reasons) or "no high-risk rule fired"
    return CicdDecision(
        risk_tier=risk.tier,
        request_summary=summary,
        rationale=f"Policy risk tier {risk.tier}: {reasons}.",
    )


class CicdEvidence(BaseModel):
    """What the release decision is made on: the challenger's version, what the risk rules
    look at, and the request's words."""

    version: int | None = Field(description="The challenger's registered version.")
    inputs: RiskInputs = Field(description="What the risk rules look at.")
    summary: str = Field(description="What the promotion changes, for the approver.")


@dataclass(frozen=True)
class CicdRuling:
    """The release decision: the policy's risk assessment, the tier after the LLM (which may
    only raise it), and how it was reached."""

    outcome: Outcome[CicdDecision]
    risk: RiskAssessment
    tier: RiskTier
    shown: dict[str, Any]  # what the agent was shown
    flags: list[str]


def gather(state: dict[str, Any], ctx: RunContext) -> CicdEvidence:
    """Register the challenger as a version (whatever the tier: promotion and approval both
    name it; idempotent per run step) and collect what the risk rules look at."""
    model, ev, rt = state["model"], state["evaluation"], state["retraining"]
    version = register_challenger(ctx, state)
    info = METRICS[ev["metric"]]
    what = (
        f"the champion v{rt.get('base_version')} with a {rt.get('method')} calibration map "
        f"fitted on {rt['rows']:,} recent labelled rows"
        if rt.get("kind") == "recalibrate"
        else f"{rt['family']}, trained on the last {rt['window']} batches"
    )
    summary = (
        f"Promote {model} v{version} ({what}) over v{ev.get('champion_version')}: "
        f"{ev['metric']} ({direction(info.name)}) {ev['champion']:.4f} -> {ev['challenger']:.4f} "
        f"(gain {ev['gain']:+.4f} in {change_unit(info)}, "
        f"CI {ev['ci_low']:+.4f} to {ev['ci_high']:+.4f})."
    )
    inputs = risk_inputs(ev, rt, ctx.model(model).family)
    return CicdEvidence(version=version, inputs=inputs, summary=summary)


def decide(evidence: CicdEvidence, policy: Policy, llm: Llm) -> CicdRuling:
    """The risk tier (pure but for ``llm``): the policy's, which the LLM may raise, never
    lower."""
    risk = policy.assess_risk(evidence.inputs)
    shown = {"risk": risk.model_dump(), "inputs": evidence.inputs.model_dump()}
    outcome = llm.decide(
        NAME,
        decision_schema_for(risk.tier),
        shown,
        {"policy_tier": risk.tier, "may_only_raise": True},
        policy_decision(risk, evidence.summary),
        check=lambda d: None,
    )
    tier = Policy.raise_tier(risk.tier, outcome.decision.risk_tier)
    flags = [f"llm raised tier to {tier}"] if tier != risk.tier else []
    return CicdRuling(outcome, risk, tier, shown, flags)


def apply(
    ruling: CicdRuling, evidence: CicdEvidence, state: dict[str, Any], ctx: RunContext
) -> dict[str, Any]:
    """Audit the assessment and the decision; above low risk, write the approval request the
    graph then waits on; record the effect (once per run)."""
    run_id, model = state["run_id"], state["model"]
    decision, risk, tier = ruling.outcome.decision, ruling.risk, ruling.tier
    inputs = evidence.inputs.model_dump()
    ctx.call(run_id, NAME, "policy.assess_risk", lambda: risk, inputs)  # assessed in decide
    if tier != "low":
        assert evidence.version is not None  # registered in gather
        beaten = state["evaluation"].get("champion_version")
        action = promotion_action(model, evidence.version, beaten)
        reasons = risk.reasons or ruling.flags
        request = approval_request(action, run_id, decision.request_summary, reasons)
        ctx.store.request_approval(run_id, state["requested_by"], request, action)
    rationale = decision.rationale
    ctx.record(run_id, NAME, ruling.outcome, f"risk:{tier}", rationale, ruling.shown, ruling.flags)
    result = {
        "tier": tier,
        "reasons": risk.reasons,
        "summary": decision.request_summary,
        "version": evidence.version,
    }
    ctx.store.record_effect(run_id, NAME, result)
    return {"cicd": result}


def node(state: dict[str, Any], runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    done = ctx.store.effect(state["run_id"], NAME)
    if done is not None:  # replay: the tier (and any approval request) stands as decided
        return {"cicd": done}
    evidence = gather(state, ctx)
    return apply(decide(evidence, ctx.policy, ctx.llm), evidence, state, ctx)


def register_challenger(ctx: RunContext, state: dict[str, Any]) -> int:
    """Register the evaluated challenger's logged model as a version and point the
    ``challenger`` alias at it. Idempotent per run step: the version is keyed by the run, so a
    replay after a crash (or a node run again) finds it instead of registering twice."""
    run_id, model, rt = state["run_id"], state["model"], state["retraining"]
    logged = registry.LoggedModel(
        name=model,
        key=f"{run_id}:retraining",
        run_id=rt["mlflow_run_id"],
        model_uri=rt["model_uri"],
        model_id=rt.get("model_id"),
        family=rt["family"],
    )
    request = registry.RegisterRequest(
        name=model, key=f"{run_id}:{NAME}", tags={"driftpilot.run_id": run_id}
    )
    info = ctx.mutate(
        run_id,
        NAME,
        f"{NAME}:register",
        "registry.register_model",
        lambda: registry.register_model(logged, request, ctx.settings),
        {"name": model, "key": request.key, "mlflow_run_id": logged.run_id},
        lambda v: v.model_dump(mode="json"),
        fault="after_register",
    )
    ctx.mutate(
        run_id,
        NAME,
        f"{NAME}:challenger_alias",
        "registry.set_alias",
        lambda: registry.set_alias(model, registry.CHALLENGER, info.version, ctx.settings),
        {"name": model, "alias": registry.CHALLENGER, "version": info.version},
        lambda v: {"version": v.version, "aliases": v.aliases},
    )
    return info.version


def approval_request(
    action: dict[str, Any], run_id: str, summary: str, reasons: list[str]
) -> dict[str, Any]:
    """The interrupt payload, in the Agent Inbox ``HumanInterrupt`` shape."""
    return {
        "action_request": {"action": "promote", "args": {**action, "run_id": run_id}},
        "config": {
            "allow_accept": True,
            "allow_ignore": True,
            "allow_respond": True,
            "allow_edit": False,
        },
        "description": f"{summary}\nHigh risk because: {'; '.join(reasons)}.",
    }


def promote(state: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Move the champion alias: a compare-and-swap on the champion the challenger beat.

    Refused (PolicyViolation) for any tier but low without an approval of exactly this action
    by another principal. If the champion moved since the evaluation, the approval is void and
    the run ends ``superseded``. Idempotent per run: a replay returns the recorded result, and
    a crash after the alias move is reconciled from the open intent."""
    run_id, model = state["run_id"], state["model"]
    done = ctx.store.effect(run_id, "promote")
    if done is not None:
        return {"promotion": done}
    # A run that waited for approval across the upgrade has its version in retraining's slice.
    version = state["cicd"].get("version") or state["retraining"]["version"]
    beaten = state["evaluation"].get("champion_version")
    action = promotion_action(model, version, beaten)
    current = registry.current_champion(model, ctx.settings)
    generation = ctx.store.champion_generation(model)
    intent = ctx.store.open_intent(run_id, "promote")
    # A replay whose champion changed hands since its intent (a rollback meanwhile) must not
    # redo the move, even if the champion is the beaten version again.
    changed_since = (
        intent is not None and json.loads(intent.args).get("generation", generation) != generation
    )
    moved_already = intent is not None and current == action["version"] and not changed_since
    if changed_since or (current != beaten and not moved_already):
        return {"promotion": _supersede(ctx, state, action, current)}
    actor = _authorise(ctx, state, action)
    ctx.require_lease(model, run_id)
    result = champion.promote(
        ctx,
        run_id,
        model,
        version,
        expected=beaten,
        actor=actor,
        settle=lambda moved: _record_promotion(state, action, actor),
        generation=generation,
        fault="after_alias",
    )
    return {"promotion": result}


def _authorise(ctx: RunContext, state: dict[str, Any], action: dict[str, Any]) -> str:
    """Who authorises the promotion: the policy for low risk, else the bound approval."""
    tier = state["cicd"]["tier"]
    if tier == "low":
        Policy.check_promotion(tier, None)
        return "policy:low-risk"
    problem = ctx.store.approval_problem(state["run_id"], action)
    approver = None if problem else ctx.store.approval_rows(state["run_id"])[1].principal
    Policy.check_promotion(tier, approver, problem)
    assert approver is not None
    return approver


def _record_promotion(state: dict[str, Any], action: dict[str, Any], actor: str) -> champion.Record:
    """What the champion move records for a promotion (tools.champion writes it)."""
    model, rt = state["model"], state["retraining"]
    version, beaten = action["version"], action["replaces"]
    evaluation = state["evaluation"]
    # Out of time (the holdout is later than the window), in the model's metric, which the
    # evaluator compared in and the drift analyst measures drops in. (``challenger`` is the
    # same number: the comparison's challenger score on the same holdout.)
    baseline = evaluation.get("challenger_score", evaluation["challenger"])
    return champion.Record(
        version=version,
        previous=beaten,
        model_fields={
            "family": rt["family"],
            "reference_path": rt["window_path"],
            "baseline": baseline,
            "baseline_low": evaluation.get("challenger_low"),
            "baseline_high": evaluation.get("challenger_high"),
            "holdout_path": rt["holdout_path"],
        },
        rationale=f"champion of {model} moved v{beaten} -> v{version}, authorised by {actor}.",
        evidence={"action": action, "approved_by": actor},
        effect={
            "status": "promoted",
            "version": version,
            "previous": beaten,
            "approved_by": actor,
            "family": rt["family"],
            "window_path": rt["window_path"],
            "baseline": baseline,
        },
    )


def _supersede(
    ctx: RunContext, state: dict[str, Any], action: dict[str, Any], current: int | None
) -> dict[str, Any]:
    """The champion moved since the evaluation: nothing is promoted, the approval is void."""
    run_id = state["run_id"]
    result = {
        "status": "superseded",
        "version": action["version"],
        "compared_against": action["replaces"],
        "champion_now": current,
    }
    if ctx.store.open_intent(run_id, "promote") is not None:
        ctx.store.record_mutation(run_id, "promote", "promote", "void", action, result)
    ctx.record(
        run_id,
        NAME,
        Outcome(None, "none", ""),
        "superseded",
        f"not promoted: v{action['version']} was compared against v{action['replaces']}, but "
        f"the champion is now v{current}; any approval is void. Start a new run to compare "
        "against the current champion.",
        {"action": action, "champion_now": current},
    )
    ctx.store.record_effect(run_id, "promote", result)
    return result
