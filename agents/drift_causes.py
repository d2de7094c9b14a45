"""What caused a batch's drift, read from the numbers (every backend, ``builtin`` included).

Two causes read here; the policy (``Policy.drift_bounds``) reads the rest from its own flags
(world_change: material drift, moved predictions or a performance signal; unknown: nothing
fired) and maps each cause to the actions it allows.

- **label_shift** (classifiers only): the class prevalence moved while each class looks the
  same. Moved: the PSI of the label distribution (batch vs reference window) reaches
  ``drift.label_shift.label_psi``, or one class's share moved by ``relative_change`` of itself
  beyond three standard errors of the difference of the two shares (both are samples), on at
  least ``min_rows`` labelled rows. Each class the same: the importance-weighted share of
  material shifts, measured again against the reference resampled to the batch's class shares
  (p_batch(y) / p_ref(y) per row, drawn seeded), stays under ``drift.monitor_share`` and its
  mean effect size over the threshold under ``max_left_effect`` (a covariate shift of columns
  that each stay under the bar moves the labels with it, and keeps its drift at any class
  shares); the champion's scores within each class did not move (``class_score_shift``: normed
  Wasserstein of one class's scores, batch vs reference, at most
  ``drift.label_shift.class_score_shift``), or, with no champion to score with, the reweighting
  explains the feature drift (the importance-weighted mean effect size over its threshold falls
  to at most ``explained_ratio`` of itself: a covariate shift that moved the labels with it
  keeps its drift); and a ranking metric (ROC AUC, which a prevalence change alone leaves
  unchanged) shows no significant drop. A label shift moves the scores, not the ranking: a
  calibration map fixes it for a fraction of a retrain's cost. A champion that cannot carry a
  map (an adopted MLflow model, or one that gives labels only: ``recalibration_blocked``) reads
  world_change with the reason instead: the rules decide.
- **expected_change**: with ``drift.seasonality.period_batches`` set, the batch's drift
  signature (its materially drifted columns) matches, by Jaccard overlap of at least
  ``min_overlap``, a batch one period back (+- ``tolerance_batches``) in the model's history,
  and the batch shows drift, a performance signal or a prevalence move (else nothing needs a
  cause).

Regression reads no label shift: a moved target distribution in a regression is not separable
from a change of the relation here, so its cause is world_change (drift or a performance
signal) or unknown. ``pipeline_defect`` never reads from the drift numbers: ingestion
quarantines the defects it can name, and the analyst's LLM may read one from a note.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from agents.context import RunContext
from driftpilot.core.causes import CauseReading
from driftpilot.core.policy import Policy
from driftpilot.core.policy_drift import DriftBounds
from driftpilot.core.tasks import Task
from tools.calibrate import uncalibrated
from tools.score_memo import unwrapped
from tools.shift import ShiftConfig, ShiftResult, effect_sizes

NAME = "drift_analyst"  # the agent the calls are audited under
Z_SIGNIFICANT = 3.0  # standard errors a class share must move by to count


class LabelShift(BaseModel):
    """How a labelled classifier batch's class prevalence moved, and what drift is left once
    the reference is resampled to the batch's class shares."""

    rows: int = Field(description="Labelled batch rows the prevalence is read on.")
    reference_rows: int = Field(description="Labelled reference rows.")
    batch_share: dict[str, float] = Field(description="Class -> share on the batch.")
    reference_share: dict[str, float] = Field(description="Class -> share on the reference.")
    label_psi: float = Field(description="PSI of the class distribution (batch vs reference).")
    max_relative_change: float = Field(
        description="Largest |batch - ref| / ref share change over classes that moved beyond "
        "three standard errors (0: none did)."
    )
    moved_class: str | None = Field(description="The class with that change.")
    moved: bool = Field(description="The prevalence moved materially under the policy.")
    reweighted_share: float | None = Field(
        None,
        description="The weighted share against the reference resampled to the batch's class "
        "shares (None: not measured, the prevalence did not move or a class is new).",
    )
    raw_effect: float | None = Field(
        None,
        description="The feature drift against the reference as it is: each column's effect "
        "size over its threshold (capped at 3), averaged by the champion's importance.",
    )
    reweighted_effect: float | None = Field(
        None, description="The same against the reference at the batch's class shares."
    )
    class_score_shift: float | None = Field(
        None,
        description="How far the champion's scores moved within a class: the largest, over "
        "classes with enough rows on both sides, normed Wasserstein distance (W1 over the "
        "reference class's score std) between the scores of that class's rows on the batch and "
        "on the reference. Unchanged classes keep their scores under a label shift. None: no "
        "champion to score with.",
    )
    note: str | None = Field(None, description="Why the reweighted share was not measured.")
    not_recalibratable: str | None = Field(
        None,
        description="Why the champion cannot carry a calibration map (``adopted``: it scores "
        "through the owner's MLflow flavour; ``labels only``: no probabilities); None: it can.",
    )


