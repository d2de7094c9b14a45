"""The drift bounds: what the drift analyst may choose, and the policy's own choice.

``drift_bounds`` runs the drift rules (``rule_bounds``), then the drift episode's hold
(``retraining.max_failed_retrains`` losing challengers and unchanged evidence: a retrain or
recalibration becomes monitor, unless a person asked), then the cause the numbers read
(``causes:`` maps each to the actions it allows: a label shift recalibrates, an expected change
watches, a pipeline defect only monitors; world change and unknown keep the rules). ``by_cause``
bounds an LLM that names another cause from a note: never wider than the numbers' bounds,
monitor aside (issue 21).

Pure functions of ``DriftEvidence`` and the policy's rule sections; ``Policy.drift_bounds`` and
``Policy.rule_bounds`` apply them with the loaded policy. Which measurements can change these
bounds, and so which the drift analyst skips, is in ``driftpilot.core.policy``'s docstring.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from driftpilot.core.causes import CAUSES, Cause, CauseReading
from driftpilot.core.metric_text import quote, versus
from driftpilot.core.policy_rules import (
    CauseRules,
    DriftAction,
    DriftRules,
    RetrainLimits,
    _Strict,
)

Severity = Literal["none", "low", "medium", "high"]


class DriftEvidence(_Strict):
    """What the drift policy weighs (built by the drift analyst from the tools' results)."""

    weighted_share: float = Field(description="Champion importance on shifted columns (0-1).")
    labelled: bool = Field(
        description="The batch has labelled rows the model's metric is defined on (classifiers: "
        "two classes or more; regression: two rows or more with a spread)."
    )
    drop: float | None = Field(
        None,
        description="How much worse the champion's metric is on the batch than its baseline "
        "(Metric.drop: > 0 worse, whatever the metric's direction; a share for RMSE/MAE).",
    )
    drop_low: float | None = Field(None, description="Lower bound of the drop's interval.")
    estimated: bool = Field(
        False, description="The drop is estimated without labels (CBPE or DLE), not measured."
    )
    fresh_gain: float | None = Field(
        None,
        description="What a quick retrain (default parameters, the retrain's window) wins over "
        "the champion on the batch's holdout, in the model's metric (Metric.gain: > 0 better): "
        "what a retrain can win back.",
    )
    fresh_gain_low: float | None = Field(None, description="Lower bound of that gain.")
    fresh_gain_high: float | None = Field(None, description="Upper bound of that gain.")
    prediction_shift: float | None = Field(
        None,
        description="How far the champion's predictions on the batch moved from those on its "
        "holdout (normed Wasserstein; None: not measured).",
    )
    prediction_p_value: float | None = Field(
        None, description="Its two-sample Kolmogorov-Smirnov p-value (chance gives it)."
    )
    holdout_too_small: str | None = Field(
        None,
        description="Why the batch's holdout is too small for the evaluator to judge a "
        "challenger on (evaluator.min_holdout_rows, min_class_rows); None: big enough.",
    )
    recent_signals: int = Field(
        0, description="Of the previous persistence_n - 1 batches, those with drift or a drop."
    )
    batches_since_retrain: int | None = Field(
        None, description="Batches since the last retrain attempt (None: never)."
    )
    retrains: int = Field(0, description="Latest retrain attempts of this model (up to 4).")
    promotions: int = Field(0, description="Of which promoted.")
    reading: CauseReading | None = Field(
        None,
        description="The cause the numbers read beyond the drift rules (label_shift, "
        "expected_change); None: world_change when drift or a performance signal fired, "
        "else unknown.",
    )
    episode_hold: list[str] = Field(
        default_factory=list,
        description="Why the drift episode holds a retrain (driftpilot.core.episodes."
        "retrain_hold; empty: no hold, or a person asked).",
    )


class DriftBounds(_Strict):
    """What the drift analyst may choose, and what the policy itself would choose."""

    allowed: list[DriftAction]
    default: DriftAction
    severity: Severity
    signals: list[str] = Field(description="Why: the signals that fired.")
    material: bool = Field(False, description="The drift is material (weighted share).")
    significant_drop: bool = Field(False, description="The drop counts (large and significant).")
    stale: bool = Field(False, description="A quick retrain wins significantly on the holdout.")
    predictions_moved: bool = Field(
        False, description="The champion's predictions moved (prediction_threshold, significant)."
    )
    labels_requested: bool = Field(False, description="An estimated drop with material drift.")
    expected_gain: float | None = Field(
        None,
        description="P(promotion) x the drop's lower bound x horizon: what a retrain is "
        "expected to win back.",
    )
    cause: Cause = Field("unknown", description="The cause the numbers read.")
    cause_reasons: list[str] = Field(
        default_factory=list, description="Why that cause, in words with numbers."
    )
    by_cause: dict[Cause, list[DriftAction]] = Field(
        default_factory=dict,
        description="The actions allowed if an analyst names another cause (from a note): "
        "each is the cause's mapped actions within these bounds (monitor always stays "
        "possible), so a cause can narrow the actions, never widen them. A cause absent here "
        "cannot be named.",
    )
    episode_held: bool = Field(False, description="The drift episode held a retrain.")


def _severity(
    share: float, rules: DriftRules, material: bool, significant: bool, severe: bool
) -> Severity:
    if severe or share >= rules.severity_high_share:
        return "high"
    if material or significant:
        return "medium"
    return "low" if share >= rules.monitor_share / 2 else "none"


def _retrain(
    quiet: DriftBounds, gain: float | None, signals: list[str], severe: bool = False
) -> DriftBounds:
    # A severe signal leaves no choice, as a failed quality check leaves ingestion none:
    # watching a model that lost that much keeps serving it. Otherwise the default comes
    # first (the order the analyst's template lists the choices in).
    allowed: list[DriftAction] = ["retrain"] if severe else ["retrain", "monitor"]
    return quiet.model_copy(
        update={
            "allowed": allowed,
            "default": "retrain",
            "expected_gain": None if gain is None else round(gain, 4),
            "signals": signals,
        }
    )


def drift_bounds(
    ev: DriftEvidence, rules: DriftRules, limits: RetrainLimits, causes: CauseRules
) -> DriftBounds:
    """none / monitor / retrain / recalibrate: the drift rules' bounds (``rule_bounds``),
    then the episode's hold, then the cause (neither under ``retrain: always``, which
    retrains every labelled batch).

    - Episode: a retrain the rules allow but the drift episode holds
      (``ev.episode_hold``: ``retraining.max_failed_retrains`` challengers lost and the
      evidence did not change, nobody asked) becomes monitor, the hold's reasons in the
      signals (``episode_held``).
    - Cause: the numbers' cause (``ev.reading``; else world_change on material drift, moved
      predictions or a performance signal, else unknown) maps through ``causes:`` to the
      actions it allows. A mapped cause replaces the rules' bounds with its actions, keeping only
      those the evidence supports: monitor and none always, retrain only where the rules
      (after the hold) allow it, recalibrate only for a label shift on labelled rows. The
      default is the first kept (label shift: recalibrate). An unmapped cause keeps the
      rules' bounds; a prevalence move that is no label shift turns a quiet default into
      monitor.
    - ``by_cause``: what an analyst may do if it names another cause (read from a note):
      that cause's actions within these bounds, plus monitor; an unmapped one keeps
      these bounds. A cause can narrow the actions, never widen them."""
    base = rule_bounds(ev, rules, limits)
    if rules.retrain == "always" and "retrain" in base.allowed:
        # The operator asked for a retrain on every labelled batch: the cause is read and
        # recorded, but neither it nor the episode turns that retrain into something else.
        cause, reasons = _cause(base, ev)
        update = {"cause": cause, "cause_reasons": reasons, "by_cause": _by_cause(base, causes)}
        return base.model_copy(update=update)
    bounds = _episode(base, ev)
    cause, reasons = _cause(bounds, ev)
    mapped = causes.actions(cause)
    if mapped is not None:
        bounds = _mapped(bounds, ev, cause, mapped, reasons)
    else:
        bounds = _unmapped(bounds, ev, cause, reasons)
    return bounds.model_copy(update={"by_cause": _by_cause(bounds, causes)})


def _unmapped(
    bounds: DriftBounds, ev: DriftEvidence, cause: Cause, reasons: list[str]
) -> DriftBounds:
    """The rules' bounds with the cause. A reading that named no cause of its own (the
    labels' prevalence moved, and the class shares do not explain the inputs' move: a
    change in the world) says why in the signals, and turns a quiet default into monitor:
    the data moved in a way that matters, even where no column did alone."""
    update: dict[str, object] = {"cause": cause, "cause_reasons": reasons}
    if ev.reading is not None:
        update["signals"] = [*bounds.signals, f"cause {cause}: {'; '.join(reasons)}"]
        if bounds.default == "none" and "monitor" in bounds.allowed:
            update.update(allowed=["monitor", "none"], default="monitor")
    return bounds.model_copy(update=update)


def _episode(bounds: DriftBounds, ev: DriftEvidence) -> DriftBounds:
    """A retrain the episode holds becomes monitor, with the hold's reasons."""
    if not ev.episode_hold or "retrain" not in bounds.allowed:
        return bounds
    held = [*bounds.signals, *(f"episode: {why}" for why in ev.episode_hold)]
    return bounds.model_copy(
        update={
            "allowed": ["monitor"],
            "default": "monitor",
            "signals": held,
            "episode_held": True,
        }
    )


def _cause(bounds: DriftBounds, ev: DriftEvidence) -> tuple[Cause, list[str]]:
    """The numbers' cause and why: ``ev.reading``'s own cause first; then world_change on
    material drift, moved predictions or a performance signal; then the reading's (a
    prevalence move the class shares do not explain is a world change too); else unknown."""
    if ev.reading is not None and ev.reading.cause not in ("world_change", "unknown"):
        return ev.reading.cause, list(ev.reading.reasons)
    fired = [
        name
        for name, on in (
            ("material drift", bounds.material),
            ("moved predictions", bounds.predictions_moved),
            ("a significant drop", bounds.significant_drop),
            ("a stale champion", bounds.stale),
        )
        if on
    ]
    if fired:
        extra = list(ev.reading.reasons) if ev.reading is not None else []
        return "world_change", [f"{' and '.join(fired)}, no other cause reads", *extra]
    if ev.reading is not None:  # the labels moved, and not as a label shift: a change
        return ev.reading.cause, list(ev.reading.reasons)
    return "unknown", ["no material drift, moved predictions or performance signal: no cause reads"]


def _mapped(
    bounds: DriftBounds,
    ev: DriftEvidence,
    cause: Cause,
    mapped: list[DriftAction],
    reasons: list[str],
) -> DriftBounds:
    """The bounds of a mapped cause: its actions that the evidence supports."""
    supported = {"monitor", "none", *bounds.allowed}
    # The episode's hold stops any challenger, a recalibrated champion included; so does a
    # holdout too small to judge on (the evaluator rejects every kind of challenger on it).
    if cause == "label_shift" and ev.labelled and not (ev.episode_hold or ev.holdout_too_small):
        supported.add("recalibrate")
    allowed = [a for a in mapped if a in supported] or ["monitor"]
    signal = f"cause {cause}: {'; '.join(reasons)} -> {' or '.join(allowed)}"
    if "retrain" in bounds.allowed and "retrain" not in allowed:
        signal += " (no retrain)"
    return bounds.model_copy(
        update={
            "allowed": allowed,
            "default": allowed[0],
            "signals": [*bounds.signals, signal],
            "cause": cause,
            "cause_reasons": reasons,
            "expected_gain": bounds.expected_gain if "retrain" in allowed else None,
        }
    )


def _by_cause(bounds: DriftBounds, causes: CauseRules) -> dict[Cause, list[DriftAction]]:
    """What naming each cause allows within ``bounds`` (see ``drift_bounds``)."""
    out: dict[Cause, list[DriftAction]] = {}
    for cause in CAUSES:
        mapped = causes.actions(cause)
        if cause == bounds.cause or mapped is None:
            out[cause] = list(bounds.allowed)
            continue
        kept = [a for a in mapped if a in bounds.allowed or a == "monitor"]
        if kept:
            out[cause] = kept
    return out


def rule_bounds(ev: DriftEvidence, rules: DriftRules, limits: RetrainLimits) -> DriftBounds:
    """none / monitor / retrain from material drift and a drop that matters (the drift
    rules, before the episode and the cause).

    Two performance signals: the champion dropped against its out-of-time baseline
    (decay), or a quick retrain beats it on the batch's holdout (staleness: what a
    retrain can win back); each counts when at least ``max_metric_drop`` and
    significant. A drop that a measured quick retrain does not fix (a harder season)
    never retrains. Monitor: material drift, the champion's predictions moved (by
    ``prediction_threshold``, significantly), or a severe drop that does not retrain
    (alarms on anything else wear people out).
    Retrain (labelled batches only, whose holdout is big enough to judge the challenger
    on: ``evaluator.min_holdout_rows`` and ``min_class_rows``) on a signal that is
    severe, or persisted in k of the last n batches outside the cooldown, AND
    whose sure part (the lower bound of a significant quick retrain's gain, else of the
    drop) x P(promotion) x horizon covers the retrain's cost. Severe (``_severe``): at least
    ``severe_metric_drop`` and surely one that counts (lower bound at least
    ``max_metric_drop``); it retrains whatever the wait and the cooldown, and a severe drop
    (or a severe gain beside a significant drop) whatever the cost too. A severe gain on a
    champion that holds its baseline is an opportunity, not damage: it still has to pay for
    itself. A severe signal that retrains allows only retrain; otherwise the analyst may keep
    watching.
    Without labels an estimated drop with material drift asks for labels. Every rule
    that fired, or held a retrain back, is a signal."""
    signals: list[str] = []
    material = ev.weighted_share >= rules.monitor_share
    if material:
        signals.append(f"weighted drift {versus(ev.weighted_share, rules.monitor_share, digits=2)}")
    moved = _predictions_moved(ev, rules)
    if moved:
        signals.append(
            "the champion's predictions moved: "
            f"{versus(ev.prediction_shift or 0.0, rules.prediction_threshold, digits=2)} "
            f"(K-S p {ev.prediction_p_value:.2g} < {rules.prediction_p_value:.2g})"
        )
    significant = (
        ev.drop is not None
        and ev.drop_low is not None
        and ev.drop >= rules.max_metric_drop
        and ev.drop_low > 0
    )
    stale = (
        ev.fresh_gain is not None
        and ev.fresh_gain_low is not None
        and ev.fresh_gain >= rules.max_metric_drop
        and ev.fresh_gain_low > 0
    )
    # Severity skips the wait and the cooldown (a severe drop the cost too), so a large point is
    # not enough: the signal must also surely be one that counts (its lower bound at least
    # max_metric_drop, not merely above zero). On a 1,000-row batch a drop of 0.06 whose interval
    # barely clears zero is as likely 0.01, and retraining on it at once is how a stream without
    # drift retrained (issue 21); such a signal still retrains if it persists and pays for itself.
    severe_drop = significant and _severe(ev.drop, ev.drop_low, rules)
    severe_gain = stale and _severe(ev.fresh_gain, ev.fresh_gain_low, rules)
    severe = severe_drop or severe_gain
    # Damage (a significant drop) retrains at any cost once severe; a severe gain on a
    # champion that holds its baseline is an opportunity that must pay for itself.
    any_cost = severe_drop or (severe_gain and significant)
    if significant:
        kind = "estimated " if ev.estimated else ""
        signals.append(
            f"{kind}drop {versus(ev.drop or 0.0, rules.max_metric_drop)}, significant "
            f"(lower bound {versus(ev.drop_low or 0.0, 0, strict=True)})"
        )
    if stale:
        signals.append(
            f"stale: a quick retrain wins {quote(ev.fresh_gain or 0.0)} on the holdout "
            f"(lower bound {versus(ev.fresh_gain_low or 0.0, 0, strict=True)})"
        )
    if severe:
        point, low = (ev.drop, ev.drop_low) if severe_drop else (ev.fresh_gain, ev.fresh_gain_low)
        signals.append(
            f"severe: {'the drop' if severe_drop else 'the gain'} "
            f"{versus(point or 0.0, rules.severe_metric_drop)}, surely one that counts "
            f"(lower bound {versus(low or 0.0, rules.max_metric_drop)})"
            + ("" if any_cost else ": no wait, if worth its cost (no significant drop)")
        )
    # A severe drop is surely a loss that counts: when no retrain answers it (nothing to win
    # back, retrain: never, no labels, a holdout too small), a person should still see it (an
    # episode's hold already watches). Lesser signals either retrain or, held back (not yet
    # persistent, cooling down, not worth it), wait in the signals and history: watching every
    # significant drop lost more right answers on clean batches than it won (issue 21's quick
    # suites).
    watch = material or moved or severe_drop
    severity = _severity(ev.weighted_share, rules, watch, significant or stale, severe)
    quiet = DriftBounds(
        allowed=["monitor", "none"] if watch else ["none", "monitor"],
        default="monitor" if watch else "none",
        severity=severity,
        signals=signals,
        material=material,
        significant_drop=significant,
        stale=stale,
        predictions_moved=moved,
    )
    if rules.retrain == "never" or not ev.labelled:
        if significant and ev.estimated and material:
            asked = [*signals, "labels requested: an estimated drop with material drift"]
            return quiet.model_copy(update={"labels_requested": True, "signals": asked})
        return quiet
    if rules.retrain == "always":
        return _retrain(quiet, None, [*signals, "policy: retrain on every labelled batch"])
    if not (significant or stale):
        return quiet
    if ev.holdout_too_small:
        # The evaluator rejects every challenger on this holdout: a retrain could only lose.
        why = ev.holdout_too_small
        small = f"no retrain: the holdout is too small to judge a challenger on ({why})"
        return quiet.model_copy(update={"signals": [*signals, small]})
    surely_nothing = ev.fresh_gain_high is not None and ev.fresh_gain_high < rules.max_metric_drop
    if not stale and surely_nothing:
        # A quick retrain was measured and surely wins less than a drop that counts: the
        # batch is harder (a season), not the champion older. Retraining would not fix it.
        held = [
            *signals,
            f"a quick retrain surely wins less than {rules.max_metric_drop} on the holdout "
            f"(upper bound {versus(ev.fresh_gain_high or 0.0, rules.max_metric_drop)}): "
            "nothing to win back",
        ]
        return quiet.model_copy(update={"signals": held})
    p_promotion = (ev.promotions + 1) / (ev.retrains + 2)  # Laplace: 1/2 before any
    gain = p_promotion * (_sure_gain(ev, stale) or 0.0) * limits.horizon_batches
    held = _held_back(ev, limits, severe, gain, costly=not any_cost)
    if held:
        update: dict[str, Any] = {"expected_gain": round(gain, 4), "signals": [*signals, *held]}
        if severe and not any_cost:
            # Held back, a severe gain is a stale champion that still holds its baseline.
            update["severity"] = _severity(ev.weighted_share, rules, watch, True, False)
        return quiet.model_copy(update=update)
    worth = f"expected gain {versus(gain, limits.retrain_cost, name='retrain cost')}"
    return _retrain(quiet, gain, [*signals, worth], severe)


def _predictions_moved(ev: DriftEvidence, rules: DriftRules) -> bool:
    """The champion's outputs moved by at least ``prediction_threshold``, significantly (the
    K-S p-value under ``prediction_p_value``): columns that each stay under the materiality
    bar can together move what the model answers. It watches, and reads as a world change;
    it is no performance signal, so it neither counts towards a retrain's persistence nor
    carries a drift episode (``driftpilot.core.episodes``): a retrain needs what the
    champion scores, not only what it answers."""
    if ev.prediction_shift is None or ev.prediction_p_value is None:
        return False
    return ev.prediction_shift >= rules.prediction_threshold and (
        ev.prediction_p_value < rules.prediction_p_value
    )


def _severe(point: float | None, low: float | None, rules: DriftRules) -> bool:
    """A signal (a drop, or a quick retrain's gain, in ``Metric`` units) is severe when its
    point estimate reaches ``severe_metric_drop`` and its lower bound ``max_metric_drop``:
    large, and surely one that counts."""
    if point is None or low is None:
        return False
    return point >= rules.severe_metric_drop and low >= rules.max_metric_drop


def _sure_gain(ev: DriftEvidence, stale: bool) -> float | None:
    """What a retrain is sure to win back: the lower bound of the quick retrain's gain when
    that gain is significant, else of the drop. A wide interval (a small batch, a baseline
    measured on few rows) promises little, and so triggers little."""
    return ev.fresh_gain_low if stale else ev.drop_low


def _held_back(
    ev: DriftEvidence, limits: RetrainLimits, severe: bool, gain: float, *, costly: bool
) -> list[str]:
    """Why a performance signal does not retrain yet (empty: it does). ``costly``: the
    retrain must pay its cost (all but a severe drop, or a severe gain beside a significant
    drop)."""
    reasons: list[str] = []
    if not severe:
        seen = ev.recent_signals + 1
        if seen < limits.persistence_k:
            reasons.append(
                f"not yet persistent: {seen} of the last {limits.persistence_n} batches "
                f"(needs {limits.persistence_k}, or a severe drop)"
            )
        since = ev.batches_since_retrain
        if since is not None and since < limits.cooldown_batches:
            reasons.append(
                f"cooldown: {since} batches since the last retrain "
                f"(needs {limits.cooldown_batches}, or a severe drop)"
            )
    if gain < limits.retrain_cost and costly:
        reasons.append(
            f"not worth it: expected gain "
            f"{versus(gain, limits.retrain_cost, name='retrain cost')} (P(promotion) "
            f"{(ev.promotions + 1) / (ev.retrains + 2):.2f} from {ev.promotions} of "
            f"{ev.retrains} retrains promoted)"
        )
    return reasons
