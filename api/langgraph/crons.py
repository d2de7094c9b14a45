"""LangGraph crons: schedules, with ``input={"source": ...}`` (a schedule's batch source)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Response, status
from pydantic import Field, ValidationError

from api.deps import Operator, Viewer
from api.langgraph import shapes
from api.langgraph.common import TAGS, SortOrder, _Body, matches, page, unsupported
from api.langgraph.runs import LgRunCreate, model_of
from api.problems import Problem
from api.routes.schedules import Sched
from driftpilot.scheduling.scheduler import ScheduleSpec, ScheduleView

router = APIRouter(tags=TAGS)


class CronCreate(_Body):
    assistant_id: str = Field(min_length=1, max_length=200)
    schedule: str = Field(max_length=200)
    input: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    timezone: str | None = Field(None, max_length=100)
    enabled: bool | None = None
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] | None = None
    end_time: str | None = None
    webhook: str | None = None
    interrupt_before: Any = None
    interrupt_after: Any = None
    on_run_completed: Literal["delete", "keep"] | None = None


class CronSearch(_Body):
    assistant_id: str | None = Field(None, max_length=200)
    thread_id: str | None = Field(None, max_length=100)
    enabled: bool | None = None
    metadata: dict[str, Any] | None = None
    limit: int = Field(10, ge=1, le=1000)
    offset: int = Field(0, ge=0)
    sort_by: (
        Literal[
            "cron_id",
            "assistant_id",
            "thread_id",
            "created_at",
            "updated_at",
            "next_run_date",
            "end_time",
        ]
        | None
    ) = None
    sort_order: SortOrder | None = None
    select: list[str] | None = Field(None, max_length=20)


def cron(view: ScheduleView) -> dict[str, Any]:
    """A schedule as a LangGraph cron (its payload is the run it makes at each firing)."""
    return {
        "cron_id": view.cron_id,
        "assistant_id": view.model,
        "thread_id": None,
        "on_run_completed": None,
        "end_time": None,
        "schedule": view.schedule,
        "timezone": view.timezone,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
        "payload": {
            "assistant_id": view.model,
            "input": view.payload,
            "multitask_strategy": view.multitask_strategy,
        },
        "user_id": view.created_by,
        "next_run_date": view.next_run_date,
        "metadata": view.metadata,
        "enabled": view.enabled,
        "last_firing": view.last_firing.model_dump() if view.last_firing else None,
    }


@router.post(
    "/runs/crons",
    response_model=dict[str, Any],
    responses={
        404: {"description": "Unknown model or dataset"},
        422: {"description": "Invalid cron, time zone, source or unsupported option"},
    },
)
def create_cron(body: CronCreate, sched: Sched, key: Operator) -> Any:
    """Schedule control runs of the assistant's model: ``input.source`` is a schedule's batch
    source (``{"dataset": "flights", "start": "2013-10"}``, ``{"glob": "dir/*.parquet"}``
    or ``{"gdelt": {}}``); ``schedule`` a five-field cron in ``timezone`` (default UTC)."""
    unsupported(
        end_time=body.end_time,
        webhook=body.webhook,
        interrupt_before=body.interrupt_before,
        interrupt_after=body.interrupt_after,
    )
    if body.multitask_strategy in ("interrupt", "rollback"):
        raise Problem(422, "a cron's multitask_strategy is 'reject' or 'enqueue'")
    probe = LgRunCreate(
        assistant_id=body.assistant_id,
        input=body.input or {},
        config=body.config,
        context=body.context,
    )
    model = model_of(probe)
    extra = sorted(set(body.input or {}) - {"model", "source"})
    if extra:
        raise Problem(422, f"a cron's input is {{'model'?, 'source'}}; unknown: {', '.join(extra)}")
    try:
        spec = ScheduleSpec.model_validate(
            {
                "schedule": body.schedule,
                "timezone": body.timezone or "UTC",
                "enabled": True if body.enabled is None else body.enabled,
                "payload": {"model": model, "source": (body.input or {}).get("source")},
                "multitask_strategy": body.multitask_strategy or "reject",
                "metadata": body.metadata or {},
            }
        )
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise Problem(422, f"invalid cron: {where}") from exc
    return cron(sched.create(spec, key.principal))


@router.post("/runs/crons/search", response_model=list[dict[str, Any]])
def search_crons(body: CronSearch, sched: Sched, _: Viewer) -> Any:
    """Schedules as crons, filtered by assistant (model), enabled and metadata."""
    if body.thread_id is not None:
        return []  # every firing starts a new control run: no cron belongs to a thread
    model = None if body.assistant_id in (None, shapes.GRAPH_ID) else body.assistant_id
    found = [
        cron(v)
        for v in sched.list_schedules(model=model, enabled=body.enabled)
        if matches(v.metadata, body.metadata)
    ]
    found_page, _more = page(
        found, body.sort_by, body.sort_order, "created_at", body.offset, body.limit, body.select
    )
    return found_page


@router.delete(
    "/runs/crons/{cron_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "Unknown cron"}},
)
def delete_cron(
    cron_id: Annotated[str, Path(max_length=40)], sched: Sched, key: Operator
) -> Response:
    """Delete a schedule (its audited firings stay in the trail)."""
    sched.delete(cron_id, key.principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
