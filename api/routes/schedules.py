"""Schedules (LangGraph Platform's crons): runs of a model on the newest batch of a source,
at the times of a five-field cron in an IANA time zone.

Operators write, viewers read. The scheduler is the app's runtime's (``driftpilot.runtime``):
it starts with the app and its fired runs execute in the app's run executor. See
``driftpilot.scheduling.scheduler`` for the sources, the misfire and coalescing policy, and
what each firing audits.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from api.deps import Operator, Viewer
from api.problems import Problem
from driftpilot.scheduling.scheduler import (
    Firing,
    Scheduler,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleView,
)

router = APIRouter(prefix="/schedules", tags=["schedules"])
CronId = Annotated[str, Path(max_length=40, description="The schedule's cron_id.")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown schedule"}}
_WRITE: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown schedule, model or dataset"},
    422: {"description": "Invalid cron expression, time zone or source"},
}


def _scheduler(request: Request) -> Scheduler:
    scheduler: Scheduler | None = getattr(request.app.state, "scheduler", None)
    if scheduler is None or not scheduler.running:
        raise Problem(503, "the scheduler is not running (the app is starting or stopping)")
    return scheduler


Sched = Annotated[Scheduler, Depends(_scheduler)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ScheduleView, responses=_WRITE)
def create_schedule(body: ScheduleSpec, sched: Sched, key: Operator) -> ScheduleView:
    """Schedule runs of ``payload.model``. ``schedule`` is a five-field cron (minute hour
    day-of-month month day-of-week; 0 or 7 is Sunday) in ``timezone``. ``payload.source``
    is ``{"glob": "dir/*.parquet"}`` (the newest new file under an allowed batch root),
    ``{"dataset": "flights", "start": "2013-02"}`` (the next batch of a built-in dataset) or
    ``{"gdelt": {}}`` (the newest GDELT 15-minute export). A firing that finds the model busy
    skips (``reject``, audited) or waits (``enqueue``). The creator is the key's principal
    and requests every fired run."""
    return sched.create(body, key.principal)


@router.get("", response_model=list[ScheduleView])
def list_schedules(
    sched: Sched,
    _: Viewer,
    model: Annotated[str | None, Query(max_length=200)] = None,
    enabled: bool | None = None,
) -> list[ScheduleView]:
    """Schedules, oldest first, with their next fire time and last firing."""
    return sched.list_schedules(model=model, enabled=enabled)


@router.get("/{cron_id}", response_model=ScheduleView, responses=_NOT_FOUND)
def get_schedule(cron_id: CronId, sched: Sched, _: Viewer) -> ScheduleView:
    """One schedule with its next fire time (``next_run_date``, UTC; null while paused)."""
    return sched.get(cron_id)


@router.patch("/{cron_id}", response_model=ScheduleView, responses=_WRITE)
def update_schedule(
    cron_id: CronId, body: ScheduleUpdate, sched: Sched, key: Operator
) -> ScheduleView:
    """Change the fields given; the next fire time is recomputed from now."""
    return sched.update(cron_id, body, key.principal)


@router.delete("/{cron_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_NOT_FOUND)
def delete_schedule(cron_id: CronId, sched: Sched, key: Operator) -> Response:
    """Delete a schedule (its audited firings stay in the trail)."""
    sched.delete(cron_id, key.principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{cron_id}/pause", response_model=ScheduleView, responses=_NOT_FOUND)
def pause_schedule(cron_id: CronId, sched: Sched, key: Operator) -> ScheduleView:
    """Stop firing (``enabled`` false) until resumed."""
    return sched.pause(cron_id, key.principal)


@router.post("/{cron_id}/resume", response_model=ScheduleView, responses=_NOT_FOUND)
def resume_schedule(cron_id: CronId, sched: Sched, key: Operator) -> ScheduleView:
    """Fire again from the cron's next time after now (paused times are not caught up)."""
    return sched.resume(cron_id, key.principal)


@router.post(
    "/{cron_id}/run",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ScheduleView,
    responses={**_NOT_FOUND, 422: {"description": "The schedule is paused"}},
)
def run_schedule_now(cron_id: CronId, sched: Sched, key: Operator) -> ScheduleView:
    """Fire now, through the scheduler (overlap and busy rules apply); the outcome appears
    in ``GET /schedules/{cron_id}/firings``. The key's principal requests the schedule's
    runs from now on (as after an update), so they cannot approve what they fired."""
    return sched.run_now(cron_id, key.principal)


@router.get("/{cron_id}/firings", response_model=list[Firing], responses=_NOT_FOUND)
def list_firings(
    cron_id: CronId,
    sched: Sched,
    _: Viewer,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[Firing]:
    """The schedule's audited firings, newest first: fired (with the run id), skipped-busy,
    no-new-batch, error, missed, skipped-overlap."""
    sched.get(cron_id)
    return sched.firings(cron_id, limit=limit)
