"""DriftPilot's chat (Chainlit 2.12): ``driftpilot ui``, or ``chainlit run ui/app.py``.

Sign in with an API key as the password (any user name) or as a password user
(``driftpilot users add``); the signed-in principal is who acts. A run started here is
submitted through the façade (trigger ``chat``) and executed in a worker thread while this
session polls the audit trail and shows one step per agent decision. A run waiting for a
person shows Approve / Reject buttons; pressing one asks for a comment, records the decision
under the signed-in principal and resumes the run here.

Nothing typed changes anything: a change the chat understood is a proposal card with Confirm /
Cancel, kept in this session (the button carries only its id); Confirm carries it out as the
signed-in person, after their role is read again.

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
from chainlit.server import app as chainlit_app  # noqa: E402

from driftpilot.core.errors import DriftPilotError  # noqa: E402
from driftpilot.core.vocabulary import outcome_label, status_label  # noqa: E402
from driftpilot.execution.dispatch import BusyRetry, Inline  # noqa: E402
from driftpilot.runs.plane import ControlPlane, RunView  # noqa: E402
from driftpilot.runtime import Runtime, build_runtime  # noqa: E402
from ui import charts, markup  # noqa: E402
from ui.acting import Proposal  # noqa: E402
from ui.chat import Chat, Identity, Reply, new_decisions  # noqa: E402
from ui.replies import Chart, episode_lines  # noqa: E402
from ui.signin_guard import current_attempt, guarded_sign_in, install  # noqa: E402

log = logging.getLogger("ui")
POLL_S = 0.5
NOUN = {"approve": "approval", "reject": "rejection"}
COMMENT_TIMEOUT_S = 600

_lock = threading.Lock()
_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The process's services (``driftpilot.runtime``), built at first use: the plane, and a
    scheduler that manages schedules without firing them (``driftpilot serve`` fires). Runs
    started here execute in this session's worker threads (``stream_run``), not in an
    executor; no alert dispatcher runs here (the chat never had one)."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build_runtime(executor=False, alerts=False, firing=False, recover=False)
        return _runtime


def plane() -> ControlPlane:
    """The process's one façade (its graph and checkpointer are shared by every session)."""
    return runtime().plane


def scheduler() -> Any:
    """The runtime's scheduler, started at its first use (``Runtime.start`` is idempotent)."""
    return runtime().start().scheduler


install(chainlit_app)  # the client's address for password_auth, and its 429


@cl.password_auth_callback
async def password_auth(username: str, password: str) -> cl.User | None:
    """The user of a sign-in, under the limits on guessing (``ui.signin_guard``: a locked
    address or name is refused unchecked, and the page gets 429 with Retry-After; a store
    failure is logged there, not counted, and the page gets 503)."""
    cp = plane()
    attempt = current_attempt()
    limits = cp.settings.auth
    who = await asyncio.to_thread(guarded_sign_in, cp, username, password, attempt, limits)
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
    names = (
        ", ".join(f"**{markup.text(m.name)}** (champion v{m.champion})" for m in models)
        or "none yet"
    )
    pending = (
        f" {len(waiting)} promotion(s) wait for a person: ask *what is pending?*" if waiting else ""
    )
    await cl.Message(
        content=(
            f"Signed in as **{markup.text(chat.who.principal)}** ({chat.who.role}, by "
            f"{chat.who.via}). Managed models: {names}.{pending} Ask *how is MODEL doing?*, or "
            "type `/help` to see what I can do. Nothing changes until you press Confirm."
        )
    ).send()


@cl.on_message
async def on_message(message: cl.Message) -> None:
    chat = session_chat()
    intent = await asyncio.to_thread(chat.understand, message.content)
    reply = await asyncio.to_thread(chat.answer, intent, message.content)
    await send(chat, reply)


def _proposals() -> dict[str, Proposal]:
    """This session's open proposals by id (a Confirm press names one)."""
    kept = cl.user_session.get("proposals")
    if kept is None:
        kept = {}
        cl.user_session.set("proposals", kept)
    return kept


@cl.action_callback("confirm")
async def on_confirm(action: cl.Action) -> None:
    await cl.context.emitter.task_start()
    try:
        await confirm(action)
    finally:
        await cl.context.emitter.task_end()


async def confirm(action: cl.Action) -> None:
    chat = session_chat()
    proposal = _proposals().pop(action.payload.get("proposal", ""), None)
    if proposal is None:
        await cl.Message(
            content="That proposal is gone (done, cancelled or expired): ask again."
        ).send()
        return
    await action.remove()
    reason = ""
    if proposal.needs_reason:
        asked = await cl.AskUserMessage(
            content="Why? The reason goes into the audit with the rollback:",
            timeout=COMMENT_TIMEOUT_S,
        ).send()
        reason = str((asked or {}).get("output", "")).strip()
        if not reason:
            await cl.Message(content="No reason came: nothing was rolled back.").send()
            return
    await send(chat, await asyncio.to_thread(chat.confirm, proposal, reason))


@cl.action_callback("cancel")
async def on_cancel(action: cl.Action) -> None:
    dropped = _proposals().pop(action.payload.get("proposal", ""), None)
    await action.remove()
    said = "Cancelled: nothing changed." if dropped is not None else "Nothing to cancel."
    await cl.Message(content=said).send()


