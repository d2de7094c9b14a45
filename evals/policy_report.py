"""The policy comparison's verdicts and output: issue 19's target (the loop against retraining
every batch), issue 21's framing criterion, the table and the plot of ``evals.policies``."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rich.table import Table

from driftpilot.core import metric_text
from driftpilot.core.tasks import METRICS
from evals.baselines import Framing, PolicyRun

LOOP = "driftpilot"
# Issue 21's framing criterion: the loop's retrain counts under the two framings differ by at
# most this, and each framing's yield (promotions per retrain) is at least MIN_YIELD.
MAX_RETRAIN_GAP = 1
MIN_YIELD = 0.5


# -- the target -------------------------------------------------------------------------------

BASELINE = "every batch"  # the issue-19 target's reference: retrain (and deploy) every month
MAX_RETRAIN_SHARE = 1 / 3  # the loop may retrain at most a third as often


def target_check(runs: list[PolicyRun]) -> dict[str, Any]:
    """Issue 19's target: the loop's mean prequential score is at least every batch's, in the
    metric's direction (RMSE: lower or equal), with at most a third of its retrains.

    The means are over the batches both policies scored, so a batch only one of them has a
    score for cannot tilt the comparison."""
    by_name = {run.policy: run for run in runs}
    loop, every = by_name[LOOP], by_name[BASELINE]
    measure = METRICS[loop.metric]
    ours = {r.index: r.score for r in loop.rows if r.score is not None}
    theirs = {r.index: r.score for r in every.rows if r.score is not None}
    both = sorted(ours.keys() & theirs.keys())
    loop_mean = statistics.fmean(ours[i] for i in both) if both else None
    every_mean = statistics.fmean(theirs[i] for i in both) if both else None
    gain = (
        measure.gain(every_mean, loop_mean)
        if loop_mean is not None and every_mean is not None
        else None
    )
    loop_retrains = sum(r.retrained for r in loop.rows)
    every_retrains = sum(r.retrained for r in every.rows)
    score_met = gain is not None and gain >= 0
    retrains_met = loop_retrains <= every_retrains * MAX_RETRAIN_SHARE
    return {
        "metric": loop.metric,
        "higher_is_better": measure.higher_is_better,
        "baseline": BASELINE,
        "batches_compared": len(both),
        "driftpilot_mean": None if loop_mean is None else round(loop_mean, 4),
        "baseline_mean": None if every_mean is None else round(every_mean, 4),
        # Metric.gain units: points for ROC AUC, a share of the baseline's RMSE for RMSE.
        "gain": None if gain is None else round(gain, 4),
        "score_met": score_met,
        "driftpilot_retrains": loop_retrains,
        "baseline_retrains": every_retrains,
        "max_retrains": round(every_retrains * MAX_RETRAIN_SHARE, 2),
        "retrains_met": retrains_met,
        "met": score_met and retrains_met,
    }


def target_line(check: dict[str, Any]) -> str:
    """One line: the target, the two measured sides, and whether each half is met."""
    label = metric_text.label(check["metric"])
    direction = "higher" if check["higher_is_better"] else "lower"
    relation = ">=" if check["higher_is_better"] else "<="
    gain = check["gain"]
    if gain is None:
        gain_text = "-"
    elif METRICS[check["metric"]].relative:  # Metric.gain is a share of the baseline's value
        gain_text = f"{gain:+.2%} of {check['baseline']}'s {label}"
    else:
        gain_text = f"{gain:+.4f} points"
    return (
        f"Target (issue 19): mean prequential {label} driftpilot {relation} {check['baseline']} "
        f"({direction} is better) and retrains <= 1/3 of {check['baseline']}'s. "
        f"Measured on {check['batches_compared']} batches: {label} "
        f"{_fmt(check['driftpilot_mean'])} vs {_fmt(check['baseline_mean'])} (gain {gain_text}): "
        f"{'met' if check['score_met'] else 'NOT met'}; retrains {check['driftpilot_retrains']} "
        f"vs {check['baseline_retrains']} (at most {check['max_retrains']}): "
        f"{'met' if check['retrains_met'] else 'NOT met'}. "
        f"Target {'MET' if check['met'] else 'NOT MET'}."
    )


# -- output -----------------------------------------------------------------------------------


def policy_table(runs: list[PolicyRun], title: str) -> Table:
    """Per policy: mean and worst prequential score (in the runs' metric), retrains,
    recalibrations, promotions, yield (promoted retrains per retrain), compute seconds."""
    table = Table(title=title)
    table.add_column("policy", no_wrap=True)
    measure = metric_text.label(runs[0].metric) if runs else "score"
    columns = (
        f"mean {measure}",
        f"worst {measure}",
        "scored",
        "retrains",
        "recal.",
        "promotions",
        "yield",
    )
    for name in columns:
        table.add_column(name, justify="right")
    table.add_column("compute s", justify="right")
    table.add_column("of which training s", justify="right")
    for run in runs:
        t = run.totals()
        table.add_row(
            run.policy,
            _fmt(t["mean_score"]),
            _fmt(t["worst_score"]),
            f"{t['scored']}/{t['batches']}",
            str(t["retrains"]),
            str(t["recalibrations"]),
            str(t["promotions"]),
            "-" if t["yield"] is None else f"{t['yield']:.0%}",
            f"{t['compute_s']:.1f}",
            f"{t['training_s']:.1f}",
        )
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def plot_policies(
    runs: list[PolicyRun], path: Path, *, title: str, metric: str = "roc_auc"
) -> Path:
    """Prequential score per batch and policy (top) and when each policy retrained or
    promoted (bottom). Written as PNG with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curve, events) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    colors = [matplotlib.colormaps["tab10"](i) for i in range(10)]
    for lane, run in enumerate(runs):
        color = colors[lane % len(colors)]
        _plot_curve(curve, run, color)
        _plot_events(events, run, lane, color)
    _mark_unscored(curve, runs[0])
    labels = [(r.index, r.batch_id) for r in runs[0].rows]
    events.set_xticks([i for i, _ in labels], [b for _, b in labels], rotation=45, ha="right")
    events.set_yticks(range(len(runs)), [r.policy for r in runs])
    events.set_ylim(-0.6, len(runs) - 0.4)
    events.invert_yaxis()
    events.set_xlabel("batch (a model trained after a batch serves from the next one)")
    events.legend(handles=_event_legend(), loc="upper left", bbox_to_anchor=(1.01, 1.0))
    curve.set_ylabel(f"prequential {metric_text.label(metric)} ({metric_text.direction(metric)})")
    curve.set_title(title)
    curve.grid(alpha=0.3)
    curve.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_curve(ax: Any, run: PolicyRun, color: Any) -> None:
    xs = [r.index for r in run.rows]
    ys = [float("nan") if r.score is None else r.score for r in run.rows]
    mean = run.totals()["mean_score"]
    label = f"{run.policy} (mean {mean:.3f})" if mean is not None else run.policy
    ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.6, color=color, label=label)
    retrained = [(r.index, r.score) for r in run.rows if r.retrained and r.score is not None]
    if retrained:
        ax.scatter(
            *zip(*retrained, strict=True),
            marker="^",
            s=55,
            facecolors="none",
            edgecolors=[color],
            linewidths=1.3,
            zorder=3,
        )
    if run.policy == LOOP:
        promoted = [(r.index, r.score) for r in run.rows if r.promoted and r.score is not None]
        if promoted:
            ax.scatter(
                *zip(*promoted, strict=True),
                marker="*",
                s=170,
                color=color,
                edgecolors="black",
                linewidths=0.6,
                zorder=4,
            )