def prevalence(
    reference: pl.Series, batch: pl.Series, policy: Policy
) -> tuple[dict[str, float], dict[str, float], float, float, str | None, bool]:
    """Class shares of both sides, the labels' PSI, the largest significant relative change
    of a class share and its class, and whether that moved materially under the policy."""
    rules = policy.drift.label_shift
    ref = _shares(reference)
    cur = _shares(batch)
    classes = sorted(set(ref) | set(cur))
    p = np.array([max(ref.get(c, 0.0), 1e-4) for c in classes])
    q = np.array([max(cur.get(c, 0.0), 1e-4) for c in classes])
    psi = float(np.sum((q - p) * np.log(q / p)))
    n, n_ref = batch.drop_nulls().len(), reference.drop_nulls().len()
    best, moved_class = 0.0, None
    for c in classes:
        r, b = ref.get(c, 0.0), cur.get(c, 0.0)
        if r <= 0:
            continue
        # Two samples: the reference's share is itself an estimate. Read as exact, a rare class
        # of a clean multiclass batch (2.3 % -> 3.1 % of 3,000 rows against 6,000) "moved".
        se = math.sqrt(r * (1 - r) * (1 / n + 1 / n_ref)) if n and n_ref else math.inf
        change = abs(b - r) / r
        if abs(b - r) > Z_SIGNIFICANT * se and change > best:
            best, moved_class = change, c
    moved = n >= rules.min_rows and (psi >= rules.label_psi or best >= rules.relative_change)
    return ref, cur, round(psi, 4), round(best, 4), moved_class, moved


def _shares(values: pl.Series) -> dict[str, float]:
    """Class (as a string) -> its share among the non-null values."""
    kept = values.drop_nulls().cast(pl.String)
    if kept.len() == 0:
        return {}
    counts = kept.value_counts()
    total = kept.len()
    return {
        str(c): round(int(k) / total, 6)
        for c, k in zip(counts[:, 0].to_list(), counts[:, 1].to_list(), strict=True)
    }


def resample_to(
    reference: pl.DataFrame, target: str, shares: dict[str, float], seed: int
) -> pl.DataFrame | None:
    """The reference's labelled rows redrawn (with replacement, seeded) so that each class
    has the batch's share: the reference as it would look under the batch's prevalence with
    each class unchanged. None when a batch class has no reference row (a new class cannot
    be reweighted)."""
    labelled = reference.filter(pl.col(target).is_not_null())
    keys = labelled[target].cast(pl.String)
    rng = np.random.default_rng(seed)
    parts = []
    for cls, share in sorted(shares.items()):
        rows = np.flatnonzero((keys == cls).to_numpy())
        if rows.size == 0:
            return None
        draw = rng.choice(rows, size=max(1, round(share * labelled.height)), replace=True)
        parts.append(labelled[draw.tolist()])
    return pl.concat(parts) if parts else None


