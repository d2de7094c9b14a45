"""Recovery: finish what crashed processes left (runs whose lease expired mid-way, rollbacks
that died before their record, approval decisions recorded but never applied, registry intents
left open by runs that ended)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from driftpilot.core.errors import DriftPilotError, ModelBusy
from driftpilot.runs import leases
from driftpilot.runs.lifecycle import Lifecycle
from driftpilot.runs.rollback import Rollbacks
from driftpilot.runs.views import Recovery
from driftpilot.store import AuditStore
from driftpilot.store.models import Mutation, Run

# Statuses of a run that will not go on by itself: an intent it left open is never closed.
ENDED = ("failed", "cancelled", "completed")


class Recoveries:
    """``recover`` and its parts; ``graph`` gives the compiled control graph."""

    def __init__(
        self,
        store: AuditStore,
        graph: Callable[[], Any],
        lifecycle: Lifecycle,
        rollbacks: Rollbacks,
    ) -> None:
        self.store, self.graph = store, graph
        self.lifecycle, self.rollbacks = lifecycle, rollbacks

    def recover(self) -> list[Recovery]:
        """Finish what crashed processes left: runs ``running`` whose lease expired are resumed
        from their last checkpoint (or from their input, if none was written), rollbacks that
        died mid-way are finished, and approval decisions recorded but never applied are
        applied. Registry mutations of resumed runs are reconciled by the nodes themselves
        from their open intents; an intent still open on a run that ended (failed, cancelled,
        completed) is closed as ``failed`` with what MLflow shows of its effect. One run that
        cannot be recovered is reported and does not stop the others."""
        done = [self._guarded(run, self._recover_running) for run in leases.orphans(self.store)]
        runs = {r.run_id for r in done}
        for m in leases.dead_intents(self.store):
            if m.action == "rollback" and m.run_id not in runs:
                done.append(self._recover_rollback(m))
        done += [self._guarded(run, self._apply_recorded) for run in self._recorded_decisions()]
        done += [self._close_intent(m, run) for m, run in self._intents_of_ended_runs()]
        return done

    def due(self) -> bool:
        """Whether ``recover`` has anything to do (a few reads): what it does resumes a run's
        graph or asks MLflow, work a caller may hand to a run child (``RunExecutor``)."""
        return bool(
            leases.orphans(self.store)
            or any(m.action == "rollback" for m in leases.dead_intents(self.store))
            or self._recorded_decisions()
            or self._intents_of_ended_runs()
        )

    def _recorded_decisions(self) -> list[Run]:
        """Runs waiting for approval whose decision was recorded but never applied."""
        waiting = self.store.list_rows(Run, Run.status == "waiting_approval", order=Run.id)
        return [run for run in waiting if len(self.store.approval_rows(run.id)) > 1]

    def _intents_of_ended_runs(self) -> list[tuple[Mutation, Run]]:
        """Open registry intents of runs that ended (failed, cancelled, completed): their
        process died inside the step, or saw it fail but could not write its end (a full
        disk). Rollbacks are finished by ``_recover_rollback`` instead."""
        found = []
        for m in self.store.open_intents():
            if m.action == "rollback":
                continue
            runs = self.store.list_rows(Run, Run.id == m.run_id)
            if runs and runs[0].status in ENDED:
                found.append((m, runs[0]))
        return found

    def _close_intent(self, intent: Mutation, run: Run) -> Recovery:
        """Close one such intent as ``failed`` (``agents.context.close_failed``: audited, with
        what MLflow shows of its effect); when MLflow cannot be asked it stays open."""
        from agents.context import close_failed

        found = f"{run.status} with an open intent to {intent.action} ({intent.step})"
        error = f"run ended {run.status} with this intent open; closed by recover"
        try:
            result = close_failed(
                self.store,
                self.lifecycle.settings,
                run.id,
                "recover",
                intent.step,
                intent.action,
                json.loads(intent.args),
                error,
            )
        except Exception as exc:  # MLflow unreachable: the effect is unknown, keep it open
            return Recovery(
                run_id=run.id,
                model=run.model,
                found=found,
                did=f"left open: could not check MLflow: {type(exc).__name__}: {exc}",
                status=run.status,
            )
        return Recovery(
            run_id=run.id,
            model=run.model,
            found=found,
            did=f"closed the intent as failed; MLflow shows {json.dumps(result['found'])}",
            status=run.status,
            outcome=run.outcome,
        )

    def _guarded(self, run: Run, recover: Callable[[Run], Recovery]) -> Recovery:
        try:
            return recover(run)
        except DriftPilotError as exc:
            status = self.store.get(Run, run.id).status
            return Recovery(
                run_id=run.id,
                model=run.model,
                found=run.status,
                did=f"failed: {exc}",
                status=status,
            )

    def _recover_rollback(self, intent: Mutation) -> Recovery:
        args = json.loads(intent.args)
        found = f"rollback v{args['from']} -> v{args['to']} died before its record"
        try:
            result = self.rollbacks.rollback(
                args["name"], args.get("by", "recover"), "finished by recover", intent.run_id
            )
        except DriftPilotError as exc:
            return Recovery(
                run_id=intent.run_id,
                model=args["name"],
                found=found,
                did=f"left: {exc}",
                status="failed",
            )
        return Recovery(
            run_id=intent.run_id,
            model=args["name"],
            found=found,
            did=f"finished: champion v{result['to']}",
            status="completed",
            outcome="rollback",
        )

    def _recover_running(self, run: Run) -> Recovery:
        config = {"configurable": {"thread_id": run.id}}
        snapshot = self.graph().get_state(config)
        intents = [
            f"{m.action} ({m.step})" for m in self.store.open_intents() if m.run_id == run.id
        ]
        found = (
            f"running with an expired lease; last checkpoint before {list(snapshot.next)}"
            if snapshot.values
            else "running with an expired lease; no checkpoint yet"
        ) + (f"; open intents: {', '.join(intents)}" if intents else "")
        try:
            lease = self.lifecycle.acquire(run.model, run.id, wait=False)
        except ModelBusy as exc:
            return Recovery(
                run_id=run.id, model=run.model, found=found, did=f"left: {exc}", status=run.status
            )
        status = self.store.get(Run, run.id).status
        if status != "running":  # another process finished it between our look and our lease
            self.store.release_lease(run.model, run.id, lease)
            return Recovery(
                run_id=run.id,
                model=run.model,
                found=found,
                did="left: finished meanwhile",
                status=status,
            )
        graph_input: Any = None
        if not snapshot.values:
            graph_input = json.loads(run.summary or "{}").get("input")
            if graph_input is None:
                self.store.release_lease(run.model, run.id, lease)
                self.store.update_run(
                    run.id,
                    status="failed",
                    outcome="unrecoverable",
                    summary={"error": "no checkpoint and no stored input"},
                )
                return Recovery(
                    run_id=run.id,
                    model=run.model,
                    found=found,
                    did="marked failed: nothing to resume from",
                    status="failed",
                )
        view = self.lifecycle.drive(run.id, run.model, graph_input, lease)
        did = "restarted from its input" if graph_input else "resumed from its checkpoint"
        return Recovery(
            run_id=run.id,
            model=run.model,
            found=found,
            did=did,
            status=view.status,
            outcome=view.outcome,
        )

    def _apply_recorded(self, run: Run) -> Recovery:
        recorded = self.store.approval_rows(run.id)[1]
        found = f"waiting for approval with a recorded {recorded.decision} by {recorded.principal}"
        try:
            view = self.lifecycle.resume_run(run.id, wait=False)
        except ModelBusy as exc:
            return Recovery(
                run_id=run.id, model=run.model, found=found, did=f"left: {exc}", status=run.status
            )
        return Recovery(
            run_id=run.id,
            model=run.model,
            found=found,
            did="applied the recorded decision",
            status=view.status,
            outcome=view.outcome,
        )
