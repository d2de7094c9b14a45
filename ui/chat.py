"""What the chat does, without Chainlit: sign-in, permissions, and one answer per intent.

Every operation goes through the service façade (``ControlPlane``) and, for ``/schedule``,
the ``Scheduler``. Who acts is always the signed-in identity (an API key's principal or a
password user's name); nothing a user types can change it, and the role is read again from
the database before every action (a revoked key or a disabled user stops acting at once).

Answers are ``Reply`` objects (markdown text, charts, files, buttons, a run to stream) that
``ui/app.py`` turns into Chainlit messages; they are plain data, so tests read them directly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from driftpilot.errors import ApprovalError, ConfigError, DriftPilotError, NotFound
from driftpilot.identity import Role, has_role, same_person
from driftpilot.users import get_user, verify_user
from ui import charts
from ui.intents import USAGE, Intent, parse

if TYPE_CHECKING:
    from driftpilot.schedules import Scheduler
    from driftpilot.service import ControlPlane, RunView

DEFAULT_ROWS = 5000  # a dataset batch started from the chat is a seeded sample of this size
MAX_ROWS = 200_000


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


@dataclass
class Chart:
    title: str
    figure: Any  # a plotly Figure


@dataclass
class Reply:
    """One answer of the chat."""

    text: str
    charts: list[Chart] = field(default_factory=list)
    files: list[tuple[str, Path]] = field(default_factory=list)
    decide: RunView | None = None  # show Approve / Reject for this waiting run
    stream: str | None = None  # a pending run to execute and stream step by step


class Refused(DriftPilotError):
    """The signed-in person may not do this (role too low, or their own run)."""


HELP = """I am DriftPilot's control plane. I can:

- **start a drift check**: `/run MODEL DATASET:BATCH [ROWS]` (e.g. `/run flights flights:2013-07`),
  or say *check flights for drift* (the next batch) or *check flights for drift on 2013-07*
- **list runs** `/runs [MODEL]`, and **what waits for a person** `/pending` (*what is pending?*)
- **approve or reject** a waiting promotion: `/approve RUN [COMMENT]`, `/reject RUN [COMMENT]`,
  *approve the flights promotion* (or press the buttons under the run)
- **explain**: `/audit RUN` (*show the audit of run 3fa2…*), *why did you retrain in July?*
- **charts**: `/history MODEL` (champion metric across batches); a run shows its drift per feature
- **roll back** the champion: `/rollback MODEL [REASON]` (*roll back flights*)
- **schedule** runs: `/schedule MODEL CRON SOURCE` (SOURCE: `flights`, `flights:2013-02`,
  `glob:flights/*.parquet` under the inbox, or `gdelt`), *schedule flights every hour*
- `/schedules [MODEL]` (*show schedules*), `/models`, `/help`

