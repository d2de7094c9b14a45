"""DriftPilot's chat (Chainlit 2.12): ``driftpilot ui``, or ``chainlit run ui/app.py``.

Sign in with an API key as the password (any user name) or as a password user
(``driftpilot users add``); the signed-in principal is who acts. A run started here is
submitted through the façade (trigger ``chat``) and executed in a worker thread while this
session polls the audit trail and shows one step per agent decision. A run waiting for a
person shows Approve / Reject buttons; pressing one asks for a comment, records the decision
under the signed-in principal and resumes the run here.

Chainlit loads this file by path, so the repository root is put on ``sys.path`` first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import chainlit as cl  # noqa: E402

from driftpilot.errors import DriftPilotError  # noqa: E402
from driftpilot.service import ControlPlane, RunView  # noqa: E402
from ui import charts  # noqa: E402
from ui.chat import Chat, Identity, Reply, new_decisions, sign_in  # noqa: E402

log = logging.getLogger("ui")
POLL_S = 0.5
NOUN = {"approve": "approval", "reject": "rejection"}
COMMENT_TIMEOUT_S = 600

_lock = threading.Lock()
_plane: ControlPlane | None = None
_scheduler: Any = None


def plane() -> ControlPlane:
    """The process's one façade (its graph and checkpointer are shared by every session)."""
    global _plane
    with _lock:
        if _plane is None:
            _plane = ControlPlane()
        return _plane


def scheduler() -> Any:
    """A scheduler that manages schedules without firing them (``driftpilot serve`` fires)."""
    global _scheduler
    from driftpilot.schedules import Scheduler, SchedulerSettings

    with _lock:
        if _scheduler is None:
            assert _plane is not None
            _scheduler = Scheduler(_plane, conf=SchedulerSettings(enabled=False)).start()
        return _scheduler


@cl.password_auth_callback
async def password_auth(username: str, password: str) -> cl.User | None:
    try:
        who = await asyncio.to_thread(sign_in, plane(), username, password)
    except DriftPilotError:
        return None
    if who is None:
        return None
    return cl.User(identifier=who.principal, display_name=who.principal, metadata=who.metadata())


def session_chat() -> Chat:
    user = cl.user_session.get("user")
    assert user is not None, "chainlit admits signed-in users only"
    return Chat(plane(), Identity.of(user.identifier, user.metadata), scheduler)


@cl.on_chat_start
async def on_chat_start() -> None:
    chat = session_chat()
    models = await asyncio.to_thread(chat.cp.list_models)
    waiting = await asyncio.to_thread(chat.cp.pending_approvals)
    names = ", ".join(f"**{m.name}** (champion v{m.champion})" for m in models) or "none yet"
    pending = (
        f" {len(waiting)} promotion(s) wait for a person: ask *what is pending?*" if waiting else ""
    )
    await cl.Message(
        content=(
            f"Signed in as **{chat.who.principal}** ({chat.who.role}, by {chat.who.via}). "
            f"Managed models: {names}.{pending} Type `/help` to see what I can do."
        )
    ).send()


@cl.on_message
async def on_message(message: cl.Message) -> None:
    chat = session_chat()
    intent = await asyncio.to_thread(chat.understand, message.content)
    if intent.kind in ("approve", "reject") and intent.run and message.content.startswith("/"):
        run_id = await asyncio.to_thread(_resolve, chat, intent.run)
        if run_id is None:
            await cl.Message(content=f"No single run matches `{intent.run}`.").send()
            return
        reply = await asyncio.to_thread(chat.record, run_id, intent.kind, intent.text)
    else:
        reply = await asyncio.to_thread(chat.answer, intent)
    await send(chat, reply)


def _resolve(chat: Chat, prefix: str) -> str | None:
    try:
        return chat.cp.resolve_run_id(prefix)
    except DriftPilotError:
        return None


@cl.action_callback("decide")
async def on_decide(action: cl.Action) -> None:
    # Chainlit runs action callbacks outside a task: say when the work starts and ends, or
    # the page stays busy after the comment was answered.
    await cl.context.emitter.task_start()
    try:
        await decide(action)
    finally:
        await cl.context.emitter.task_end()


async def decide(action: cl.Action) -> None:
    chat = session_chat()
    run_id, decision = action.payload["run_id"], action.payload["decision"]
    refused = await asyncio.to_thread(chat.check_decision, run_id, decision)
    if refused is not None:
        await send(chat, refused)
        return
    asked = await cl.AskUserMessage(
        content=f"Your comment on this {NOUN[decision]} for the audit trail (`-` for none):",
        timeout=COMMENT_TIMEOUT_S,
    ).send()
    if asked is None:
        await cl.Message(content=f"No comment came: nothing was {decision}d.").send()
        return
    comment = str(asked.get("output", "")).strip()
    comment = "" if comment == "-" else comment
    step = action.payload.get("step")
    reply = await asyncio.to_thread(chat.record, run_id, decision, comment, step)
    await send(chat, reply)


