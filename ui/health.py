"""Answers that read and never change anything: the model health card, and how an operation
works when someone asks about it ("how do I roll back flights?")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from driftpilot.core import metric_text
from driftpilot.core.errors import DriftPilotError
from driftpilot.core.vocabulary import outcome_label, status_label, trigger_label
from driftpilot.runs.evidence_keys import upgrade
from ui import charts, markup
from ui.replies import Chart, Reply

if TYPE_CHECKING:
    from driftpilot.runs.plane import RunView
    from ui.chat import Chat

RECENT = 6


def health_card(chat: Chat, model: str) -> Reply:
    """Champion and since when, the last runs, the drift and metric trends with intervals,
    and what waits for a person."""
    view = chat.cp.model_view(model)
    changes = chat.cp.champion_history(view.name)
    runs = chat.cp.list_runs(view.name, 50)
    waiting = [v for v in chat.cp.pending_approvals() if v.model == view.name]
    lines = [f"### Health of {markup.text(view.name)}", "", _champion_line(view, changes), ""]
    lines += _runs_table(runs[:RECENT])
    lines += ["", *_trends(runs)]
    if waiting:
        lines += [
            "",
            f"**Waiting for a person:** {len(waiting)} request(s): say *what is pending?*",
        ]
    else:
        lines += ["", "Nothing waits for a person."]
    figure = charts.history_figure(view.name, list(reversed(runs)), changes)
    return Reply("\n".join(lines), [Chart(f"{view.name}: champion metric by batch", figure)])


def _champion_line(view: Any, changes: list[dict[str, Any]]) -> str:
    if view.champion is None:
        return "No champion yet."
    since = next((c for c in reversed(changes) if c["version"] == view.champion), None)
    how = (
        f" since {markup.text(since['created_at'][:16])} "
        f"({markup.text(since['action'])} by {markup.text(since['actor'])})"
        if since
        else ""
    )
    baseline = (
        f", baseline {metric_text.describe(view.metric, view.baseline)}"
        if view.baseline is not None
        else ""
    )
    return (
        f"Champion **v{view.champion}** ({markup.text(view.family)}){how}{baseline}; "
        f"{len(changes)} champion change(s) in the audit."
    )


def _runs_table(runs: list[RunView]) -> list[str]:
    if not runs:
        return ["No runs yet."]
    lines = ["| run | batch | status | outcome | trigger | by |", "|---" * 6 + "|"]
    for v in runs:
        lines.append(
            f"| {markup.code(v.run_id[:12])} | {markup.cell(v.batch_id)} | "
            f"{markup.cell(status_label(v.status))} | {markup.cell(outcome_label(v.outcome))} | "
            f"{markup.cell(trigger_label(v.trigger))} | {markup.cell(v.requested_by)} |"
        )
    return lines


def _trends(runs: list[RunView]) -> list[str]:
    """The drift (share of the champion's importance on shifted columns) and the champion's
    metric (the model's own: ROC AUC, RMSE, ...) with its interval and direction, oldest to
    newest, over the recent runs that measured them."""
    points = []
    for v in reversed(runs):
        drift = upgrade("drift", v.summary.get("drift"))
        share, score = drift.get("weighted_share"), drift.get("score")
        if share is None and score is None:
            continue
        measured = "n/a"
        if score is not None:
            name = drift.get("metric")
            low, high = drift.get("score_low"), drift.get("score_high")
            measured = markup.text(metric_text.describe(name, score, low, high))
            if low is None and (drift.get("skipped") or {}).get("interval"):
                # measured only when it could change the decision (policy drift.measure)
                measured += " (no interval: it could not change the decision)"
        shifted = f"{share:.0%}" if share is not None else "n/a"
        points.append(f"{markup.text(v.batch_id)}: drift {shifted}, {measured}")
    if not points:
        return ["No drift or metric measured yet."]
    recent = points[-RECENT:]
    title = "**Trend** (oldest first; the champion's metric, with its 95% interval when measured):"
    return [title, *[f"- {p}" for p in recent]]


HOWTO = {
    "rollback": (
        "A rollback moves a model's champion back to the champion before it, with its reference "
        "window, audited like a promotion. Say `/rollback MODEL REASON` or *roll back MODEL*: I "
        "first show exactly what would move and change nothing until you press **Confirm**; it "
        "needs a reason and the {role} role (policy `people.rollback_role`)."
    ),
    "approve": (
        "A high-risk promotion waits for a person other than its requester, with the approver "
        "role. Ask *what is pending?*: each waiting run has its own **Approve** / **Reject** "
        "buttons, and your comment goes into the audit. A request compared with a champion that "
        "is no longer champion is marked stale."
    ),
    "reject": (
        "Rejecting a waiting promotion keeps the champion as it is. Ask *what is pending?* and "
        "press **Reject** under the run (approver role, not the requester); your comment goes "
        "into the audit."
    ),
    "schedule": (
        "`/schedule MODEL CRON SOURCE` (or *schedule MODEL every day*) proposes a schedule; after "
        "you press **Confirm**, `driftpilot serve` fires it and each firing runs the next batch "
        "the model has not seen."
    ),
    "audit": (
        "`/audit RUN` shows a run's decisions, tool calls, approvals and champion changes from "
        "the hash-chained audit; `driftpilot audit verify` checks the chain."
    ),
    "run": (
        "*check MODEL for drift* (the next batch it has not seen) or `/run MODEL DATASET:BATCH "
        "[ROWS]` proposes a control run on the whole batch (or ROWS sampled); it starts when you "
        "press **Confirm**, and the agents report step by step."
    ),
}


def howto(chat: Chat, operation: str, model: str | None) -> Reply:
    """How an operation works (and, for a rollback of a named model, what it would move now);
    nothing is changed."""
    from ui.acting import rollback_moves

    role = chat.cp.policy.people.rollback_role
    lines = [HOWTO.get(operation, HOWTO["run"]).format(role=role)]
    if operation == "rollback" and model:
        try:
            moves = rollback_moves(chat, chat.cp.model_view(model).name)
        except DriftPilotError as exc:  # an unknown model: say it, the explanation stands
            lines.append(f"({markup.text(exc)})")
            moves = None
        if moves is not None:
            lines.append(
                f"For **{markup.text(model)}** now, a rollback would move the champion from "
                f"v{moves[0]} to v{moves[1]}."
            )
    lines.append("_Nothing was changed: this was a question._")
    return Reply("\n\n".join(lines))
