"""Evaluator: champion vs challenger on the same held-out recent rows; promote or reject.

Both are scored in the model's own metric (``RunContext.metric``); the gain honours its
direction (> 0: the challenger is better, also for log loss or RMSE) and, for RMSE and MAE, is
a share of the champion's score. Reject is forced unless the gain's interval lies above zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field

from agents.base import Llm, Outcome, bounded_text, narrowed
from agents.context import RunContext
from agents.explain import change_unit, describe_gain
from driftpilot.core.errors import LLMError
from driftpilot.core.metric_text import direction
from driftpilot.core.policy import Policy
from driftpilot.core.tasks import METRICS, Task
from tools import registry
from tools.evaluate import Comparison, compare_models
from tools.metrics import encode_labels, interval

NAME = "evaluator"


class EvaluationVerdict(BaseModel):
    """Whether the challenger should replace the champion."""

    action: Literal["promote", "reject"] = Field(description="promote the challenger or reject it.")
    rationale: str = bounded_text("Why, citing the gain and its confidence interval.")


def verdict_evidence(cmp: Comparison) -> dict[str, Any]:
    """What the evaluator is shown: the comparison, and the interval's verdict in words (a
    small model reads "ci_low": 0.0061 as a small number, not as "the challenger is better
    at this confidence")."""
    return {**cmp.model_dump(), "interval_above_zero": cmp.ci_low > 0}


def verdict_schema(allowed: Sequence[str]) -> type[EvaluationVerdict]:
    """The verdict as the LLM must write it: an action the policy allows."""
    return narrowed(EvaluationVerdict, action={"enum": list(allowed)})


class _Constant:
    """Stands in for a missing champion: every row scored alike, knowing nothing (binary
    0.5, multiclass the uniform distribution over the challenger's classes, regression the
    holdout's mean)."""

    def __init__(self, task: Task, classes: list[Any], level: float) -> None:
        self.task, self.classes, self.level = task, classes, level

    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
        if self.task == "multiclass":
            return np.full((frame.height, len(self.classes)), 1 / len(self.classes))
        return np.full(frame.height, self.level if self.task == "regression" else 0.5)


def _no_champion(task: Task, challenger: Any, holdout: pl.DataFrame, target: str) -> _Constant:
    level = holdout[target].cast(pl.Float64).mean() if task == "regression" else None
    mean = level if isinstance(level, float) else 0.0
    return _Constant(task, list(getattr(challenger, "classes", None) or []), mean)


class EvaluatorEvidence(BaseModel):
    """What the evaluator decides on: the champion-challenger comparison (and, for ``apply``
    only, what it scores the challenger's own interval with)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    comparison: Comparison = Field(description="Champion vs challenger on the holdout.")
    champion_version: int | None = Field(description="The champion compared (None: none yet).")
    task: Task = Field("binary", description="The model's task (apply only).")
    target: str = Field("", description="The label column (apply only).")
    holdout: pl.DataFrame | None = Field(
        None, exclude=True, description="The holdout rows (apply only; absent in a replay)."
    )
    challenger: Any = Field(
        None, exclude=True, description="The challenger model (apply only; absent in a replay)."
    )

    def shown(self) -> dict[str, Any]:
        """What the agent is shown (and the audit records)."""
        return verdict_evidence(self.comparison)


@dataclass(frozen=True)
class EvaluatorRuling:
    """The evaluator's decision and how it was reached."""

    outcome: Outcome[EvaluationVerdict]
    allowed: list[str]