async def send(chat: Chat, reply: Reply) -> None:
    """Show a reply: text, charts, files, buttons; then stream its run, if any."""
    elements: list[Any] = [
        cl.Plotly(name=c.title, figure=c.figure, display="inline", size="large")
        for c in reply.charts
    ]
    elements += [cl.File(name=name, path=str(path), display="inline") for name, path in reply.files]
    actions = decide_actions(reply.decide) if reply.decide is not None else []
    await cl.Message(content=reply.text, elements=elements, actions=actions).send()
    if reply.stream is not None:
        await stream_run(chat, reply.stream)


def decide_actions(view: RunView) -> list[cl.Action]:
    return [
        cl.Action(
            name="decide",
            # the question shown: a run that asks another one by the click refuses it
            payload={
                "run_id": view.run_id,
                "decision": decision,
                "step": (view.approval_request or {}).get("step", "promotion"),
            },
            label=label,
            tooltip=f"{label} the request of run {view.run_id[:12]} (asks for a comment)",
        )
        for decision, label in (("approve", "Approve"), ("reject", "Reject"))
    ]


async def stream_run(chat: Chat, run_id: str) -> None:
    """Execute (a pending run) or resume (a recorded decision) in a worker thread, and show
    each new agent decision as a step while it works; then the result."""
    cp = chat.cp
    view = await asyncio.to_thread(cp.get_run, run_id)
    seen = len(await asyncio.to_thread(new_decisions, cp, run_id, 0))
    if view.status == "pending":
        seen = 0
        work = asyncio.create_task(asyncio.to_thread(cp.execute_run, run_id))
    else:
        timeout = cp.settings.lease_ttl_s
        work = asyncio.create_task(asyncio.to_thread(cp.resume_run, run_id, timeout_s=timeout))
    while True:
        finished = work.done()
        for row in await asyncio.to_thread(new_decisions, cp, run_id, seen):
            await show_step(row)
            seen += 1
        if finished:
            break
        await asyncio.sleep(POLL_S)
    try:
        view = work.result()
    except DriftPilotError as exc:
        await cl.Message(content=f"**Run `{run_id[:12]}` could not go on:** {exc}").send()
        return
    except Exception as exc:  # a bug: say so, keep the session alive
        log.exception("run %s failed", run_id)
        failed = f"**Run `{run_id[:12]}` failed:** {type(exc).__name__}: {exc}"
        await cl.Message(content=failed).send()
        return
    await send(chat, await asyncio.to_thread(result_reply, chat, view))


async def show_step(row: dict[str, Any]) -> None:
    """One agent decision as a Chainlit step: its action, rationale and cited metrics."""
    agent = row["agent"]
    evidence = row.get("evidence")
    try:
        cited = json.loads(evidence).get("cited_metrics") if isinstance(evidence, str) else None
    except (ValueError, AttributeError):
        cited = None
    backend = row.get("backend", "")
    if row.get("fallback"):
        backend += ", fallback to the policy"
    async with cl.Step(name=f"{agent}: {row['action']}", type="tool") as step:
        step.input = f"{agent} decided"
        step.output = f"**{row['action']}** ({backend})\n\n{row['rationale']}" + (
            f"\n\ncited: `{json.dumps(cited)}`" if cited else ""
        )


def result_reply(chat: Chat, view: RunView) -> Reply:
    """What a run came to, with its charts (and the buttons if it waits for a person)."""
    figures, files = chat.run_visuals(view)
    if view.status == "waiting_approval":
        waiting = chat.waiting(view)
        waiting.charts, waiting.files = figures, files
        return waiting
    summary = view.summary
    head = f"Run `{view.run_id[:12]}` of **{view.model}** on {view.batch_id}: **{view.outcome}**."
    lines = [head]
    promotion = summary.get("promotion") or {}
    if view.outcome == "promoted":
        approved = promotion.get("approved_by")
        lines.append(
            f"New champion of {view.model}: **v{promotion.get('version')}**"
            + (f" (approved by {approved})" if approved else "")
            + "."
        )
        changes = chat.cp.champion_history(view.model)
        views = list(reversed(chat.cp.list_runs(view.model, 100)))
        figures.append(
            _chart(
                f"{view.model}: champion metric by batch",
                charts.history_figure(view.model, views, changes),
            )
        )
    elif view.status == "failed":
        lines.append(f"Error: {summary.get('error') or view.outcome}")
    approval = summary.get("approval") or {}
    if approval.get("approver"):
        lines.append(
            f"Decision by **{approval['approver']}**: {approval.get('decision')}"
            + (f" — “{approval['comment']}”" if approval.get("comment") else "")
        )
    lines.append(f"The audit: `/audit {view.run_id[:12]}`.")
    return Reply("\n\n".join(lines), figures, files)


def _chart(title: str, figure: Any) -> Any:
    from ui.chat import Chart

    return Chart(title, figure)
