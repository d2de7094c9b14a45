"""What the chat does, without Chainlit: sign-in, permissions, and one answer per intent.

Every operation goes through the service façade (``ControlPlane``) and, for ``/schedule``,
the ``Scheduler``. Who acts is always the signed-in identity (an API key's principal or a
password user's name); nothing a user types can change it, and the role is read again from
the database before every action (a revoked key or a disabled user stops acting at once).

Answers are ``Reply`` objects (markdown text, charts, files, buttons, a run to stream) that
``ui/app.py`` turns into Chainlit messages; they are plain data, so tests read them directly.
Nothing the chat reads in a message changes anything by itself: a mutating intent becomes a
proposal card (``ui.acting``) that the person confirms, a question is answered, and every
string from data is escaped (``ui.markup``) before it is shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from driftpilot.core.errors import ApprovalError, ConfigError, DriftPilotError, NotFound
from driftpilot.core.identity import Role, has_role
from driftpilot.core.vocabulary import outcome_label, status_label
from driftpilot.store.users import get_user, verify_user
from tools.drift_report import readable_report
from ui import acting, charts, health, markup, tables
from ui.batches import batches, dataset_batch, model_source
from ui.intents import MUTATIONS, USAGE, Intent, parse
from ui.replies import Chart, Refused, Reply

if TYPE_CHECKING:
    from driftpilot.runs.plane import ControlPlane, RunView
    from driftpilot.scheduling.scheduler import Scheduler

__all__ = ["Chart", "Chat", "Identity", "Refused", "Reply", "dataset_batch", "sign_in"]


@dataclass(frozen=True)
class Identity:
    """The signed-in person: the principal every action is recorded under."""

    principal: str
    role: str
    via: Literal["api-key", "password"]
    key_id: str | None = None

    def metadata(self) -> dict[str, Any]:
        return {"role": self.role, "via": self.via, "key_id": self.key_id}

    @classmethod
    def of(cls, identifier: str, metadata: dict[str, Any]) -> Identity:
        return cls(identifier, metadata["role"], metadata["via"], metadata.get("key_id"))


def sign_in(cp: ControlPlane, username: str, password: str) -> Identity | None:
    """An API key as the password (any username; the key names its principal), or a password
    user made with ``driftpilot users add``."""
    key = cp.authenticate(password) if password.startswith("dp_") else None
    if key is not None:
        return Identity(key.principal, key.role, "api-key", key.key_id)
    user = verify_user(cp.store, username, password)
    if user is not None:
        return Identity(user.name, user.role, "password")
    return None


def current_role(cp: ControlPlane, who: Identity) -> str | None:
    """The identity's role now (None: the key was revoked or the user disabled)."""
    if who.via == "api-key":
        key = next((k for k in cp.list_api_keys() if k.key_id == who.key_id), None)
        return key.role if key is not None and not key.revoked else None
    user = get_user(cp.store, who.principal)
    return user.role if user is not None else None


HELP = """I am DriftPilot's control plane. I can:

- **tell how a model is doing**: *how is flights doing?* (its health card: champion, last runs,
  drift and metric trends, what waits)
- **start a drift check**: *check flights for drift* (the next batch, all of it) or
  `/run MODEL DATASET:BATCH [ROWS]` (e.g. `/run flights flights:2013-07`)
- **list runs** `/runs [MODEL]`, and **what waits for a person** `/pending` (*what is pending?*),
  each with its own Approve / Reject buttons
- **explain**: `/audit RUN` (*show the audit of run 3fa2…*), *why did you retrain in July?*,
  *how do I roll back flights?*
- **charts**: `/history MODEL` (champion metric by batch time); a run shows its drift per feature
- **roll back** the champion: `/rollback MODEL REASON` (*roll back flights*)
- **schedule** runs: `/schedule MODEL CRON SOURCE` (SOURCE: `flights`, `flights:2013-02`,
  `glob:flights/*.parquet` under the inbox, or `gdelt`), *schedule flights every hour*
- **note** what you know about the data: `/note MODEL TEXT` (a deploy, an ETL change, a
  campaign, a sensor replaced; `at:2026-03-02` before the text dates it): the drift analyst
  reads it as data to tell what caused a drift; `/notes MODEL` lists them beside their runs
- `/schedules [MODEL]` (*show schedules*), `/models`, `/help`

Nothing changes until you press **Confirm** on the proposal I show: a question is only answered.
You act as **{who}** ({role}); runs, approvals, rollbacks and notes are audited under that name."""


