"""Approvals: what waits for a person, and deciding it (which resumes the run)."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import Approver, Executor, Plane, Viewer
from api.problems import Problem
from api.routes.runs import run_of
from api.schemas import Approval, DecisionIn, Run
from driftpilot.runs.approvals import is_own_run

router = APIRouter(prefix="/approvals", tags=["approvals"])


@router.get("", response_model=list[Approval])
def pending(cp: Plane, _: Viewer) -> list[Approval]:
    """Runs waiting for a person, each with its Agent Inbox ``HumanInterrupt``."""
    return [
        Approval(
            run_id=v.run_id,
            model=v.model,
            requested_by=v.requested_by,
            created_at=v.created_at,
            interrupt=v.approval_request,
        )
        for v in cp.pending_approvals()
    ]


@router.post(
    "/{run_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Run,
    responses={
        403: {"description": "Role too low, or the approver requested the run"},
        404: {"description": "Unknown run"},
        409: {"description": "Not waiting for approval, or decided differently"},
    },
)
def decide(run_id: str, body: DecisionIn, cp: Plane, ex: Executor, key: Approver) -> Run:
    """Approve or reject a waiting run as the API key's principal, like LangGraph's
    ``Command(resume=...)``: the decision is recorded at once (202) and the run resumes in a
    background worker. Nobody approves a run they requested (one identity rule)."""
    resume = body.resume
    run = cp.get_run(run_id)
    if is_own_run(key.principal, run):
        raise Problem(
            403,
            f"{key.principal!r} requested run {run_id} and cannot decide its approval",
            slug="self-approval",
            title="Self-approval refused",
        )
    view = cp.record_decision(
        run_id, resume.decision, key.principal, resume.comment, step=resume.step
    )
    ex.resume(run_id)
    return run_of(cp, view)
