"""Approval decisions on waiting runs, and confirmations of what the chat proposed.

The self-approval rule (nobody decides the approval of a run they requested, under the one
identity rule) is ``is_own_run``: every edge that offers a decision (the REST approvals
route, the LangGraph-shaped resume, the chat) asks it before recording one, and the audit
store enforces it again when the decision is written (``AuditStore.decide_approval``)."""

from __future__ import annotations

from typing import Any, Literal

from agents.base import Outcome
from agents.context import RunContext
from driftpilot.core.errors import ApprovalError
from driftpilot.core.identity import normalize_principal, same_person
from driftpilot.core.settings import Settings
from driftpilot.runs.lifecycle import Lifecycle
from driftpilot.runs.reads import Reads
from driftpilot.runs.views import RunView
from driftpilot.store import AuditStore
from driftpilot.store.audit import check_step
from driftpilot.store.models import Run


def is_own_run(principal: str, run: RunView) -> bool:
    """Whether ``principal`` requested ``run``, and so may not approve or reject it.

    Raises:
        InvalidPrincipal: either name is invalid.
    """
    return same_person(principal, run.requested_by)


class Approvals:
    """Records decisions (``record_decision``) and applies them (``decide``, through the
    lifecycle's ``resume_run``)."""

    def __init__(
        self,
        store: AuditStore,
        settings: Settings,
        ctx: RunContext,
        reads: Reads,
        lifecycle: Lifecycle,
    ) -> None:
        self.store, self.settings, self.ctx = store, settings, ctx
        self.reads, self.lifecycle = reads, lifecycle

    def decide(
        self,
        run_id: str,
        decision: str,
        approver: str,
        comment: str = "",
        *,
        wait: bool = False,
        step: str | None = None,
    ) -> RunView:
        """Approve or reject a waiting run, then resume it (in this process).

        The decision is recorded (bound to the requested action) before the graph resumes. If a
        recorded decision was never applied (the process died, or the model was busy), the same
        call applies it.

        Raises:
            ApprovalError: the run is not waiting, the approver requested it, or a different
                decision is already on record.
            InvalidPrincipal: the approver's name is empty, blank or has invisible characters.
            ModelBusy: another run holds the model (the decision stays recorded; retry, or
                ``recover`` applies it).
        """
        self.record_decision(run_id, decision, approver, comment, step=step)
        return self.lifecycle.resume_run(run_id, wait=wait, timeout_s=self.settings.lease_ttl_s)

    def record_decision(
        self,
        run_id: str,
        decision: str,
        approver: str,
        comment: str = "",
        *,
        step: str | None = None,
    ) -> RunView:
        """The first half of ``decide``: check and record the decision; the run stays
        ``waiting_approval`` until ``resume_run`` (here or in a worker) applies it. ``step``
        (the question the approver was shown) must be the run's current one."""
        approver = normalize_principal(approver)
        run = self.store.get(Run, run_id)
        rows = self.store.approval_rows(run_id)
        if rows:
            check_step(run_id, rows[0], step)
        recorded = rows[1] if len(rows) > 1 else None
        if run.status != "waiting_approval":
            hint = " (if its process died, `driftpilot recover` finishes it)"
            raise ApprovalError(
                f"run {run_id} is {run.status}, not waiting for approval"
                + (hint if run.status == "running" else "")
            )
        if recorded is not None and recorded.decision != decision:
            raise ApprovalError(
                f"run {run_id} was already decided: {recorded.decision} by "
                f"{recorded.principal}; that decision is applied, not replaced"
            )
        if recorded is None:
            self.store.decide_approval(run_id, approver, decision, comment, step=step)
        return self.reads.get_run(run_id)

    def record_confirmation(
        self,
        op_id: str,
        principal: str,
        kind: str,
        summary: str,
        details: dict[str, Any],
        outcome: Literal["confirm", "failed"] = "confirm",
    ) -> None:
        """Audit that ``principal`` confirmed a proposal the chat made from their words
        (agent ``chat``, action ``confirm:<kind>``), under the id of the operation it starts:
        the run, the rollback or the schedule; ``failed:<kind>`` when the confirmed operation
        was then refused (the champion moved, the model was busy)."""
        who = normalize_principal(principal)
        said = "confirmed" if outcome == "confirm" else "confirmed, but"
        self.ctx.record(
            op_id,
            "chat",
            Outcome(None, "person", ""),
            f"{outcome}:{kind}",
            f"{who} {said}: {summary}",
            {"confirmed_by": who, **details},
        )
