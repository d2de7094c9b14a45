"""The drift analyst's measurements of the champion on a batch (the I/O half of its
``gather``): the domain classifier, the champion's own metric (``RunContext.metric``: ROC AUC,
RMSE, ...) with its interval and drop, the estimate for a batch without labels (CBPE for
classifiers, DLE for regression), and what a quick retrain would win. Every number honours
the metric's direction: a drop > 0 is worse, a gain > 0 better (``driftpilot.core.tasks``).
Every tool call goes through ``RunContext.call`` (timed and audited under the analyst's
name).

Only what can change the drift policy's bounds is measured (``drift.measure: needed``, the
rules derived from ``Policy.drift_bounds`` in ``driftpilot.core.policy``'s docstring): the
point metric first; its bootstrap interval only when the point drop could be significant (a
baseline, a drop of at least ``max_metric_drop`` that the baseline's own interval does not
cover); the estimate without labels (CBPE/DLE) only when the metric could not be measured; the
quick retrain only under ``retrain: auto`` (where it always can matter: staleness alone
retrains) and on a holdout big enough for the evaluator to judge on (``holdout_too_small``
says why not: then no retrain either); the domain classifier, which never reaches the
bounds, only when an LLM chooses within them (the builtin backend takes the policy's
choice). Each skip is named with its reason in the performance slice's ``skipped``. Above
``drift.sample_rows`` rows the metric, its bootstrap and the quick retrain use stratified
samples, named in ``sampled``; the domain classifier states its AUC's standard error at the
rows it used."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl

from agents.context import RunContext
from agents.optimizer import training_window
from driftpilot.core.errors import ConfigError, DataError, ModelError
from driftpilot.core.policy import Policy
from driftpilot.core.tasks import Metric, Task, check_task
from tools.estimate import estimate, fit_estimator
from tools.evaluate import Comparison, compare_models
from tools.metrics import encode_labels, interval, value
from tools.prediction_shift import prediction_shift
from tools.shift import DomainCheck, domain_classifier, stratified_sample
from tools.train import train_model

NAME = "drift_analyst"  # the agent the calls are audited under
MIN_DOMAIN_ROWS = 50  # per side: fewer and three folds say nothing
MIN_FRESH_ROWS = 200  # labelled rows a quick retrain needs to say anything
# Rows a side the champion scores for the predictions' shift: the distance's sampling error is
# then about 0.02, against a threshold of 0.3.
PREDICTION_ROWS = 5_000
ESTIMATE_BOOT = 200  # replicates of an estimate's interval (labels drawn, not resampled)


def domain_check(
    ctx: RunContext,
    run_id: str,
    reference: pl.DataFrame,
    frame: pl.DataFrame,
    numeric: list[str],
    categorical: list[str],
) -> DomainCheck | None:
    """The domain classifier, unless a side is too small for an honest out-of-fold AUC, or
    nothing could read it to decide (``domain_skip``: then ``performance`` names the skip)."""
    if min(reference.height, frame.height) < MIN_DOMAIN_ROWS or domain_skip(ctx):
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


def domain_skip(ctx: RunContext) -> str | None:
    """Why the domain classifier cannot change the decision (None: it can). Its AUC never
    reaches the policy's bounds; it reaches the action only through an LLM choosing within
    them, so with the builtin backend (the policy's own choice) it is skipped."""
    return ctx.policy.skip_domain_classifier(llm_chooses=not ctx.backend.is_builtin)


def performance(
    ctx: RunContext,
    run_id: str,
    model: str,
    frame: pl.DataFrame,
    champ: tuple[Any, int] | None,
    current_path: str,
) -> dict[str, Any]:
    """The champion's own metric on the batch (interval) and its drop against the baseline;
    for a batch whose metric cannot be measured (no labels, or labels it is undefined on),
    the estimate without labels (CBPE for classifiers, DLE for regression) and the estimated
    drop; on a labelled batch under ``retrain: auto``, what a quick retrain wins. Every number
    is in the model's metric and carries its direction.

    Only what can change the drift policy's bounds is measured (``driftpilot.core.policy``'s
    docstring): the estimate when the metric is measured, the bootstrap interval when the
    drop cannot be significant, the quick retrain outside ``retrain: auto``, and the domain
    classifier (``domain_check``) with the builtin backend are skipped, and ``skipped`` names
    each with its reason. Above ``drift.sample_rows`` labelled rows the
    metric is measured on a stratified sample, which ``sampled`` states (rows used, of how
    many)."""
    if champ is None:
        return {"champion_version": None}
    scorer, version = champ
    row = ctx.model(model)
    task, info, target = check_task(row.task), ctx.metric(model), row.target
    out: dict[str, Any] = {
        "champion_version": version,
        "metric": info.name,
        "higher_is_better": info.higher_is_better,
        "baseline": row.baseline,
    }
    skipped: dict[str, str] = {}
    sampled: dict[str, Any] = {}
    labelled = frame.filter(pl.col(target).is_not_null()) if target in frame.columns else frame[:0]
    if measurable(labelled[target] if labelled.height else None, task):
        out.update(_measured(ctx, run_id, model, labelled, champ, skipped, sampled))
    measured = out.get("score") is not None
    if row.holdout_path and Path(row.holdout_path).exists():
        reason = ctx.policy.skip_estimate(measured)
        if reason:
            skipped["estimate"] = reason
        else:
            found = _safe_estimate(ctx, run_id, champ, model, frame, row.holdout_path, sampled)
            # Beside a measured score the estimate is a record of how far estimates can be
            # trusted; the drop the policy reads stays the measured one.
            out.update({k: v for k, v in found.items() if not (measured and "metric_drop" in k)})
    out.update(_prediction_shift(ctx, run_id, model, task, frame, scorer, sampled))
    if measured:
        reason = ctx.policy.skip_quick_retrain()
        if reason:
            skipped["quick_retrain"] = reason
        else:
            out.update(
                _fresh_gain(ctx, run_id, model, labelled, scorer, current_path, skipped, sampled)
            )
    domain = domain_skip(ctx)
    if domain:
        skipped["domain_classifier"] = domain
    if skipped:
        out["skipped"] = skipped
    if sampled:
        out["sampled"] = sampled
    return out


def _prediction_shift(
    ctx: RunContext,
    run_id: str,
    model: str,
    task: Task,
    frame: pl.DataFrame,
    scorer: Any,
    sampled: dict[str, Any],
) -> dict[str, Any]:
    """How far the champion's predictions on the batch moved from its predictions on its
    out-of-time holdout, with its K-S p-value (``tools.prediction_shift``); without a
    holdout, why not. Labels play no part: it reads unlabelled batches too. Above
    ``PREDICTION_ROWS`` rows a side, a sample (stated in ``sampled``)."""
    holdout = ctx.holdout(model)
    if holdout is None:
        # In-sample predictions spread wider than those on new rows: no fair reference.
        return {"prediction_shift_error": "the champion has no holdout to compare with"}
    seed = ctx.settings.seed
    ref, cur = (stratified_sample(f, PREDICTION_ROWS, seed=seed) for f in (holdout, frame))
    if (ref.height, cur.height) != (holdout.height, frame.height):
        sampled["prediction_shift"] = {"holdout_rows": ref.height, "batch_rows": cur.height}
    try:
        found = ctx.call(
            run_id,
            NAME,
            "shift.prediction_shift",
            lambda: prediction_shift(
                scorer.predict_scores(ref), scorer.predict_scores(cur), task=task
            ),
            {"holdout_rows": ref.height, "batch_rows": cur.height},
        )
    except (DataError, ModelError) as exc:
        # A measurement that informs, never one a run stops for (an adopted model whose
        # output is not a score, too few finite predictions): the failed call is audited.
        return {"prediction_shift_error": str(exc)}
    return {"prediction_shift": found.value, "prediction_p_value": found.p_value}


def _measured(
    ctx: RunContext,
    run_id: str,
    model: str,
    labelled: pl.DataFrame,
    champ: tuple[Any, int],
    skipped: dict[str, str],
    sampled: dict[str, Any],
) -> dict[str, Any]:
    """The champion's metric on the labelled rows (a stratified sample above
    ``drift.sample_rows``), its drop against the baseline, and the bootstrap interval of
    both unless the policy could not read it (then ``skipped["interval"]`` says why). Empty
    when the metric is undefined on these labels (e.g. no class the model knows)."""
    scorer, version = champ
    row, info, rules = ctx.model(model), ctx.metric(model), ctx.policy.drift
    task, target = check_task(row.task), row.target
    rows = _sample(labelled, target, task, rules.sample_rows, ctx.settings.seed)
    if rows.height < labelled.height:
        sampled["metric"] = {"rows": rows.height, "of": labelled.height}
    args = {"champion_version": version, "labelled_rows": rows.height, "metric": info.name}

    def score() -> tuple[Any, Any, float | None]:
        y = encode_labels(rows[target], task, classes_of(scorer))
        scores = scorer.predict_scores(rows)
        return y, scores, value(info.name, task, y, scores)

    y, scores, point = ctx.call(
        run_id, NAME, "estimate.metric", score, args, summarize=lambda r: {"value": r[2]}
    )
    if point is None:
        return {}
    base_range = (row.baseline_low, row.baseline_high)
    drop, reason = interval_skip(ctx.policy, info, point, row.baseline, *base_range)
    if reason:
        skipped["interval"] = reason
        return {"score": point} if drop is None else {"score": point, "metric_drop": drop}
    scored = ctx.call(
        run_id,
        NAME,
        "estimate.metric_interval",
        lambda: interval(
            info.name,
            task,
            y,
            scores,
            n_boot=rules.n_boot,
            confidence=rules.confidence,
            seed=ctx.settings.seed,
        ),
        args,
    )
    if scored.low is None or scored.high is None:
        return {}
    # The point is ``value``'s, as the skip rule read it (the interval's own point agrees).
    out = {"score": point, "score_low": scored.low, "score_high": scored.high}
    if row.baseline is not None:
        spread = math.hypot(
            _slack(info, point, scored.low, scored.high, better=True),
            _slack(info, row.baseline, *base_range, better=False),
        )
        out.update(_drop(info, row.baseline, point, spread))
    return out


def interval_skip(
    policy: Policy,
    info: Metric,
    point: float,
    baseline: float | None,
    baseline_low: float | None,
    baseline_high: float | None,
) -> tuple[float | None, str | None]:
    """The point drop as the policy reads it (rounded as ``_drop`` rounds; None without a
    baseline) and why the bootstrap interval cannot change the bounds (None: it can). The
    drop's lower bound subtracts both half-widths combined: at least the baseline's (on its
    worse side), so the drop minus that is the most the lower bound can be."""
    if baseline is None:
        return None, policy.skip_interval(None, None)
    base = _slack(info, baseline, baseline_low, baseline_high, better=False)
    raw = info.drop(baseline, point)
    most_low = raw - (base / abs(baseline) if info.relative and baseline else base)
    drop = round(raw, 4)
    return drop, policy.skip_interval(drop, most_low)


def _sample(frame: pl.DataFrame, target: str, task: Task, rows: int, seed: int) -> pl.DataFrame:
    """At most about ``rows`` rows of a labelled frame, stratified by its target (classes, or
    a regression target's deciles), in their order: the frame itself when it is no bigger."""
    return stratified_sample(frame, rows, target, numeric=task == "regression", seed=seed)


def _safe_estimate(
    ctx: RunContext,
    run_id: str,
    champ: tuple[Any, int],
    model: str,
    frame: pl.DataFrame,
    holdout_path: str,
    sampled: dict[str, Any],
) -> dict[str, Any]:
    """The estimate without labels, or its failure's reason: an estimate never stops a run
    (the failure is audited by ``ctx.call``; a ConfigError: no estimator for this metric)."""
    rows = stratified_sample(frame, ctx.policy.drift.sample_rows, seed=ctx.settings.seed)
    if rows.height < frame.height:
        sampled["estimate"] = {"rows": rows.height, "of": frame.height}
    try:
        return _estimate(ctx, run_id, champ[0], champ[1], model, rows, holdout_path)
    except (DataError, ConfigError) as exc:
        return {"estimate_error": str(exc)}


def measurable(target: pl.Series | None, task: Task) -> bool:
    """Labels the metric can be measured on: a classifier's need two classes (an AUC needs
    positives and negatives), a regression's two rows with a spread (an R² needs variance;
    an interval needs more than one row)."""
    if target is None:
        return False
    values = target.drop_nulls()
    if task == "regression":
        if values.len() < 2 or not values.dtype.is_numeric():
            return False
        std = values.cast(pl.Float64).std()
        return isinstance(std, float) and std > 0
    return values.n_unique() >= 2


def too_small(target: pl.Series, task: Task, min_rows: int, min_class_rows: int) -> str | None:
    """Why a holdout's labels are too few for a gain on them to count (None: enough): fewer
    than ``min_rows`` labelled rows, or, for a classifier, fewer than two classes with at
    least ``min_class_rows`` rows each (``evaluator.min_holdout_rows`` and
    ``min_class_rows``)."""
    values = target.drop_nulls()
    if values.len() < min_rows:
        return f"{values.len()} labelled holdout rows (needs at least {min_rows})"
    if task == "regression":
        return None
    counts = values.value_counts()["count"]
    if int((counts >= min_class_rows).sum()) < 2:
        shown = ", ".join(str(int(c)) for c in counts.sort(descending=True))
        return (
            f"holdout classes of {shown} labelled rows (needs two with at least "
            f"{min_class_rows} each)"
        )
    return None


def classes_of(scorer: Any) -> list[Any] | None:
    """A multiclass scorer's class order (its probability columns), else None."""
    return list(getattr(scorer, "classes", None) or []) or None


def _slack(
    info: Metric, value: float, low: float | None, high: float | None, *, better: bool
) -> float:
    """The half-width of an interval on its better (``better``) or worse side: the room a
    score has to make a drop smaller. For a higher-is-better metric the better side is
    above the value; for a lower-is-better one (RMSE, log loss), below it."""
    above = (high - value) if high is not None else 0.0
    below = (value - low) if low is not None else 0.0
    return above if better == info.higher_is_better else below


def _fresh_gain(
    ctx: RunContext,
    run_id: str,
    model: str,
    labelled: pl.DataFrame,
    champion: Any,
    current_path: str,
    skipped: dict[str, str],
    sampled: dict[str, Any],
) -> dict[str, Any]:
    """What a retrain would win, measured before paying for one: a quick model (default
    parameters, no search, nothing registered) fitted on the very window a retrain would use
    is compared with the champion on the very holdout the evaluator would use (the latest
    rows of this batch), paired bootstrap, in the model's metric (``Metric.gain`` units). A
    champion that merely meets a harder batch (a season) shows a drop that no retrain fixes;
    this shows only what one does. Above ``drift.sample_rows`` rows the window and the
    holdout are stratified samples (``sampled["quick_retrain"]`` states their sizes): the
    paired interval then includes the holdout's sampling error, and a quick model fitted on
    fewer rows can only understate what a retrain wins."""
    spec = ctx.spec(model)
    family = ctx.model(model).family
    full_window, full_holdout = training_window(
        ctx, model, ctx.policy.retraining.default_window, current_path
    )
    # Judged on the full holdout, as the evaluator judges it (a sample shrinks a rare class):
    # on too few rows it would reject any challenger, so a retrain could win nothing.
    judged = ctx.policy.evaluator
    small = too_small(
        full_holdout[spec.target], spec.task, judged.min_holdout_rows, judged.min_class_rows
    )
    if small:
        skipped["quick_retrain"] = f"no gain on it would count: {small}"
        return {"holdout_too_small": small}
    cap, seed = ctx.policy.drift.sample_rows, ctx.settings.seed
    window = _sample(full_window, spec.target, spec.task, cap, seed)
    holdout = _sample(full_holdout, spec.target, spec.task, cap, seed)
    if (window.height, holdout.height) != (full_window.height, full_holdout.height):
        sampled["quick_retrain"] = {
            "window_rows": window.height,
            "window_of": full_window.height,
            "holdout_rows": holdout.height,
            "holdout_of": full_holdout.height,
        }
    enough = window.height >= MIN_FRESH_ROWS and measurable(window[spec.target], spec.task)
    if not enough or not measurable(holdout[spec.target], spec.task):
        return {}
    train_spec = ctx.train_spec(model, "catboost" if family == "catboost" else "lightgbm")
    info, rules = ctx.metric(model), ctx.policy.drift

    def compare() -> Comparison:
        quick = train_model(window, train_spec)
        return compare_models(
            champion,
            quick,
            holdout,
            spec.target,
            task=spec.task,
            metric=info.name,
            n_boot=rules.n_boot,
            confidence=rules.confidence,
            seed=ctx.settings.seed,
        )

    found = ctx.call(
        run_id,
        NAME,
        "evaluate.quick_retrain_gain",
        compare,
        {
            "window_rows": window.height,
            "holdout_rows": holdout.height,
            "rows": labelled.height,
            "metric": info.name,
        },
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
    model: str,
    frame: pl.DataFrame,
    holdout_path: str,
) -> dict[str, Any]:
    """The champion's metric without labels: an estimator (CBPE: calibrated probabilities;
    DLE: a model of the champion's loss) is fitted on its held-out labelled rows, and the
    metric is estimated there and on the batch; the estimated drop compares the two (the
    estimator's bias cancels)."""
    holdout = pl.read_parquet(holdout_path)
    spec, info = ctx.spec(model), ctx.metric(model)
    rules = ctx.policy.drift

    def both() -> dict[str, Any]:
        held = scorer.predict_scores(holdout)
        labels = encode_labels(holdout[spec.target], spec.task, classes_of(scorer))
        seed = ctx.settings.seed
        fitted = fit_estimator(
            spec.task,
            info.name,
            labels,
            held,
            reference=holdout,
            features=spec.features,
            seed=seed,
        )
        batch = estimate(
            fitted,
            scorer.predict_scores(frame),
            frame,
            confidence=rules.confidence,
            seed=seed,
            n_boot=ESTIMATE_BOOT,
        )
        # The estimator's own estimate on its reference (DLE: out of fold, so its loss model
        # is not judged on the rows it learnt from).
        assert fitted.reference is not None
        return {"reference": fitted.reference, "batch": batch}

    found = ctx.call(
        run_id,
        NAME,
        "estimate.estimate",
        both,
        {
            "champion_version": version,
            "metric": info.name,
            "reference_rows": holdout.height,
            "rows": frame.height,
        },
    )
    base, now = found["reference"], found["batch"]
    spread = math.hypot(
        _slack(info, now.value, now.low, now.high, better=True),
        _slack(info, base.value, base.low, base.high, better=False),
    )
    return {
        "estimated_score": round(now.value, 4),
        "estimated_low": round(now.low, 4),
        "estimated_high": round(now.high, 4),
        "estimate_method": now.method,
        **_drop(info, base.value, now.value, spread),
    }


def _drop(info: Metric, baseline: float, value: float, spread: float) -> dict[str, float]:
    """The drop (``Metric.drop``: > 0 worse; a share of the baseline for a relative metric)
    and its lower bound (both intervals' half-widths combined, in the drop's units)."""
    drop = info.drop(baseline, value)
    if info.relative and baseline:
        spread /= abs(baseline)
    return {"metric_drop": round(drop, 4), "metric_drop_low": round(drop - spread, 4)}
