"""Windows of a model's inference log: closing them, and turning each into a control run.

A model with a ``windowing`` (``{"rows": N, "minutes": M}``, either or both) has its open rows
(after its newest window's last row id: ``log.horizon``) cut into windows, oldest first:

- rows: the first N open rows, once N are open;
- minutes: once the first open row was received M minutes ago (by the store's clock), the open
  rows received before its time + M, up to the first one received later (windows follow the
  arrival order, ``id``);
- both: whichever comes first; a window never holds more than ``settings.api.max_batch_rows``
  rows (the batch upload's limit).

Closing is one short write transaction (``close_due``): the window (number = the model's
newest + 1, rows = the id range of the planned open rows) is inserted, and one tool call
(agent ``inference``, tool ``window.close``) is appended to the hash-chained audit under the
run the window will become. The rows are not written: a window is an id range, and the next
one starts after it, so every row is in exactly one window, for good (``log`` says why no
row can commit inside a closed range). The plan is read without the write lock and checked
under it: the model's newest window unchanged and the range's row count as planned, else
another closer came first and the window is planned again there.

Driving (``drive``): the window's rows become a batch (``driftpilot.inference.rows.
frame_of_rows``, labels known by then included), submitted as a run with trigger ``window``,
strategy ``enqueue`` (windows wait for each other and run in order under the model's lease)
and the window in its metadata, then handed to the executor. The run's id is derived from
the window (``window_run_id``): a window whose ``run_id`` is still null after a crash is
driven again (``redrive``), and finds its run if it was made before the crash, or makes it.

What a window is (its setting, views, the pure ``plan`` of the next one): ``plans``; the
thread that ticks: ``windower``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.orm import Session

from driftpilot.core.errors import ModelBusy, NotFound
from driftpilot.inference.log import horizon, lock_log
from driftpilot.inference.plans import (
    Plan,
    WindowSetting,
    WindowsView,
    WindowView,
    minutes_due,
    plan,
    setting_of,
    view_of,
    window_run_id,
)
from driftpilot.store.engine import dumps, stamp
from driftpilot.store.models import InferenceRow, InferenceWindow, ManagedModel, Run, ToolCall

if TYPE_CHECKING:
    from driftpilot.runs.plane import ControlPlane
    from driftpilot.runs.views import RunView

log = logging.getLogger(__name__)

AGENT = "inference"
CLOSE_TOOL = "window.close"
SET_TOOL = "window.set"
DRIVE_TOOL = "window.drive"  # audited when a window first fails to become a run
TRIGGER = "window"
REQUESTER = "inference"  # who requests a window's run: the log, not a person
CATCH_UP_WINDOWS = 5  # the newest windows whose late labels each tick attaches
# A window that fails to become a run is tried again after this many seconds, doubled per
# failure up to the most (a broken window is not a traceback every tick).
RETRY_FIRST_S = 5.0
RETRY_MOST_S = 600.0


@dataclass(frozen=True)
class Failure:
    """A window that failed to become a run: how many times, when it is tried again (the
    store's clock) and the last error."""

    attempts: int
    retry_at: datetime
    error: str


class _NothingDue(Exception):
    """No window is due any more (seen under the write lock): nothing is written."""


class Windows:
    """Closes and drives the windows of the plane's models. ``execute`` is handed each new
    run's id (the executor's ``execute``, or the queue's ``defer_run``); without it the run
    stays pending for whoever executes pending runs. ``clock``: default the store's."""

    def __init__(
        self,
        plane: ControlPlane,
        *,
        execute: Callable[[str], Any] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.plane = plane
        self.store = plane.store
        self._execute = execute
        self._clock = clock or self.store.clock
        self._caught_up_once = False
        # (model, number) -> its failure: windows backing off (kept by this process only:
        # a restart tries them again at once).
        self.failing: dict[tuple[str, int], Failure] = {}

    @property
    def cap(self) -> int:
        """The most rows of one window: a batch upload's limit."""
        return int(self.plane.settings.api.max_batch_rows)

    # -- settings and reads ---------------------------------------------------------------------

    def set_window(self, model: str, setting: WindowSetting | None, actor: str) -> WindowsView:
        """Set (or with None, remove) the model's window setting; rows already open stay open
        and close under the new setting. Audited as a tool call (tool ``window.set``).

        Raises:
            NotFound: unknown model.
        """
        started = time.perf_counter()
        value = setting.model_dump_json() if setting is not None else None
        call = ToolCall(
            run_id=f"window:{model}"[:40],
            agent=AGENT,
            tool=SET_TOOL,
            args=dumps({"model": model, "by": actor}),
            result=dumps({"setting": json.loads(value) if value else None}),
        )
        call.ok = True

        def set_it(session: Session) -> None:
            row = session.get(ManagedModel, model)
            if row is None:
                raise NotFound(f"no model {model!r}")
            row.windowing = value
            call.latency_ms = round((time.perf_counter() - started) * 1000, 2)

        # One transaction: a setting is never changed without its tool call in the audit.
        self.store._append(call, check=set_it)
        return self.windows(model)

    def windows(self, model: str, limit: int = 50) -> WindowsView:
        """The model's setting, its closed windows (newest first, at most ``limit``) and how
        many rows are open.

        Raises:
            NotFound: unknown model.
        """
        row = self.store.get(ManagedModel, model)
        with self.store.reading() as session:
            closed = session.scalars(
                select(InferenceWindow)
                .where(InferenceWindow.model == model)
                .order_by(InferenceWindow.number.desc())
                .limit(limit)
            ).all()
            _, last = horizon(session, model)
            open_rows = session.scalar(
                select(func.count())
                .select_from(InferenceRow)
                .where(InferenceRow.model == model, InferenceRow.id > last)
            )
        return WindowsView(
            model=model,
            setting=setting_of(row),
            open_rows=int(open_rows or 0),
            windows=[view_of(w) for w in closed],
        )

    # -- closing --------------------------------------------------------------------------------

    def close_due(self, model: str, *, flush: bool = False, most: int = 100) -> list[WindowView]:
        """Close every window of ``model`` that is due now (``flush``: the open rows now,
        whatever the setting), at most ``most``, oldest first; each in its own transaction.
        The windows closed here (not driven yet: ``drive``).

        Raises:
            NotFound: unknown model.
        """
        row = self.store.get(ManagedModel, model)
        setting = setting_of(row)
        if setting is None:
            if not flush:
                return []
            setting = WindowSetting(rows=self.cap)
        closed: list[WindowView] = []
        while len(closed) < most:
            window = self._close_one(model, setting, flush=flush)
            if window is None:
                break
            closed.append(window)
            flush = False  # a flush closes what was open once, then the setting rules
        return closed

    def _close_one(self, model: str, setting: WindowSetting, *, flush: bool) -> WindowView | None:
        moment = self._clock()
        # Planned without the write lock (most ticks close nothing, and reading a large
        # window's rows under it held every logging request back); checked under it.
        planned = self._due(model, setting, moment, flush=flush)
        if planned is None:
            return None
        try:
            view = self._close_audited(model, setting, planned, moment, flush=flush)
        except _NothingDue:
            return None
        log.info("%s: window %d closed (%s, %d rows)", model, view.number, view.reason, view.n_rows)
        return view

    def _close_audited(
        self, model: str, setting: WindowSetting, planned: Plan, moment: datetime, *, flush: bool
    ) -> WindowView:
        """One transaction: the window and its tool call in the audit chain (``_NothingDue``:
        rolled back, nothing written)."""
        started = time.perf_counter()
        closed: list[WindowView] = []
        call = ToolCall(run_id="", agent=AGENT, tool=CLOSE_TOOL, args="{}", result="{}")
        call.ok, call.latency_ms = True, 0.0

        def close(session: Session) -> None:
            window = view_of(self._close_in(session, model, setting, planned, moment, flush=flush))
            closed[:] = [window]
            call.run_id = window_run_id(model, window.number, window.closed_at)
            call.args = dumps({"model": model, "number": window.number})
            call.result = dumps(window.model_dump(exclude={"run_id"}))
            call.latency_ms = round((time.perf_counter() - started) * 1000, 2)

        self.store._append(call, check=close)
        return closed[0]

    def _open_through(self, session: Session, model: str, after: int, last: int) -> int:
        """How many rows the model has now after row id ``after`` up to ``last``."""
        return int(
            session.scalar(
                select(func.count()).where(
                    InferenceRow.model == model, InferenceRow.id > after, InferenceRow.id <= last
                )
            )
            or 0
        )

    def _open_rows(
        self, session: Session, model: str, after: int, limit: int
    ) -> list[tuple[int, str]]:
        rows = session.execute(
            select(InferenceRow.id, InferenceRow.received_at)
            .where(InferenceRow.model == model, InferenceRow.id > after)
            .order_by(InferenceRow.id)
            .limit(limit)
        ).all()
        return [(int(i), str(at)) for i, at in rows]

    def _due(
        self, model: str, setting: WindowSetting, moment: datetime, *, flush: bool
    ) -> Plan | None:
        with self.store.reading() as session:
            return self._plan_in(session, model, setting, moment, flush=flush)

    def _plan_in(
        self, session: Session, model: str, setting: WindowSetting, moment: datetime, *, flush: bool
    ) -> Plan | None:
        """``plan`` over the open rows, read only as far as needed: a tick that closes
        nothing reads the first open row and counts up to the window's size. The plan's
        ``after`` is the newest window it was planned after."""
        newest, after = horizon(session, model)
        first = self._open_rows(session, model, after, 1)
        if not first:
            return None
        limit = min(setting.rows or self.cap, self.cap)
        if not flush and not minutes_due(first[0][1], setting, moment):
            if setting.rows is None:
                return None
            head = (
                select(InferenceRow.id)
                .where(InferenceRow.model == model, InferenceRow.id > after)
                .limit(limit)
                .subquery()
            )
            if int(session.scalar(select(func.count()).select_from(head)) or 0) < limit:
                return None
        rows = self._open_rows(session, model, after, limit)
        planned = plan(rows, setting, moment, self.cap, flush=flush)
        return replace(planned, after=newest) if planned is not None else None

    def _close_in(
        self,
        session: Session,
        model: str,
        setting: WindowSetting,
        planned: Plan,
        moment: datetime,
        *,
        flush: bool,
    ) -> InferenceWindow:
        """Under the audit chain's write lock and the model's log lock: insert the window.
        The plan read without the locks stands if the model's newest window is the one it
        was planned after and the open rows up to its last id are exactly its rows (one
        indexed count: on PostgreSQL a row may have committed since with an id below the
        plan's last, inside its range or before it); else it is planned again here. Closed
        at the time read under the locks: a label committed before it is in the batch."""
        lock_log(session, model, exclusive=True)
        newest, last = horizon(session, model)
        if newest != planned.after or self._open_through(
            session, model, last, planned.ids[-1]
        ) != len(planned.ids):
            replanned = self._plan_in(session, model, setting, moment, flush=flush)
            if replanned is None:
                raise _NothingDue
            planned = replanned
        number = newest + 1
        closed_at = stamp(self._clock())
        window = InferenceWindow(
            model=model,
            number=number,
            n_rows=len(planned.ids),
            first_id=planned.ids[0],
            last_id=planned.ids[-1],
            reason=planned.reason,
            opened_at=planned.opened_at,
            closed_at=closed_at,
            batch_id=f"window-{number}",
            run_id=None,
        )
        session.add(window)
        return window

    # -- driving --------------------------------------------------------------------------------

    def drive(self, window: WindowView) -> str:
        """Make the window's run (or find the one made before a crash), record it on the
        window and hand it to the executor; its run id.

        Raises:
            NotFound: the model is gone. DataError/SchemaError: its rows make no batch.
            ModelBusy: the model has unrecovered work (driven again at the next tick).
        """
        run_id = window_run_id(window.model, window.number, window.closed_at)
        made = self._run_exists(run_id)
        if not made:
            try:
                self._submit(window, run_id)
            except SQLIntegrityError:
                if not self._run_exists(run_id):
                    raise
                # another windower made it first: the same run
        with self.store.session() as session:
            session.execute(
                update(InferenceWindow)
                .where(
                    InferenceWindow.model == window.model,
                    InferenceWindow.number == window.number,
                    InferenceWindow.run_id.is_(None),
                )
                .values(run_id=run_id)
            )
        if self._execute is not None:
            self._execute(run_id)
        return run_id

    def _run_exists(self, run_id: str) -> bool:
        with self.store.reading() as session:
            return session.get(Run, run_id) is not None

    def _submit(self, window: WindowView, run_id: str) -> RunView:
        from driftpilot.inference.rows import frame_of_rows

        row = self.store.get(ManagedModel, window.model)
        with self.store.reading() as session:
            rows = session.execute(
                select(InferenceRow.payload, InferenceRow.label)
                .where(
                    InferenceRow.model == window.model,
                    InferenceRow.id.between(window.first_id, window.last_id),
                )
                .order_by(InferenceRow.id)
            ).all()
        frame = frame_of_rows(row, [p for p, _ in rows], [label for _, label in rows])
        return self.plane.submit_run(
            window.model,
            frame,
            window.batch_id,
            trigger=TRIGGER,
            requested_by=REQUESTER,
            multitask_strategy="enqueue",
            metadata={
                "window": window.number,
                "rows": window.n_rows,
                "first_id": window.first_id,
                "last_id": window.last_id,
                "reason": window.reason,
                "opened_at": window.opened_at,
                "closed_at": window.closed_at,
            },
            run_id=run_id,
        )

    def undriven(self, limit: int = 100) -> list[WindowView]:
        """Closed windows without a run yet (a crash between closing and driving), oldest
        first per model."""
        with self.store.reading() as session:
            rows = session.scalars(
                select(InferenceWindow)
                .where(InferenceWindow.run_id.is_(None))
                .order_by(InferenceWindow.model, InferenceWindow.number)
                .limit(limit)
            ).all()
        return [view_of(r) for r in rows]

    def windowed_models(self) -> list[str]:
        """The models that have a window setting."""
        with self.store.reading() as session:
            return list(
                session.scalars(
                    select(ManagedModel.name).where(ManagedModel.windowing.is_not(None))
                )
            )

    def tick(self) -> list[str]:
        """One pass: drive the windows left without a run, then close and drive the due
        windows of every windowed model; the run ids made. Per model, in order: once a
        window fails to become a run, no later window of the model is closed or driven
        (its run would be made, and run, first); the failing window is tried again next
        tick, or after its back-off (``failing``) when it failed for another reason than a
        busy model. Another model's fault does not stop the others' windows."""
        made: list[str] = []
        stopped: set[str] = set()
        for window in self.undriven():
            if window.model not in stopped and not self._drove(window, made):
                stopped.add(window.model)
        for model in self.windowed_models():
            if model in stopped:
                continue
            try:
                windows = self.close_due(model)
            except Exception:  # one model's fault must not stop the others' windows
                log.exception("%s: closing its windows failed", model)
                continue
            for window in windows:
                if not self._drove(window, made):
                    break  # the rest stay undriven: the next tick drives them in order
        self.catch_up_labels()
        return made

    def catch_up_labels(self, recent: int = CATCH_UP_WINDOWS) -> None:
        """Attach the labels windows got after closing, once their runs ended
        (``driftpilot.inference.labels.catch_up``): the windows a labels request of this
        process could not attach (``labels.unattached``), and at the first call the newest
        ``recent`` windows of each windowed model (what a dead process left stored but not
        attached). A window still waiting for its run is looked at again."""
        from driftpilot.inference.labels import catch_up, mark_unattached, unattached

        todo = unattached()
        if not self._caught_up_once:
            for model in self.windowed_models():
                todo |= {(model, n) for n in self._newest(model, recent)}
            self._caught_up_once = True
        for model, number in sorted(todo):
            try:
                settled = catch_up(self.plane, model, number)
            except Exception:  # tried again at the next tick
                log.exception("%s: labels of window %d not caught up", model, number)
                settled = False
            if not settled:
                mark_unattached(model, number)

    def _newest(self, model: str, recent: int) -> list[int]:
        with self.store.reading() as session:
            return list(
                session.scalars(
                    select(InferenceWindow.number)
                    .where(InferenceWindow.model == model, InferenceWindow.run_id.is_not(None))
                    .order_by(InferenceWindow.number.desc())
                    .limit(recent)
                )
            )

    def _drove(self, window: WindowView, made: list[str]) -> bool:
        """Drive the window unless it is backing off; whether it has its run (appended to
        ``made``)."""
        key = (window.model, window.number)
        failure = self.failing.get(key)
        if failure is not None and self._clock() < failure.retry_at:
            return False
        try:
            made.append(self.drive(window))
        except ModelBusy as exc:  # unrecovered work of a dead run: driven once recovered
            log.warning("%s: window %d waits: %s", window.model, window.number, exc)
            return False
        except Exception as exc:  # the window keeps run_id null: driven again, backing off
            self._failed(window, exc)
            return False
        if self.failing.pop(key, None) is not None:
            log.info("%s: window %d became a run after failing", window.model, window.number)
        return True

    def _failed(self, window: WindowView, exc: Exception) -> None:
        """Back the window off and report it: the first failure with its traceback and as
        an audited tool call (``window.drive``, not ok), the later ones in a line each."""
        key = (window.model, window.number)
        before = self.failing.get(key)
        attempts = 1 if before is None else before.attempts + 1
        wait_s = min(RETRY_FIRST_S * 2 ** (attempts - 1), RETRY_MOST_S)
        error = f"{type(exc).__name__}: {exc}"[:500]
        self.failing[key] = Failure(attempts, self._clock() + timedelta(seconds=wait_s), error)
        if before is not None:
            log.error(
                "%s: window %d could not become a run (%d tries, next in %.0f s): %s",
                window.model,
                window.number,
                attempts,
                wait_s,
                error,
            )
            return
        log.exception(
            "%s: window %d could not become a run (later windows of the model wait; "
            "next try in %.0f s)",
            window.model,
            window.number,
            wait_s,
        )
        self.store.record_tool_call(
            window_run_id(window.model, window.number, window.closed_at),
            AGENT,
            DRIVE_TOOL,
            {"model": window.model, "number": window.number},
            {"error": error, "retry_in_s": wait_s},
            ok=False,
            latency_ms=0.0,
        )
