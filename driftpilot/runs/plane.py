"""The service façade: the one layer the CLI, the API and the chat UI call.

It owns the audit store, the policy, the LLM backend and the compiled control graph with its
checkpointer (SQLite, or PostgreSQL when ``checkpoint_url`` is: ``driftpilot.store.checkpointer``),
so a run waiting for approval survives a restart: a new process builds a new ControlPlane and
resumes the same thread (run id).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, Field

from agents.base import Outcome
from agents.context import RunContext
from driftpilot.core.errors import (
    ApprovalError,
    ChampionMoved,
    ConfigError,
    DriftPilotError,
    ModelBusy,
    NotFound,
    RegistryError,
    RunStateError,
)
from driftpilot.core.identity import normalize_principal, safe_label
from driftpilot.core.llm import Backend, make_backend
from driftpilot.core.policy import Policy
from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.labels import LabelsView
from driftpilot.store import AuditStore, VerifyResult
from driftpilot.store.audit import check_step, lease_holder, now
from driftpilot.store.checkpointer import Checkpointer, open_checkpointer
from driftpilot.store.models import (
    ApiKey,
    ChampionChange,
    Decision,
    ManagedModel,
    Mutation,
    Run,
)
from graphs.state import SLICES
from tools.data import content_hash

log = logging.getLogger(__name__)
KEY_NAME = "driftpilot-audit"
METADATA_STEP = "metadata"  # the step-effect row that holds a run's submitted metadata
STRATEGY_STEP = "multitask_strategy"  # the step-effect row: {"multitask_strategy": ...}


class RunView(BaseModel):
    """A run as people see it."""

    run_id: str
    model: str
    batch_id: str
    status: str = Field(description="pending | running | waiting_approval | completed | failed")
    outcome: str | None
    requested_by: str
    created_at: str
    summary: dict[str, Any]
    approval_request: dict[str, Any] | None = None
    updated_at: str = ""
    trigger: str = Field(default="", description="cli | api | chat | schedule | demo")
    schedule_id: str | None = Field(
        default=None, description="The schedule that fired the run (trigger schedule)."
    )
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="What the submitter attached to the run."
    )


class ModelView(BaseModel):
    name: str
    target: str
    family: str
    metric: str
    champion: int | None
    baseline: float | None
    features: list[str]
    created_at: str = ""


class ApiKeyView(BaseModel):
    """An API key as shown to people (never its secret)."""

    key_id: str
    principal: str
    role: str
    created_at: str
    revoked: bool


class MetricsSnapshot(BaseModel):
    """What /metrics exports, read from the audit database."""

    runs: dict[str, int] = Field(description="Run counts by 'status' or 'status:outcome'.")
    run_seconds: list[float] = Field(description="Durations of finished runs (s).")
    drift_share: dict[str, float] = Field(
        description="Latest drift share per model (importance-weighted: the share the drift "
        "policy decides on)."
    )
    pending_approvals: int
    llm_fallbacks: dict[str, int] = Field(description="LLM fallbacks per agent.")


class Recovery(BaseModel):
    """What ``recover`` found for one run and what it did."""

    run_id: str
    model: str
    found: str = Field(description="The state the run was left in.")
    did: str = Field(description="What recovery did about it.")
    status: str = Field(description="The run's status afterwards.")
    outcome: str | None = None


EventKind = Literal["approval_waiting", "promotion", "rollback", "quarantine_streak", "run_failed"]
QUARANTINE_STREAK = 2  # consecutive quarantined batches of one model that make an alert


class PlaneEvent(BaseModel):
    """Something a person may want to be told about (alerts and webhooks subscribe to these)."""

    kind: EventKind
    model: str
    run_id: str | None = Field(description="The run (or rollback operation) it is about.")
    detail: dict[str, Any] = Field(default_factory=dict)
    at: str = Field(default_factory=lambda: now())


Listener = Callable[[PlaneEvent], None]


class LeaseKeeper:
    """Holds a model's lease for one run: renews it from a daemon thread every third of its
    time to live, and releases it on exit. A process killed mid-run stops renewing, so the
    lease expires and ``recover`` may take the run over; a process that finds its lease taken
    over (``lost``) stops mutating, because mutations are fenced on its ``holder``."""

    def __init__(
        self, store: AuditStore, model: str, run_id: str, holder: str, ttl_s: float
    ) -> None:
        self.store, self.model, self.run_id, self.holder = store, model, run_id, holder
        self.ttl_s = ttl_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name=f"lease-{model}")
        self._token: Any = None

    def __enter__(self) -> LeaseKeeper:
        self._token = lease_holder.set(self.holder)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        lease_holder.reset(self._token)
        self.store.release_lease(self.model, self.run_id, self.holder)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.store.renew_lease(self.model, self.run_id, self.ttl_s, self.holder):
                    self.lost = True
                    log.error("run %s lost the lease of %s", self.run_id, self.model)
                    return
            except Exception as exc:  # a busy or dropped database: try again next tick
                # (a dead keeper would let the lease expire while the run goes on)
                log.warning("lease renewal of %s failed: %s", self.model, exc)


def bootstrap_id(model: str) -> str:
    """The run id of a model's bootstrap (at most 40 characters, the audit's run id width)."""
    readable = f"bootstrap-{model}"
    if len(readable) <= 40:
        return readable
    return f"bootstrap-{hashlib.sha256(model.encode()).hexdigest()[:30]}"


def holder() -> str:
    """A new lease holder name for one acquisition by this process (host:pid:token): a second
    acquisition of the same run, even in this process, is another holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class ControlPlane:
    """Start, inspect and approve control runs; query and verify the audit trail."""

    def __init__(self, settings: Settings | None = None, backend: Backend | None = None) -> None:
        self.settings = settings or get_settings()
        self.store = AuditStore(self.settings.db_url)
        self.policy = Policy.load(self.settings.policy_path)
        self.backend = backend or make_backend(self.settings.llm, self.settings)
        self.ctx = RunContext(self.settings, self.store, self.policy, self.backend)
        self._graph: Any = None
        self._checkpoints: Checkpointer | None = None
        self._listeners: list[Listener] = []

    @property
    def graph(self) -> Any:
        """The compiled control graph on the checkpointer ``settings.checkpoint_url`` names
        (SQLite file, or PostgreSQL through a connection pool), opened on first use."""
        if self._graph is None:
            from graphs.control import build_control_graph

            self._checkpoints = open_checkpointer(self.settings)
            self._graph = build_control_graph(self._checkpoints.saver)
        return self._graph

    def close(self) -> None:
        """Release the checkpointer's connections and the audit engine's pool (a later use of
        ``graph`` opens the checkpointer again)."""
        if self._checkpoints is not None:
            self._checkpoints.close()
            self._checkpoints = None
            self._graph = None
        self.store.engine.dispose()

    # -- events -----------------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every PlaneEvent this process produces (after the fact: a run
        is never held up by a listener, and a listener that raises is logged and skipped)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        """Stop calling ``listener`` (no-op if it was not subscribed)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _emit(
        self, kind: EventKind, model: str, run_id: str | None, detail: dict[str, Any]
    ) -> None:
        event = PlaneEvent(kind=kind, model=model, run_id=run_id, detail=detail)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, kind)

    def _announce(self, view: RunView) -> None:
        """Emit what a run that just stopped (finished, paused or failed) is worth telling."""
        if view.status == "waiting_approval":
            request = view.approval_request or {}
            self._emit("approval_waiting", view.model, view.run_id, {"request": request})
        elif view.status == "failed":
            error = view.summary.get("error")
            self._emit(
                "run_failed", view.model, view.run_id, {"error": view.outcome, "detail": error}
            )
        elif view.outcome == "promoted":
            promotion = view.summary.get("promotion") or {}
            self._emit("promotion", view.model, view.run_id, dict(promotion))
        elif view.outcome == "quarantined":
            recent = self.store.list_rows(
                Run,
                Run.model == view.model,
                Run.status == "completed",
                order=Run.updated_at.desc(),
                limit=QUARANTINE_STREAK,
            )
            if len(recent) == QUARANTINE_STREAK and all(r.outcome == "quarantined" for r in recent):
                self._emit("quarantine_streak", view.model, view.run_id, {"streak": len(recent)})

    # -- managed models ---------------------------------------------------------------------------

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
        metric: str = "roc_auc",
        source: str = "",
        principal: str | None = None,
    ) -> ModelView:
        """Register a managed model and its first champion, trained on ``initial``.

        The bootstrap champion is promoted by the person adding the model; the decision is
        audited like any promotion.
        """
        actor = normalize_principal(principal or self.settings.principal)
        try:
            self.store.get(ManagedModel, name)
            if self.store.champion_generation(name) > 0:
                raise ConfigError(f"model {name!r} already exists")
            # Its bootstrap died or failed before the first champion: adding it again
            # finishes it (every registry step is idempotent per bootstrap id).
        except NotFound:
            pass
        run_id = bootstrap_id(name)
        lease = self._acquire(name, run_id, wait=False)
        try:
            with LeaseKeeper(self.store, name, run_id, lease, self.settings.lease_ttl_s):
                self._bootstrap(
                    name,
                    initial,
                    run_id,
                    actor,
                    target=target,
                    time_col=time_col,
                    numeric=numeric,
                    categorical=categorical,
                    family=family,
                    metric=metric,
                    source=source,
                )
        finally:
            self._checkpoint()
        return self.model_view(name)

    def _bootstrap(
        self,
        name: str,
        initial: pl.DataFrame,
        run_id: str,
        actor: str,
        *,
        target: str,
        time_col: str,
        numeric: list[str],
        categorical: list[str],
        family: str,
        metric: str,
        source: str,
    ) -> None:
        from tools import registry
        from tools.estimate import metric_interval
        from tools.train import TrainSpec, split_holdout, train_model

        folder = self.ctx.model_dir(name)
        reference = folder / f"window-{run_id}.parquet"
        initial.write_parquet(reference)
        fields = {
            "source": source,
            "target": target,
            "time_col": time_col,
            "numeric": json.dumps(numeric),
            "categorical": json.dumps(categorical),
            "family": family,
            "metric": metric,
            "reference_path": str(reference),
            "baseline": None,
        }
        try:
            self.store.update_model(name, **fields)  # a bootstrap added again after a failure
        except NotFound:
            self.store.add(ManagedModel(name=name, created_at=now(), **fields))
        spec = TrainSpec(
            family=family,
            target=target,
            numeric=numeric,
            categorical=categorical,
            time_col=time_col,
            threads=self.settings.threads,
            seed=self.settings.seed,
        )
        # As for every challenger, the latest rows are held out of training: the champion's
        # score on them is its out-of-time baseline, and they calibrate its probabilities
        # for the estimates on batches whose labels come later.
        labelled = initial.filter(pl.col(target).is_not_null())
        fit, holdout = split_holdout(labelled, time_col, self.policy.retraining.holdout_fraction)
        holdout_path = folder / f"holdout-{run_id}.parquet"
        holdout.write_parquet(holdout_path)
        model = self.ctx.call(
            run_id,
            "bootstrap",
            "train.train_model",
            lambda: train_model(fit, spec),
            {"rows": fit.height, "holdout_rows": holdout.height, "family": family},
            lambda m: m.report.model_dump() if m.report else {},
        )
        scored = self.ctx.call(
            run_id,
            "bootstrap",
            "estimate.metric_interval",
            lambda: metric_interval(
                holdout[target].to_numpy(),
                model.predict_proba(holdout),
                n_boot=self.policy.evaluator.n_boot,
                confidence=self.policy.evaluator.confidence,
                seed=self.settings.seed,
            ),
            {"holdout_rows": holdout.height},
        )
        request = registry.RegisterRequest(name=name, key=f"{run_id}:retraining")
        version = self.ctx.mutate(
            run_id,
            "bootstrap",
            "bootstrap:register",
            "registry.register_model",
            lambda: registry.register_model(model, request, self.settings),
            {"name": name, "key": request.key},
            lambda v: v.model_dump(mode="json"),
            fault="after_register",
        ).version
        moved = self.ctx.mutate(
            run_id,
            "bootstrap",
            "promote",
            "registry.promote",
            lambda: registry.promote(name, version, self.settings, expected=None),
            {"name": name, "version": version, "expected": None},
            lambda r: r.model_dump(),
        )
        baseline = scored.value
        self.store.update_model(
            name,
            baseline=baseline,
            baseline_low=scored.low,
            baseline_high=scored.high,
            holdout_path=str(holdout_path),
        )
        self.store.record_effect(
            run_id,
            "promote",
            {
                "version": version,
                "window_path": str(reference),
                "baseline": baseline,
                "family": family,
            },
        )
        self.store.record_champion(name, version, moved.previous, "bootstrap", run_id, actor)
        self.ctx.record(
            run_id,
            "bootstrap",
            Outcome(None, "none", ""),
            "promote",
            f"Initial champion v{version} trained on {fit.height} rows by {actor}; "
            f"out-of-time roc_auc={baseline} on the latest {holdout.height} rows "
            f"(interval {scored.low} to {scored.high}).",
            {"version": version, "rows": initial.height},
        )

    def model_view(self, name: str) -> ModelView:
        row = self.store.get(ManagedModel, name)
        # The audit's champion history, not MLflow: a view must not load a model (verify
        # checks that the two agree).
        last = self.store.list_rows(
            ChampionChange,
            ChampionChange.model == name,
            order=ChampionChange.id.desc(),
            limit=1,
        )
        return ModelView(
            name=row.name,
            target=row.target,
            family=row.family,
            metric=row.metric,
            champion=last[0].version if last else None,
            baseline=row.baseline,
            features=json.loads(row.numeric) + json.loads(row.categorical),
            created_at=row.created_at,
        )

    def list_models(self) -> list[ModelView]:
        return [
            self.model_view(r.name)
            for r in self.store.list_rows(ManagedModel, order=ManagedModel.name)
        ]

    # -- runs -------------------------------------------------------------------------------------

    def start_run(
        self,
        model: str,
        batch: pl.DataFrame,
        batch_id: str,
        *,
        trigger: str = "cli",
        requested_by: str | None = None,
        wait: bool = False,
    ) -> RunView:
        """Run the control loop on one batch; returns when it completes or waits for approval.

        One run per model at a time: the run takes the model's lease first.

        Raises:
            ModelBusy: another run holds the model (after waiting up to the lease time to
                live, with ``wait``).
        """
        self.store.get(ManagedModel, model)
        principal = normalize_principal(requested_by or self.settings.principal)
        batch_id = safe_label(batch_id)  # a file stem is untrusted: it reaches audit and LLM
        self._refuse_if_unrecovered(model)
        run_id = uuid.uuid4().hex
        lease = self._acquire(model, run_id, wait=wait)
        try:
            state = self._new_run(model, batch, batch_id, run_id, trigger, principal)
        except BaseException:
            self.store.release_lease(model, run_id, lease)
            raise
        return self._drive(run_id, model, state, lease)

    def _new_run(
        self,
        model: str,
        batch: pl.DataFrame,
        batch_id: str,
        run_id: str,
        trigger: str,
        principal: str,
        status: str = "running",
    ) -> dict[str, Any]:
        assert self.settings.batches_dir is not None
        incoming = self.settings.batches_dir / model / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        path = incoming / f"{batch_id}-{run_id[:8]}.parquet"
        batch.write_parquet(path)
        state = {
            "run_id": run_id,
            "model": model,
            "requested_by": principal,
            "events": [],
            "batch": {
                "batch_id": batch_id,
                "path": str(path),
                "n_rows": batch.height,
                "content_hash": content_hash(batch),
            },
        }
        # The input is kept with the run: recovery restarts from it if the process dies
        # before the graph wrote its first checkpoint.
        self.store.add(
            Run(
                id=run_id,
                model=model,
                batch_id=batch_id,
                trigger=trigger,
                requested_by=principal,
                status=status,
                outcome=None,
                summary=json.dumps({"input": state}),
                created_at=now(),
                updated_at=now(),
            )
        )
        return state

    def _acquire(
        self, model: str, run_id: str, *, wait: bool, timeout_s: float | None = None
    ) -> str:
        """Take the model's lease and return this acquisition's holder name; with ``wait``,
        poll until it is free, for at most ``timeout_s`` (default: as long as it takes)."""
        limit = math.inf if timeout_s is None else timeout_s
        deadline = time.monotonic() + (limit if wait else 0)
        name = holder()
        while True:
            try:
                self.store.acquire_lease(model, run_id, name, self.settings.lease_ttl_s)
                return name
            except ModelBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    # -- asynchronous runs (the API): submit now, execute in a worker -----------------------------

    def submit_run(
        self,
        model: str,
        batch: pl.DataFrame,
        batch_id: str,
        *,
        trigger: str = "api",
        requested_by: str | None = None,
        multitask_strategy: str = "reject",
        metadata: dict[str, Any] | None = None,
    ) -> RunView:
        """Store the batch and create the run as ``pending``; ``execute_run`` runs it later.

        ``multitask_strategy``: ``reject`` refuses while the model has another pending or
        running run; ``enqueue`` lets the run wait for the model's lease.

        Raises:
            NotFound: unknown model.
            ModelBusy: ``reject`` and the model is busy.
            ConfigError: unknown strategy.
        """
        if multitask_strategy not in ("reject", "enqueue"):
            raise ConfigError(
                f"multitask_strategy must be 'reject' or 'enqueue', got {multitask_strategy!r}"
            )
        self.store.get(ManagedModel, model)
        principal = normalize_principal(requested_by or self.settings.principal)
        self._refuse_if_unrecovered(model)
        if multitask_strategy == "reject":
            self._refuse_if_busy(model)
        run_id = uuid.uuid4().hex
        if metadata:  # kept beside the run (its summary is the run's result)
            self.store.record_effect(run_id, METADATA_STEP, metadata)
        # Kept beside the run too, so that a read answers what the submitter asked for.
        self.store.record_effect(run_id, STRATEGY_STEP, {"multitask_strategy": multitask_strategy})
        self._new_run(model, batch, safe_label(batch_id), run_id, trigger, principal, "pending")
        return self.get_run(run_id)

    def _refuse_if_busy(self, model: str) -> None:
        lease = self.store.lease(model)
        if lease is not None and lease.expires_at > now():
            raise ModelBusy(f"model {model!r} is busy: run {lease.run_id[:12]} holds its lease")
        busy = self.store.list_rows(
            Run, Run.model == model, Run.status.in_(("pending", "running")), limit=1
        )
        if busy:
            raise ModelBusy(f"model {model!r} is busy: run {busy[0].id[:12]} is {busy[0].status}")

    def _refuse_if_unrecovered(self, model: str) -> None:
        """A run of this model died mid-way (lease expired while running, or a registry
        mutation left open): nothing new may touch the model until ``recover`` finished it,
        or a rollback or new run would be undone or doubled by that recovery."""
        dead = [r.id for r in self._orphans() if r.model == model]
        dead += [m.run_id for m in self._dead_intents(model) if m.run_id not in dead]
        if dead:
            raise ModelBusy(
                f"model {model!r} has unfinished work from a process that died (run "
                f"{dead[0][:12]}); run `driftpilot recover` first"
            )

    def execute_run(self, run_id: str, *, timeout_s: float = math.inf) -> RunView:
        """Run a pending run: wait for the model's lease, then drive the graph. A run that is
        no longer pending (another worker took it) is left alone. It also waits while a run
        of its model died mid-way and ``recover`` has not finished it yet (a new run would
        overlap the dead one's recovery).

        Raises:
            ModelBusy: after ``timeout_s``, the model is still busy, an older run of it is
                still pending, or it has unrecovered work.
        """
        run = self.store.get(Run, run_id)
        if run.status != "pending":
            return self.get_run(run_id)
        deadline = time.monotonic() + timeout_s
        while True:  # enqueued runs of one model go in the order they were submitted
            try:
                self._refuse_if_older_pending(run)
                self._refuse_if_unrecovered(run.model)
                break
            except ModelBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        lease = self._acquire(run.model, run_id, wait=True, timeout_s=timeout_s)
        run = self.store.get(Run, run_id)
        if run.status != "pending":
            self.store.release_lease(run.model, run_id, lease)
            return self.get_run(run_id)
        # Claim it: a cancel (or another worker) between our read and now wins.
        if not self.store.transition_run(run_id, "pending", status="running"):
            self.store.release_lease(run.model, run_id, lease)
            return self.get_run(run_id)
        return self._drive(run_id, run.model, json.loads(run.summary)["input"], lease)

    def _refuse_if_older_pending(self, run: Run) -> None:
        """Raise ModelBusy while an older run of the same model is still pending."""
        older = self.store.query_runs(
            model=run.model, status="pending", before=(run.created_at, run.id), limit=1
        )
        if older:
            raise ModelBusy(
                f"model {run.model!r}: run {older[0].id[:12]} was submitted first and goes first"
            )

    def cancel_run(self, run_id: str, principal: str, reason: str = "") -> RunView:
        """Cancel a run that has not started: ``pending`` becomes ``failed`` with outcome
        ``cancelled``, atomically (a worker claiming it at the same moment wins or loses as a
        whole), and the cancellation is audited as a decision of agent ``api``.

        Raises:
            RunStateError: the run is not pending (it started, waits for approval, or ended).
            InvalidPrincipal: the principal's name is invalid.
        """
        who = normalize_principal(principal)
        run = self.store.get(Run, run_id)
        summary = {"cancelled_by": who, "reason": reason}
        if not self.store.transition_run(
            run_id, "pending", status="failed", outcome="cancelled", summary=json.dumps(summary)
        ):
            status = self.store.get(Run, run_id).status
            hint = {
                "running": "it cannot be stopped between its steps; it ends on its own",
                "waiting_approval": "reject it instead",
            }.get(status, "it has ended; there is nothing to cancel")
            raise RunStateError(f"run {run_id} is {status}, not pending: {hint}")
        self.store.record_decision(
            run_id,
            "api",
            "cancel",
            f"{who} cancelled the pending run of {run.model} on batch {run.batch_id}"
            + (f": {reason}" if reason else ""),
            summary,
            backend="api",
        )
        return self.get_run(run_id)

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
        return self.resume_run(run_id, wait=wait, timeout_s=self.settings.lease_ttl_s)

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
        return self.get_run(run_id)

    def resume_run(
        self, run_id: str, *, wait: bool = True, timeout_s: float | None = None
    ) -> RunView:
        """Apply a recorded decision: take the model's lease (waiting for it, by default as
        long as it takes), then resume the graph. A run no longer waiting (another process
        applied the decision) is left alone.

        Raises:
            ApprovalError: no decision is recorded.
            ModelBusy: the model stayed busy (the run keeps waiting, its decision recorded).
        """
        from langgraph.types import Command

        run = self.store.get(Run, run_id)
        rows = self.store.approval_rows(run_id)
        if len(rows) < 2:
            raise ApprovalError(f"run {run_id} has no recorded decision to resume with")
        if run.status != "waiting_approval":
            return self.get_run(run_id)
        recorded = rows[1]
        try:
            lease = self._acquire(run.model, run_id, wait=wait, timeout_s=timeout_s)
        except ModelBusy as exc:
            raise ModelBusy(
                f"{exc}. The {recorded.decision} of run {run_id[:12]} is recorded and will be "
                "applied when the model is free: retry, or run `driftpilot recover`"
            ) from exc
        if self.store.get(Run, run_id).status != "waiting_approval":
            self.store.release_lease(run.model, run_id, lease)
            return self.get_run(run_id)
        self.store.update_run(run_id, status="running")
        resume = {
            "decision": recorded.decision,
            "approver": recorded.principal,
            "comment": recorded.comment,
        }
        return self._drive(run_id, run.model, Command(resume=resume), lease)

    def _drive(self, run_id: str, model: str, graph_input: Any, lease: str) -> RunView:
        """Run the graph for a run that holds the model's lease (as ``lease``); release it at
        the end or at the approval pause (a paused run holds nothing), sign the audit heads,
        and announce what happened. A run that lost its lease is left to the process that took
        it over, never marked failed from here."""
        config = {"configurable": {"thread_id": run_id}}
        failure: Exception | None = None
        try:
            with LeaseKeeper(self.store, model, run_id, lease, self.settings.lease_ttl_s) as keeper:
                try:
                    # "sync": a node's checkpoint is on disk before the next node starts, so a
                    # crash never replays a finished node (the default writes in the background).
                    self.graph.invoke(graph_input, config, durability="sync", context=self.ctx)
                    if self.graph.get_state(config).next:
                        self.ctx.require_lease(model, run_id)  # not if taken over meanwhile
                        self.store.update_run(run_id, status="waiting_approval")
                except Exception as exc:
                    failure = exc
                    if not keeper.lost and self.store.holds_lease(model, run_id, lease):
                        self.store.update_run(
                            run_id,
                            status="failed",
                            outcome=type(exc).__name__,
                            summary={"error": str(exc)},
                        )
                    else:
                        log.error("run %s stopped after losing its lease: %s", run_id, exc)
        finally:
            self._checkpoint()
        view = self.get_run(run_id)
        self._announce(view)
        # Our own errors are the run's outcome; anything else is a bug and is raised.
        if failure is not None and not isinstance(failure, DriftPilotError):
            raise failure
        return view

    def metrics(self) -> MetricsSnapshot:
        """Counters and gauges for Prometheus, computed from the runs and decisions tables."""
        runs: dict[str, int] = {}
        seconds = []
        for run in self.store.list_rows(Run):
            label = f"{run.status}:{run.outcome}" if run.outcome else run.status
            runs[label] = runs.get(label, 0) + 1
            if run.status in ("completed", "failed"):
                started = datetime.fromisoformat(run.created_at)
                seconds.append((datetime.fromisoformat(run.updated_at) - started).total_seconds())
        drift: dict[str, float] = {}
        fallbacks: dict[str, int] = {}
        models = {r.id: r.model for r in self.store.list_rows(Run)}
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

    # -- api keys -------------------------------------------------------------------------------

    def create_api_key(self, name: str, role: str) -> tuple[ApiKeyView, str]:
        """A new API key; the secret is returned once and only its hash is stored."""
        row, secret = self.store.create_api_key(name, role)
        return _key_view(row), secret

    def authenticate(self, secret: str) -> ApiKeyView | None:
        """The live key with this secret (None: unknown or revoked)."""
        row = self.store.authenticate(secret)
        return _key_view(row) if row is not None else None

    def list_api_keys(self) -> list[ApiKeyView]:
        return [_key_view(r) for r in self.store.list_rows(ApiKey, order=ApiKey.created_at)]

    def revoke_api_key(self, key_id: str) -> ApiKeyView:
        return _key_view(self.store.revoke_api_key(key_id))

    # -- recovery -------------------------------------------------------------------------------

    def recover(self) -> list[Recovery]:
        """Finish what crashed processes left: runs ``running`` whose lease expired are resumed
        from their last checkpoint (or from their input, if none was written), rollbacks that
        died mid-way are finished, and approval decisions recorded but never applied are
        applied. Registry mutations are reconciled by the nodes themselves from their open
        intents. One run that cannot be recovered is reported and does not stop the others."""
        done = [self._guarded(run, self._recover_running) for run in self._orphans()]
        runs = {r.run_id for r in done}
        for m in self._dead_intents():
            if m.action == "rollback" and m.run_id not in runs:
                done.append(self._recover_rollback(m))
        for run in self.store.list_rows(Run, Run.status == "waiting_approval", order=Run.id):
            if len(self.store.approval_rows(run.id)) > 1:
                done.append(self._guarded(run, self._apply_recorded))
        return done

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
            result = self.rollback(
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

    def _dead_intents(self, model: str | None = None) -> list[Mutation]:
        """Open registry intents whose run or operation no longer holds its model's lease."""
        dead = []
        for m in self.store.open_intents():
            name = json.loads(m.args).get("name")
            if model is not None and name != model:
                continue
            lease = self.store.lease(name) if name else None
            if lease is None or lease.run_id != m.run_id or lease.expires_at <= now():
                dead.append(m)
        return dead

    def _orphans(self) -> list[Run]:
        """Runs marked running whose lease is gone or expired (their process died)."""
        orphans = []
        for run in self.store.list_rows(Run, Run.status == "running", order=Run.created_at):
            lease = self.store.lease(run.model)
            if lease is None or lease.run_id != run.id or lease.expires_at <= now():
                orphans.append(run)
        return orphans

    def _recover_running(self, run: Run) -> Recovery:
        config = {"configurable": {"thread_id": run.id}}
        snapshot = self.graph.get_state(config)
        intents = [
            f"{m.action} ({m.step})" for m in self.store.open_intents() if m.run_id == run.id
        ]
        found = (
            f"running with an expired lease; last checkpoint before {list(snapshot.next)}"
            if snapshot.values
            else "running with an expired lease; no checkpoint yet"
        ) + (f"; open intents: {', '.join(intents)}" if intents else "")
        try:
            lease = self._acquire(run.model, run.id, wait=False)
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
        view = self._drive(run.id, run.model, graph_input, lease)
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
            view = self.resume_run(run.id, wait=False)
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

    def get_run(self, run_id: str) -> RunView:
        run = self.store.get(Run, run_id)
        rows = self.store.approval_rows(run_id)
        pending = json.loads(rows[0].payload) if len(rows) == 1 else None
        summary = json.loads(run.summary or "{}")
        summary.pop("input", None)  # kept for recovery, not a result
        if run.status == "waiting_approval":  # not reported yet: read the checkpointed state
            values = self.graph.get_state({"configurable": {"thread_id": run_id}}).values
            summary = {k: values.get(k) for k in SLICES if k in values}
        metadata = self.store.effect(run_id, METADATA_STEP) or {}
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
            since=_stamp(since),
            until=_stamp(until),
            before=before,
            limit=limit,
        )
        return [self.get_run(r.id) for r in rows]

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
        return [self.get_run(r.run_id) for r in self.store.pending_approvals()]

    # -- audit and rollback -----------------------------------------------------------------------

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
        run_ids: set[str] | None = None
        if model is not None:
            self.store.get(ManagedModel, model)
            run_ids = self.store.model_run_ids(model) | {bootstrap_id(model)}
        if run_id is not None:
            run_ids = {run_id} if run_ids is None else run_ids & {run_id}
        return self.store.query_audit(
            run_ids=run_ids,
            table=table,
            agent=agent,
            since=_stamp(since),
            until=_stamp(until),
            after=after,
            limit=limit,
        )

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

    def verify(self) -> VerifyResult:
        """Walk every hash chain, compare the database with the newest signed checkpoint
        (deleted or rewritten newest rows), and check the invariants across tables and
        against MLflow."""
        from driftpilot.store import checkpoint

        result = self.store.verify()
        problems: list[str] = []
        latest = checkpoint.latest_checkpoint(self.settings.audit_checkpoint_log)
        if latest is not None:
            problems += checkpoint.verify_against_checkpoint(
                self.store, latest, self._audit_key().public_key()
            )
        elif any(head.size for head in checkpoint.chain_heads(self.store).values()):
            problems.append(
                f"no signed checkpoint in {self.settings.audit_checkpoint_log}: the log is "
                "missing or empty, so deleted newest rows could not be detected (a home made "
                "before checkpoints existed: `driftpilot audit checkpoint` signs the heads now)"
            )
        problems += self.store.cross_checks()
        problems += self._registry_checks()
        result.problems = problems
        result.checkpoint = latest.text if latest is not None else None
        result.ok = result.ok and not problems
        return result

    def _registry_checks(self) -> list[str]:
        """MLflow agrees with the audit: the champion is the one the history names, every
        registered version has its tool call, and no intent is left open by a dead run."""
        from tools import registry

        problems = []
        for managed in self.store.list_rows(ManagedModel, order=ManagedModel.name):
            name = managed.name
            history = self.store.list_rows(
                ChampionChange, ChampionChange.model == name, order=ChampionChange.id
            )
            audited = history[-1].version if history else None
            actual = registry.current_champion(name, self.settings)
            if actual != audited:
                problems.append(
                    f"{name}: MLflow's champion is v{actual}, the audit's champion history says "
                    f"v{audited}"
                )
            logged = self.store.logged_versions(name)
            for version in registry.list_versions(name, self.settings):
                if version.version not in logged:
                    problems.append(f"{name} v{version.version} has no register tool call")
        for intent in self._dead_intents():
            fix = (
                "add the model again to finish its bootstrap"
                if intent.run_id.startswith("bootstrap-")
                else "run `driftpilot recover`"
            )
            problems.append(
                f"{intent.run_id[:24]}: intent to {intent.action} ({intent.step}) never "
                f"completed; {fix}"
            )
        return problems

    def _audit_key(self) -> Any:
        from driftpilot.store import checkpoint

        assert self.settings.audit_key_path is not None
        return checkpoint.load_or_create_key(self.settings.audit_key_path)

    def _checkpoint(self) -> str:
        """Sign the chain heads and append them to the checkpoint log outside the database."""
        from driftpilot.store import checkpoint

        text = checkpoint.sign_heads(
            self.store, self._audit_key(), self.settings.audit_origin, KEY_NAME
        )
        checkpoint.append_checkpoint(self.settings.audit_checkpoint_log, text)
        return text

    def latest_checkpoint(self) -> str:
        """The newest signed checkpoint (signing one now if none exists), for publishing."""
        from driftpilot.store import checkpoint

        latest = checkpoint.latest_checkpoint(self.settings.audit_checkpoint_log)
        return latest.text if latest is not None else self._checkpoint()

    def audit_verifier_key(self) -> str:
        """The public key that verifies audit checkpoints, as a signed-note verifier key."""
        from driftpilot.store import checkpoint

        return checkpoint.public_key_line(self._audit_key(), KEY_NAME)

    def champion_at(self, model: str, when: datetime | str) -> int | None:
        return self.store.champion_at(model, when)

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

    def rollback(
        self,
        model: str,
        actor: str,
        reason: str = "",
        key: str | None = None,
        expect: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """Move ``champion`` back to the previous champion, restoring its reference window.
        Idempotent per ``key``; takes the model's lease like a run. ``expect`` (from, to) is
        what the person confirmed: checked under the lease.

        Raises:
            ModelBusy: a run is working on the model.
            RegistryError: there is no previous champion.
            ChampionMoved: the champions are no longer ``expect``.
        """
        actor = normalize_principal(actor)
        op_id = key or f"rb-{uuid.uuid4().hex}"
        done = self.store.effect(op_id, "rollback")
        if done is not None:
            return done
        self.store.get(ManagedModel, model)
        if self.store.open_intent(op_id, "rollback") is None:
            self._refuse_if_unrecovered(model)
        lease = self._acquire(model, op_id, wait=False)
        try:
            with LeaseKeeper(self.store, model, op_id, lease, self.settings.lease_ttl_s):
                result = self._rollback(model, actor, reason, op_id, expect)
        finally:
            self._checkpoint()
        self._emit("rollback", model, op_id, {**result, "reason": reason})
        return result

    def _rollback(
        self, model: str, actor: str, reason: str, op_id: str, expect: tuple[int, int] | None
    ) -> dict[str, Any]:
        from tools import registry

        intent = self.store.open_intent(op_id, "rollback")
        if intent is not None:  # finishing a rollback that died: its intent says what it was
            planned = json.loads(intent.args)
            champions = [planned["to"], planned["from"]]
        else:
            champions = registry.champion_history(model, self.settings)
        if len(champions) < 2:
            raise RegistryError(f"model {model!r} has no previous champion to roll back to")
        if expect is not None and (champions[-1], champions[-2]) != expect:
            raise ChampionMoved(
                f"{model} would roll back v{champions[-1]} to v{champions[-2]}, not the "
                f"confirmed v{expect[0]} to v{expect[1]}: nothing was rolled back"
            )
        # Find what restores the previous champion's reference window before moving anything.
        history = self.store.list_rows(
            ChampionChange, ChampionChange.model == model, order=ChampionChange.id
        )
        origin = next(
            (r for r in reversed(history) if r.version == champions[-2] and r.action != "rollback"),
            None,
        )
        if origin is None:
            raise NotFound(f"v{champions[-2]} of {model!r} has no promotion record in the audit")
        trained = self.store.effect(origin.run_id, "promote") or {}
        moved = self.ctx.mutate(
            op_id,
            "cicd",
            "rollback",
            "registry.rollback",
            lambda: registry.rollback(
                model, op_id, self.settings, plan=(champions[-1], champions[-2])
            ),
            {"name": model, "from": champions[-1], "to": champions[-2], "by": actor},
            lambda r: r.model_dump(),
            fault="after_rollback",
        )
        self.store.update_model(
            model,
            reference_path=trained.get("window_path"),
            baseline=trained.get("baseline"),
            family=trained.get("family", self.store.get(ManagedModel, model).family),
        )
        self.store.record_champion(model, moved.current, moved.previous, "rollback", op_id, actor)
        self.ctx.record(
            op_id,
            "cicd",
            Outcome(None, "none", ""),
            "rollback",
            f"{actor} rolled {model} back from v{moved.previous} to v{moved.current}: {reason}",
            moved.model_dump(),
        )
        result = {"model": model, "from": moved.previous, "to": moved.current, "by": actor}
        self.store.record_effect(op_id, "rollback", result)
        return result

    # -- labels that arrive late ------------------------------------------------------------------

    def attach_labels(
        self,
        model: str,
        batch_id: str,
        path: str | os.PathLike[str] | pl.DataFrame,
        actor: str,
        *,
        key: str | None = None,
    ) -> LabelsView:
        """Attach labels (a CSV/Parquet file, or a frame already read) to an accepted batch
        that came without them, and score the champion that scored it on them (see
        driftpilot.runs.labels). Takes the model's lease while the filed batch is replaced, so no
        run reads a window between the check and the write. Attaching the same labels again
        returns the first answer; different ones are refused.

        Raises:
            NotFound: unknown model, or no accepted batch of it by that name.
            SchemaError / DataError: the labels cannot be used (nothing is changed).
            RunStateError: the batch already has different labels.
            ModelBusy: a run holds the model (retry when it is done).
        """
        from driftpilot.runs import labels

        actor = normalize_principal(actor)
        target = self.store.get(ManagedModel, model).target
        record = labels.find_batch(self.store, model, batch_id)
        frame = labels.read_labels(path if isinstance(path, pl.DataFrame) else os.fspath(path))
        self._refuse_if_unrecovered(model)
        op_id = f"labels-{uuid.uuid4().hex[:24]}"
        lease = self._acquire(model, op_id, wait=False)
        recorded = False
        try:
            with LeaseKeeper(self.store, model, op_id, lease, self.settings.lease_ttl_s):
                drift = self.get_run(record.run_id).summary.get("drift") or {}
                source = "" if isinstance(path, pl.DataFrame) else os.path.basename(path)
                view, recorded = labels.attach(
                    self.ctx, record, drift, frame, actor, target=target, key=key, source=source
                )
        finally:
            if recorded:
                self._checkpoint()
        return view


def _stamp(moment: datetime | None) -> str | None:
    """A time as the audit stores it (UTC ISO-8601 with microseconds), for comparisons in SQL.

    Raises:
        ConfigError: a naive time (no UTC offset) is ambiguous.
    """
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ConfigError(f"give times with a UTC offset, not {moment.isoformat()}")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _key_view(row: ApiKey) -> ApiKeyView:
    return ApiKeyView(
        key_id=row.id,
        principal=row.principal,
        role=row.role,
        created_at=row.created_at,
        revoked=row.revoked_at is not None,
    )