def _plot_events(ax: Any, run: PolicyRun, lane: int, color: Any) -> None:
    retrained = [r.index for r in run.rows if r.retrained]
    shift = -0.18 if run.policy == LOOP else 0.0  # the loop's stars sit just below
    ax.scatter(
        retrained,
        [lane + shift] * len(retrained),
        marker="^",
        s=60,
        facecolors="none",
        edgecolors=[color],
        linewidths=1.3,
    )
    if run.policy == LOOP:
        promoted = [r.index for r in run.rows if r.promoted]
        ax.scatter(
            promoted,
            [lane - shift] * len(promoted),
            marker="*",
            s=170,
            color=color,
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
        )
    ax.axhline(lane, color=color, alpha=0.15, linewidth=6)


def _mark_unscored(ax: Any, run: PolicyRun) -> None:
    """A dotted line where a classifier's batch has a single class (no ROC AUC for any
    policy)."""
    for row in run.rows:
        if row.score is None and row.note.startswith("single class"):
            ax.axvline(row.index, color="grey", linestyle=":", linewidth=1)
            ax.annotate(
                "one class: no ROC AUC",
                (row.index, 0.02),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=7,
                color="grey",
                ha="right",
            )


def _event_legend() -> list[Any]:
    from matplotlib.lines import Line2D

    return [
        Line2D(
            [],
            [],
            marker="^",
            linestyle="none",
            markerfacecolor="none",
            markeredgecolor="black",
            markersize=8,
            label="retrained after this batch",
        ),
        Line2D(
            [],
            [],
            marker="*",
            linestyle="none",
            color="black",
            markersize=11,
            label="DriftPilot promoted",
        ),
    ]