def gather(state: dict[str, Any], ctx: RunContext) -> EvaluatorEvidence:
    """Load the challenger and the champion and compare them on the holdout (audited)."""
    run_id, model = state["run_id"], state["model"]
    spec = ctx.spec(model)
    rules = ctx.policy.evaluator
    holdout = pl.read_parquet(state["retraining"]["holdout_path"])
    # The challenger is a logged MLflow run, not a registered version (see agents.retraining).
    trained = state["retraining"]
    if "model_uri" in trained:
        challenger = registry.load_logged(trained["model_uri"], ctx.settings)
    else:  # a run checkpointed before challengers were logged instead of registered
        challenger = registry.load_version(model, trained["version"], ctx.settings)
    champ = ctx.champion(model)
    champion = champ[0] if champ else _no_champion(spec.task, challenger, holdout, spec.target)
    info = ctx.metric(model)
    cmp: Comparison = ctx.call(
        run_id,
        NAME,
        "evaluate.compare_models",
        lambda: compare_models(
            champion,
            challenger,
            holdout,
            spec.target,
            task=spec.task,
            metric=info.name,
            n_boot=rules.n_boot,
            confidence=rules.confidence,
            seed=ctx.settings.seed,
        ),
        {
            "holdout_rows": holdout.height,
            "champion_version": champ[1] if champ else None,
            "challenger_run": state["retraining"]["mlflow_run_id"],
            "metric": info.name,
        },
    )
    return EvaluatorEvidence(
        comparison=cmp,
        champion_version=champ[1] if champ else None,
        task=spec.task,
        target=spec.target,
        holdout=holdout,
        challenger=challenger,
    )


def decide(evidence: EvaluatorEvidence, policy: Policy, llm: Llm) -> EvaluatorRuling:
    """Promote or reject (pure but for ``llm``): reject is forced unless the gain's interval
    lies above zero; the LLM chooses within what the policy allows."""
    cmp = evidence.comparison
    allowed = policy.evaluator_allowed(cmp.ci_low)
    fallback = EvaluationVerdict(action=allowed[0], rationale=template(cmp, allowed[0]))

    def check(v: EvaluationVerdict) -> None:
        if v.action not in allowed:
            raise LLMError(
                f"{v.action!r} not allowed: "
                f"{describe_gain(cmp.gain, cmp.ci_low, cmp.ci_high, cmp.confidence)}"
            )

    outcome = llm.decide(
        NAME,
        verdict_schema(allowed),
        evidence.shown(),
        {"allowed": allowed},
        fallback,
        check=check,
    )
    return EvaluatorRuling(outcome, list(allowed))


def apply(
    ruling: EvaluatorRuling, evidence: EvaluatorEvidence, state: dict[str, Any], ctx: RunContext
) -> dict[str, Any]:
    """Audit the verdict, score the challenger's own interval (the new baseline if it is
    promoted) and write the evaluation slice."""
    run_id = state["run_id"]
    rules = ctx.policy.evaluator
    verdict, shown = ruling.outcome.decision, evidence.shown()
    ctx.record(run_id, NAME, ruling.outcome, verdict.action, verdict.rationale, shown)
    holdout, challenger = evidence.holdout, evidence.challenger
    assert holdout is not None and challenger is not None
    classes = list(getattr(challenger, "classes", None) or []) or None
    own = ctx.call(
        run_id,
        NAME,
        "estimate.metric_interval",
        lambda: interval(
            evidence.comparison.metric,
            evidence.task,
            encode_labels(holdout[evidence.target], evidence.task, classes),
            challenger.predict_scores(holdout),
            n_boot=rules.n_boot,
            confidence=rules.confidence,
            seed=ctx.settings.seed,
        ),
        {"holdout_rows": holdout.height, "challenger_run": state["retraining"]["mlflow_run_id"]},
    )
    return {
        "evaluation": {
            "action": verdict.action,
            **shown,
            "champion_version": evidence.champion_version,
            "challenger_score": own.value,
            "challenger_low": own.low,
            "challenger_high": own.high,
        }
    }


def node(state: dict[str, Any], runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    evidence = gather(state, ctx)
    return apply(decide(evidence, ctx.policy, ctx.llm), evidence, state, ctx)


def template(cmp: Comparison, action: str) -> str:
    """The policy's rationale: the scores in the model's metric and its direction, the gain
    (in points, or a share of the champion's score) with its interval, and what the interval
    says (better, worse, or no sure difference), then the action."""
    info = METRICS[cmp.metric]
    gain = describe_gain(cmp.gain, cmp.ci_low, cmp.ci_high, cmp.confidence, cmp.n_rows)
    return (
        f"{cmp.metric} ({direction(info.name)}; gain in {change_unit(info)}): champion "
        f"{cmp.champion:.4f}, challenger {cmp.challenger:.4f}, {gain}; {action}."
    )