def label_shift_reading(
    shift: LabelShift | None,
    policy: Policy,
    bounds: DriftBounds,
    metric: str | None,
) -> CauseReading | None:
    """label_shift when the prevalence moved and each class looks the same (module
    docstring); world_change with the reason when it moved but the classes changed too;
    None when it did not move (or was not read)."""
    if shift is None or not shift.moved:
        return None
    prevalence_text = _prevalence_text(shift)
    flat = {f"{c}:batch": v for c, v in shift.batch_share.items()}
    flat |= {f"{c}:ref": v for c, v in shift.reference_share.items()}
    limit = policy.drift.monitor_share
    if shift.reweighted_share is None:
        why = shift.note or "the class-conditional drift was not measured"
        return _but(prevalence_text, why)
    if shift.reweighted_share >= limit:
        return _but(
            prevalence_text,
            f"each class moved too: weighted share "
            f"{shift.reweighted_share:.2f} >= {limit} against the reference at the batch's "
            "class shares",
        )
    rules = policy.drift.label_shift
    ratio = rules.explained_ratio
    raw, left = shift.raw_effect, shift.reweighted_effect
    within = shift.class_score_shift
    if within is not None and within > rules.class_score_shift:
        return _but(
            prevalence_text,
            f"the champion's scores moved within a class: normed "
            f"Wasserstein {within:.2f} > {rules.class_score_shift}",
        )
    if within is None and raw is not None and left is not None and not left <= ratio * raw:
        # Informative features move with the class shares under a label shift, and the
        # reweighting takes that move away; when it does not, the features moved on their own
        # (a covariate or concept change that moved the labels with it).
        return _but(
            prevalence_text,
            f"the class shares do not explain the feature drift: "
            f"{raw:.2f} -> {left:.2f} at the batch's class shares (needs <= "
            f"{ratio:.0%} of it)",
        )
    if left is not None and left > rules.max_left_effect:
        return _but(
            prevalence_text,
            f"the features moved within the classes: at the "
            f"batch's class shares the mean effect is still {left:.2f} > "
            f"{rules.max_left_effect} of the bar",
        )
    if metric == "roc_auc" and bounds.significant_drop:
        return _but(
            prevalence_text,
            "a significant ROC AUC drop: a prevalence change leaves the ranking intact",
        )
    if shift.not_recalibratable:
        # Offering a recalibration the node must refuse would count each refusal as a lost
        # challenger and escalate the episode without a retrain ever being offered: the
        # rules decide as for any change of the world.
        return CauseReading(
            cause="world_change",
            reasons=[
                f"{prevalence_text}: label shift, but the champion cannot be recalibrated: "
                f"{shift.not_recalibratable}"
            ],
        )
    return CauseReading(
        cause="label_shift",
        reasons=[
            f"{prevalence_text}; each class looks the same: at the batch's class shares the "
            f"weighted share is {shift.reweighted_share:.2f} < {limit}"
            + (
                f", the champion's scores within each class moved {within:.2f} <= "
                f"{rules.class_score_shift} (normed Wasserstein)"
                if within is not None
                else f" and the feature drift falls {raw:.2f} -> {left:.2f}"
                if raw is not None and left is not None
                else ""
            )
        ],
        prevalence=flat,
    )


def _but(prevalence: str, why: str) -> CauseReading:
    """A prevalence that moved for another reason than a label shift: a world change."""
    return CauseReading(cause="world_change", reasons=[f"{prevalence}, but {why}"])


def _prevalence_text(shift: LabelShift) -> str:
    moved = shift.moved_class
    change = ""
    if moved is not None:
        change = (
            f", class {moved} {shift.reference_share.get(moved, 0.0):.3f} -> "
            f"{shift.batch_share.get(moved, 0.0):.3f} ({shift.max_relative_change:+.0%} of "
            "itself)"
        )
    return (
        f"prevalence moved on {shift.rows} labelled rows: label PSI {shift.label_psi:.3f}{change}"
    )


