"""The drift analyst's measurements of the champion on a batch (the I/O half of its
``gather``): the domain classifier, the champion's ROC AUC with its interval and drop, the
CBPE estimate for a batch without labels, and what a quick retrain would win. Every tool call
goes through ``RunContext.call`` (timed and audited under the analyst's name)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from agents.context import RunContext
from agents.optimizer import training_window
from driftpilot.core.errors import DataError
from tools.estimate import estimate_performance, fit_calibrator, metric_interval
from tools.evaluate import Comparison, compare_models
from tools.shift import DomainCheck, domain_classifier
from tools.train import train_model

NAME = "drift_analyst"  # the agent the calls are audited under
MIN_DOMAIN_ROWS = 50  # per side: fewer and three folds say nothing
MIN_FRESH_ROWS = 200  # labelled rows a quick retrain needs to say anything


def domain_check(
    ctx: RunContext,
    run_id: str,
    reference: pl.DataFrame,
    frame: pl.DataFrame,
    numeric: list[str],
    categorical: list[str],
) -> DomainCheck | None:
    """The domain classifier, unless a side is too small for an honest out-of-fold AUC."""
    if min(reference.height, frame.height) < MIN_DOMAIN_ROWS:
        return None
    return ctx.call(
        run_id,
        NAME,
        "shift.domain_classifier",
        # One thread: LightGBM's threads wait on each other at each of many small trees.
        lambda: domain_classifier(
            reference,
            frame,
            numeric=numeric,
            categorical=categorical,
            threads=1,
            seed=ctx.settings.seed,
        ),
        {"reference_rows": reference.height, "batch_rows": frame.height},
    )


def performance(
    ctx: RunContext,
    run_id: str,
    model: str,
    frame: pl.DataFrame,
    champ: tuple[Any, int] | None,
    current_path: str,
) -> dict[str, Any]:
    """The champion's ROC AUC on the batch (interval) and its drop against the baseline; for
    an unlabelled batch, the CBPE estimate and the estimated drop. The estimate is made for
    labelled batches too: set beside the realised score, it shows how far the estimates on
    unlabelled batches can be trusted."""
    if champ is None:
        return {"champion_version": None}
    scorer, version = champ
    row = ctx.model(model)
    target = row.target
    out: dict[str, Any] = {"champion_version": version, "baseline": row.baseline}
    labelled = frame.filter(pl.col(target).is_not_null()) if target in frame.columns else frame[:0]
    rules = ctx.policy.drift
    estimate: dict[str, Any] = {}
    if row.holdout_path and Path(row.holdout_path).exists():
        try:
            estimate = _estimate(ctx, run_id, scorer, version, target, frame, row.holdout_path)
        except DataError as exc:  # audited by ctx.call; an estimate must never stop a run
            estimate = {"estimate_error": str(exc)}
    if labelled.height and labelled[target].n_unique() == 2:
        out.update({k: v for k, v in estimate.items() if not k.startswith("metric_drop")})
        # (a failed estimate is kept as its reason: the measured score stands either way)
        scored = ctx.call(
            run_id,
            NAME,
            "estimate.metric_interval",
            lambda: metric_interval(
                labelled[target].to_numpy(),
                scorer.predict_scores(labelled),
                n_boot=rules.n_boot,
                confidence=rules.confidence,
                seed=ctx.settings.seed,
            ),
            {"champion_version": version, "labelled_rows": labelled.height},
        )
        assert scored.value is not None and scored.high is not None
        out.update(
            {"roc_auc": scored.value, "roc_auc_low": scored.low, "roc_auc_high": scored.high}
        )
        if row.baseline is not None:
            spread = math.hypot(
                scored.high - scored.value, row.baseline - (row.baseline_low or row.baseline)
            )
            out.update(_drop(row.baseline, scored.value, spread))
        if rules.retrain == "auto":  # only the automatic policy weighs what a retrain wins
            out.update(_fresh_gain(ctx, run_id, model, labelled, scorer, current_path))
        return out
    out.update(estimate)
    return out


def _fresh_gain(
    ctx: RunContext,
    run_id: str,
    model: str,
    labelled: pl.DataFrame,
    champion: Any,
    current_path: str,
) -> dict[str, Any]:
    """What a retrain would win, measured before paying for one: a quick model (default
    parameters, no search, nothing registered) fitted on the very window a retrain would use
    is compared with the champion on the very holdout the evaluator would use (the latest
    rows of this batch), paired bootstrap. A champion that merely meets a harder batch (a
    season) shows a drop that no retrain fixes; this shows only what one does."""
    spec = ctx.spec(model)
    family = ctx.model(model).family
    window, holdout = training_window(
        ctx, model, ctx.policy.retraining.default_window, current_path
    )
    enough = window.height >= MIN_FRESH_ROWS and window[spec.target].n_unique() == 2
    if not enough or holdout[spec.target].n_unique() < 2:
        return {}
    train_spec = ctx.train_spec(model, "catboost" if family == "catboost" else "lightgbm")
    rules = ctx.policy.drift

    def compare() -> Comparison:
        quick = train_model(window, train_spec)
        return compare_models(
            champion,
            quick,
            holdout,
            spec.target,
            n_boot=rules.n_boot,
            confidence=rules.confidence,
            seed=ctx.settings.seed,
        )

    found = ctx.call(
        run_id,
        NAME,
        "evaluate.quick_retrain_gain",
        compare,
        {"window_rows": window.height, "holdout_rows": holdout.height, "rows": labelled.height},
    )
    return {
        "fresh_gain": round(found.gain, 4),
        "fresh_gain_low": round(found.ci_low, 4),
        "fresh_gain_high": round(found.ci_high, 4),
    }


def _estimate(
    ctx: RunContext,
    run_id: str,
    scorer: Any,
    version: int,
    target: str,
    frame: pl.DataFrame,
    holdout_path: str,
) -> dict[str, Any]:
    """CBPE: calibrate the champion on its held-out labelled rows, estimate its ROC AUC there
    and on the batch; the estimated drop compares the two (the calibrator's bias cancels)."""
    holdout = pl.read_parquet(holdout_path)
    rules = ctx.policy.drift

    def both() -> dict[str, Any]:
        held = scorer.predict_scores(holdout)
        calibrator = fit_calibrator(holdout[target].to_numpy(), held)
        conf, seed = rules.confidence, ctx.settings.seed
        return {
            "reference": estimate_performance(held, calibrator, confidence=conf, seed=seed),
            "batch": estimate_performance(
                scorer.predict_scores(frame), calibrator, confidence=conf, seed=seed
            ),
        }

    found = ctx.call(
        run_id,
        NAME,
        "estimate.estimate_performance",
        both,
        {"champion_version": version, "calibration_rows": holdout.height, "rows": frame.height},
    )
    base, now = found["reference"], found["batch"]
    spread = math.hypot(now.high - now.roc_auc, base.roc_auc - base.low)
    drop = _drop(base.roc_auc, now.roc_auc, spread)
    return {
        "estimated_roc_auc": round(now.roc_auc, 4),
        "estimated_low": round(now.low, 4),
        "estimated_high": round(now.high, 4),
        **drop,
    }


def _drop(baseline: float, value: float, spread: float) -> dict[str, float]:
    """The drop and its lower bound (both intervals' half-widths combined)."""
    drop = baseline - value
    return {"metric_drop": round(drop, 4), "metric_drop_low": round(drop - spread, 4)}