# -- framings ---------------------------------------------------------------------------------


def framing_check(payloads: dict[Framing, dict[str, Any]]) -> dict[str, Any]:
    """Issue 21's framing criterion on one dataset's ``compare_policies`` payloads, one per
    framing: DriftPilot's retrain counts within ``MAX_RETRAIN_GAP`` of each other, and each
    framing's yield (promotions / retrains) at least ``MIN_YIELD``. A framing without a
    retrain has no yield and fails the yield half (nothing was shown to pay off)."""
    per = {
        framing: {
            key: payload["totals"][LOOP].get(key)
            for key in ("retrains", "recalibrations", "promotions", "yield")
        }
        | {"batches": len(payload["batches"]), "mean_score": payload["totals"][LOOP]["mean_score"]}
        for framing, payload in payloads.items()
    }
    retrains = [p["retrains"] for p in per.values()]
    gap = max(retrains) - min(retrains)
    yields_met = all(p["yield"] is not None and p["yield"] >= MIN_YIELD for p in per.values())
    return {
        "framings": per,
        "retrain_gap": gap,
        "max_retrain_gap": MAX_RETRAIN_GAP,
        "retrains_met": gap <= MAX_RETRAIN_GAP,
        "min_yield": MIN_YIELD,
        "yields_met": yields_met,
        "met": gap <= MAX_RETRAIN_GAP and yields_met,
    }


def framing_line(dataset: str, check: dict[str, Any]) -> str:
    """One line: each framing's retrains, promotions and yield, and the criterion's verdict."""
    parts = [
        f"{framing}: {p['retrains']} retrains, {p.get('recalibrations') or 0} recalibrations, "
        f"{p['promotions']} promotions, yield "
        + ("-" if p["yield"] is None else f"{p['yield']:.0%}")
        for framing, p in check["framings"].items()
    ]
    return (
        f"Framings (issue 21) on {dataset}: {'; '.join(parts)}. Retrain counts within "
        f"{check['max_retrain_gap']} (gap {check['retrain_gap']}): "
        f"{'met' if check['retrains_met'] else 'NOT met'}; each yield >= {check['min_yield']:.0%}: "
        f"{'met' if check['yields_met'] else 'NOT met'}. Criterion "
        f"{'MET' if check['met'] else 'NOT MET'}."
    )
