"""Retraining: choose the training window (last k batches, within limits), fit the challenger
with the tuned parameters and log it as an MLflow run with its model (idempotent per run
step). It is not registered as a version here: the CI/CD agent registers it only when it is
promoted or put to an approver, so rejected challengers do not clutter the registry."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from langgraph.runtime import Runtime
from pydantic import BaseModel, Field

from agents.base import Llm, Outcome, bounded_text, narrowed
from agents.context import RunContext
from agents.explain import count
from agents.optimizer import rejected_attempts, training_window
from driftpilot.core.errors import LLMError, TrainerFailed
from driftpilot.core.policy import Policy
from tools import registry
from tools.data import write_parquet_atomic
from tools.train import TrainedModel, TrainSpec, train_model
from tools.trainer import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT_S,
    TRAINER_FAMILY,
    TrainerResult,
    run_trainer,
)

NAME = "retraining"


class RetrainPlan(BaseModel):
    """Which data the challenger learns from."""

    window: int = Field(description="Number of most recent accepted batches to train on.")
    rationale: str = bounded_text("Why this window.")


def plan_schema(lowest: int, highest: int) -> type[RetrainPlan]:
    """The plan as the LLM must write it: a window inside the limits."""
    return narrowed(RetrainPlan, window={"minimum": lowest, "maximum": highest})


class RetrainingEvidence(BaseModel):
    """What the window is chosen from."""

    rejected_windows: list[int] = Field(
        description="Windows of the challengers turned down since the last promotion."
    )
    available_batches: int = Field(description="Accepted batches of the model, this one included.")
    drift: str | None = Field(description="The drift severity the analyst found.")
    optimizer: dict[str, Any] = Field(
        description="The tuned family, the validation loss its study minimised (`loss`) and "
        "its best_value (lower is better)."
    )
    material: bool = Field(
        False, description="The inputs moved materially (not shown: the window rules read it)."
    )

    def shown(self) -> dict[str, Any]:
        """What the agent is shown (and the audit records)."""
        return self.model_dump(exclude={"material"})


@dataclass(frozen=True)
class RetrainingRuling:
    """The window and how it was chosen."""

    outcome: Outcome[RetrainPlan]


def gather(state: dict[str, Any], ctx: RunContext) -> RetrainingEvidence:
    """The batches available and the windows of the rejected challengers (history)."""
    run_id, model = state["run_id"], state["model"]
    rejected = rejected_attempts(ctx.history(model, run_id))
    return RetrainingEvidence(
        rejected_windows=[r["retraining"]["window"] for r in rejected if r.get("retraining")],
        available_batches=len(ctx.accepted_batches(model)),
        drift=state["drift"].get("severity"),
        # best_value is the study's validation loss (loss: log_loss or rmse, lower is better)
        optimizer={k: state["optimizer"].get(k) for k in ("family", "loss", "best_value")},
        material=bool(state["drift"].get("material")),
    )


def decide(evidence: RetrainingEvidence, policy: Policy, llm: Llm) -> RetrainingRuling:
    """The training window (pure but for ``llm``): the policy's, moved after a rejected
    challenger; the LLM chooses within the limits."""
    limits = policy.retraining
    available = evidence.available_batches
    upper = min(limits.max_window, max(available, limits.min_window))
    drift = {"drift": {"material": evidence.material, "severity": evidence.drift}}
    rejected = [{"retraining": {"window": w}} for w in evidence.rejected_windows]
    fallback = window_plan(limits.default_window, limits.min_window, upper, drift, rejected)
    fallback.rationale += f" ({count(available, 'batch', 'batches')} available)"

    def check(p: RetrainPlan) -> None:
        if not limits.min_window <= p.window <= upper:
            raise LLMError(f"window {p.window} outside {limits.min_window}-{upper}")

    outcome = llm.decide(
        NAME,
        plan_schema(limits.min_window, upper),
        evidence.shown(),
        {"min": limits.min_window, "max": upper},
        fallback,
        check=check,
    )
    return RetrainingRuling(outcome)


def apply(
    ruling: RetrainingRuling,
    evidence: RetrainingEvidence,
    state: dict[str, Any],
    ctx: RunContext,
) -> dict[str, Any]:
    """Fit the challenger on the window, log it in MLflow, audit, write the slice (once)."""
    run_id = state["run_id"]
    plan = ruling.outcome.decision
    result = _fit_and_log(ctx, state, plan.window)
    shown = {**evidence.shown(), **result}
    action, rationale = f"train:{plan.window}", plan.rationale
    if result.get("failed"):  # the owner's trainer gave no challenger: the run ends here
        action, rationale = f"train_failed:{result['reason']}", f"{rationale}; {result['error']}"
    ctx.record(run_id, NAME, ruling.outcome, action, rationale, shown)
    ctx.store.record_effect(run_id, NAME, result)
    return {"retraining": result}


def node(state: dict[str, Any], runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    done = ctx.store.effect(state["run_id"], NAME)
    if done is not None:
        return {"retraining": done}
    evidence = gather(state, ctx)
    return apply(decide(evidence, ctx.policy, ctx.llm), evidence, state, ctx)


def window_plan(
    default: int, low: int, high: int, state: dict[str, Any], rejected: list[dict[str, Any]]
) -> RetrainPlan:
    """The policy's window. After a rejected challenger the evidence picks the change: when
    the inputs moved materially or the drop is severe, the past misleads, so a narrower window
    (the latest batches); otherwise a wider one (more data against noise)."""
    window = min(default, high)
    last = next((r["retraining"]["window"] for r in reversed(rejected) if r.get("retraining")), 0)
    if not last:
        capped = f" {default}, capped at {high}" if window < default else ""
        return RetrainPlan(window=window, rationale=f"Policy default window{capped}: last {window}")
    drift = state["drift"]
    shifted = bool(drift.get("material")) or drift.get("severity") == "high"
    narrower, wider = max(low, last // 2), min(high, last * 2)
    window = narrower if shifted and narrower < last else wider if wider > last else narrower
    why = window_change(last, window, shifted, low, high)
    rejected_on = count(last, "batch", "batches")
    return RetrainPlan(
        window=window,
        rationale=f"A challenger on the last {rejected_on} was rejected: {why}, last {window}",
    )


def window_change(last: int, window: int, shifted: bool, low: int, high: int) -> str:
    """Why the window moved from ``last`` to ``window``, in words that match the move: the
    limits can force the other direction than the evidence asks for, or no move at all."""
    if window < last:
        if shifted:
            return "the inputs moved: the latest data only"
        return f"no wider window within the limit {high}: a narrower one"
    if window > last:
        if shifted:
            return f"the inputs moved, but no narrower window within the limit {low}: wider"
        return "more data against noise"
    return f"no other window within the limits {low}-{high}: the same"


def _fit_and_log(ctx: RunContext, state: dict[str, Any], window_k: int) -> dict[str, Any]:
    run_id, model = state["run_id"], state["model"]
    window, holdout = training_window(ctx, model, window_k, state["ingestion"]["path"])
    family = state["optimizer"]["family"]
    metric = ctx.metric(model).name  # the validation score the slice reports
    train_spec = ctx.train_spec(model, family, state["optimizer"]["best_params"])
    trainer = ctx.model(model).trainer
    logs: list[str] = []
    challenger: TrainedModel
    if trainer:  # the owner's code fits the challenger, in a process of its own
        try:
            fitted = _fit_with_trainer(ctx, run_id, model, trainer, window, train_spec)
        except TrainerFailed as exc:
            return _trainer_failed(trainer, exc, window_k, window.height)
        challenger, family, logs = fitted.model, TRAINER_FAMILY, [str(fitted.log_path)]
    else:
        challenger = ctx.call(
            run_id,
            NAME,
            "train.train_model",
            lambda: train_model(window, train_spec),
            {"family": family, "rows": window.height},
            lambda m: m.report.model_dump() if m.report else {},
        )
    folder = ctx.model_dir(model)
    window_path, holdout_path = (
        folder / f"window-{run_id}.parquet",
        folder / f"holdout-{run_id}.parquet",
    )
    write_parquet_atomic(window, window_path)  # a full disk leaves no torn reference
    write_parquet_atomic(holdout, holdout_path)
    request = registry.RegisterRequest(
        name=model,
        key=f"{run_id}:{NAME}",
        params={"window_batches": window_k, "run_id": run_id, "study": state["optimizer"]["study"]},
        tags={"driftpilot.run_id": run_id},
        artifacts=[*([state["drift"]["report"]] if state["drift"].get("report") else []), *logs],
    )
    logged = ctx.mutate(
        run_id,
        NAME,
        f"{NAME}:log_model",
        "registry.log_model",
        lambda: registry.log_model(challenger, request, ctx.settings),
        {"name": model, "key": request.key},
        lambda m: m.model_dump(mode="json"),
        fault="after_log",
    )
    risky = sum(len(json.loads(r.reason or "[]")) for r in ctx.accepted_batches(model)[-window_k:])
    return {
        "kind": "retrain",  # agents.recalibration writes "recalibrate" in the same slice
        "mlflow_run_id": logged.run_id,
        "model_uri": logged.model_uri,
        "model_id": logged.model_id,
        "family": family,
        "window": window_k,
        "rows": window.height,
        "window_path": str(window_path),
        "holdout_path": str(holdout_path),
        "valid_metric": metric,
        "valid_score": challenger.report.valid.get(metric) if challenger.report else None,
        # RMSE, MAE: the validation's spread, which the evaluator reads that score against
        "valid_chance": challenger.report.valid_chance.get(metric) if challenger.report else None,
        "window_quality_warnings": risky,
        **({"trainer": trainer, "trainer_log": logs[0]} if trainer else {}),
    }


def _fit_with_trainer(
    ctx: RunContext, run_id: str, model: str, trainer: str, window: Any, spec: TrainSpec
) -> TrainerResult:
    """Fit with the owner's ``package.module:fit`` (tools.trainer), audited as a tool call;
    its log is kept in the model's folder and attached to the challenger's MLflow run."""
    workdir = ctx.model_dir(model) / f"trainer-{run_id}"
    return ctx.call(
        run_id,
        NAME,
        "trainer.run_trainer",
        lambda: run_trainer(
            trainer,
            window,
            spec,
            timeout_s=DEFAULT_TIMEOUT_S,
            memory_mb=DEFAULT_MEMORY_MB,
            workdir=workdir,
        ),
        {"trainer": trainer, "rows": window.height, "timeout_s": DEFAULT_TIMEOUT_S},
        lambda r: {"kind": r.model.kind, "elapsed_s": r.elapsed_s, "log": str(r.log_path)},
    )


def _trainer_failed(trainer: str, exc: TrainerFailed, window_k: int, rows: int) -> dict[str, Any]:
    """The slice of a retrain whose trainer failed: why, and the end of its log. The graph
    ends the run as ``challenger_failed`` on it; the champion is not touched."""
    return {
        "kind": "retrain",
        "failed": True,
        "reason": exc.reason,
        "error": str(exc),
        "trainer": trainer,
        "family": TRAINER_FAMILY,
        "window": window_k,
        "rows": rows,
        "trainer_log": exc.log_path,
        "log_tail": exc.log_tail,
    }