def seasonal_reading(
    past: list[dict[str, Any]],
    drifted: list[str],
    policy: Policy,
    bounds: DriftBounds,
    labels_moved: bool = False,
) -> CauseReading | None:
    """expected_change when this batch's drifted columns match a batch one period back (module
    docstring); None when seasonality is off, nothing fired (material drift, a performance
    signal, or ``labels_moved``: the labels' prevalence moved), or no batch matches. ``past``:
    the model's earlier run summaries, oldest first (this batch is the next one)."""
    rules = policy.drift.seasonality
    period = rules.period_batches
    fired = bounds.material or bounds.significant_drop or bounds.stale or labels_moved
    if period is None or not drifted or not fired:
        return None
    now = set(drifted)
    here = len(past)
    for back in sorted(
        range(period - rules.tolerance_batches, period + rules.tolerance_batches + 1),
        key=lambda b: (abs(b - period), b),
    ):
        index = here - back
        if back < 1 or index < 0:
            continue
        then = set(((past[index].get("drift") or {}).get("drifted_columns")) or [])
        overlap = len(now & then) / len(now | then) if now | then else 0.0
        if then and overlap >= rules.min_overlap:
            return CauseReading(
                cause="expected_change",
                reasons=[
                    f"the same drift signature {back} batches back (period {period}): "
                    f"drifted columns {sorted(now)} vs {sorted(then)}, overlap {overlap:.2f} "
                    f">= {rules.min_overlap}"
                ],
            )
    return None


def classifier(task: Task) -> bool:
    """The task reads label shift (a classifier's prevalence)."""
    return task in ("binary", "multiclass")


def recalibration_blocked(champion: Any) -> str | None:
    """Why ``champion`` cannot carry a calibration map (what the recalibrate node refuses):
    ``adopted`` (an adopted MLflow model scores through the owner's flavour) or ``labels
    only`` (no probabilities); None: it can, or there is no champion."""
    if champion is None:
        return None
    base = uncalibrated(unwrapped(champion))
    if str(getattr(base, "family", "")).startswith("adopted:"):
        return "adopted"
    if getattr(base, "label_only", False):
        return "labels only"
    return None


def measure_label_shift(
    ctx: RunContext,
    run_id: str,
    model: str,
    reference: pl.DataFrame,
    frame: pl.DataFrame,
    importance: dict[str, float],
    config: ShiftConfig,
    champion: Any = None,
    *,
    raw: ShiftResult | None = None,
) -> LabelShift | None:
    """The batch's label shift numbers (``label_shift_numbers``, audited as the tool call
    ``shift.label_shift``, which the what-if replay reads back), or None when none can be
    read: a regression, no target on a side, no labelled row. ``raw``: the run's
    ``effect_sizes`` of this reference and batch, if measured."""
    spec = ctx.spec(model)
    target = spec.target
    if not classifier(spec.task) or target not in reference.columns or target not in frame.columns:
        return None
    if frame[target].drop_nulls().len() == 0 or reference[target].drop_nulls().len() == 0:
        return None
    return ctx.call(
        run_id,
        NAME,
        "shift.label_shift",
        lambda: label_shift_numbers(
            reference,
            frame,
            target,
            numeric=spec.numeric,
            categorical=spec.categorical,
            importance=importance,
            config=config,
            policy=ctx.policy,
            seed=ctx.settings.seed,
            scorer=champion,
            scored_reference=ctx.holdout(model) if champion is not None else None,
            classes=list(getattr(champion, "classes", None) or []) or None,
            task=spec.task,
            not_recalibratable=recalibration_blocked(champion),
            raw=raw,
        ),
        {"reference_rows": reference.height, "batch_rows": frame.height, "target": target},
    )


