"""What the chat changes, and only after the person confirms it.

A mutating intent (``ui.intents.MUTATIONS``) becomes a ``Proposal``: what exactly will happen,
worked out now from what is true now (the batch and its size, the versions a rollback moves
between, the cron's next firing), with the role it needs. The app shows it as a card with
Confirm / Cancel; only the signed-in person's press of Confirm carries it out, after the role
is read again. The confirmation is written to the audit (agent ``chat``, action
``confirm:<kind>``) before or with the change, under the operation's id.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from driftpilot.core.errors import ConfigError, DriftPilotError, NotFound
from driftpilot.core.identity import Role
from ui import markup
from ui.batches import batch_hash, batch_size, dataset_batch, model_source, source_of
from ui.replies import Refused, Reply

if TYPE_CHECKING:
    from ui.chat import Chat

# Above this many rows a chat run uses a seeded sample, and says so in its card and audit.
MAX_ROWS = 200_000


@dataclass(frozen=True)
class Proposal:
    """One change the person may confirm; ``args`` are all it needs to be carried out."""

    kind: str  # run | adopt | rollback | schedule | approve | reject | note
    summary: str  # what will happen, in words (markdown, data escaped)
    role: Role
    args: dict[str, Any]
    made_for: str  # the principal it was made for (only they may confirm it)
    message: str = ""  # what the person typed
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    needs_reason: bool = False  # a rollback asks for its reason on Confirm when none was given


def propose(chat: Chat, kind: str, **intent: Any) -> Proposal:
    """The proposal for a mutating intent (refused early when the role is too low)."""
    builders = {
        "run": _propose_run,
        "adopt": _propose_adopt,
        "rollback": _propose_rollback,
        "schedule": _propose_schedule,
        "approve": _propose_decision,
        "reject": _propose_decision,
        "note": _propose_note,
    }
    return builders[kind](chat, kind, intent)


def confirm(chat: Chat, proposal: Proposal, reason: str = "") -> Reply:
    """Carry out a confirmed proposal as the signed-in person (role read again now)."""
    if proposal.made_for != chat.who.principal:
        raise Refused("this proposal was made for someone else; ask for your own")
    chat.require(proposal.role, _WHAT[proposal.kind])
    if proposal.kind == "rollback":
        return _do_rollback(chat, proposal, reason)
    if proposal.kind == "run":
        return _do_run(chat, proposal)
    if proposal.kind == "adopt":
        return _do_adopt(chat, proposal)
    if proposal.kind == "schedule":
        return _do_schedule(chat, proposal)
    if proposal.kind == "note":
        return _do_note(chat, proposal)
    return _do_decision(chat, proposal)


_WHAT = {
    "run": "start a run",
    "adopt": "adopt a model",
    "rollback": "roll back a champion",
    "schedule": "schedule runs",
    "approve": "approve a promotion",
    "reject": "reject a promotion",
    "note": "write a note",
}


# -- proposals ------------------------------------------------------------------------------------


def _propose_run(chat: Chat, kind: str, intent: dict[str, Any]) -> Proposal:
    chat.require("operator", _WHAT[kind])
    model = chat.cp.model_view(intent["model"]).name
    batch = intent.get("batch")
    ref = batch if batch and ":" in batch else chat.next_batch(model, batch)
    total = batch_size(chat.cp, ref)
    asked = intent.get("rows")
    rows = min(asked or total, total, MAX_ROWS)
    if rows < total:
        why = "as asked" if asked else f"the chat's limit is {MAX_ROWS:,} rows"
        size = f"a seeded sample of **{rows:,}** of its {total:,} rows ({why})"
    else:
        size = f"all **{total:,}** rows"
    summary = (
        f"Start a control run of **{markup.text(model)}** on batch {markup.code(ref)}, "
        f"{size}, requested by **{markup.text(chat.who.principal)}**. The agents may retrain "
        "and promote within the policy; a high-risk promotion waits for an approver."
    )
    args = {"model": model, "ref": ref, "rows": rows, "total": total}
    return Proposal(kind, summary, "operator", args, chat.who.principal)


def _propose_adopt(chat: Chat, kind: str, intent: dict[str, Any]) -> Proposal:
    # Adopting loads the model's code into this process: admin only, as in the API.
    chat.require("admin", _WHAT[kind])
    name, uri, ref = intent["model"], intent["uri"] or "", intent["batch"]
    if not uri.startswith(("models:/", "runs:/")):
        # The chat loads models from a registry only, never a directory on the server's disk.
        raise ConfigError(
            "the chat adopts registered models only: models:/NAME@ALIAS, "
            "models:/NAME/VERSION or runs:/RUN_ID/PATH"
        )
    try:
        existing = chat.cp.model_view(name).champion
    except NotFound:
        existing = None
    if existing is not None:  # one without a champion is an unfinished adoption: retried
        raise ConfigError(f"model {name!r} already exists")
    target, *time_col = intent["columns"]
    rows = batch_size(chat.cp, ref)
    when = f", out of time by {markup.code(time_col[0])}" if time_col else ""
    summary = (
        f"Adopt {markup.code(uri)} as managed model **{markup.text(name)}**: its inputs are "
        f"checked against batch {markup.code(ref)} (**{rows:,}** rows, target "
        f"{markup.code(target)}); its predictions there set its baseline{when}, and it "
        f"becomes champion v1, adopted by **{markup.text(chat.who.principal)}**. A model that "
        "does not fit the batch is refused with every mismatched column, and nothing is kept."
    )
    args = {
        "name": name, "uri": uri, "ref": ref, "rows": rows,
        "target": target, "time_col": time_col[0] if time_col else None,
    }  # fmt: skip
    return Proposal(kind, summary, "admin", args, chat.who.principal)


def _propose_rollback(chat: Chat, kind: str, intent: dict[str, Any]) -> Proposal:
    role = chat.cp.policy.people.rollback_role
    chat.require(role, _WHAT[kind])
    model = chat.cp.model_view(intent["model"]).name
    moves = rollback_moves(chat, model)
    if moves is None:
        raise NotFound(f"{model} has no previous champion to roll back to")
    current, previous, since = moves
    reason = (intent.get("text") or "").strip()
    summary = (
        f"Roll back **{markup.text(model)}**: the champion moves from **v{current}** to "
        f"**v{previous}** (its champion before{since}), and its reference window with it. "
        + (
            f"Reason: “{markup.text(reason)}”."
            if reason
            else "A rollback needs a reason: you will be asked for it when you confirm."
        )
        + f" Needs the {role} role (policy `people.rollback_role`)."
    )
    args = {"model": model, "from": current, "to": previous, "reason": reason}
    return Proposal(kind, summary, role, args, chat.who.principal, needs_reason=not reason)


def rollback_moves(chat: Chat, model: str) -> tuple[int, int, str] | None:
    """(current champion, the one a rollback restores, when that one became champion), from
    the audit's champion history (a rollback pops the newest promotion, as the registry does);
    None without a previous champion."""
    stack: list[tuple[int, str]] = []
    for change in chat.cp.champion_history(model):
        if change["action"] == "rollback":
            if stack:
                stack.pop()
            continue
        stack.append((int(change["version"]), str(change.get("created_at", ""))[:10]))
    if len(stack) < 2:
        return None
    when = stack[-2][1]
    return stack[-1][0], stack[-2][0], f", since {when}" if when else ""


def _propose_schedule(chat: Chat, kind: str, intent: dict[str, Any]) -> Proposal:
    from driftpilot.scheduling.scheduler import ScheduleSpec, cron_trigger

    chat.require("operator", _WHAT[kind])
    model = chat.cp.model_view(intent["model"]).name
    source = source_of(intent["source"]) if intent.get("source") else None
    if source is None:
        dataset = model_source(chat.cp, model)
        if dataset is None:
            raise ConfigError("give a source: `/schedule MODEL CRON SOURCE`")
        source = {"dataset": dataset}
    payload = {"model": model, "source": source}
    try:
        spec = ScheduleSpec.model_validate({"schedule": intent["cron"], "payload": payload})
    except ValueError as exc:
        message = str(exc).splitlines()[-1] if str(exc) else "invalid schedule"
        raise ConfigError(message) from exc
    nxt = cron_trigger(spec.schedule, spec.timezone).get_next_fire_time(None, datetime.now(UTC))
    summary = (
        f"Schedule control runs of **{markup.text(model)}** at {markup.code(spec.schedule)} "
        f"({spec.timezone}) from {markup.code(source)}; the first firing would be "
        f"{nxt:%Y-%m-%d %H:%M %Z}. Each firing takes the next batch the model has not seen. "
        "Firings happen in `driftpilot serve`."
    )
    args = {"spec": spec.model_dump(mode="json")}
    return Proposal(kind, summary, "operator", args, chat.who.principal)


def _propose_decision(chat: Chat, kind: str, intent: dict[str, Any]) -> Proposal:
    """Approve or reject the question a run asks now, bound to that question: a Confirm
    pressed after the run moved on to another question records nothing."""
    run_id = chat.cp.resolve_run_id(intent["run"])
    view = chat.cp.get_run(run_id)
    request = view.approval_request or {}
    step = request.get("step", "promotion")
    action = request.get("action_request", {})
    question = "accept the quarantined batch" if step == "escalation" else "promote"
    comment = (intent.get("text") or "").strip()
    summary = (
        f"{kind.capitalize()} the request of run {markup.code(run_id[:12])} "
        f"({markup.text(view.model)} on batch {markup.text(view.batch_id)}, requested by "
        f"{markup.text(view.requested_by)}) to {question}: "
        f"{markup.code(json.dumps(action.get('args', {}), sort_keys=True))}"
        + (f", with the comment “{markup.text(comment)}”" if comment else "")
        + f", as **{markup.text(chat.who.principal)}**; the run then goes on."
    )
    args = {"run_id": run_id, "comment": comment, "step": step, "action": action}
    return Proposal(kind, summary, "approver", args, chat.who.principal)


def _propose_note(chat: Chat, kind: str, intent: dict[str, Any]) -> Proposal:
    """A note, shown as it will be stored (sanitised; refused when too long, empty or with
    bidi controls), on a managed model, at the time given or at the Confirm press."""
    from driftpilot.runs.notes import clean_text

    chat.require("operator", _WHAT[kind])
    model = chat.cp.model_view(intent["model"]).name
    text = clean_text(intent.get("text") or "")
    at = _note_time(intent.get("at"))
    when = f"at {markup.code(at.isoformat())}" if at is not None else "now (when you confirm)"
    summary = (
        f"Keep this note on **{markup.text(model)}**, {when}, written by "
        f"**{markup.text(chat.who.principal)}**: “{markup.text(text)}”. The drift analyst "
        "reads the notes of a batch's window as data, never as instructions, to tell what "
        "caused a drift. A note is audited and cannot be edited or deleted."
    )
    args = {"model": model, "text": text, "at": at.isoformat() if at is not None else None}
    return Proposal(kind, summary, "operator", args, chat.who.principal)


def _note_time(value: str | None) -> datetime | None:
    """A note's ``at:`` time (naive: UTC), or None (now).

    Raises:
        ConfigError: not an ISO 8601 date or time.
    """
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{value!r} is not an ISO 8601 date or time (e.g. at:2026-03-02 or at:2026-03-02T14:30)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- carrying out ---------------------------------------------------------------------------------


def _audit(chat: Chat, op_id: str, proposal: Proposal, **extra: Any) -> None:
    chat.cp.record_confirmation(
        op_id,
        chat.who.principal,
        proposal.kind,
        markup.plain(proposal.summary),
        {"proposal": proposal.id, "args": proposal.args, "message": proposal.message, **extra},
    )


def _do_decision(chat: Chat, proposal: Proposal) -> Reply:
    run_id, step = proposal.args["run_id"], proposal.args["step"]
    refused = chat.check_decision(run_id, proposal.kind)
    if refused is not None:
        return refused
    request = chat.cp.get_run(run_id).approval_request or {}
    now = (request.get("step", "promotion"), request.get("action_request", {}))
    if now != (step, proposal.args["action"]):
        return Reply(
            f"Run {markup.code(run_id[:12])} asks something else since this proposal: nothing "
            "was recorded. Ask *what is pending?* to see its question now."
        )
    _audit(chat, run_id, proposal)
    return chat.record(run_id, proposal.kind, proposal.args["comment"], step=step)


def _do_rollback(chat: Chat, proposal: Proposal, reason: str) -> Reply:
    reason = (reason or proposal.args["reason"]).strip()
    if not reason:
        return Reply("A rollback needs a reason: nothing was rolled back.")
    model = proposal.args["model"]
    moves = rollback_moves(chat, model)
    if moves is None or moves[:2] != (proposal.args["from"], proposal.args["to"]):
        return Reply(
            f"The champion of **{markup.text(model)}** changed since this proposal: nothing was "
            "rolled back. Ask again to see what a rollback would do now."
        )
    op_id = f"rb-{uuid.uuid4().hex}"
    _audit(chat, op_id, proposal, reason=reason)
    expected = (proposal.args["from"], proposal.args["to"])
    try:  # the versions are checked again under the model's lease
        done = chat.cp.rollback(model, chat.who.principal, reason, key=op_id, expect=expected)
    except DriftPilotError as exc:
        chat.cp.record_confirmation(
            op_id, chat.who.principal, "rollback", f"not done: {exc}", {}, outcome="failed"
        )
        raise
    return Reply(
        f"**{markup.text(done['model'])}**: champion v{done['from']} → **v{done['to']}** "
        f"(by {markup.text(done['by'])}, confirmed: “{markup.text(reason)}”)."
    )


def _do_run(chat: Chat, proposal: Proposal) -> Reply:
    args = proposal.args
    frame, batch_id = dataset_batch(chat.cp, args["ref"], args["rows"])
    sample = {"rows": frame.height, "of": args["total"], "seed": 0}
    # The dataset and the whole batch's hash: a schedule of this model will not run it again.
    metadata = {
        "source": args["ref"],
        "dataset": args["ref"].partition(":")[0],
        "batch_hash": batch_hash(chat.cp, args["ref"]),
        "confirmed_proposal": proposal.id,
    }
    if frame.height < args["total"]:
        metadata["sample"] = sample
    view = chat.cp.submit_run(
        args["model"],
        frame,
        batch_id,
        trigger="chat",
        requested_by=chat.who.principal,
        metadata=metadata,
    )
    _audit(chat, view.run_id, proposal, **({"sample": sample} if "sample" in metadata else {}))
    size = (
        f"a sample of {frame.height:,} of {args['total']:,} rows"
        if "sample" in metadata
        else f"all {frame.height:,} rows"
    )
    return Reply(
        f"Started run {markup.code(view.run_id[:12])} of **{markup.text(args['model'])}** on "
        f"batch {markup.text(batch_id)} ({size}) for **{markup.text(chat.who.principal)}**. "
        "The agents report below.",
        stream=view.run_id,
    )


def _do_adopt(chat: Chat, proposal: Proposal) -> Reply:
    from driftpilot.runs.adopt import Adoptions, AdoptRequest

    args = proposal.args
    frame, _ = dataset_batch(chat.cp, args["ref"], args["rows"])
    request = AdoptRequest(
        name=args["name"],
        model_uri=args["uri"],
        reference=frame,
        target=args["target"],
        time_col=args["time_col"],
        source=json.dumps({"dataset_batch": args["ref"]}),
    )
    op_id = f"adopt-{uuid.uuid4().hex}"
    _audit(chat, op_id, proposal)
    try:
        view = Adoptions(chat.cp.models).adopt(request, principal=chat.who.principal)
    except Exception as exc:  # recorded as failed (the confirmation is already audited), raised
        chat.cp.record_confirmation(
            op_id, chat.who.principal, "adopt", f"not done: {exc}", {}, outcome="failed"
        )
        raise
    return Reply(markup.text(view.note))


def _do_schedule(chat: Chat, proposal: Proposal) -> Reply:
    from driftpilot.scheduling.scheduler import ScheduleSpec

    if chat.scheduler is None:
        raise ConfigError("schedules are not available in this chat")
    spec = ScheduleSpec.model_validate(proposal.args["spec"])
    view = chat.scheduler().create(spec, chat.who.principal)
    _audit(chat, view.cron_id, proposal)
    return Reply(
        f"Scheduled **{markup.text(view.model)}** {markup.code(view.schedule)} "
        f"({view.timezone}) from {markup.code(view.payload['source'])}: id "
        f"{markup.code(view.cron_id[:8])}, next "
        f"{markup.text(view.next_run_date or 'when resumed')}. "
        "Firings happen in `driftpilot serve`."
    )


def _do_note(chat: Chat, proposal: Proposal) -> Reply:
    from driftpilot.runs.notes import add_note

    args = proposal.args
    at = datetime.fromisoformat(args["at"]) if args["at"] else None
    view = add_note(chat.cp.store, args["model"], args["text"], at, chat.who.principal)
    # Under the note's own audit id: its record (the text's hash) and this confirmation.
    _audit(chat, f"note-{view.id}", proposal)
    return Reply(
        f"Kept note {view.id} on **{markup.text(view.model)}** at "
        f"{view.at:%Y-%m-%d %H:%M} UTC, by **{markup.text(view.by)}**."
    )
