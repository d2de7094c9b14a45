"""The service façade: the one layer the CLI, the API and the chat UI call.

It owns the audit store, the policy, the LLM backend and the compiled control graph with its
checkpointer (SQLite, or PostgreSQL when ``checkpoint_url`` is: ``driftpilot.store.checkpointer``),
so a run waiting for approval survives a restart: a new process builds a new ControlPlane and
resumes the same thread (run id).

The work is done by services in driftpilot/runs/, each given what it needs (the store, the
settings, the run context, the graph, the event emitter, the audit signer) and nothing else:

- ``events``     PlaneEvents and their listeners
- ``models``     add_model (the bootstrap), model views
- ``lifecycle``  start, submit, execute, cancel and resume runs; drive the graph under a lease
- ``leases``     the model's lease, and what dead processes left behind
- ``approvals``  decisions and confirmations; the self-approval rule (``is_own_run``)
- ``recovery``   finish what crashed processes left
- ``reads``      run views (a page in a constant number of queries), audit rows, metrics
- ``trust``      verify, signed checkpoints, the audit key
- ``rollback``   roll the champion back
- ``labels``     labels that arrive late
- ``keys``       API keys
- ``reports``    Evidently's report of a run, rendered after the decision (cached, audited)

Every champion move (bootstrap, promotion, rollback) is the one transaction in
``tools.champion``.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

import polars as pl

from agents.context import RunContext
from driftpilot.core.llm import Backend, make_backend
from driftpilot.core.policy import Policy
from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.approvals import Approvals
from driftpilot.runs.events import QUARANTINE_STREAK, Events
from driftpilot.runs.keys import ApiKeys
from driftpilot.runs.labels import Labelling, LabelsView
from driftpilot.runs.leases import LeaseKeeper, holder
from driftpilot.runs.lifecycle import Batch, Lifecycle
from driftpilot.runs.models import Models, bootstrap_id
from driftpilot.runs.reads import METADATA_STEP, STRATEGY_STEP, Reads
from driftpilot.runs.recovery import Recoveries
from driftpilot.runs.reports import Reports, ReportView
from driftpilot.runs.rollback import Rollbacks
from driftpilot.runs.trust import KEY_NAME, Trust
from driftpilot.runs.views import (
    ApiKeyView,
    EventKind,
    Listener,
    MetricsSnapshot,
    ModelView,
    PlaneEvent,
    Recovery,
    RunView,
)
from driftpilot.store import AuditStore, VerifyResult
from driftpilot.store.checkpointer import Checkpointer, open_checkpointer

__all__ = [
    "KEY_NAME",
    "METADATA_STEP",
    "QUARANTINE_STREAK",
    "STRATEGY_STEP",
    "ApiKeyView",
    "ControlPlane",
    "EventKind",
    "LabelsView",
    "LeaseKeeper",
    "Listener",
    "MetricsSnapshot",
    "ModelView",
    "PlaneEvent",
    "Recovery",
    "ReportView",
    "RunView",
    "bootstrap_id",
    "holder",
]


# Runs whose Evidently report is rendered when someone asks for it, not after the run: an
# inference log closes a window every few seconds, and rendering each report (seconds of CPU
# on the cores the next window's run needs) made a window's decision late.
ON_REQUEST_TRIGGERS = frozenset({"window"})


class ControlPlane:
    """Start, inspect and approve control runs; query and verify the audit trail."""

    def __init__(self, settings: Settings | None = None, backend: Backend | None = None) -> None:
        self.settings = settings or get_settings()
        self.store = AuditStore(self.settings.db_url)
        self.policy = Policy.load(self.settings.policy_path)
        self.backend = backend or make_backend(self.settings.llm, self.settings)
        self.ctx = RunContext(self.settings, self.store, self.policy, self.backend)
        self._graph: Any = None
        self._graph_lock = threading.Lock()
        self._checkpoints: Checkpointer | None = None
        store, settings, ctx = self.store, self.settings, self.ctx

        def graph() -> Any:
            return self.graph

        self.events = Events(store)
        self.trust = Trust(store, settings)
        sign = self.trust.checkpoint
        self.reads = Reads(store, graph, settings)
        self.keys = ApiKeys(store)
        self.models = Models(store, settings, self.policy, ctx, sign)
        self.lifecycle = Lifecycle(store, settings, ctx, graph, self.reads, self.events, sign)
        self.approvals = Approvals(store, settings, ctx, self.reads, self.lifecycle)
        self.rollbacks = Rollbacks(store, settings, ctx, self.events.emit, sign)
        self.recoveries = Recoveries(store, graph, self.lifecycle, self.rollbacks)
        self.labelling = Labelling(store, settings, ctx, self.reads.get_run, sign)
        self.reports = Reports(store, settings, ctx, sign)

    @property
    def graph(self) -> Any:
        """The compiled control graph on the checkpointer ``settings.checkpoint_url`` names
        (SQLite file, or PostgreSQL through a connection pool), opened on first use."""
        if self._graph is None:
            with self._graph_lock:  # the warm-up and a first run may ask at once: one graph
                if self._graph is None:
                    from graphs.control import build_control_graph

                    self._checkpoints = open_checkpointer(self.settings)
                    self._graph = build_control_graph(self._checkpoints.saver)
        return self._graph

    def close(self) -> None:
        """Release the checkpointer's connections and the audit engine's pool (a later use of
        ``graph`` opens the checkpointer again). Under the graph's lock: a graph being built
        meanwhile (a warm-up, a first run) is built first, then closed, never left open."""
        with self._graph_lock:
            if self._checkpoints is not None:
                self._checkpoints.close()
                self._checkpoints = None
                self._graph = None
        self.store.engine.dispose()

    # -- events (runs.events) ---------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every PlaneEvent this process produces (after the fact: a run
        is never held up by a listener, and a listener that raises is logged and skipped)."""
        self.events.subscribe(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no-op if it was not subscribed)."""
        self.events.unsubscribe(listener)

    # -- managed models (runs.models) -------------------------------------------------------------

    def add_model(
        self,
        name: str,
        initial: pl.DataFrame,
        *,
        target: str,
        time_col: str,
        numeric: list[str],
        categorical: list[str],
        family: str = "lightgbm",
        task: str | None = None,
        metric: str | None = None,
        source: str = "",
        principal: str | None = None,
        trainer: str | None = None,
    ) -> ModelView:
        """Register a managed model and its first champion, trained on ``initial`` (the
        bootstrap champion is promoted, and audited, as the person adding the model).
        ``task`` None is inferred from the target, ``metric`` None is the task's primary;
        ``trainer`` (``package.module:fit``) fits its challengers instead of the built-in
        families."""
        return self.models.add_model(
            name,
            initial,
            target=target,
            time_col=time_col,
            numeric=numeric,
            categorical=categorical,
            family=family,
            task=task,
            metric=metric,
            source=source,
            principal=principal,
            trainer=trainer,
        )

    def model_view(self, name: str) -> ModelView:
        return self.models.model_view(name)

    def list_models(self) -> list[ModelView]:
        return self.models.list_models()

    # -- runs (runs.lifecycle) --------------------------------------------------------------------

    def start_run(
        self,
        model: str,
        batch: Batch,
        batch_id: str,
        *,
        trigger: str = "cli",
        requested_by: str | None = None,
        wait: bool = False,
        retrain_reason: str | None = None,
    ) -> RunView:
        """Run the control loop on one batch; returns when it completes or waits for approval
        (raises ModelBusy while another run holds the model). ``retrain_reason``: the
        requester asks for a retrain and says why; the run's initial state carries
        ``request = {"retrain_by": requester, "reason": text}`` and the audit a decision
        ``request:retrain`` (ConfigError: blank or longer than 500 characters)."""
        return self.lifecycle.start_run(
            model,
            batch,
            batch_id,
            trigger=trigger,
            requested_by=requested_by,
            wait=wait,
            retrain_reason=retrain_reason,
        )

    def submit_run(
        self,
        model: str,
        batch: Batch,
        batch_id: str,
        *,
        trigger: str = "api",
        requested_by: str | None = None,
        multitask_strategy: str = "reject",
        metadata: dict[str, Any] | None = None,
        retrain_reason: str | None = None,
        run_id: str | None = None,
    ) -> RunView:
        """Store the batch and create the run as ``pending``; ``execute_run`` runs it later.
        ``retrain_reason``: a person's retrain request, as ``start_run``; ``run_id``: a
        deterministic id, so a re-submission after a crash cannot make a second run."""
        return self.lifecycle.submit_run(
            model,
            batch,
            batch_id,
            trigger=trigger,
            requested_by=requested_by,
            multitask_strategy=multitask_strategy,
            metadata=metadata,
            retrain_reason=retrain_reason,
            run_id=run_id,
        )

    def execute_run(self, run_id: str, *, timeout_s: float = math.inf) -> RunView:
        """Run a pending run: wait for the model's lease, then drive the graph."""
        return self.lifecycle.execute_run(run_id, timeout_s=timeout_s)

    def cancel_run(self, run_id: str, principal: str, reason: str = "") -> RunView:
        """Cancel a run that has not started (raises RunStateError if it is not pending)."""
        return self.lifecycle.cancel_run(run_id, principal, reason)

    def resume_run(
        self, run_id: str, *, wait: bool = True, timeout_s: float | None = None
    ) -> RunView:
        """Apply a recorded approval decision: take the model's lease, resume the graph."""
        return self.lifecycle.resume_run(run_id, wait=wait, timeout_s=timeout_s)

    # -- approvals (runs.approvals) ---------------------------------------------------------------

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
        """Approve or reject a waiting run, then resume it (in this process)."""
        return self.approvals.decide(run_id, decision, approver, comment, wait=wait, step=step)

    def record_decision(
        self,
        run_id: str,
        decision: str,
        approver: str,
        comment: str = "",
        *,
        step: str | None = None,
    ) -> RunView:
        """Check and record an approval decision; ``resume_run`` applies it."""
        return self.approvals.record_decision(run_id, decision, approver, comment, step=step)

    def record_confirmation(
        self,
        op_id: str,
        principal: str,
        kind: str,
        summary: str,
        details: dict[str, Any],
        outcome: Literal["confirm", "failed"] = "confirm",
    ) -> None:
        """Audit that ``principal`` confirmed (or confirmed, but it failed) a chat proposal."""
        self.approvals.record_confirmation(op_id, principal, kind, summary, details, outcome)

    # -- metrics, api keys, recovery --------------------------------------------------------------

    def metrics(self) -> MetricsSnapshot:
        """Counters and gauges for Prometheus, computed from the runs and decisions tables."""
        return self.reads.metrics()

    def create_api_key(self, name: str, role: str) -> tuple[ApiKeyView, str]:
        """A new API key; the secret is returned once and only its hash is stored."""
        return self.keys.create_api_key(name, role)

    def authenticate(self, secret: str) -> ApiKeyView | None:
        """The live key with this secret (None: unknown or revoked)."""
        return self.keys.authenticate(secret)

    def list_api_keys(self) -> list[ApiKeyView]:
        return self.keys.list_api_keys()

    def revoke_api_key(self, key_id: str) -> ApiKeyView:
        return self.keys.revoke_api_key(key_id)

    def recover(self) -> list[Recovery]:
        """Finish what crashed processes left (see runs.recovery)."""
        return self.recoveries.recover()

    def recovery_due(self) -> bool:
        """Whether ``recover`` has anything to do (reads only)."""
        return self.recoveries.due()

    # -- read models (runs.reads) -----------------------------------------------------------------

    def get_run(self, run_id: str) -> RunView:
        return self.reads.get_run(run_id)

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
        return self.reads.list_runs(
            model,
            limit,
            status=status,
            outcome=outcome,
            requested_by=requested_by,
            since=since,
            until=until,
            before=before,
        )

    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the one run whose id starts with ``prefix``."""
        return self.reads.resolve_run_id(prefix)

    def pending_approvals(self) -> list[RunView]:
        return self.reads.pending_approvals()

    def audit(self, run_id: str | None = None) -> Iterator[dict[str, Any]]:
        return self.reads.audit(run_id)

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
        """One page of audit rows and whether more follow (see runs.reads)."""
        return self.reads.audit_rows(
            run_id=run_id,
            model=model,
            table=table,
            agent=agent,
            since=since,
            until=until,
            after=after,
            limit=limit,
        )

    def champion_history(self, model: str) -> list[dict[str, Any]]:
        """The model's champion changes, oldest first (bootstrap, promote, rollback)."""
        return self.reads.champion_history(model)

    def champion_at(self, model: str, when: datetime | str) -> int | None:
        return self.reads.champion_at(model, when)

    # -- reports (runs.reports) -------------------------------------------------------------------

    def run_report(self, run_id: str) -> ReportView:
        """The run's Evidently report, rendered now if it is not there yet (status none: the
        run has none, ``reason`` says why).

        Raises:
            NotFound: no such run.
            DataError: Evidently could not compare the batch with the reference.
        """
        return self.reports.render(run_id)

    def run_report_html(self, run_id: str) -> tuple[ReportView, bytes | None]:
        """``run_report`` and the report's HTML (None: the run has none), read while no
        retention can remove it.

        Raises:
            NotFound: no such run.
            DataError: Evidently could not compare the batch with the reference.
        """
        return self.reports.html(run_id)

    def report_status(self, run_id: str) -> ReportView:
        """Where the run's report stands, without rendering it."""
        return self.reports.status(run_id)

    def render_report_later(self, run_id: str) -> None:
        """Render the run's report in this process's background thread (returns at once)."""
        self.reports.render_later(run_id)

    def reports_idle(self) -> bool:
        """Whether no report is queued or rendering in this process's background thread."""
        return self.reports.idle()

    def report_after_run(self, view: RunView) -> None:
        """A run's result is written: queue its pending report for the background thread,
        unless reports are rendered on request only (``settings.report_render``) or the run
        is an inference window's (``ON_REQUEST_TRIGGERS``)."""
        if (
            view.report_status == "pending"
            and self.settings.report_render == "after_run"
            and view.trigger not in ON_REQUEST_TRIGGERS
        ):
            self.reports.render_later(view.run_id)

    # -- trust (runs.trust) -----------------------------------------------------------------------

    def verify(self) -> VerifyResult:
        """Walk every hash chain, compare with the newest signed checkpoint, and check the
        invariants across tables and against MLflow."""
        return self.trust.verify()

    def latest_checkpoint(self) -> str:
        """The newest signed checkpoint (signing one now if none exists), for publishing."""
        return self.trust.latest_checkpoint()

    def audit_verifier_key(self) -> str:
        """The public key that verifies audit checkpoints, as a signed-note verifier key."""
        return self.trust.audit_verifier_key()

    # -- rollback and labels (runs.rollback, runs.labels) -----------------------------------------

    def rollback(
        self,
        model: str,
        actor: str,
        reason: str = "",
        key: str | None = None,
        expect: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """Move ``champion`` back to the previous champion, restoring its reference window;
        idempotent per ``key``; ``expect`` (from, to) is what the person confirmed."""
        return self.rollbacks.rollback(model, actor, reason, key, expect)

    def attach_labels(
        self,
        model: str,
        batch_id: str,
        path: str | os.PathLike[str] | pl.DataFrame,
        actor: str,
        *,
        key: str | None = None,
    ) -> LabelsView:
        """Attach late labels to an accepted batch and score its champion on them."""
        return self.labelling.attach_labels(model, batch_id, path, actor, key=key)
