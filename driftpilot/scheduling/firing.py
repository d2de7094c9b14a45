"""One firing of a schedule: pick its batch, submit its run, audit the outcome.

Each firing is audited as a tool call of agent ``scheduler`` (tool ``schedule.fire``, under
the schedule's ``cron_id``) with its outcome: ``fired`` (with the run id), ``skipped-busy``
(the model is busy and the strategy is ``reject``, or an ``enqueue`` schedule still has a run
waiting), ``no-new-batch``, ``error``, ``missed``, ``skipped-overlap`` or ``disabled``. The
newest audited firing (its scheduled time) is also the schedule's anchor: the cron times
after it are the ones still to fire (``driftpilot.scheduling.cron``).

A fired run has trigger ``schedule``, is requested by the schedule's creator and carries the
schedule in its metadata (``schedule_id``; a dataset batch also its ``dataset`` and the
``batch_hash`` of the whole batch before sampling). A batch is claimed in the
``schedule_batches`` ledger before its run is submitted, so one schedule never runs one batch
twice; a busy model leaves the batch unclaimed for the next firing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError as SQLIntegrityError

from driftpilot.core.errors import DriftPilotError, ModelBusy, NotFound
from driftpilot.core.settings import SchedulerSettings
from driftpilot.execution.dispatch import Inline
from driftpilot.scheduling.sources import Picked, Sources
from driftpilot.scheduling.specs import (
    AGENT,
    FIRE_TOOL,
    OK_OUTCOMES,
    Firing,
    FiringOutcome,
    Payload,
    ScheduleSpec,
    firing_of,
    source_kind,
)
from driftpilot.store.audit import now
from driftpilot.store.models import Run, Schedule, ScheduleBatch, ToolCall

if TYPE_CHECKING:
    from driftpilot.runs.plane import ControlPlane

log = logging.getLogger(__name__)


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment is not None else None


def message(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    return f"{type(exc).__name__}: {exc}"[:500]


def spec_of(row: Schedule) -> ScheduleSpec:
    return ScheduleSpec(
        schedule=row.schedule,
        timezone=row.timezone,
        enabled=row.enabled,
        payload=Payload.model_validate_json(row.payload),
        multitask_strategy=row.multitask_strategy,
        metadata=json.loads(row.meta or "{}"),
    )


class Firings:
    """The firing half of the ``Scheduler`` (a base class: it holds the plane, the settings,
    the sources, the clock, what executes a fired run, and the stop event)."""

    plane: ControlPlane
    conf: SchedulerSettings
    sources: Sources
    _clock: Callable[[], datetime]
    _execute: Callable[[str], Any] | None
    _stop: threading.Event

    @property
    def store(self) -> Any:
        return self.plane.store

    # -- reading ----------------------------------------------------------------------------------

    def _row(self, cron_id: str) -> Schedule:
        try:
            return self.store.get(Schedule, cron_id)
        except NotFound:
            raise NotFound(f"no schedule {cron_id!r}") from None

    def firings(self, cron_id: str, limit: int = 50) -> list[Firing]:
        """The schedule's audited firings, newest first."""
        rows = self.store.list_rows(
            ToolCall,
            ToolCall.run_id == cron_id,
            ToolCall.agent == AGENT,
            ToolCall.tool == FIRE_TOOL,
            order=ToolCall.id.desc(),
            limit=limit,
        )
        return [firing_of(r) for r in rows]

    def last_fired(self, cron_ids: list[str]) -> dict[str, datetime]:
        """The scheduled time of each schedule's newest audited firing (its audit time when
        it was fired by hand without one)."""
        if not cron_ids:
            return {}
        with self.store.session() as session:
            newest = (
                select(func.max(ToolCall.id))
                .where(
                    ToolCall.run_id.in_(cron_ids),
                    ToolCall.agent == AGENT,
                    ToolCall.tool == FIRE_TOOL,
                )
                .group_by(ToolCall.run_id)
            )
            rows = session.scalars(select(ToolCall).where(ToolCall.id.in_(newest))).all()
            firings = [firing_of(r) for r in rows]
        return {
            f.cron_id: datetime.fromisoformat(f.scheduled_at or f.at).astimezone(UTC)
            for f in firings
        }

    # -- firing -----------------------------------------------------------------------------------

    def fire(self, cron_id: str, scheduled_at: datetime | None = None) -> Firing:
        """One firing: pick the newest batch of the source, submit a run (trigger
        ``schedule``, requested by the schedule's creator) following the multitask strategy,
        hand it to the executor (or execute it here), and audit what happened. Never raises
        for a bad source, a busy model or a failed run: the outcome says it."""
        started = time.perf_counter()
        try:
            row = self._row(cron_id)
        except NotFound:
            log.warning("schedule %s fired but no longer exists", cron_id)
            return Firing(cron_id=cron_id, outcome="error", at=now(), detail="no such schedule")
        if not row.enabled:
            return self._audit_firing(row, "disabled", started, scheduled_at)
        spec = spec_of(row)
        strategy = spec.multitask_strategy
        if strategy == "enqueue" and (waiting := self._waiting_run(cron_id)) is not None:
            return self._audit_firing(
                row,
                "skipped-busy",
                started,
                scheduled_at,
                run_id=waiting,
                detail="the run this schedule enqueued before is still waiting",
            )
        try:
            # A SQL source's window ends at the cron time the firing stands for, not at when
            # a late tick got to it: consecutive firings then cut the same windows whatever
            # their delay.
            picked = self.sources.pick(spec.payload, self._consumed(cron_id), scheduled_at)
        except Exception as exc:  # an unusable source is this firing's outcome, not a crash
            log.warning("schedule %s: no batch: %s", cron_id, exc)
            return self._audit_firing(row, "error", started, scheduled_at, detail=message(exc))
        if picked is None:
            return self._audit_firing(row, "no-new-batch", started, scheduled_at)
        if picked.seen_by is not None:  # claimed, so the same file is not read again
            self._claim(cron_id, picked)
            return self._audit_firing(
                row,
                "no-new-batch",
                started,
                scheduled_at,
                batch_id=picked.batch_id,
                detail=f"the model has seen this content (run {picked.seen_by[:12]})",
            )
        ledger = self._claim(cron_id, picked)
        if ledger is None:
            return self._audit_firing(
                row,
                "no-new-batch",
                started,
                scheduled_at,
                detail="another firing claimed the batch",
            )
        try:
            view = self.plane.submit_run(
                row.model,
                picked.frame,
                picked.batch_id,
                trigger="schedule",
                requested_by=row.created_by,
                multitask_strategy=strategy,
                metadata={"schedule_id": cron_id, **picked.origin},
            )
        except ModelBusy as exc:
            self._unclaim(ledger)
            return self._audit_firing(
                row, "skipped-busy", started, scheduled_at, detail=message(exc)
            )
        except Exception as exc:
            self._unclaim(ledger)
            log.warning("schedule %s: submit failed: %s", cron_id, exc)
            return self._audit_firing(row, "error", started, scheduled_at, detail=message(exc))
        with self.store.session() as session:
            entry = session.get(ScheduleBatch, ledger)
            if entry is not None:
                entry.run_id = view.run_id
        firing = self._audit_firing(
            row,
            "fired",
            started,
            scheduled_at,
            run_id=view.run_id,
            batch_id=view.batch_id,
            detail=picked.detail,
        )
        self._run(view.run_id)
        return firing

    def fire_due(self, cron_id: str, scheduled_at: datetime) -> Firing:
        """A firing of a due cron time (the tick thread's, or a queue job's): ``fire``,
        unless it starts more than the misfire grace after its time (audited ``missed``)."""
        late = (self._clock() - scheduled_at).total_seconds()
        if late > self.conf.misfire_grace_s:
            return self._audit_skip(
                cron_id,
                "missed",
                scheduled_at,
                f"{late:.0f} s late: more than {self.conf.misfire_grace_s} s (misfire grace)",
            )
        return self.fire(cron_id, scheduled_at)

    def skip_overlap(
        self,
        cron_id: str,
        scheduled_at: datetime,
        detail: str = "the previous firing of this schedule is still waiting for a worker",
    ) -> Firing:
        """Audit a firing not started because the previous one of its schedule still waits
        (or runs)."""
        return self._audit_skip(cron_id, "skipped-overlap", scheduled_at, detail)

    def _audit_skip(
        self, cron_id: str, outcome: FiringOutcome, scheduled_at: datetime, detail: str
    ) -> Firing:
        started = time.perf_counter()
        try:
            row = self._row(cron_id)
        except NotFound:
            return Firing(cron_id=cron_id, outcome="error", at=now(), detail="no such schedule")
        return self._audit_firing(row, outcome, started, scheduled_at, detail=detail)

    def _run(self, run_id: str) -> None:
        """Hand the fired run to the executor; without one, execute it in this thread (a
        busy model is waited for by the one busy rule, until the scheduler stops)."""
        if self._execute is not None:
            self._execute(run_id)
            return
        failed = Inline(self.plane, stop=self._stop).execute(run_id).exception()
        if isinstance(failed, ModelBusy) and self._stop.is_set():
            log.info("scheduler stopping: run %s stays pending for the next start", run_id)
        elif failed is not None:
            log.error("scheduled run %s failed", run_id, exc_info=failed)

    def _waiting_run(self, cron_id: str) -> str | None:
        with self.store.session() as session:
            ids = [
                r
                for r in session.scalars(
                    select(ScheduleBatch.run_id).where(
                        ScheduleBatch.cron_id == cron_id, ScheduleBatch.run_id.is_not(None)
                    )
                )
                if r
            ]
            if not ids:
                return None
            pending = session.scalars(
                select(Run.id).where(Run.id.in_(ids), Run.status == "pending").limit(1)
            ).first()
        return pending

    def _claim(self, cron_id: str, picked: Picked) -> int | None:
        try:
            with self.store.session() as session:
                entry = ScheduleBatch(
                    cron_id=cron_id,
                    batch_key=picked.key[:500],
                    batch_id=picked.batch_id[:200],
                    run_id=None,
                    created_at=now(),
                )
                session.add(entry)
                session.flush()
                return int(entry.id)
        except SQLIntegrityError:
            return None

    def _unclaim(self, ledger: int) -> None:
        with self.store.session() as session:
            session.execute(delete(ScheduleBatch).where(ScheduleBatch.id == ledger))

    def _consumed(self, cron_id: str) -> set[str]:
        with self.store.session() as session:
            return set(
                session.scalars(
                    select(ScheduleBatch.batch_key).where(ScheduleBatch.cron_id == cron_id)
                )
            )

    def _audit_firing(
        self,
        row: Schedule,
        outcome: FiringOutcome,
        started: float,
        scheduled_at: datetime | None,
        *,
        run_id: str | None = None,
        batch_id: str | None = None,
        detail: str = "",
    ) -> Firing:
        firing = Firing(
            cron_id=row.cron_id,
            outcome=outcome,
            at=now(),
            scheduled_at=iso(scheduled_at),
            run_id=run_id,
            batch_id=batch_id,
            detail=detail,
        )
        try:
            self.store.record_tool_call(
                row.cron_id,
                AGENT,
                FIRE_TOOL,
                {
                    "cron_id": row.cron_id,
                    "model": row.model,
                    "source": source_kind(json.loads(row.payload)),
                    "multitask_strategy": row.multitask_strategy,
                    "scheduled_at": firing.scheduled_at,
                },
                firing.model_dump(include={"outcome", "run_id", "batch_id", "detail"}),
                ok=outcome in OK_OUTCOMES,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        except DriftPilotError:
            log.exception("could not audit a firing of schedule %s (%s)", row.cron_id, outcome)
        log.info("schedule %s (%s): %s %s", row.cron_id, row.model, outcome, detail)
        return firing
