"""Optimizer: choose the model family and the Optuna budget (within the policy limits), then
run the study on the default training window. The study minimises the task's validation loss
(``driftpilot.core.tasks.TRAINING_LOSS``: log loss for classifiers, RMSE for regression)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl
from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from agents.base import Llm, Outcome, bounded_text, narrowed
from agents.context import RunContext
from driftpilot.core.errors import LLMError
from driftpilot.core.policy import Policy
from driftpilot.core.policy_rules import OptimizerLimits
from driftpilot.core.tasks import TRAINING_LOSS
from tools.train import split_holdout
from tools.tune import TuneBudget, tune

NAME = "optimizer"


class OptimizerPlan(BaseModel):
    """The search to run for the challenger."""

    family: Literal["lightgbm", "catboost"] = Field(description="Model family to tune.")
    n_trials: int = Field(description="Optuna trials (within the policy limits).")
    timeout_s: float = Field(description="Wall-time limit of the study in seconds.")
    rationale: str = bounded_text("Why this family and budget.")


def training_window(
    ctx: RunContext, model: str, k: int, current_path: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The last ``k`` accepted batches (current included) minus the holdout, and the holdout:
    the latest ``holdout_fraction`` of the current batch. Only labelled rows count (a batch
    whose labels are still to come contributes nothing until they are attached)."""
    spec = ctx.spec(model)
    labelled = pl.col(spec.target).is_not_null()
    current = pl.read_parquet(current_path).filter(labelled)
    current_train, holdout = split_holdout(
        current, spec.time_col, ctx.policy.retraining.holdout_fraction
    )
    earlier = (
        [r.path for r in ctx.accepted_batches(model) if r.path != current_path][-(k - 1) :]
        if k > 1
        else []
    )
    # The schema's columns only: an accepted batch may carry extra ones (an id to attach
    # late labels by), and batches with different column sets do not stack.
    columns = [*spec.features, spec.target, spec.time_col]
    frames = [pl.read_parquet(p, columns=columns) for p in earlier] + [current_train[columns]]
    return pl.concat(frames, how="vertical_relaxed").filter(labelled), holdout


def default_plan(limits: OptimizerLimits, champion_family: str) -> OptimizerPlan:
    """The policy's plan: the champion's family (if allowed) and the default budget."""
    plan = OptimizerPlan(
        family=champion_family if champion_family in limits.families else limits.default_family,
        n_trials=limits.default_trials,
        timeout_s=min(120.0, limits.max_timeout_s),
        rationale="",
    )
    plan.rationale = (
        f"{family_words(champion_family, plan.family)}; {plan.n_trials} trials "
        f"(policy default, limits {limits.min_trials}-{limits.max_trials})."
    )
    return plan


def family_words(champion_family: str, family: str) -> str:
    """Keeping the champion's family is said only when it is kept: a family the policy does
    not allow is replaced by the policy's default, and the words say so."""
    if family == champion_family:
        return f"Keep the champion's family {family}"
    return f"The champion's family {champion_family} is not allowed: the policy default {family}"


