"""Approvals: a run's request for a person's decision and the answer, both chained rows.

One question per run at a time (``escalation``: accept a batch as the new normal, then
``promotion``), asked once; one answer per question, never by the person who asked (the one
identity rule of ``driftpilot.core.identity``), bound to the hash of the exact action asked
about, so an approval cannot be replayed onto another action.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from driftpilot.core.errors import ApprovalError, InvalidPrincipal, NotFound
from driftpilot.core.identity import normalize_principal, same_person
from driftpilot.store.chain import Chain
from driftpilot.store.engine import dumps
from driftpilot.store.models import Approval


def promotion_action(model: str, version: int, replaces: int | None) -> dict[str, Any]:
    """The action a promotion approval is about: move ``champion`` of ``model`` to ``version``,
    replacing exactly the champion ``replaces`` (None: there was none)."""
    return {
        "op": "promote",
        "model": model,
        "version": int(version),
        "alias": "champion",
        "replaces": replaces,
    }


def action_hash(action: dict[str, Any]) -> str:
    """The digest an approval is bound to: the exact action (model, version, alias, the
    champion it replaces). An approval of one action cannot be replayed onto another."""
    return hashlib.sha256(f"action|{dumps(action)}".encode()).hexdigest()


def request_step(request: Approval) -> str:
    """The question an approval request asks: ``escalation`` or ``promotion``."""
    return str(json.loads(request.payload).get("step", "promotion"))


def check_step(run_id: str, request: Approval, step: str | None) -> None:
    """Refuse an answer given to another question than the run's current one."""
    current = request_step(request)
    if step is not None and step != current:
        raise ApprovalError(
            f"run {run_id} now asks about its {current}, not its {step}: the answer was given "
            "to an earlier question and is not recorded; look at the run again"
        )


class Approvals(Chain):
    """Requests and decisions, appended to the ``approvals`` chain."""

    def request_approval(
        self,
        run_id: str,
        requester: str,
        payload: dict[str, Any],
        action: dict[str, Any],
        *,
        step: str = "promotion",
    ) -> Approval:
        """Open an approval request for ``action`` at ``step`` of the run (once per step: a
        second request for the same step returns the first). A run asks at most once per
        step: whether to accept a batch as the new normal (``escalation``), then whether to
        promote (``promotion``); each question is answered before the next is asked.

        The request stores the action and its hash; the decision will be bound to that hash.
        """
        with self.reading() as session:
            asked = session.scalars(
                select(Approval)
                .where(Approval.run_id == run_id, Approval.kind == "request")
                .order_by(Approval.id)
            ).all()
        for row in asked:
            if json.loads(row.payload).get("step", "promotion") == step:
                return row
        body = {**payload, "step": step, "action": action, "action_hash": action_hash(action)}
        return self._append(
            Approval(
                run_id=run_id,
                kind="request",
                principal=normalize_principal(requester),
                decision="pending",
                comment="",
                payload=dumps(body),
            )
        )

    def decide_approval(
        self,
        run_id: str,
        approver: str,
        decision: str,
        comment: str = "",
        *,
        step: str | None = None,
    ) -> Approval:
        """Record a person's answer to a pending request, bound to the requested action.

        ``step`` names the question the person answered (``escalation`` or ``promotion``, as
        the request they were shown says): a run that has moved on to another question since
        refuses the answer, so an approval of one question never authorises the next.

        Raises:
            NotFound: the run has no approval request.
            InvalidPrincipal: the approver's name is empty, blank or has invisible characters.
            ApprovalError: already decided, unknown decision, the approver is the requester,
                or the run now asks another question than ``step``.
        """
        if decision not in ("approve", "reject"):
            raise ApprovalError(f"decision must be 'approve' or 'reject', got {decision!r}")
        approver = normalize_principal(approver)
        rows = self.approval_rows(run_id)
        if not rows:
            raise NotFound(f"run {run_id} has no approval request")
        check_step(run_id, rows[0], step)
        if len(rows) > 1:
            raise ApprovalError(
                f"run {run_id} was already decided: {rows[1].decision} by {rows[1].principal}"
            )
        if same_person(approver, rows[0].principal):
            raise ApprovalError(f"{approver!r} asked for this and cannot approve it")
        bound = json.loads(rows[0].payload).get("action_hash", "")
        return self._append(
            Approval(
                run_id=run_id,
                kind="decision",
                principal=approver,
                decision=decision,
                comment=comment,
                payload=dumps({"action_hash": bound}),
            ),
            check=_first_decision(run_id, rows[0].id),
        )

    def approval_rows(self, run_id: str) -> list[Approval]:
        """The run's current approval: its latest request, then the decision on it (if any).
        Earlier questions of the run, already answered, are not part of it."""
        with self.reading() as session:
            rows = list(
                session.scalars(
                    select(Approval).where(Approval.run_id == run_id).order_by(Approval.id)
                )
            )
        return _from_last_request(rows)

    def approval_problem(
        self, run_id: str, action: dict[str, Any], *, unbound_ok: bool = False
    ) -> str | None:
        """Why the run's approval does not authorise ``action`` (None: it does).

        It does when the request was for exactly this action, the decision is 'approve', and
        the approver is not the requester under the one identity rule. ``unbound_ok`` accepts
        approvals written before approvals were bound to their action (verify reads old homes
        with it; the promotion gate never does)."""
        rows = self.approval_rows(run_id)
        if len(rows) < 2:
            return "no approval decision on record"
        request, answer = rows[0], rows[1]
        if answer.decision != "approve":
            return f"the request was {answer.decision}ed by {answer.principal}"
        try:
            if same_person(answer.principal, request.principal):
                return f"{answer.principal!r} approved their own request"
        except InvalidPrincipal as exc:  # a row written around the entry points
            return f"the approval names an invalid principal: {exc}"
        wanted = action_hash(action)
        bound = {json.loads(r.payload).get("action_hash") for r in (request, answer)}
        if unbound_ok and bound == {None}:
            return None
        if bound != {wanted}:
            return "the approval was given for a different action (model, version or champion)"
        return None

    def pending_approvals(self) -> list[Approval]:
        with self.reading() as session:
            rows = list(session.scalars(select(Approval).order_by(Approval.id)))
        current: dict[str, list[Approval]] = {}
        for row in rows:  # per run, the rows from its latest request on
            if row.kind == "request":
                current[row.run_id] = [row]
            elif row.run_id in current:
                current[row.run_id].append(row)
        return sorted((r[0] for r in current.values() if len(r) == 1), key=lambda r: r.id)


def _first_decision(run_id: str, request_id: int) -> Callable[[Session], None]:
    """The check, under the chain's lock, that no decision on the request was recorded
    meanwhile: of two approvers answering at once, the second finds the first's row."""

    def check(session: Session) -> None:
        earlier = session.scalars(
            select(Approval).where(
                Approval.run_id == run_id,
                Approval.kind == "decision",
                Approval.id > request_id,
            )
        ).first()
        if earlier is not None:
            raise ApprovalError(
                f"run {run_id} was already decided: {earlier.decision} by {earlier.principal}"
            )

    return check


def _from_last_request(rows: list[Approval]) -> list[Approval]:
    starts = [i for i, row in enumerate(rows) if row.kind == "request"]
    return rows[starts[-1] :] if starts else rows
