"""Evaluator: champion vs challenger on the same held-out recent rows; promote or reject.

Both are scored in the model's own metric (``RunContext.metric``); the gain honours its
direction (> 0: the challenger is better, also for log loss or RMSE) and, for RMSE and MAE, is
a share of the champion's score. Reject is forced unless the gain's interval lies above zero,
and whatever the gain on a holdout too small to judge on (``evaluator.min_holdout_rows``
labelled rows; a classifier's also two classes of ``min_class_rows``): on a 45-row multiclass
holdout a challenger "won" 0.225 macro ROC AUC (lower bound 0.070) and was 0.028 worse on the
truth, since a bootstrap of a few rows per class is narrower than the truth's spread.

A recalibration (``retraining.kind`` "recalibrate": the champion plus a calibration map) is
judged on log loss instead: a monotone map of the scores cannot change a binary ROC AUC (the
ranking is the same), so only the probabilities can get better. The model's own metric must
then not drop by a drop that counts: significant AND at least the drift analyst's
``drift.max_metric_drop``. A multiclass map reweights the classes inside a softmax, which
reorders the rows of every one-vs-rest ranking a little: on the quick flights_delay_class label
shift a prior map gained 0.025 log loss and cost 0.0013 to 0.0019 macro ROC AUC on 2,300 rows
it was not fitted on, a cost that a 300-row paired bootstrap can call significant (-0.0039, 95%
CI -0.0079 to -0.0003): a zero tolerance rejected the map the label shift called for.
``evaluation.judged_on`` names the metric the verdict was made on.

Challenger sanity: a challenger whose holdout score is worse than chance (its whole interval
on the wrong side of what a know-nothing model scores: ``tools.metrics.chance_level``), or far
below its own validation score (more than ``max_valid_gap``; an RMSE or MAE read on the
validation's scale when the holdout spreads wider), is flagged ``training_defect``
with the numbers and rejected. On a real stream with a lasting concept change this is what a
training window dominated by the old concept does when the holdout is the latest rows of the
new one: the challenger learnt the old relation, which the new rows invert (a ROC AUC below
0.5; see tests/unit/test_challenger_sanity.py).
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
from agents.drift_measures import too_small
from agents.explain import change_unit, describe_gain
from driftpilot.core.errors import LLMError
from driftpilot.core.metric_text import direction
from driftpilot.core.policy import Policy
from driftpilot.core.tasks import METRICS, Task
from tools import registry
from tools.evaluate import Comparison, compare_models
from tools.metrics import SPREAD_METRICS, MetricInterval, chance_level, encode_labels, interval

NAME = "evaluator"
RECALIBRATION_METRIC = "log_loss"  # what a calibration map can improve (see the docstring)


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
    kind: str = Field("retrain", description="retrain, or recalibrate (judged on log loss).")
    primary: Comparison | None = Field(
        None, description="A recalibration: the comparison in the model's own metric."
    )
    own: MetricInterval | None = Field(
        None, exclude=True, description="The challenger's holdout score in the model's metric."
    )
    training_defect: dict[str, Any] | None = Field(
        None, description="Why the challenger's fit is broken, with the numbers (None: sane)."
    )
    holdout_too_small: str | None = Field(
        None,
        description="Why no gain on this holdout counts (too few labelled rows, or classes "
        "too small: evaluator.min_holdout_rows, min_class_rows); None: enough.",
    )

    def shown(self) -> dict[str, Any]:
        """What the agent is shown (and the audit records)."""
        out = verdict_evidence(self.comparison)
        if self.primary is not None:
            out["judged_on"] = self.comparison.metric
            out["primary"] = primary_summary(self.primary)
        if self.training_defect is not None:
            out["training_defect"] = self.training_defect
        if self.holdout_too_small is not None:
            out["holdout_too_small"] = self.holdout_too_small
        return out


def primary_summary(cmp: Comparison) -> dict[str, Any]:
    """A recalibration's comparison in the model's own metric, as shown and recorded."""
    keys = ("metric", "champion", "challenger", "gain", "ci_low", "ci_high")
    return {**{k: getattr(cmp, k) for k in keys}, "dropped_significantly": cmp.ci_high < 0}


def training_defect(
    own: MetricInterval,
    chance: float | None,
    valid: float | None,
    max_gap: float,
    valid_chance: float | None = None,
) -> dict[str, Any] | None:
    """Why the challenger's fit is broken, or None. Direction-aware, on the most favourable
    end of its holdout interval (so noise on a small holdout is no defect): worse than
    ``chance`` (what a know-nothing model scores: ROC AUC 0.5, R² 0, RMSE the target's
    spread, ...), or more than ``max_gap`` worse than its own validation score ``valid``
    (points, or a share for RMSE/MAE).

    A score in the target's units (RMSE, MAE) is compared with its validation score on the
    validation's scale when ``valid_chance`` (the know-nothing score there) is known: the
    holdout's score times ``valid_chance / chance`` (when the holdout's spread is the wider:
    a narrower one is judged raw). A holdout whose target spreads wider
    (the latest rows of a summer month) scores a higher RMSE with the same skill: on raw
    RMSE, the flights regression's June challenger, better than its champion, was rejected
    as a defect (64.9 on the holdout against 47.1 in validation, where predicting the mean
    scored 69.0)."""
    info = METRICS[own.metric]
    if own.value is None:
        return None
    best = own.high if info.higher_is_better else own.low
    best = own.value if best is None else best
    shown = f"{own.metric} {own.value:.4f}"
    if own.low is not None and own.high is not None:
        shown += f" ({own.confidence:.0%} interval {own.low:.4f} to {own.high:.4f})"
    reasons = []
    if chance is not None and info.gain(chance, best) < 0:
        reasons.append(
            f"worse than chance: {shown} on the holdout, where a model that knows nothing "
            f"scores {chance:.4f} ({direction(info.name)})"
        )
    rescaled = _on_validation_scale(own.metric, best, chance, valid_chance)
    gap = info.drop(valid, rescaled) if valid is not None else None
    if valid is not None and gap is not None and gap > max_gap:
        scale = (
            f", {rescaled:.4f} on the validation's scale (a know-nothing model scores "
            f"{chance:.4f} on the holdout, {valid_chance:.4f} in validation)"
            if rescaled != best and chance is not None and valid_chance is not None
            else ""
        )
        reasons.append(
            f"far below its own validation score: {shown} on the holdout{scale} against "
            f"{valid:.4f} in validation (gap {gap:.4f} > {max_gap})"
        )
    if not reasons:
        return None
    return {
        "metric": own.metric,
        "holdout": own.value,
        "holdout_low": own.low,
        "holdout_high": own.high,
        "valid": valid,
        "chance": chance,
        "valid_chance": valid_chance,
        "gap": gap,
        "max_gap": max_gap,
        "why": "; ".join(reasons),
    }


def _on_validation_scale(
    name: str, best: float, chance: float | None, valid_chance: float | None
) -> float:
    """The holdout's score ``best`` on the validation's scale: rescaled by the ratio of the
    two know-nothing scores for a metric in the target's units (``SPREAD_METRICS``) when the
    holdout's target spreads wider, as is otherwise (points need no rescaling, without both
    levels there is no scale, and a narrower holdout is judged raw, as before: its gap is
    never widened, so nothing that was sane becomes a defect)."""
    if name not in SPREAD_METRICS or not chance or not valid_chance or chance <= valid_chance:
        return best
    return best * valid_chance / chance


def drop_counts(primary: Comparison, max_drop: float) -> bool:
    """Whether a recalibration's drop in the model's own metric counts: significant (the
    gain's interval below zero) and at least ``max_drop`` (the drift analyst's
    ``max_metric_drop``: metric points, or a share for RMSE/MAE, like the gain), so a map is
    not promoted with a drop the analyst would act on at the next batch."""
    return primary.ci_high < 0 and -primary.gain >= max_drop


def rejection_reasons(evidence: EvaluatorEvidence, max_drop: float) -> list[str]:
    """What forces a reject whatever the gain: a holdout too small for a gain to count, a
    training defect, or a recalibration whose drop in the model's own metric counts
    (``drop_counts``)."""
    reasons = []
    if evidence.holdout_too_small is not None:
        reasons.append(f"the holdout is too small to judge on: {evidence.holdout_too_small}")
    if evidence.training_defect is not None:
        reasons.append(f"training defect: {evidence.training_defect['why']}")
    primary = evidence.primary
    if primary is not None and drop_counts(primary, max_drop):
        reasons.append(
            f"the recalibration drops {primary.metric} by a drop that counts (significant and "
            f"at least {max_drop}): "
            f"{describe_gain(primary.gain, primary.ci_low, primary.ci_high, primary.confidence)}"
        )
    return reasons


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
    kind = trained.get("kind", "retrain")

    def compare(metric: str) -> Comparison:
        return ctx.call(
            run_id,
            NAME,
            "evaluate.compare_models",
            lambda: compare_models(
                champion,
                challenger,
                holdout,
                spec.target,
                task=spec.task,
                metric=metric,
                n_boot=rules.n_boot,
                confidence=rules.confidence,
                seed=ctx.settings.seed,
            ),
            {
                "holdout_rows": holdout.height,
                "champion_version": champ[1] if champ else None,
                "challenger_run": trained["mlflow_run_id"],
                "metric": metric,
            },
        )

    recalibration = kind == "recalibrate"
    cmp = compare(RECALIBRATION_METRIC if recalibration else info.name)
    evidence = EvaluatorEvidence(
        comparison=cmp,
        champion_version=champ[1] if champ else None,
        task=spec.task,
        target=spec.target,
        holdout=holdout,
        challenger=challenger,
        kind=kind,
        primary=compare(info.name) if recalibration else None,
    )
    return sanity(evidence, state, ctx)


def sanity(
    evidence: EvaluatorEvidence, state: dict[str, Any], ctx: RunContext
) -> EvaluatorEvidence:
    """Score the challenger's own holdout interval in the model's metric (audited; the new
    baseline if it is promoted) and check it against chance and its validation score."""
    run_id, trained = state["run_id"], state["retraining"]
    holdout, challenger, rules = evidence.holdout, evidence.challenger, ctx.policy.evaluator
    assert holdout is not None and challenger is not None
    name = ctx.metric(state["model"]).name
    classes = list(getattr(challenger, "classes", None) or []) or None
    y = encode_labels(holdout[evidence.target], evidence.task, classes)
    own = ctx.call(
        run_id,
        NAME,
        "estimate.metric_interval",
        lambda: interval(
            name,
            evidence.task,
            y,
            challenger.predict_scores(holdout),
            n_boot=rules.n_boot,
            confidence=rules.confidence,
            seed=ctx.settings.seed,
        ),
        {"holdout_rows": holdout.height, "challenger_run": trained["mlflow_run_id"]},
    )
    same = trained.get("valid_metric") == name
    valid = trained.get("valid_score") if same else None
    valid_chance = trained.get("valid_chance") if same else None  # None before it was kept
    chance = chance_level(name, evidence.task, y)
    defect = training_defect(own, chance, valid, rules.max_valid_gap, valid_chance)
    small = too_small(
        holdout[evidence.target], evidence.task, rules.min_holdout_rows, rules.min_class_rows
    )
    update = {"own": own, "training_defect": defect, "holdout_too_small": small}
    return evidence.model_copy(update=update)


def decide(evidence: EvaluatorEvidence, policy: Policy, llm: Llm) -> EvaluatorRuling:
    """Promote or reject (pure but for ``llm``): reject is forced unless the gain's interval
    lies above zero, and whatever the gain for a training defect or a recalibration whose drop
    in the model's own metric counts (significant and at least ``drift.max_metric_drop``); the
    LLM chooses within what the policy allows."""
    cmp = evidence.comparison
    max_drop = policy.drift.max_metric_drop
    blocked = rejection_reasons(evidence, max_drop)
    allowed = ["reject"] if blocked else policy.evaluator_allowed(cmp.ci_low)
    rationale = template(cmp, allowed[0], evidence.primary, max_drop)
    if blocked:
        rationale = f"{rationale} Rejected whatever the gain: {'; '.join(blocked)}."
    fallback = EvaluationVerdict(action=allowed[0], rationale=rationale)

    def check(v: EvaluationVerdict) -> None:
        if v.action not in allowed:
            why = "; ".join(blocked) or describe_gain(
                cmp.gain, cmp.ci_low, cmp.ci_high, cmp.confidence
            )
            raise LLMError(f"{v.action!r} not allowed: {why}")

    outcome = llm.decide(
        NAME,
        verdict_schema(allowed),
        evidence.shown(),
        # the policy's own choice beside what it allows: a 0.5B model read "promote it, unless
        # the evidence gives you a reason not to" as a reason to reject, 4 of 4 (real-LLM year)
        {"allowed": allowed, "default": allowed[0]},
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
    verdict, shown = ruling.outcome.decision, evidence.shown()
    defect = evidence.training_defect
    flags = [f"training_defect: {defect['why']}"] if defect else []
    ctx.record(run_id, NAME, ruling.outcome, verdict.action, verdict.rationale, shown, flags)
    own = evidence.own
    assert own is not None  # scored in gather (sanity)
    return {
        "evaluation": {
            "action": verdict.action,
            **shown,
            "judged_on": evidence.comparison.metric,
            "champion_version": evidence.champion_version,
            # In the model's own metric (also for a recalibration judged on log loss): the
            # new baseline the drift analyst measures drops from.
            "challenger_score": own.value,
            "challenger_low": own.low,
            "challenger_high": own.high,
        }
    }


def node(state: dict[str, Any], runtime: Runtime[RunContext]) -> dict[str, Any]:
    ctx = runtime.context
    evidence = gather(state, ctx)
    return apply(decide(evidence, ctx.policy, ctx.llm), evidence, state, ctx)


def template(
    cmp: Comparison, action: str, primary: Comparison | None = None, max_drop: float | None = None
) -> str:
    """The policy's rationale: the scores in the model's metric and its direction, the gain
    (in points, or a share of the champion's score) with its interval, and what the interval
    says (better, worse, or no sure difference), then the action. A recalibration (judged on
    log loss) also quotes the model's own metric, and says so when its significant drop is
    under ``max_drop`` (the drop that counts)."""
    info = METRICS[cmp.metric]
    gain = describe_gain(cmp.gain, cmp.ci_low, cmp.ci_high, cmp.confidence, cmp.n_rows)
    judged = "Recalibration judged on " if primary is not None else ""
    text = (
        f"{judged}{cmp.metric} ({direction(info.name)}; gain in {change_unit(info)}): champion "
        f"{cmp.champion:.4f}, challenger {cmp.challenger:.4f}, {gain}; {action}."
    )
    if primary is None:
        return text
    if primary.gain == 0 and primary.ci_low == 0 and primary.ci_high == 0:
        kept = f"{primary.metric} unchanged ({primary.champion:.4f})"
        return f"{text} {kept}: a monotone map keeps the ranking."
    moved = describe_gain(primary.gain, primary.ci_low, primary.ci_high, primary.confidence)
    text = (
        f"{text} {primary.metric}: champion {primary.champion:.4f}, recalibrated "
        f"{primary.challenger:.4f}, {moved}."
    )
    if max_drop is None or primary.ci_high >= 0 or drop_counts(primary, max_drop):
        return text
    return (
        f"{text} A drop under {max_drop} does not count (drift.max_metric_drop): a map that "
        "reweights the classes reorders each one-vs-rest ranking a little."
    )