def rejected_attempts(past: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The retrain attempts since the last promotion (run summaries, oldest first): each one's
    challenger was turned down (by the evaluator or a person), or the list would be empty."""
    attempts: list[dict[str, Any]] = []
    for summary in reversed(past):
        if (summary.get("promotion") or {}).get("status") == "promoted":
            break
        if (summary.get("drift") or {}).get("action") == "retrain" and summary.get("optimizer"):
            attempts.append(summary)
    return attempts[::-1]


def plan_after_rejections(
    plan: OptimizerPlan, limits: OptimizerLimits, rejected: list[dict[str, Any]]
) -> OptimizerPlan:
    """After a rejected challenger the next attempt on the same shift changes something: the
    first time a larger search (twice the trials), after that the other family."""
    if not rejected:
        return plan
    last = rejected[-1]["optimizer"]
    if len(rejected) == 1:
        trials = min(limits.max_trials, max(plan.n_trials, 2 * int(last["n_trials"])))
        if trials > last["n_trials"]:
            why = (
                f"The last challenger ({last['family']}, {last['n_trials']} trials) was "
                f"rejected: search wider, {trials} trials."
            )
            return plan.model_copy(update={"n_trials": trials, "rationale": why})
    others = [f for f in limits.families if f != last["family"]]
    if not others:
        return plan
    streak = (
        "The last challenger was rejected"
        if len(rejected) == 1
        else f"{len(rejected)} challengers in a row were rejected"
    )
    why = (
        f"{streak} (last: {last['family']}, {last['n_trials']} trials): try the other "
        f"family, {others[0]}."
    )
    return plan.model_copy(update={"family": others[0], "rationale": why})


def plan_check(limits: OptimizerLimits) -> Callable[[OptimizerPlan], None]:
    """The bounds a proposed plan must keep (the LLM's plan is refused outside them)."""

    def check(p: OptimizerPlan) -> None:
        if p.family not in limits.families:
            raise LLMError(f"family {p.family!r} not allowed: {limits.families}")
        if (
            not limits.min_trials <= p.n_trials <= limits.max_trials
            or not 0 < p.timeout_s <= limits.max_timeout_s
        ):
            raise LLMError(
                f"budget out of limits: trials {limits.min_trials}-{limits.max_trials}, "
                f"timeout <= {limits.max_timeout_s}"
            )

    return check


def plan_schema(limits: OptimizerLimits) -> type[OptimizerPlan]:
    """The plan as the LLM must write it: an allowed family, trials and a whole number of
    seconds inside the limits (``plan_check`` still checks them)."""
    return narrowed(
        OptimizerPlan,
        family={"enum": list(limits.families)},
        n_trials={"minimum": limits.min_trials, "maximum": limits.max_trials},
        timeout_s={"type": "integer", "minimum": 1, "maximum": int(limits.max_timeout_s)},
    )


class OptimizerEvidence(BaseModel):
    """What the optimizer plans from."""

    champion_family: str = Field(description="The champion's model family.")
    drift: dict[str, Any] = Field(
        description="The analyst's findings: weighted_share, severity, and in the model's "
        "metric (`metric`) the champion's score and metric_drop (> 0 worse)."
    )
    rejected_attempts: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Each retrain attempt since the last promotion (family, n_trials), oldest "
        "first: every one's challenger was turned down.",
    )

    def shown(self) -> dict[str, Any]:
        """What the agent is shown (and the audit records)."""
        return self.model_dump()


@dataclass(frozen=True)
class OptimizerRuling:
    """The plan and how it was reached."""

    outcome: Outcome[OptimizerPlan]


def gather(state: dict[str, Any], ctx: RunContext) -> OptimizerEvidence:
    """The champion's family, the drift findings and the rejected attempts (history)."""
    run_id, model = state["run_id"], state["model"]
    rejected = rejected_attempts(ctx.history(model, run_id))
    return OptimizerEvidence(
        champion_family=ctx.model(model).family,
        drift={
            k: state["drift"].get(k)
            for k in ("weighted_share", "severity", "metric", "metric_drop", "score")
        },
        rejected_attempts=[
            {k: r["optimizer"][k] for k in ("family", "n_trials")} for r in rejected
        ],
    )


def decide(evidence: OptimizerEvidence, policy: Policy, llm: Llm) -> OptimizerRuling:
    """The study's family and budget (pure but for ``llm``): the policy's plan, changed after
    rejected challengers; the LLM chooses within the limits."""
    limits = policy.optimizer
    rejected = [{"optimizer": attempt} for attempt in evidence.rejected_attempts]
    fallback = plan_after_rejections(
        default_plan(limits, evidence.champion_family), limits, rejected
    )
    outcome = llm.decide(
        NAME,
        plan_schema(limits),
        evidence.shown(),
        limits.model_dump(),
        fallback,
        check=plan_check(limits),
    )
    return OptimizerRuling(outcome)


def apply(
    ruling: OptimizerRuling, evidence: OptimizerEvidence, state: dict[str, Any], ctx: RunContext
) -> dict[str, Any]:
    """Run the study on the default training window, audit the plan, write the slice."""
    run_id, model = state["run_id"], state["model"]
    plan = ruling.outcome.decision
    window, _ = training_window(
        ctx, model, ctx.policy.retraining.default_window, state["ingestion"]["path"]
    )
    base = ctx.train_spec(model, plan.family)
    study_name = f"{model}-{run_id}-{plan.family}"  # resumable: a replay finishes the same study
    study = ctx.call(
        run_id,
        NAME,
        "tune.tune",
        lambda: tune(
            window,
            base,
            study_name=study_name,
            storage=ctx.settings.optuna_storage,
            budget=TuneBudget(n_trials=plan.n_trials, timeout_s=plan.timeout_s),
        ),
        {"study": study_name, "rows": window.height, "trials": plan.n_trials},
        lambda s: s.model_dump(exclude={"trials"}),
    )
    ctx.record(
        run_id,
        NAME,
        ruling.outcome,
        f"tune:{plan.family}",
        plan.rationale,
        {**evidence.shown(), "plan": plan.model_dump(), "best_value": study.best_value},
    )
    return {
        "optimizer": {
            "family": plan.family,
            "n_trials": plan.n_trials,
            "study": study_name,
            "best_params": study.best_params,
            "loss": TRAINING_LOSS[base.task],  # what best_value is (lower is better)
            "best_value": study.best_value,
            "n_complete": study.n_complete,
            "n_pruned": study.n_pruned,
        }
    }


def node(state: dict[str, Any], runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    evidence = gather(state, ctx)
    return apply(decide(evidence, ctx.policy, ctx.llm), evidence, state, ctx)
