"""A run's life: started at once (``start_run``) or submitted as ``pending`` and executed by a
worker (``submit_run``, ``execute_run``), cancelled before it starts, resumed after its
approval decision; ``drive`` runs the control graph under the model's lease."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import unicodedata
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from agents.context import RunContext
from driftpilot.core.errors import (
    ApprovalError,
    ConfigError,
    DriftPilotError,
    FormatError,
    ModelBusy,
    RunStateError,
)
from driftpilot.core.identity import normalize_principal, safe_label
from driftpilot.core.settings import Settings
from driftpilot.runs import leases
from driftpilot.runs.events import Events
from driftpilot.runs.reads import METADATA_STEP, STRATEGY_STEP, Reads
from driftpilot.runs.views import RunView
from driftpilot.store import AuditStore
from driftpilot.store.audit import now
from driftpilot.store.engine import dumps
from driftpilot.store.models import Decision, ManagedModel, Run, StepEffect
from tools.data import content_hash, load_table, n_rows, write_parquet_atomic

log = logging.getLogger(__name__)

# A batch as given: its rows, or a CSV/Parquet file streamed in (never read whole).
Batch = pl.DataFrame | Path
REASON_MAX_CHARS = 500  # a retrain request's reason: a sentence or two, shown to the LLM
# Control, format (zero-width, bidi), private-use, unassigned and separator characters.
_INVISIBLE = {"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"}


def retrain_request(principal: str, reason: str | None) -> dict[str, str] | None:
    """What a run's initial state carries when a person asked for a retrain: ``{"retrain_by":
    principal, "reason": text}`` (None: nobody asked). The reason is untrusted text that
    reaches the audit and the drift analyst's LLM: invisible and control characters become
    spaces, runs of whitespace one space.

    Raises:
        ConfigError: the reason is blank, or longer than REASON_MAX_CHARS characters.
    """
    if reason is None:
        return None
    visible = "".join(
        " " if unicodedata.category(c) in _INVISIBLE else c
        for c in unicodedata.normalize("NFKC", reason)
    )
    text = " ".join(visible.split())
    if not text:
        raise ConfigError("a retrain request needs a reason: say why the model should retrain")
    if len(text) > REASON_MAX_CHARS:
        raise ConfigError(
            f"a retrain reason is at most {REASON_MAX_CHARS} characters, got {len(text)}"
        )
    return {"retrain_by": principal, "reason": text}


def request_decision(run_id: str, trigger: str, request: dict[str, str]) -> Decision:
    """A person's retrain request as their audited decision: agent the trigger it came
    through, action ``request:retrain``, backend ``person``, the request (and the trigger) as
    its evidence. Written with the run it belongs to (``AuditStore.add_with_decision``)."""
    who, reason = request["retrain_by"], request["reason"]
    return Decision(
        run_id=run_id,
        agent=trigger,
        action="request:retrain",
        rationale=f"{who} asked for a retrain: {reason}",
        evidence=dumps({**request, "trigger": trigger}),
        backend="person",
        llm_model="",
        fallback=False,
        flags=dumps([]),
        tokens_in=0,
        tokens_out=0,
        latency_ms=0.0,
    )


def intake(batch: Batch, path: Path) -> None:
    """Store a run's input batch at ``path`` (Parquet, written whole or not at all): a frame
    is written; a Parquet file is copied as it is; a CSV file streams through a scan into
    Parquet. The caller's file is left alone.

    Raises:
        DataError, FormatError: the file is missing or not CSV/Parquet.
    """
    if isinstance(batch, pl.DataFrame):
        write_parquet_atomic(batch, path)
        return
    scan = load_table(batch, lazy=True)
    assert isinstance(scan, pl.LazyFrame)
    if not (batch.is_file() and batch.suffix.lower() == ".parquet"):
        try:  # a CSV is parsed while it streams: a bad row deep in the file fails here
            write_parquet_atomic(scan, path)
        except pl.exceptions.PolarsError as exc:  # the file's fault; a disk error is ours
            raise FormatError(f"cannot read {batch}: {exc}") from exc
        return
    try:  # a file that is no Parquet fails here, not in the run
        scan.collect_schema()
    except (pl.exceptions.ComputeError, OSError) as exc:
        raise FormatError(f"cannot read {batch}: {exc}") from exc
    partial = path.with_suffix(".parquet.tmp")
    shutil.copyfile(batch, partial)
    partial.replace(path)


def pending_view(run: Run, metadata: dict[str, Any]) -> RunView:
    """The view of a run just submitted, from its row as written: what ``Reads.get_run``
    answers for a ``pending`` run (no result, no approval, no report yet, its metadata)."""
    return RunView(
        run_id=run.id,
        model=run.model,
        batch_id=run.batch_id,
        status=run.status,
        outcome=run.outcome,
        requested_by=run.requested_by,
        created_at=run.created_at,
        summary={},
        approval_request=None,
        updated_at=run.updated_at,
        trigger=run.trigger,
        schedule_id=metadata.get("schedule_id"),
        metadata=metadata,
    )


class Lifecycle:
    """Starts, executes, cancels and resumes runs. ``graph`` gives the compiled control graph,
    ``sign`` signs the audit heads after a run stopped."""

    def __init__(
        self,
        store: AuditStore,
        settings: Settings,
        ctx: RunContext,
        graph: Callable[[], Any],
        reads: Reads,
        events: Events,
        sign: Callable[[], str],
    ) -> None:
        self.store, self.settings, self.ctx, self.graph = store, settings, ctx, graph
        self.reads, self.events, self.sign = reads, events, sign

    def acquire(
        self, model: str, run_id: str, *, wait: bool, timeout_s: float | None = None
    ) -> str:
        """Take the model's lease (see ``leases.acquire``); returns the holder name."""
        return leases.acquire(
            self.store, self.settings.lease_ttl_s, model, run_id, wait=wait, timeout_s=timeout_s
        )

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
        """Run the control loop on one batch; returns when it completes or waits for approval.
        ``retrain_reason``: the requester asks for a retrain, and says why (see
        ``retrain_request``; the drift analyst weighs it, the policy still decides).

        One run per model at a time: the run takes the model's lease first.

        Raises:
            ModelBusy: another run holds the model (after waiting up to the lease time to
                live, with ``wait``).
            ConfigError: a blank or too long ``retrain_reason``.
        """
        self.store.get(ManagedModel, model)
        principal = normalize_principal(requested_by or self.settings.principal)
        request = retrain_request(principal, retrain_reason)
        batch_id = safe_label(batch_id)  # a file stem is untrusted: it reaches audit and LLM
        leases.refuse_if_unrecovered(self.store, model)
        run_id = uuid.uuid4().hex
        lease = self.acquire(model, run_id, wait=wait)
        try:
            state, _ = self.new_run(
                model, batch, batch_id, run_id, trigger, principal, request=request
            )
        except BaseException:
            self.store.release_lease(model, run_id, lease)
            raise
        return self.drive(run_id, model, state, lease)

    def new_run(
        self,
        model: str,
        batch: Batch,
        batch_id: str,
        run_id: str,
        trigger: str,
        principal: str,
        status: str = "running",
        effects: dict[str, dict[str, Any]] | None = None,
        *,
        request: dict[str, str] | None = None,
    ) -> tuple[dict[str, Any], Run]:
        """File the batch and insert the run (and its submitter's ``effects``: step -> result)
        in one write transaction; the run's graph input and the row as written. A person's
        ``request`` (a retrain, ``retrain_request``) goes into that input and is audited as
        their decision."""
        assert self.settings.batches_dir is not None
        incoming = self.settings.batches_dir / model / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        path = incoming / f"{batch_id}-{run_id[:8]}.parquet"
        intake(batch, path)
        # What ingestion reads: its rows and hash as filed. A frame is filed as it is (Parquet
        # keeps its dtypes), so it is counted and hashed in memory, not read back.
        filed = batch if isinstance(batch, pl.DataFrame) else pl.scan_parquet(path)
        state = {
            "run_id": run_id,
            "model": model,
            "requested_by": principal,
            "events": [],
            "batch": {
                "batch_id": batch_id,
                "path": str(path),
                "n_rows": n_rows(filed),
                "content_hash": content_hash(filed),
            },
        }
        if request is not None:
            state["request"] = request
        # The input is kept with the run: recovery restarts from it if the process dies
        # before the graph wrote its first checkpoint.
        run = Run(
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

        def rows() -> list[Any]:
            # Made once per try of the write: a rolled-back flush leaves its ids on the
            # effects (the run's id is its own, and a rollback makes it transient again).
            kept = [
                StepEffect(run_id=run_id, step=step, result=dumps(result), created_at=now())
                for step, result in (effects or {}).items()
            ]
            return [*kept, run]

        if request is None:
            self.store.add_all(rows())  # one transaction: a write lock and a sync, not three
        else:
            # The run and its request's audit in one transaction: a run whose request lifts
            # an episode's hold never exists without the person's decision audited.
            self.store.add_with_decision(rows, request_decision(run_id, trigger, request))
        return state, run

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

        ``multitask_strategy``: ``reject`` refuses while the model has another pending or
        running run; ``enqueue`` lets the run wait for the model's lease.
        ``retrain_reason``: the requester asks for a retrain (as ``start_run``).
        ``run_id``: the run's id (default: a new one). A submitter that must not create a run
        twice after a crash (a closed window) derives it from what it submits: a second
        submission of one id fails on the run's primary key (IntegrityError), nothing doubled.

        Raises:
            NotFound: unknown model.
            ModelBusy: ``reject`` and the model is busy.
            ConfigError: unknown strategy; a blank or too long ``retrain_reason``.
        """
        if multitask_strategy not in ("reject", "enqueue"):
            raise ConfigError(
                f"multitask_strategy must be 'reject' or 'enqueue', got {multitask_strategy!r}"
            )
        self.store.get(ManagedModel, model)
        principal = normalize_principal(requested_by or self.settings.principal)
        request = retrain_request(principal, retrain_reason)
        leases.refuse_if_unrecovered(self.store, model)
        if multitask_strategy == "reject":
            self.refuse_if_busy(model)
        run_id = run_id or uuid.uuid4().hex
        # Kept beside the run: its metadata (its summary is the run's result) and what the
        # submitter asked for, so that a read answers it.
        effects = {METADATA_STEP: metadata} if metadata else {}
        effects[STRATEGY_STEP] = {"multitask_strategy": multitask_strategy}
        _, run = self.new_run(
            model,
            batch,
            safe_label(batch_id),
            run_id,
            trigger,
            principal,
            "pending",
            effects,
            request=request,
        )
        # Answered from what was just written, not read back: under a run's writes the
        # read-back took up to 90 ms of a 250 ms p99 (issue 23).
        return pending_view(run, metadata or {})

    def refuse_if_busy(self, model: str) -> None:
        lease = self.store.lease(model)
        if lease is not None and lease.expires_at > leases.clock_now(self.store):
            raise ModelBusy(f"model {model!r} is busy: run {lease.run_id[:12]} holds its lease")
        busy = self.store.list_rows(
            Run, Run.model == model, Run.status.in_(("pending", "running")), limit=1
        )
        if busy:
            raise ModelBusy(f"model {model!r} is busy: run {busy[0].id[:12]} is {busy[0].status}")

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
            return self.reads.get_run(run_id)
        deadline = time.monotonic() + timeout_s
        while True:  # enqueued runs of one model go in the order they were submitted
            try:
                self.refuse_if_older_pending(run)
                leases.refuse_if_unrecovered(self.store, run.model)
                break
            except ModelBusy:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        lease = self.acquire(run.model, run_id, wait=True, timeout_s=timeout_s)
        run = self.store.get(Run, run_id)
        if run.status != "pending":
            self.store.release_lease(run.model, run_id, lease)
            return self.reads.get_run(run_id)
        # Claim it: a cancel (or another worker) between our read and now wins.
        if not self.store.transition_run(run_id, "pending", status="running"):
            self.store.release_lease(run.model, run_id, lease)
            return self.reads.get_run(run_id)
        return self.drive(run_id, run.model, json.loads(run.summary)["input"], lease)

    def refuse_if_older_pending(self, run: Run) -> None:
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
        return self.reads.get_run(run_id)

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
            return self.reads.get_run(run_id)
        recorded = rows[1]
        try:
            lease = self.acquire(run.model, run_id, wait=wait, timeout_s=timeout_s)
        except ModelBusy as exc:
            raise ModelBusy(
                f"{exc}. The {recorded.decision} of run {run_id[:12]} is recorded and will be "
                "applied when the model is free: retry, or run `driftpilot recover`"
            ) from exc
        if self.store.get(Run, run_id).status != "waiting_approval":
            self.store.release_lease(run.model, run_id, lease)
            return self.reads.get_run(run_id)
        self.store.update_run(run_id, status="running")
        resume = {
            "decision": recorded.decision,
            "approver": recorded.principal,
            "comment": recorded.comment,
        }
        return self.drive(run_id, run.model, Command(resume=resume), lease)

    def drive(self, run_id: str, model: str, graph_input: Any, lease: str) -> RunView:
        """Run the graph for a run that holds the model's lease (as ``lease``); release it at
        the end or at the approval pause (a paused run holds nothing), sign the audit heads,
        and announce what happened. A run that lost its lease is left to the process that took
        it over, never marked failed from here."""
        config = {"configurable": {"thread_id": run_id}}
        failure: Exception | None = None
        ttl_s = self.settings.lease_ttl_s
        try:
            with leases.LeaseKeeper(self.store, model, run_id, lease, ttl_s) as keeper:
                try:
                    graph = self.graph()
                    # "sync": a node's checkpoint is on disk before the next node starts, so a
                    # crash never replays a finished node (the default writes in the background).
                    graph.invoke(graph_input, config, durability="sync", context=self.ctx)
                    if graph.get_state(config).next:
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
            self.sign()
        view = self.reads.get_run(run_id)
        self.events.announce(view)
        # Our own errors are the run's outcome; anything else is a bug and is raised.
        if failure is not None and not isinstance(failure, DriftPilotError):
            raise failure
        return view