def label_shift_numbers(
    reference: pl.DataFrame,
    frame: pl.DataFrame,
    target: str,
    *,
    numeric: list[str],
    categorical: list[str],
    importance: dict[str, float],
    config: ShiftConfig,
    policy: Policy,
    seed: int,
    scorer: Any = None,
    scored_reference: pl.DataFrame | None = None,
    classes: list[Any] | None = None,
    task: Task = "binary",
    not_recalibratable: str | None = None,
    raw: ShiftResult | None = None,
) -> LabelShift:
    """The class prevalence of both sides (labelled rows) and, when it moved under the
    policy, the weighted share of the batch against the reference resampled to the batch's
    class shares (``effect_sizes`` with the champion's importance and the policy's measures).
    Both sides must hold labelled rows of ``target``. With a champion (``scorer``) and rows it
    never trained on (``scored_reference``: its out-of-time holdout; its training window would
    score more sharply than any new rows), the class-conditional score shift too.
    ``not_recalibratable``: why the champion cannot carry a calibration map
    (``recalibration_blocked``), recorded with the numbers. ``raw``: ``effect_sizes`` of
    ``reference`` and ``frame`` with these arguments, when the caller has it already."""
    batch_y, ref_y = frame[target].drop_nulls(), reference[target].drop_nulls()
    ref, cur, psi, best, moved_class, moved = prevalence(ref_y, batch_y, policy)
    found = LabelShift(
        rows=batch_y.len(),
        reference_rows=ref_y.len(),
        batch_share=cur,
        reference_share=ref,
        label_psi=psi,
        max_relative_change=best,
        moved_class=moved_class,
        moved=moved,
        not_recalibratable=not_recalibratable,
    )
    if not moved:
        return found
    resampled = resample_to(reference, target, cur, seed)
    if resampled is None:
        new = sorted(set(cur) - set(ref))
        return found.model_copy(update={"note": f"class {new} is new: no reference to reweight"})

    def effects(ref_side: pl.DataFrame) -> ShiftResult:
        return effect_sizes(
            ref_side,
            frame,
            numeric=numeric,
            categorical=categorical,
            importance=importance,
            config=config,
            seed=seed,
        )

    sides = {
        "raw": raw if raw is not None else effects(reference),
        "reweighted": effects(resampled),
    }
    within = None
    if scorer is not None and scored_reference is not None:
        within = class_score_shift(scored_reference, frame, target, scorer, classes, task, seed)
    return found.model_copy(
        update={
            "reweighted_share": sides["reweighted"].weighted_share,
            "raw_effect": mean_effect(sides["raw"]),
            "reweighted_effect": mean_effect(sides["reweighted"]),
            "class_score_shift": within,
        }
    )


SCORE_ROWS = 20_000  # rows a side the champion scores for the class-conditional check
MIN_CLASS_ROWS = 30  # rows of a class on each side for its scores to be compared


def class_score_shift(
    reference: pl.DataFrame,
    frame: pl.DataFrame,
    target: str,
    scorer: Any,
    classes: list[Any] | None,
    task: Task,
    seed: int,
) -> float | None:
    """The largest normed Wasserstein distance between the champion's scores of one class's
    rows on the batch and on the reference (a binary model's P(1); a multiclass model's
    probability of that class), over classes with ``MIN_CLASS_ROWS`` rows on both sides (at
    most ``SCORE_ROWS`` rows a side, seeded). None: no class has enough rows."""
    from scipy.stats import wasserstein_distance

    from tools.metrics import encode_labels

    sides = []
    for side in (reference, frame):
        rows = side.filter(pl.col(target).is_not_null())
        if rows.height > SCORE_ROWS:
            rows = rows.sample(SCORE_ROWS, seed=seed)
        y = encode_labels(rows[target], task, classes)
        sides.append((y, np.asarray(scorer.predict_scores(rows), dtype=np.float64)))
    (y_ref, s_ref), (y_cur, s_cur) = sides
    worst: float | None = None
    for c in sorted(set(y_ref.tolist()) & set(y_cur.tolist())):
        if c < 0:
            continue
        column = (lambda s: s[:, c]) if s_ref.ndim == 2 else (lambda s: s)  # noqa: B023
        a, b = column(s_ref)[y_ref == c], column(s_cur)[y_cur == c]
        if min(a.size, b.size) < MIN_CLASS_ROWS:
            continue
        moved = wasserstein_distance(a, b) / max(float(np.std(a)), 0.02)
        worst = moved if worst is None else max(worst, moved)
    return None if worst is None else round(worst, 4)


def mean_effect(shift: ShiftResult) -> float:
    """The feature drift as one number: each column's effect size over its materiality
    threshold (capped at 3: one broken column must not stand for all), averaged by the
    champion's importance (evenly without it). 0: nothing moved; 1: on average at the bar."""
    if not shift.columns:
        return 0.0
    weights = [c.importance for c in shift.columns]
    if sum(weights) <= 0:
        weights = [1.0] * len(shift.columns)
    ratios = [min(c.value / c.threshold, 3.0) for c in shift.columns]
    return round(sum(w * r for w, r in zip(weights, ratios, strict=True)) / sum(weights), 4)