class Chat:
    """The chat's operations for one signed-in identity."""

    def __init__(
        self,
        cp: ControlPlane,
        who: Identity,
        scheduler: Callable[[], Scheduler] | None = None,
    ) -> None:
        self.cp = cp
        self.who = who
        self.scheduler = scheduler

    # -- permissions ------------------------------------------------------------------------------

    def require(self, needed: Role, what: str) -> None:
        role = current_role(self.cp, self.who)
        if role is None:
            raise Refused(
                f"your sign-in ({self.who.via}) is no longer valid: sign out and in again"
            )
        if not has_role(role, needed):
            raise Refused(
                f"{self.who.principal!r} has the {role} role; to {what} you need the {needed} "
                "role or higher"
            )

    # -- dispatch ---------------------------------------------------------------------------------

    def understand(self, message: str) -> Intent:
        """Slash commands are parsed; free text goes to the chat model when one is configured
        (it picks an operation, see ``ui.llm_router``), else to the builtin phrases. Either
        way a pick that changes something only becomes a proposal."""
        models = [m.name for m in self.cp.list_models()]
        ruled = parse(message, models)
        # A slash command, a question, a status question or a negation is read by the rules
        # (an LLM's pick cannot turn "how do I roll back?" into a rollback card).
        if message.strip().startswith("/") or self.cp.backend.is_builtin or not ruled.acts:
            return ruled
        from ui.llm_router import route

        return route(self.cp.backend.chat_model, message, models) or ruled

    def answer(self, intent: Intent, message: str = "") -> Reply:
        """The reply to one intent; errors the person can act on become plain answers."""
        try:
            return self._answer(intent, message)
        except Refused as exc:
            return Reply(f"**Refused:** {markup.text(exc)}")
        except DriftPilotError as exc:
            return Reply(f"**Could not do that:** {markup.text(exc)}")

    def _answer(self, intent: Intent, message: str) -> Reply:
        handlers: dict[str, Callable[[Intent], Reply]] = {
            "help": lambda _: self.help(),
            "usage": lambda i: Reply(f"Usage: {markup.code(i.text)}"),
            "unknown": self.unknown,
            "models": lambda _: tables.models(self),
            "runs": lambda i: tables.runs(self, i.model),
            "pending": lambda _: self.pending(),
            "audit": self.audit,
            "schedules": lambda i: tables.schedules(self, i.model),
            "history": self.history,
            "notes": lambda i: tables.notes(self, _model(i)),
            "why": self.why,
            "status": lambda i: health.health_card(self, _model(i)),
            "howto": lambda i: health.howto(self, i.text, i.model),
        }
        self.require("viewer", "use the chat")
        if intent.kind in MUTATIONS:
            return self.propose(intent, message)
        return handlers[intent.kind](intent)

    def propose(self, intent: Intent, message: str = "") -> Reply:
        """The card of a change: what will happen, with Confirm / Cancel (nothing done yet).
        Approving or rejecting a model's waiting request shows that request's own buttons."""
        if intent.kind in ("approve", "reject"):
            if intent.run is None:
                return self.decide_intent(intent, intent.kind)
            refused = self.check_decision(self.cp.resolve_run_id(intent.run), intent.kind)
            if refused is not None:
                return refused
        reason = intent.text
        if intent.kind == "rollback" and reason and reason not in message:
            reason = ""  # a reason the chat model wrote is not the person's: ask them on Confirm
        if intent.kind == "note" and message and reason not in " ".join(message.split()):
            # A note is the person's own words, never a chat model's.
            raise Refused("a note is kept only as you typed it: use `/note MODEL TEXT`")
        fields = {
            "model": intent.model,
            "batch": intent.batch,
            "rows": intent.rows,
            "cron": intent.cron,
            "source": intent.source,
            "run": intent.run,
            "text": reason,
            "uri": intent.uri,
            "columns": intent.columns,
            "at": intent.at,
        }
        proposal = acting.propose(self, intent.kind, **fields)
        proposal = acting.Proposal(
            proposal.kind,
            proposal.summary,
            proposal.role,
            proposal.args,
            proposal.made_for,
            message[:500],
            proposal.id,
            proposal.needs_reason,
        )
        return Reply(
            f"**Proposal** — {proposal.summary}\n\nNothing happens until you press **Confirm**.",
            proposal=proposal,
        )

    def confirm(self, proposal: acting.Proposal, reason: str = "") -> Reply:
        """Carry out a proposal the signed-in person confirmed (refusals become answers)."""
        try:
            return acting.confirm(self, proposal, reason)
        except Refused as exc:
            return Reply(f"**Refused:** {markup.text(exc)}")
        except DriftPilotError as exc:
            return Reply(f"**Could not do that:** {markup.text(exc)}")

    def help(self) -> Reply:
        role = current_role(self.cp, self.who) or "no role"
        return Reply(HELP.format(who=markup.text(self.who.principal), role=role))

    def unknown(self, intent: Intent) -> Reply:
        models = ", ".join(markup.text(m.name) for m in self.cp.list_models()) or "none yet"
        return Reply(
            f"I did not understand “{markup.text(intent.text, 200)}”, and did nothing. "
            f"Managed models: {models}.\n\n" + self.help().text
        )

    # -- reading (the list tables, /models /runs /notes /schedules, are ui.tables') ---------------

    def pending(self) -> Reply:
        """Every waiting request, each its own card with its own buttons."""
        views = self.cp.pending_approvals()
        if not views:
            return Reply("Nothing is waiting for a person.")
        if len(views) == 1:
            return self.waiting(views[0])
        head = f"{len(views)} requests wait for a person; each has its own buttons below."
        return Reply(head, followups=[self.waiting(v) for v in views])

    def stale_champion(self, view: RunView) -> int | None:
        """The champion now, when the waiting request was compared with another one (None:
        not stale)."""
        request = view.approval_request or {}
        args = request.get("action_request", {}).get("args", {})
        if request.get("step") == "escalation" or "replaces" not in args:
            return None
        champion = self.cp.model_view(view.model).champion
        return champion if champion != args.get("replaces") else None

    def waiting(self, view: RunView) -> Reply:
        """A run waiting for approval, with the buttons (and the stale mark when its compared
        champion is no longer champion)."""
        request = view.approval_request or {}
        action = request.get("action_request", {}).get("args", {})
        text = (
            f"**Waiting for approval:** run {markup.code(view.run_id[:12])} of "
            f"**{markup.text(view.model)}** on batch {markup.text(view.batch_id)}, requested by "
            f"**{markup.text(view.requested_by)}**.\n\n"
            f"{markup.text(request.get('description', ''))}\n\n"
            f"{_question(request)}: {markup.code(tables.short_json(action))}\n\n"
            "An approver other than the requester may approve or reject it (with a comment)."
        )
        now = self.stale_champion(view)
        if now is not None:
            text = (
                f"⚠ **Stale:** this request compared the challenger with "
                f"v{action.get('replaces')}, but the champion is now **v{now}**. Approving it "
                "would end superseded; evaluate against the current champion instead.\n\n" + text
            )
        return Reply(text, decide=view, stale=now is not None)

    def audit(self, intent: Intent) -> Reply:
        assert intent.run is not None
        run_id = self.cp.resolve_run_id(intent.run)
        view = self.cp.get_run(run_id)
        rows = _all_audit(self.cp, run_id)
        outcome = f", {markup.text(outcome_label(view.outcome))}" if view.outcome else ""
        lines = [
            f"**Audit of run {markup.code(run_id)}** ({markup.text(view.model)}, batch "
            f"{markup.text(view.batch_id)}, requested by {markup.text(view.requested_by)}; "
            f"{markup.text(status_label(view.status))}{outcome})",
            "",
            "| # | agent | action | backend | rationale | cited metrics |",
            "|---|---|---|---|---|---|",
        ]
        decisions = [r for r in rows if r["table"] == "decisions"]
        for n, row in enumerate(decisions, start=1):
            evidence = _loads(row.get("evidence"))
            cited = evidence.get("cited_metrics") if isinstance(evidence, dict) else None
            backend = row.get("backend", "") + (" (fallback)" if row.get("fallback") else "")
            lines.append(
                f"| {n} | {markup.cell(row['agent'])} | **{markup.cell(row['action'])}** | "
                f"{markup.cell(backend)} | {markup.cell(row['rationale'])} | "
                f"{markup.cell(tables.short_json(cited or {}))} |"
            )
        for r in (r for r in rows if r["table"] == "approvals"):
            comment = f" — “{markup.text(r['comment'], 200)}”" if r.get("comment") else ""
            lines.append(
                f"\nApproval {markup.text(r['kind'])}: **{markup.text(r['principal'])}** "
                f"{markup.text(r['decision'])}{comment} at {markup.text(r['created_at'][:19])}"
            )
        for r in (r for r in rows if r["table"] == "champion_history"):
            lines.append(
                f"\nChampion of {markup.text(r['model'])}: v{r['previous_version']} → "
                f"**v{r['version']}** ({markup.text(r['action'])} by {markup.text(r['actor'])})"
            )
        calls = sum(1 for r in rows if r["table"] == "tool_calls")
        lines.append(f"\n{len(decisions)} decisions, {calls} tool calls in the hash-chained audit.")
        return Reply("\n".join(lines), *self.run_visuals(view, rows)[:2])

    def run_visuals(
        self, view: RunView, rows: list[dict[str, Any]] | None = None
    ) -> tuple[list[Chart], list[tuple[str, Path]]]:
        """The drift chart and the Evidently report of a run (when it got that far, and its
        report is ready: the report is rendered after the decision, and ``report_reply``
        posts it once it is)."""
        rows = rows if rows is not None else _all_audit(self.cp, view.run_id)
        out: list[Chart] = []
        files: list[tuple[str, Path]] = []
        drift = next(
            (r for r in rows if r["table"] == "decisions" and r["agent"] == "drift_analyst"), None
        )
        if drift is not None:
            evidence = _loads(drift.get("evidence"))
            figure = charts.drift_figure(evidence, view.batch_id)
            if figure is not None:
                out.append(Chart(f"drift per feature, {view.batch_id}", figure))
            report = self.cp.report_status(view.run_id)
            if report.status == "ready" and report.path is not None:
                files.append(self._report_file(view, report.path))
        return out, files

    def report_reply(self, view: RunView) -> Reply | None:
        """The message that posts the run's Evidently report, rendering it first if it is
        still pending (seconds: call it in a thread, after the run's result was shown);
        None when the run has no report.

        Raises:
            DataError: Evidently could not compare the batch with the reference.
        """
        report = self.cp.run_report(view.run_id)
        if report.status != "ready" or report.path is None:
            return None
        return Reply(
            f"Evidently's drift report of run {markup.code(view.run_id[:12])} "
            f"({markup.text(view.model)}, batch {markup.text(view.batch_id)}) is ready.",
            files=[self._report_file(view, report.path)],
        )

    def _report_file(self, view: RunView, path: str) -> tuple[str, Path]:
        """The report as a file to attach: stored gzip, attached as a plain copy (a browser
        opens the .html as it is)."""
        assert self.cp.settings.cache_dir is not None
        plain = readable_report(path, self.cp.settings.cache_dir / "reports")
        return f"evidently-{view.model}-{view.batch_id}.html", plain

    def history(self, intent: Intent) -> Reply:
        model = _model(intent)
        changes = self.cp.champion_history(model)
        views = list(reversed(self.cp.list_runs(model, 100)))
        figure = charts.history_figure(model, views, changes)
        lines = [f"**Champion history of {markup.text(model)}**", ""]
        for c in changes:
            lines.append(
                f"- v{c['version']} ({markup.text(c['action'])} by {markup.text(c['actor'])}, "
                f"{markup.text(c['created_at'][:19])})"
            )
        return Reply("\n".join(lines), [Chart(f"{model}: champion metric by batch", figure)])

    def why(self, intent: Intent) -> Reply:
        """Explain a run from its decisions: the run of a month (07, 2013-07) or the latest."""
        views = self.cp.list_runs(None, 100)
        if intent.batch:
            views = [v for v in views if v.batch_id.endswith(intent.batch)]
        if not views:
            return Reply(
                "I found no run for that. " + ("Runs: `/runs`." if intent.batch else "No runs yet.")
            )
        view = views[0]
        rows = [r for r in _all_audit(self.cp, view.run_id) if r["table"] == "decisions"]
        outcome = f", {markup.text(outcome_label(view.outcome))}" if view.outcome else ""
        lines = [
            f"Run {markup.code(view.run_id[:12])} of **{markup.text(view.model)}** on batch "
            f"{markup.text(view.batch_id)} ({markup.text(status_label(view.status))}{outcome}):",
            "",
        ]
        for r in rows:
            lines.append(
                f"- **{markup.text(r['agent'])}** → {markup.text(r['action'])}: "
                f"{markup.text(r['rationale'])}"
            )
        visuals = self.run_visuals(view)
        return Reply("\n".join(lines), visuals[0], visuals[1])

    # -- acting -----------------------------------------------------------------------------------

    def next_batch(self, model: str, batch: str | None) -> str:
        """``DATASET:BATCH`` for a model of a built-in dataset: the named batch, or the one
        after the newest batch this model ran on."""
        dataset = model_source(self.cp, model)
        if dataset is None:
            raise ConfigError(
                f"{model} is not fed by a built-in dataset: give the batch, `{USAGE['run']}`"
            )
        ids = list(batches(self.cp, dataset))
        if batch:
            hits = [b for b in ids if b == batch or b.endswith(batch)]
            if not hits:
                raise NotFound(f"{dataset} has no batch {batch!r}; e.g. {', '.join(ids[:6])}")
            return f"{dataset}:{hits[0]}"
        from driftpilot.scheduling.sources import unseen_dataset_batches

        later = unseen_dataset_batches(self.cp, model, dataset)  # the schedules' own rule
        if not later:
            raise NotFound(
                f"every batch of {dataset} after the newest seen has been run on {model}"
            )
        return f"{dataset}:{later[0]}"

    def decide_intent(self, intent: Intent, decision: str) -> Reply:
        """A model's waiting request(s), each with its own buttons (the press decides)."""
        waiting = [v for v in self.cp.pending_approvals() if v.model == intent.model]
        if not waiting:
            return Reply(f"No promotion of {markup.text(intent.model)} is waiting for a person.")
        if len(waiting) > 1:
            head = f"{len(waiting)} requests of {markup.text(intent.model)} wait; choose one:"
            return Reply(head, followups=[self.waiting(v) for v in waiting])
        refused = self.check_decision(waiting[0].run_id, decision)
        return refused or self.waiting(waiting[0])

    def check_decision(self, run_id: str, decision: str) -> Reply | None:
        """A refusal (role, own run, not waiting), or None when this person may decide."""
        from driftpilot.runs.approvals import is_own_run

        view = self.cp.get_run(run_id)
        if is_own_run(self.who.principal, view):
            return Reply(
                f"**Refused:** you ({markup.text(self.who.principal)}) requested run "
                f"{markup.code(run_id[:12])}, so you cannot approve or reject it; another person "
                "with the approver role must."
            )
        try:
            self.require("approver", f"{decision} a promotion")
        except Refused as exc:
            return Reply(f"**Refused:** {markup.text(exc)}")
        if view.status != "waiting_approval":
            return Reply(
                f"Run {markup.code(run_id[:12])} is {markup.text(status_label(view.status))}, "
                "not waiting for approval."
            )
        return None

    def record(self, run_id: str, decision: str, comment: str, step: str | None = None) -> Reply:
        """Record the decision under the signed-in principal (the app resumes the run);
        ``step`` is the question the buttons were shown for."""
        refused = self.check_decision(run_id, decision)
        if refused is not None:
            return refused
        try:
            self.cp.record_decision(run_id, decision, self.who.principal, comment, step=step)
        except ApprovalError as exc:
            return Reply(f"**Refused:** {markup.text(exc)}")
        return Reply(
            f"**{markup.text(self.who.principal)}** recorded *{decision}* on run "
            f"{markup.code(run_id[:12])}"
            + (f" with “{markup.text(comment, 200)}”" if comment else "")
            + "; resuming the run.",
            stream=run_id,
        )

    def reevaluate(self, run_id: str) -> Reply:
        """The proposal of a new run on a stale request's batch, against today's champion
        (refusals become answers)."""
        try:
            return self._reevaluate(run_id)
        except Refused as exc:
            return Reply(f"**Refused:** {markup.text(exc)}")
        except DriftPilotError as exc:
            return Reply(f"**Could not do that:** {markup.text(exc)}")

    def _reevaluate(self, run_id: str) -> Reply:
        view = self.cp.get_run(run_id)
        dataset = model_source(self.cp, view.model)
        if dataset is None:
            return Reply(
                f"{markup.text(view.model)} is not fed by a built-in dataset: submit its batch "
                "again through the API or the CLI to evaluate it against the current champion."
            )
        intent = Intent("run", model=view.model, batch=f"{dataset}:{view.batch_id}")
        return self.propose(intent, f"evaluate {run_id} against the current champion")


# -- helpers ---------------------------------------------------------------------------------------


def _model(intent: Intent) -> str:
    if not intent.model:
        raise ConfigError("name the model, e.g. *how is flights doing?*")
    return intent.model


def _all_audit(cp: ControlPlane, run_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    after: tuple[str, int] | None = None
    while True:
        page, more = cp.audit_rows(run_id=run_id, after=after, limit=500)
        rows += page
        if not more or not page:
            return rows
        after = (page[-1]["table"], page[-1]["id"])


def new_decisions(cp: ControlPlane, run_id: str, seen: int) -> list[dict[str, Any]]:
    """The run's decisions after the first ``seen`` ones, in order (what to stream next)."""
    rows, _ = cp.audit_rows(run_id=run_id, table="decisions", limit=500)
    return rows[seen:]


def _loads(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _question(request: dict[str, Any]) -> str:
    """What the person is asked, from the request's step."""
    if request.get("step") == "escalation":
        return "Accept this quarantined batch"
    return "Promote"
