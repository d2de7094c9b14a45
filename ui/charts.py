"""Plotly figures of the chat: drift per feature, champion metric history across batches."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from driftpilot.core import metric_text
from driftpilot.runs.evidence_keys import upgrade

if TYPE_CHECKING:
    from driftpilot.runs.plane import RunView

DRIFTED, STABLE, THRESHOLD = "#d62728", "#1f77b4", "#444444"


def drift_figure(evidence: Any, batch_id: str) -> Any | None:
    """Bars of each feature's drift (most shifted first) with its threshold: effect sizes
    (red: material) and the share of the champion's importance on shifted columns; for runs
    recorded before effect sizes, Evidently's per-column scores. None without per-column
    results."""
    import plotly.graph_objects as go

    if not isinstance(evidence, dict):
        return None
    columns = _bars(evidence)
    if not columns:
        return None
    names = [c["column"] for c in columns]
    figure = go.Figure()
    figure.add_bar(
        x=names,
        y=[c["score"] for c in columns],
        marker_color=[DRIFTED if c["drifted"] else STABLE for c in columns],
        hovertext=[f"{c['column']} ({c['method']})" for c in columns],
        name="score",
    )
    figure.add_scatter(
        x=names,
        y=[c["threshold"] for c in columns],
        mode="markers",
        marker={"symbol": "line-ew-open", "size": 28, "color": THRESHOLD},
        name="threshold",
    )
    title = f"Drift per feature, batch {batch_id}"
    if evidence.get("weighted_share") is not None:
        title += f": {evidence['weighted_share']:.0%} of the champion's importance shifted"
    elif evidence.get("drift_share") is not None:
        tested = evidence.get("n_tested", len(columns))
        title += f": {evidence['drift_share']:.0%} of {tested} features drifted"
    figure.update_layout(
        title=title,
        yaxis_title="effect size (red: material)",
        xaxis={"type": "category"},
        height=360,
        margin={"l": 50, "r": 20, "t": 50, "b": 80},
        legend={"orientation": "h"},
    )
    return figure


def _bars(evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-column bars from a drift analyst's evidence, in either recorded shape."""
    shifted = evidence.get("shifted_columns")
    if shifted:
        return [
            {
                "column": str(c["column"]),
                "method": c["measure"],
                "score": c["value"],
                "threshold": c["threshold"],
                "drifted": c["material"],
            }
            for c in shifted
        ]
    return [{**c, "column": str(c["column"])} for c in evidence.get("columns") or []]


def history_points(views: list[RunView]) -> list[dict[str, Any]]:
    """One point per run that scored the champion: batch, its time (``at``, the x axis),
    champion version, the metric's name and value, and the challenger's score when one was
    evaluated on that metric. Points are in time order: a batch run twice is two points, a
    late batch sits where its time is."""
    points = []
    for v in views:
        drift = upgrade("drift", v.summary.get("drift"))
        score = drift.get("score")
        if score is None:
            continue
        evaluation = v.summary.get("evaluation") or {}
        # A challenger compared on another metric does not belong on this axis.
        compared = evaluation.get("metric", drift.get("metric")) == drift.get("metric")
        points.append(
            {
                "batch": v.batch_id,
                "at": batch_time(v),
                "run_id": v.run_id,
                "created_at": v.created_at,
                "champion_version": drift.get("champion_version"),
                "metric": drift.get("metric"),
                "champion": score,
                "challenger": evaluation.get("challenger") if compared else None,
                "outcome": v.outcome,
            }
        )
    _one_kind_of_time(points, views)
    return sorted(points, key=lambda p: (_sort_key(p["at"]), p["created_at"]))


def batch_time(view: RunView) -> datetime | float:
    """Where a run's batch sits in time: the first time its ingestion recorded (seconds for a
    numeric time column), else the date its id names ('2013-07', '2013-07-01'), else when the
    run was created. A datetime is shown as its wall-clock time."""
    recorded = ((view.summary.get("ingestion") or {}).get("time_range") or {}).get("start")
    if isinstance(recorded, int | float) and not isinstance(recorded, bool):
        return float(recorded)
    if isinstance(recorded, str):
        with contextlib.suppress(ValueError):  # not ISO: the id or the run's time says it
            return datetime.fromisoformat(recorded).replace(tzinfo=None)
    return _id_time(view.batch_id) or _created(view)


_DATE_ID = re.compile(r"^\d{4}-\d{2}(-\d{2}(T\d{2})?)?$")


def _id_time(batch_id: str) -> datetime | None:
    if not _DATE_ID.match(batch_id):
        return None
    text = batch_id if len(batch_id) > 7 else f"{batch_id}-01"
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # '2013-13': shaped like a date, not one
        return None


def _created(view: RunView) -> datetime:
    return datetime.fromisoformat(view.created_at).replace(tzinfo=None)


def _one_kind_of_time(points: list[dict[str, Any]], views: list[RunView]) -> None:
    """One axis holds one kind of time: when some batches have seconds and others dates,
    the ones in seconds are placed by their id or their run's time instead."""
    kinds = {isinstance(p["at"], datetime) for p in points}
    if len(kinds) < 2:
        return
    by_run = {v.run_id: v for v in views}
    for p in points:
        if not isinstance(p["at"], datetime):
            view = by_run[p["run_id"]]
            p["at"] = _id_time(view.batch_id) or _created(view)


def _sort_key(at: datetime | float) -> float:
    return at.replace(tzinfo=UTC).timestamp() if isinstance(at, datetime) else at


def history_figure(model: str, views: list[RunView], changes: list[dict[str, Any]]) -> Any:
    """The champion's metric (the model's own, named with its direction) on each batch it met,
    by the batch's time, challengers' scores, and where the champion changed (promotions and
    rollbacks). Values are plotted as they are: a drop in a higher-is-better metric goes down,
    in an RMSE up, as the axis title says. Runs under another metric than the latest (the
    policy changed) are left out: one axis holds one metric."""
    import plotly.graph_objects as go

    points = history_points(views)
    name = points[-1]["metric"] if points else None
    points = [p for p in points if p["metric"] == name]
    label = metric_text.label(name)
    figure = go.Figure()
    figure.add_scatter(
        x=[p["at"] for p in points],
        y=[p["champion"] for p in points],
        mode="lines+markers+text",
        text=[f"v{p['champion_version']}" for p in points],
        hovertext=[f"batch {p['batch']}, run {p['run_id'][:12]}" for p in points],
        textposition="top center",
        name=f"champion {label} on the batch",
    )
    challengers = [p for p in points if p["challenger"] is not None]
    figure.add_scatter(
        x=[p["at"] for p in challengers],
        y=[p["challenger"] for p in challengers],
        mode="markers",
        marker={"symbol": "diamond", "size": 10},
        name="challenger (same holdout)",
    )
    by_run = {p["run_id"]: p["at"] for p in points}
    for change in changes:
        at = by_run.get(change["run_id"])
        if at is not None and change["action"] in ("promote", "rollback"):
            figure.add_annotation(
                x=at,
                y=1,
                yref="paper",
                text=f"{change['action']} v{change['version']}",
                showarrow=False,
            )
    seconds = bool(points) and not isinstance(points[0]["at"], datetime)
    figure.update_layout(
        title=f"{model}: champion metric by batch time",
        yaxis_title=f"{label} ({metric_text.direction(name)})",
        xaxis={"type": "linear", "title": "batch time (s)"}
        if seconds
        else {"type": "date", "title": "batch time"},
        height=360,
        margin={"l": 50, "r": 20, "t": 50, "b": 60},
        legend={"orientation": "h"},
    )
    return figure