You act as **{who}** ({role}); runs, approvals and rollbacks are audited under that name."""


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
        self._scheduler = scheduler

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
        (it picks an operation, see ``ui.llm_router``), else to the builtin phrases."""
        if message.strip().startswith("/") or self.cp.backend.is_builtin:
            return parse(message)
        from ui.llm_router import route

        models = [m.name for m in self.cp.list_models()]
        return route(self.cp.backend.chat_model, message, models) or parse(message)

    def answer(self, intent: Intent) -> Reply:
        """The reply to one intent; errors the person can act on become plain answers."""
        try:
            return self._answer(intent)
        except Refused as exc:
            return Reply(f"**Refused:** {exc}")
        except DriftPilotError as exc:
            return Reply(f"**Could not do that:** {exc}")

    def _answer(self, intent: Intent) -> Reply:
        handlers: dict[str, Callable[[Intent], Reply]] = {
            "help": lambda _: self.help(),
            "usage": lambda i: Reply(f"Usage: `{i.text}`"),
            "unknown": self.unknown,
            "models": lambda _: self.models(),
            "runs": self.runs,
            "pending": lambda _: self.pending(),
            "run": self.start,
            "approve": lambda i: self.decide_intent(i, "approve"),
            "reject": lambda i: self.decide_intent(i, "reject"),
            "audit": self.audit,
            "rollback": self.rollback,
            "schedule": self.schedule,
            "schedules": self.schedules,
            "history": self.history,
            "why": self.why,
        }
        self.require("viewer", "use the chat")
        return handlers[intent.kind](intent)

    def help(self) -> Reply:
        role = current_role(self.cp, self.who) or "no role"
        return Reply(HELP.format(who=self.who.principal, role=role))

    def unknown(self, intent: Intent) -> Reply:
        models = ", ".join(m.name for m in self.cp.list_models()) or "none yet"
        return Reply(
            f"I did not understand *{_quote(intent.text)}*. Managed models: {models}.\n\n"
            + self.help().text
        )

    # -- reading ----------------------------------------------------------------------------------

    def models(self) -> Reply:
        rows = [
            f"| {m.name} | v{m.champion} | {m.family} | {m.metric} | "
            f"{_num(m.baseline)} | {len(m.features)} |"
            for m in self.cp.list_models()
        ]
        if not rows:
            return Reply("No managed model yet (`driftpilot model add ...`).")
        head = "| model | champion | family | metric | baseline | features |\n" + "|---" * 6 + "|"
        return Reply(head + "\n" + "\n".join(rows))

    def runs(self, intent: Intent) -> Reply:
        views = self.cp.list_runs(intent.model, 15)
        if not views:
            return Reply("No runs yet." + ("" if intent.model is None else f" ({intent.model})"))
        lines = ["| run | model | batch | status | outcome | requested by | started |"]
        lines.append("|---|---|---|---|---|---|---|")
        for v in views:
            lines.append(
                f"| `{v.run_id[:12]}` | {v.model} | {v.batch_id} | {v.status} | "
                f"{v.outcome or ''} | {v.requested_by} | {v.created_at[:19]} |"
            )
        return Reply("\n".join(lines))

    def pending(self) -> Reply:
        views = self.cp.pending_approvals()
        if not views:
            return Reply("Nothing is waiting for a person.")
        if len(views) == 1:
            return self.waiting(views[0])
        lines = [f"{len(views)} requests wait for a person:"]
        for v in views:
            desc = (v.approval_request or {}).get("description", "")
            lines.append(
                f"- `{v.run_id[:12]}` {v.model} on {v.batch_id}, by {v.requested_by}: {desc}"
            )
        lines.append("\nSay `/approve RUN` or `/reject RUN`, or ask for one run's `/audit RUN`.")
        return Reply("\n".join(lines))

    def waiting(self, view: RunView) -> Reply:
        """A run waiting for approval, with the buttons."""
        request = view.approval_request or {}
        action = request.get("action_request", {}).get("args", {})
        text = (
            f"**Waiting for approval:** run `{view.run_id[:12]}` of **{view.model}** on batch "
            f"{view.batch_id}, requested by **{view.requested_by}**.\n\n"
            f"{request.get('description', '')}\n\n"
            f"{_question(request)}: {_json_line(action)}\n\n"
            "An approver other than the requester may approve or reject it (with a comment)."
        )
        return Reply(text, decide=view)

    def audit(self, intent: Intent) -> Reply:
        assert intent.run is not None
        run_id = self.cp.resolve_run_id(intent.run)
        view = self.cp.get_run(run_id)
        rows = _all_audit(self.cp, run_id)
        lines = [
            f"**Audit of run `{run_id}`** ({view.model}, batch {view.batch_id}, requested by "
            f"{view.requested_by}; {view.status}{', ' + view.outcome if view.outcome else ''})",
            "",
            "| # | agent | action | backend | rationale | cited metrics |",
            "|---|---|---|---|---|---|",
        ]
        n = 0
        for row in rows:
            if row["table"] == "decisions":
                n += 1
                evidence = _loads(row.get("evidence"))
                cited = evidence.get("cited_metrics") if isinstance(evidence, dict) else None
                backend = row.get("backend", "") + (" (fallback)" if row.get("fallback") else "")
                lines.append(
                    f"| {n} | {row['agent']} | **{row['action']}** | {backend} | "
                    f"{_cell(row['rationale'])} | {_cell(_json_line(cited or {}))} |"
                )
        approvals = [r for r in rows if r["table"] == "approvals"]
        for r in approvals:
            lines.append(
                f"\nApproval {r['kind']}: **{r['principal']}** {r['decision']}"
                + (f" — “{_quote(r['comment'])}”" if r.get("comment") else "")
                + f" at {r['created_at'][:19]}"
            )
        for r in rows:
            if r["table"] == "champion_history":
                lines.append(
                    f"\nChampion of {r['model']}: v{r['previous_version']} → **v{r['version']}** "
                    f"({r['action']} by {r['actor']})"
                )
        calls = sum(1 for r in rows if r["table"] == "tool_calls")
        lines.append(f"\n{n} decisions, {calls} tool calls in the hash-chained audit.")
        return Reply("\n".join(lines), *self.run_visuals(view, rows)[:2])

    def run_visuals(
        self, view: RunView, rows: list[dict[str, Any]] | None = None
    ) -> tuple[list[Chart], list[tuple[str, Path]]]:
        """The drift chart and the Evidently report of a run (when it got that far)."""
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
            report = evidence.get("report") if isinstance(evidence, dict) else None
            if report and Path(report).is_file():
                files.append((f"evidently-{view.model}-{view.batch_id}.html", Path(report)))
        return out, files

    def history(self, intent: Intent) -> Reply:
        assert intent.model is not None
        model = intent.model
        changes = self.cp.champion_history(model)
        views = list(reversed(self.cp.list_runs(model, 100)))
        figure = charts.history_figure(model, views, changes)
        lines = [f"**Champion history of {model}**", ""]
        for c in changes:
            lines.append(
                f"- v{c['version']} ({c['action']} by {c['actor']}, {c['created_at'][:19]})"
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
        lines = [
            f"Run `{view.run_id[:12]}` of **{view.model}** on batch {view.batch_id} "
            f"({view.status}{', ' + view.outcome if view.outcome else ''}):",
            "",
        ]
        for r in rows:
            lines.append(f"- **{r['agent']}** → {r['action']}: {r['rationale']}")
        visuals = self.run_visuals(view)
        return Reply("\n".join(lines), visuals[0], visuals[1])

    # -- acting -----------------------------------------------------------------------------------

    def start(self, intent: Intent) -> Reply:
        """Submit a run (pending); the app executes and streams it (``Reply.stream``)."""
        self.require("operator", "start a run")
        assert intent.model is not None
        model = self.cp.model_view(intent.model)
        ref = intent.batch if intent.batch and ":" in intent.batch else None
        if ref is None:
            ref = self._next_batch(model.name, intent.batch)
        rows = min(intent.rows or DEFAULT_ROWS, MAX_ROWS)
        frame, batch_id = dataset_batch(self.cp, ref, rows)
        view = self.cp.submit_run(
            model.name, frame, batch_id, trigger="chat", requested_by=self.who.principal
        )
        return Reply(
            f"Started run `{view.run_id[:12]}` of **{model.name}** on batch {batch_id} "
            f"({frame.height} rows) for **{self.who.principal}**. The agents report below.",
            stream=view.run_id,
        )

    def _next_batch(self, model: str, batch: str | None) -> str:
        """``DATASET:BATCH`` for a model of a built-in dataset: the named batch, or the one
        after the newest batch this model ran on."""
        dataset = _model_source(self.cp, model)
        if dataset is None:
            raise ConfigError(
                f"{model} is not fed by a built-in dataset: give the batch, `{USAGE['run']}`"
            )
        ids = list(_batches(self.cp, dataset))
        if batch:
            hits = [b for b in ids if b == batch or b.endswith(batch)]
            if not hits:
                raise NotFound(f"{dataset} has no batch {batch!r}; e.g. {', '.join(ids[:6])}")
            return f"{dataset}:{hits[0]}"
        seen = {v.batch_id for v in self.cp.list_runs(model, 500)}
        later = [b for b in ids[1:] if b not in seen]
        if not later:
            raise NotFound(f"every batch of {dataset} has been run on {model}")
        return f"{dataset}:{later[0]}"

    def decide_intent(self, intent: Intent, decision: str) -> Reply:
        if intent.run is not None:
            run_id = self.cp.resolve_run_id(intent.run)
        else:
            waiting = [v for v in self.cp.pending_approvals() if v.model == intent.model]
            if not waiting:
                return Reply(f"No promotion of {intent.model} is waiting for a person.")
            if len(waiting) > 1:
                return self.pending()
            run_id = waiting[0].run_id
        return self.check_decision(run_id, decision) or Reply(
            f"{decision.capitalize()} run `{run_id[:12]}`?",
            decide=self.cp.get_run(run_id),
        )

    def check_decision(self, run_id: str, decision: str) -> Reply | None:
        """A refusal (role, own run, not waiting), or None when this person may decide."""
        view = self.cp.get_run(run_id)
        if same_person(view.requested_by, self.who.principal):
            return Reply(
                f"**Refused:** you ({self.who.principal}) requested run `{run_id[:12]}`, so "
                "you cannot approve or reject it; another person with the approver role must."
            )
        try:
            self.require("approver", f"{decision} a promotion")
        except Refused as exc:
            return Reply(f"**Refused:** {exc}")
        if view.status != "waiting_approval":
            return Reply(f"Run `{run_id[:12]}` is {view.status}, not waiting for approval.")
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
            return Reply(f"**Refused:** {exc}")
        return Reply(
            f"**{self.who.principal}** recorded *{decision}* on run `{run_id[:12]}`"
            + (f" with “{_quote(comment)}”" if comment else "")
            + "; resuming the run.",
            stream=run_id,
        )

    def rollback(self, intent: Intent) -> Reply:
        self.require("operator", "roll back a champion")
        assert intent.model is not None
        reason = intent.text or "rolled back from the chat"
        done = self.cp.rollback(intent.model, self.who.principal, reason)
        return Reply(
            f"**{done['model']}**: champion v{done['from']} → **v{done['to']}** "
            f"(by {done['by']}: {reason})."
        )

    def schedule(self, intent: Intent) -> Reply:
        from driftpilot.schedules import ScheduleSpec

        self.require("operator", "schedule runs")
        assert intent.model is not None and intent.cron is not None
        source = _source(intent.source) if intent.source else None
        if source is None:
            dataset = _model_source(self.cp, intent.model)
            if dataset is None:
                raise ConfigError(f"give a source: `{USAGE['schedule']}`")
            source = {"dataset": dataset}
        if self._scheduler is None:
            raise ConfigError("schedules are not available in this chat")
        try:
            spec = ScheduleSpec.model_validate(
                {"schedule": intent.cron, "payload": {"model": intent.model, "source": source}}
            )
        except ValueError as exc:
            message = str(exc).splitlines()[-1] if str(exc) else "invalid schedule"
            raise ConfigError(message) from exc
        view = self._scheduler().create(spec, self.who.principal)
        return Reply(
            f"Scheduled **{view.model}** `{view.schedule}` ({view.timezone}) from "
            f"{_json_line(view.payload['source'])}: id `{view.cron_id[:8]}`, next "
            f"{view.next_run_date or 'when resumed'}. Firings happen in `driftpilot serve`."
        )

    def schedules(self, intent: Intent) -> Reply:
        if self._scheduler is None:
            raise ConfigError("schedules are not available in this chat")
        views = self._scheduler().list_schedules(intent.model)
        if not views:
            return Reply("No schedules yet: `" + USAGE["schedule"] + "`.")
        lines = ["| id | model | cron | source | enabled | next | by |", "|---" * 7 + "|"]
        for v in views:
            lines.append(
                f"| `{v.cron_id[:8]}` | {v.model} | `{v.schedule}` {v.timezone} | "
                f"{_cell(_json_line(v.payload.get('source')))} | {'yes' if v.enabled else 'no'} "
                f"| {(v.next_run_date or '')[:19]} | {v.created_by} |"
            )
        return Reply("\n".join(lines))


# -- helpers ---------------------------------------------------------------------------------------


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


def _model_source(cp: ControlPlane, model: str) -> str | None:
    """The built-in dataset a model was made from (its source, or the dataset whose target,
    time column and features it has), if any.

    STOP-GAP: ``ModelView`` has no ``source``; this reads the façade's store (façade need:
    ``ModelView.source``)."""
    from driftpilot.audit.models import ManagedModel
    from tools.datasets import SPECS

    row = cp.store.get(ManagedModel, model)
    if row.source in SPECS:
        return row.source
    features = set(json.loads(row.numeric)) | set(json.loads(row.categorical))
    for name, spec in SPECS.items():  # a model added from a frame of a built-in dataset
        same = (spec.target, spec.time_col) == (row.target, row.time_col)
        if same and features == set(spec.numeric) | set(spec.categorical):
            return name
    return None


_BATCHES: dict[tuple[str, str], dict[str, pl.DataFrame]] = {}
_BATCHES_LOCK = threading.Lock()


def _batches(cp: ControlPlane, dataset: str) -> dict[str, pl.DataFrame]:
    """A built-in dataset cut into its natural batches (read once per process)."""
    from tools.data import split_batches
    from tools.datasets import SPECS, load_dataset

    if dataset not in SPECS:
        raise NotFound(f"unknown dataset {dataset!r}; built-in datasets: {', '.join(SPECS)}")
    key = (dataset, str(cp.settings.cache_dir))
    with _BATCHES_LOCK:
        if key not in _BATCHES:
            spec = SPECS[dataset]
            frame = load_dataset(dataset, cp.settings)  # type: ignore[arg-type]
            _BATCHES[key] = {
                b.info.batch_id: b.frame
                for b in split_batches(frame, spec.time_col, every=spec.batch_every)
            }
        return _BATCHES[key]


def dataset_batch(cp: ControlPlane, ref: str, rows: int) -> tuple[pl.DataFrame, str]:
    """The built-in batch ``DATASET:BATCH``, a seeded sample of at most ``rows`` rows."""
    from tools.datasets import SPECS

    dataset, _, batch_id = ref.partition(":")
    batches = _batches(cp, dataset)
    if batch_id not in batches:
        raise NotFound(f"{dataset} has no batch {batch_id!r}; e.g. {', '.join(list(batches)[:6])}")
    frame = batches[batch_id]
    if frame.height > rows:
        frame = frame.sample(n=rows, seed=0).sort(SPECS[dataset].time_col)
    return frame, batch_id


def _source(text: str) -> dict[str, Any]:
    if text == "gdelt":
        return {"gdelt": {}}
    if text.startswith("glob:"):
        return {"glob": text[5:]}
    dataset, _, start = text.partition(":")
    return {"dataset": dataset, **({"start": start} if start else {})}


def _loads(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _json_line(value: Any) -> str:
    return "`" + json.dumps(value, default=str, separators=(", ", ": "))[:300] + "`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:600]


def _quote(text: str) -> str:
    return " ".join(str(text).split()).replace("*", "").replace("`", "'")[:200]


def _question(request: dict[str, Any]) -> str:
    """What the person is asked, from the request's step."""
    if request.get("step") == "escalation":
        return "Accept this quarantined batch"
    return "Promote"