@cl.action_callback("reevaluate")
async def on_reevaluate(action: cl.Action) -> None:
    chat = session_chat()
    reply = await asyncio.to_thread(chat.reevaluate, str(action.payload.get("run_id", "")))
    await send(chat, reply)


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
    run_id, decision = str(action.payload.get("run_id", "")), action.payload.get("decision")
    if decision not in NOUN:  # the buttons send approve or reject; anything else is not ours
        await cl.Message(content="That button is not one of mine: nothing was recorded.").send()
        return
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
    """Show a reply: text, charts, files, buttons; its follow-ups; then stream its run."""
    elements: list[Any] = [
        cl.Plotly(name=c.title, figure=c.figure, display="inline", size="large")
        for c in reply.charts
    ]
    elements += [cl.File(name=name, path=str(path), display="inline") for name, path in reply.files]
    actions = decide_actions(reply.decide) if reply.decide is not None else []
    if reply.stale and reply.decide is not None:
        actions.append(reevaluate_action(reply.decide))
    if reply.proposal is not None:
        _proposals()[reply.proposal.id] = reply.proposal
        actions += proposal_actions(reply.proposal)
    await cl.Message(content=reply.text, elements=elements, actions=actions).send()
    for followup in reply.followups:
        await send(chat, followup)
    if reply.stream is not None:
        await stream_run(chat, reply.stream)


def proposal_actions(proposal: Proposal) -> list[cl.Action]:
    return [
        cl.Action(
            name=name,
            payload={"proposal": proposal.id},
            label=label,
            tooltip=tip,
        )
        for name, label, tip in (
            ("confirm", "Confirm", f"Do it: {proposal.kind}, as you, audited"),
            ("cancel", "Cancel", "Drop this proposal: nothing changes"),
        )
    ]


def reevaluate_action(view: RunView) -> cl.Action:
    return cl.Action(
        name="reevaluate",
        payload={"run_id": view.run_id},
        label="Evaluate against the current champion",
        tooltip=f"Propose a new run on batch {view.batch_id} (asks to confirm)",
    )


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
        inline = Inline(cp)  # waits for a busy model by the one busy rule
        work = asyncio.create_task(asyncio.to_thread(lambda: inline.execute(run_id).result()))
    else:
        inline = Inline(cp, BusyRetry(deadline_s=cp.settings.lease_ttl_s))
        work = asyncio.create_task(asyncio.to_thread(lambda: inline.resume(run_id).result()))
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
        said = f"**Run {markup.code(run_id[:12])} could not go on:** {markup.text(exc)}"
        await cl.Message(content=said).send()
        return
    except Exception as exc:  # a bug: say so, keep the session alive
        log.exception("run %s failed", run_id)
        failed = (
            f"**Run {markup.code(run_id[:12])} failed:** {type(exc).__name__}: {markup.text(exc)}"
        )
        await cl.Message(content=failed).send()
        return
    await send(chat, await asyncio.to_thread(result_reply, chat, view))
    if view.report_status == "pending":  # the decision is shown; its report follows
        task = asyncio.create_task(post_report(chat, view))
        _POSTING.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(_POSTING.discard)


_POSTING: set[asyncio.Task[None]] = set()


async def post_report(chat: Chat, view: RunView) -> None:
    """Post the run's Evidently report once it is rendered (in a thread: the chat goes on
    meanwhile); a render that fails is said, not raised."""
    try:
        reply = await asyncio.to_thread(chat.report_reply, view)
    except DriftPilotError as exc:
        await cl.Message(content=f"No Evidently report for this run: {markup.text(exc)}").send()
        return
    except Exception as exc:  # a task nobody awaits: unsaid, the person would wait forever
        log.exception("posting the report of run %s failed", view.run_id)
        text = f"The Evidently report could not be shown: {type(exc).__name__}"
        await cl.Message(content=f"{text}; `driftpilot report {view.run_id}` renders it.").send()
        return
    if reply is not None:
        await send(chat, reply)


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
        step.output = (
            f"**{markup.text(row['action'])}** ({markup.text(backend)})\n\n"
            f"{markup.text(row['rationale'])}"
            + (f"\n\ncited: {markup.code(json.dumps(cited))}" if cited else "")
        )


def result_reply(chat: Chat, view: RunView) -> Reply:
    """What a run came to, with its charts (and the buttons if it waits for a person)."""
    figures, files = chat.run_visuals(view)
    if view.status == "waiting_approval":
        waiting = chat.waiting(view)
        waiting.charts, waiting.files = figures, files
        return waiting
    summary = view.summary
    model = markup.text(view.model)
    head = (
        f"Run {markup.code(view.run_id[:12])} of **{model}** on {markup.text(view.batch_id)}: "
        f"**{markup.text(outcome_label(view.outcome) or status_label(view.status))}**."
    )
    lines = [head]
    promotion = summary.get("promotion") or {}
    if view.outcome == "promoted":
        approved = promotion.get("approved_by")
        lines.append(
            f"New champion of {model}: **v{promotion.get('version')}**"
            + (f" (approved by {markup.text(approved)})" if approved else "")
            + "."
        )
        changes = chat.cp.champion_history(view.model)
        views = list(reversed(chat.cp.list_runs(view.model, 100)))
        figures.append(
            Chart(
                f"{view.model}: champion metric by batch",
                charts.history_figure(view.model, views, changes),
            )
        )
    elif view.status == "failed":
        lines.append(f"Error: {markup.text(summary.get('error') or view.outcome)}")
    lines += episode_lines(summary, view.run_id)
    approval = summary.get("approval") or {}
    if approval.get("approver"):
        comment = approval.get("comment")
        lines.append(
            f"Decision by **{markup.text(approval['approver'])}**: "
            f"{markup.text(approval.get('decision'))}"
            + (f" — “{markup.text(comment)}”" if comment else "")
        )
    lines.append(f"The audit: `/audit {view.run_id[:12]}`.")
    return Reply("\n\n".join(lines), figures, files)
