"""Read models: runs (one at a time, or a page of them in a constant number of queries),
pending approvals, audit rows, champion history and the metrics Prometheus scrapes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from driftpilot.core.errors import ConfigError, NotFound
from driftpilot.core.identity import normalize_principal
from driftpilot.core.settings import Settings
from driftpilot.runs.reports import statuses
from driftpilot.runs.views import MetricsSnapshot, RunView
from driftpilot.store import AuditStore
from driftpilot.store.models import (
    Approval,
    ChampionChange,
    Decision,
    ManagedModel,
    Run,
    StepEffect,
)
from graphs.state import SLICES

METADATA_STEP = "metadata"  # the step-effect row that holds a run's submitted metadata
STRATEGY_STEP = "multitask_strategy"  # the step-effect row: {"multitask_strategy": ...}


class Reads:
    """What the plane answers without changing anything. ``graph`` gives the compiled control
    graph: a run waiting for approval reports the state it checkpointed (None: it is not read,
    and such a run's summary is empty: the CLI's tables, which do not show it, skip LangGraph's
    import). With ``settings``, run views say where their report stands
    (``driftpilot.runs.reports``)."""

    def __init__(
        self,
        store: AuditStore,
        graph: Callable[[], Any] | None,
        settings: Settings | None = None,
    ) -> None:
        self.store, self.graph, self.settings = store, graph, settings

    def get_run(self, run_id: str) -> RunView:
        """Raises NotFound: no such run."""
        return self.views([self.store.get(Run, run_id)])[0]

    def views(self, runs: list[Run]) -> list[RunView]:
        """The views of ``runs``, in their order: their approval rows, metadata and drift
        decisions (their report's status) are read in one query each, whatever the number of
        runs (a run waiting for approval also reads its checkpointed state from the graph's
        checkpointer)."""
        if not runs:
            return []
        ids = [r.id for r in runs]
        approvals: dict[str, list[Approval]] = {}
        for row in self.store.list_rows(Approval, Approval.run_id.in_(ids), order=Approval.id):
            if row.kind == "request":  # the run's current approval: from its latest request on
                approvals[row.run_id] = [row]
            else:
                approvals.setdefault(row.run_id, []).append(row)
        metadata = {
            e.run_id: json.loads(e.result)
            for e in self.store.list_rows(
                StepEffect, StepEffect.run_id.in_(ids), StepEffect.step == METADATA_STEP
            )
        }
        shown = [self._view(r, approvals.get(r.id, []), metadata.get(r.id) or {}) for r in runs]
        if self.settings is None:
            return shown
        reports = statuses(self.store, self.settings, runs)
        return [
            v.model_copy(
                update={
                    "report_status": reports[v.run_id].status,
                    "report_path": reports[v.run_id].path,
                }
            )
            for v in shown
        ]

    def _view(self, run: Run, rows: list[Approval], metadata: dict[str, Any]) -> RunView:
        pending = json.loads(rows[0].payload) if len(rows) == 1 else None
        summary = json.loads(run.summary or "{}")
        summary.pop("input", None)  # kept for recovery, not a result
        if run.status == "waiting_approval" and self.graph is not None:
            # not reported yet: read the checkpointed state
            values = self.graph().get_state({"configurable": {"thread_id": run.id}}).values
            summary = {k: values.get(k) for k in SLICES if k in values}
        return RunView(
            run_id=run.id,
            model=run.model,
            batch_id=run.batch_id,
            status=run.status,
            outcome=run.outcome,
            requested_by=run.requested_by,
            created_at=run.created_at,
            summary=summary,
            approval_request=pending,
            updated_at=run.updated_at,
            trigger=run.trigger,
            schedule_id=metadata.get("schedule_id"),
            metadata=metadata,
        )

    def list_runs(
        self,
        model: str | None = None,
        limit: int = 50,
        *,
        status: str | None = None,
        outcome: str | None = None,
        requested_by: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: tuple[str, str] | None = None,
    ) -> list[RunView]:
        """Runs newest first, filtered (the requester under the identity rule); ``before`` is
        the (created_at, run_id) of the last run of the previous page."""
        rows = self.store.query_runs(
            model=model,
            status=status,
            outcome=outcome,
            requested_by=normalize_principal(requested_by) if requested_by else None,
            since=stamp(since),
            until=stamp(until),
            before=before,
            limit=limit,
        )
        return self.views(rows)

    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the one run whose id starts with ``prefix`` (an empty prefix names
        none: it would match every run)."""
        if not prefix.strip():
            raise NotFound("give a run id or a unique prefix of one")
        matches = [r.id for r in self.store.list_rows(Run, Run.id.startswith(prefix), limit=2)]
        if len(matches) != 1:
            raise NotFound(f"{'no run' if not matches else 'several runs'} match {prefix!r}")
        return matches[0]

    def pending_approvals(self) -> list[RunView]:
        """The runs whose current approval request has no decision, oldest request first."""
        ids = [r.run_id for r in self.store.pending_approvals()]
        if not ids:
            return []
        runs = {r.id: r for r in self.store.list_rows(Run, Run.id.in_(ids))}
        missing = [i for i in ids if i not in runs]
        if missing:  # as get_run would: an approval of a run that is not there
            raise NotFound(f"no run {missing[0]!r}")
        return self.views([runs[i] for i in ids])

    def audit(self, run_id: str | None = None) -> Iterator[dict[str, Any]]:
        return self.store.export(run_id)

    def audit_rows(
        self,
        *,
        run_id: str | None = None,
        model: str | None = None,
        table: str | None = None,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: tuple[str, int] | None = None,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of audit rows, table by table in chain order, filtered by run, model (its
        runs, bootstrap and rollbacks), table, agent and time; ``after`` is the (table, id) of
        the previous page's last row. Returns the rows and whether more follow.

        Raises:
            NotFound: unknown model.
            ConfigError: unknown table.
        """
        from driftpilot.runs.models import bootstrap_id

        # The model's runs are a subquery in SQL (a model with thousands of runs sends no list).
        rows, more = self.store.query_audit(
            run_ids={run_id} if run_id is not None else None,
            model=model,
            extra_run_id=bootstrap_id(model) if model is not None else None,
            table=table,
            agent=agent,
            since=stamp(since),
            until=stamp(until),
            after=after,
            limit=limit,
        )
        if model is not None and not rows:
            # Only an empty page asks whether the model exists: rows are filed under it.
            self.store.get(ManagedModel, model)
        return rows, more

    def champion_history(self, model: str) -> list[dict[str, Any]]:
        """The model's champion changes, oldest first (bootstrap, promote, rollback).

        Raises:
            NotFound: unknown model.
        """
        self.store.get(ManagedModel, model)
        rows = self.store.list_rows(
            ChampionChange, ChampionChange.model == model, order=ChampionChange.id
        )
        return [
            {c.name: getattr(r, c.name) for c in ChampionChange.__table__.columns} for r in rows
        ]

    def champion_at(self, model: str, when: datetime | str) -> int | None:
        return self.store.champion_at(model, when)

    def metrics(self) -> MetricsSnapshot:
        """Counters and gauges for Prometheus, computed from the runs and decisions tables."""
        runs: dict[str, int] = {}
        seconds = []
        every_run = self.store.list_rows(Run)
        for run in every_run:
            label = f"{run.status}:{run.outcome}" if run.outcome else run.status
            runs[label] = runs.get(label, 0) + 1
            if run.status in ("completed", "failed"):
                started = datetime.fromisoformat(run.created_at)
                seconds.append((datetime.fromisoformat(run.updated_at) - started).total_seconds())
        drift: dict[str, float] = {}
        fallbacks: dict[str, int] = {}
        models = {r.id: r.model for r in every_run}
        for d in self.store.list_rows(Decision, order=Decision.id):
            if d.fallback:
                fallbacks[d.agent] = fallbacks.get(d.agent, 0) + 1
            if d.agent == "drift_analyst" and d.run_id in models:
                evidence = json.loads(d.evidence)
                # The share the decisions use: the champion's importance on shifted columns
                # (runs recorded before it existed carry Evidently's share of columns).
                share = evidence.get("weighted_share", evidence.get("drift_share"))
                if share is not None:
                    drift[models[d.run_id]] = float(share)
        return MetricsSnapshot(
            runs=runs,
            run_seconds=seconds,
            drift_share=drift,
            pending_approvals=len(self.store.pending_approvals()),
            llm_fallbacks=fallbacks,
        )


def stamp(moment: datetime | None) -> str | None:
    """A time as the audit stores it (UTC ISO-8601 with microseconds), for comparisons in SQL.

    Raises:
        ConfigError: a naive time (no UTC offset) is ambiguous.
    """
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ConfigError(f"give times with a UTC offset, not {moment.isoformat()}")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
