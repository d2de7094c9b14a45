"""Plotly figures of the chat: drift per feature, champion metric history across batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from driftpilot.service import RunView

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
    """One point per run that scored the champion: batch, champion version and metric, and the
    challenger's score when one was evaluated (oldest run first)."""
    points = []
    for v in views:
        drift = v.summary.get("drift") or {}
        score = drift.get("roc_auc")
        if score is None:
            continue
        evaluation = v.summary.get("evaluation") or {}
        points.append(
            {
                "batch": v.batch_id,
                "run_id": v.run_id,
                "champion_version": drift.get("champion_version"),
                "champion": score,
                "challenger": evaluation.get("challenger"),
                "outcome": v.outcome,
            }
        )
    return points


def history_figure(model: str, views: list[RunView], changes: list[dict[str, Any]]) -> Any:
    """The champion's ROC AUC on each batch it met, challengers' scores, and where the
    champion changed (promotions and rollbacks)."""
    import plotly.graph_objects as go

    points = history_points(views)
    figure = go.Figure()
    figure.add_scatter(
        x=[p["batch"] for p in points],
        y=[p["champion"] for p in points],
        mode="lines+markers+text",
        text=[f"v{p['champion_version']}" for p in points],
        textposition="top center",
        name="champion ROC AUC on the batch",
    )
    challengers = [p for p in points if p["challenger"] is not None]
    figure.add_scatter(
        x=[p["batch"] for p in challengers],
        y=[p["challenger"] for p in challengers],
        mode="markers",
        marker={"symbol": "diamond", "size": 10},
        name="challenger (same holdout)",
    )
    by_run = {p["run_id"]: p["batch"] for p in points}
    for change in changes:
        batch = by_run.get(change["run_id"])
        if batch is not None and change["action"] in ("promote", "rollback"):
            figure.add_annotation(
                x=batch,
                y=1,
                yref="paper",
                text=f"{change['action']} v{change['version']}",
                showarrow=False,
            )
    figure.update_layout(
        title=f"{model}: champion metric across batches",
        yaxis_title="ROC AUC",
        xaxis={"type": "category"},
        height=360,
        margin={"l": 50, "r": 20, "t": 50, "b": 60},
        legend={"orientation": "h"},
    )
    return figure
