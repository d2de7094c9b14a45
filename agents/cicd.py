"""CI/CD: the policy sets the risk tier of the promotion (the LLM may raise it, never lower it);
low risk promotes at once, high risk writes an approval request and waits for a person."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from agents.context import RunContext
from driftpilot.policy import Policy, RiskInputs
from tools import registry

NAME = "cicd"


class CicdDecision(BaseModel):
    """The release decision for the challenger."""

    risk_tier: Literal["low", "high"] = Field(
        description="Proposed tier; can only raise the policy's."
    )
    request_summary: str = Field(
        description="One paragraph for the approver: what changes and why."
    )
    rationale: str = Field(description="Why this tier.")


def node(state: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    run_id, model = state["run_id"], state["model"]
    ev, rt = state["evaluation"], state["retraining"]
    champ_family = ctx.model(model).family if ev.get("champion_version") else None
    inputs = RiskInputs(
        has_champion=ev.get("champion_version") is not None,
        champion_family=champ_family,
        challenger_family=rt["family"],
        gain=ev["gain"],
        ci_low=ev["ci_low"],
        ci_high=ev["ci_high"],
        divergence=ev["prediction_divergence"],
        window_quality_warnings=rt["window_quality_warnings"],
    )
    risk = ctx.call(
        run_id,
        NAME,
        "policy.assess_risk",
        lambda: ctx.policy.assess_risk(inputs),
        inputs.model_dump(),
    )
    summary = (
        f"Promote {model} v{rt['version']} ({rt['family']}, trained on the last "
        f"{rt['window']} batches) over v{ev.get('champion_version')}: "
        f"{ev['metric']} {ev['champion']:.4f} -> {ev['challenger']:.4f} "
        f"(gain {ev['gain']:+.4f}, CI {ev['ci_low']:+.4f} to {ev['ci_high']:+.4f})."
    )
    reasons = "; ".join(risk.reasons) or "no high-risk rule fired"
    fallback = CicdDecision(
        risk_tier=risk.tier,
        request_summary=summary,
        rationale=f"Policy risk tier {risk.tier}: {reasons}.",
    )
    evidence = {"risk": risk.model_dump(), "inputs": inputs.model_dump()}
    outcome = ctx.decide(
        NAME,
        CicdDecision,
        evidence,
        {"policy_tier": risk.tier, "may_only_raise": True},
        fallback,
        check=lambda d: None,
    )
    tier = Policy.raise_tier(risk.tier, outcome.decision.risk_tier)
    flags = [f"llm raised tier to {tier}"] if tier != risk.tier else []
    if tier == "high":
        request = approval_request(
            state, rt["version"], outcome.decision.request_summary, risk.reasons or flags
        )
        ctx.store.request_approval(run_id, state["requested_by"], request)
    ctx.record(run_id, NAME, outcome, f"risk:{tier}", outcome.decision.rationale, evidence, flags)
    return {
        "cicd": {"tier": tier, "reasons": risk.reasons, "summary": outcome.decision.request_summary}
    }


def approval_request(
    state: dict[str, Any], version: int, summary: str, reasons: list[str]
) -> dict[str, Any]:
    """The interrupt payload, in the Agent Inbox shape."""
    return {
        "action_request": {
            "action": "promote",
            "args": {"model": state["model"], "version": version, "run_id": state["run_id"]},
        },
        "config": {
            "allow_accept": True,
            "allow_ignore": True,
            "allow_respond": True,
            "allow_edit": False,
        },
        "description": f"{summary}\nHigh risk because: {'; '.join(reasons)}.",
    }


def promote(state: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Move the champion alias (refused for high risk without an approval by another principal).
    Idempotent per run: a replay returns the recorded result."""
    run_id, model = state["run_id"], state["model"]
    done = ctx.store.effect(run_id, "promote")
    if done is not None:
        return {"promotion": done}
    tier = state["cicd"]["tier"]
    approval = ctx.store.approved_by_other(run_id)
    Policy.check_promotion(tier, approval.principal if approval else None)
    rt = state["retraining"]
    moved = ctx.call(
        run_id,
        NAME,
        "registry.promote",
        lambda: registry.promote(model, rt["version"], ctx.settings),
        {"name": model, "version": rt["version"]},
        lambda r: r.model_dump(),
    )
    actor = approval.principal if approval else "policy:low-risk"
    ctx.store.record_champion(model, rt["version"], moved.previous, "promote", run_id, actor)
    ctx.store.update_model(
        model,
        family=rt["family"],
        reference_path=rt["window_path"],
        baseline=state["evaluation"]["challenger"],
    )
    result = {
        "version": rt["version"],
        "previous": moved.previous,
        "approved_by": actor,
        "family": rt["family"],
        "window_path": rt["window_path"],
        "baseline": state["evaluation"]["challenger"],
    }
    ctx.store.record_effect(run_id, "promote", result)
    return {"promotion": result}
