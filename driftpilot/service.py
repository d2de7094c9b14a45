"""The service façade: the one layer the CLI, the API and the chat UI call.

It owns the audit store, the policy, the LLM backend and the compiled control graph with its
SQLite checkpointer, so a run waiting for approval survives a restart: a new process builds a
new ControlPlane and resumes the same thread (run id).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import polars as pl
from pydantic import BaseModel, Field

from agents.base import Outcome
from agents.context import RunContext
from driftpilot.audit import AuditStore, VerifyResult
from driftpilot.audit.models import ChampionChange, ManagedModel, Run
from driftpilot.audit.store import now
from driftpilot.errors import (
    ApprovalError,
    ConfigError,
    DriftPilotError,
    NotFound,
    RegistryError,
)
from driftpilot.identity import safe_label
from driftpilot.llm import Backend, make_backend
from driftpilot.policy import Policy
from driftpilot.settings import Settings, get_settings
from graphs.state import SLICES
from tools.data import content_hash


class RunView(BaseModel):
    """A run as people see it."""

    run_id: str
    model: str
    batch_id: str
    status: str = Field(description="running | waiting_approval | completed | failed")
    outcome: str | None
    requested_by: str
    created_at: str
    summary: dict[str, Any]
    approval_request: dict[str, Any] | None = None


class ModelView(BaseModel):
    name: str
    target: str
    family: str
    metric: str
    champion: int | None
    baseline: float | None
    features: list[str]


class ControlPlane:
    """Start, inspect and approve control runs; query and verify the audit trail."""

    def __init__(self, settings: Settings | None = None, backend: Backend | None = None) -> None:
        self.settings = settings or get_settings()
        self.store = AuditStore(self.settings.db_url)
        self.policy = Policy.load(self.settings.policy_path)
        self.backend = backend or make_backend(self.settings.llm, self.settings)
        self.ctx = RunContext(self.settings, self.store, self.policy, self.backend)
        self._graph: Any = None
        self._conn: sqlite3.Connection | None = None

    @property
    def graph(self) -> Any:
        if self._graph is None:
            from langgraph.checkpoint.sqlite import SqliteSaver

            from graphs.control import build_control_graph

            assert self.settings.checkpoint_path is not None
            self._conn = sqlite3.connect(self.settings.checkpoint_path, check_same_thread=False)
            self._graph = build_control_graph(self.backend, self.ctx, SqliteSaver(self._conn))
        return self._graph

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.store.engine.dispose()

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
        from tools import registry
        from tools.train import TrainSpec, train_model

        actor = principal or self.settings.principal
        try:
            self.store.get(ManagedModel, name)
            raise ConfigError(f"model {name!r} already exists")
        except NotFound:
            pass
        run_id = f"bootstrap-{name}"
        folder = self.ctx.model_dir(name)
        reference = folder / f"window-{run_id}.parquet"
        initial.write_parquet(reference)
        self.store.add(
            ManagedModel(
                name=name,
                source=source,
                target=target,
                time_col=time_col,
                numeric=json.dumps(numeric),
                categorical=json.dumps(categorical),
                family=family,
                metric=metric,
                reference_path=str(reference),
                baseline=None,
                created_at=now(),
            )
        )
        spec = TrainSpec(
            family=family,
            target=target,
            numeric=numeric,
            categorical=categorical,
            time_col=time_col,
            threads=self.settings.threads,
            seed=self.settings.seed,
        )
        model = self.ctx.call(
            run_id,
            "bootstrap",
            "train.train_model",
            lambda: train_model(initial, spec),
            {"rows": initial.height, "family": family},
            lambda m: m.report.model_dump() if m.report else {},
        )
        version = registry.register_model(
            model, registry.RegisterRequest(name=name, key=f"{run_id}:retraining"), self.settings
        ).version
        moved = registry.promote(name, version, self.settings)
        baseline = model.report.valid.roc_auc if model.report else None
        self.store.update_model(name, baseline=baseline)
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
            f"Initial champion v{version} trained on {initial.height} rows by {actor}; "
            f"validation roc_auc={baseline}.",
            {"version": version, "rows": initial.height},
        )
        return self.model_view(name)

    def model_view(self, name: str) -> ModelView:
        row = self.store.get(ManagedModel, name)
        champ = self.ctx.champion(name)
        return ModelView(
            name=row.name,
            target=row.target,
            family=row.family,
            metric=row.metric,
            champion=champ[1] if champ else None,
            baseline=row.baseline,
            features=json.loads(row.numeric) + json.loads(row.categorical),
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
    ) -> RunView:
        """Run the control loop on one batch; returns when it completes or waits for approval."""
        self.store.get(ManagedModel, model)
        batch_id = safe_label(batch_id)  # a file stem is untrusted: it reaches audit and LLM
        run_id = uuid.uuid4().hex
        assert self.settings.batches_dir is not None
        incoming = self.settings.batches_dir / model / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        path = incoming / f"{batch_id}-{run_id[:8]}.parquet"
        batch.write_parquet(path)
        principal = requested_by or self.settings.principal
        self.store.add(
            Run(
                id=run_id,
                model=model,
                batch_id=batch_id,
                trigger=trigger,
                requested_by=principal,
                status="running",
                outcome=None,
                summary="{}",
                created_at=now(),
                updated_at=now(),
            )
        )
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
        return self._drive(run_id, state)

    def decide(self, run_id: str, decision: str, approver: str, comment: str = "") -> RunView:
        """Approve or reject a waiting run, then resume it (in this process)."""
        from langgraph.types import Command

        run = self.store.get(Run, run_id)
        if run.status != "waiting_approval":
            raise ApprovalError(f"run {run_id} is {run.status}, not waiting for approval")
        self.store.decide_approval(run_id, approver, decision, comment)
        return self._drive(
            run_id, Command(resume={"decision": decision, "approver": approver, "comment": comment})
        )

    def _drive(self, run_id: str, graph_input: Any) -> RunView:
        config = {"configurable": {"thread_id": run_id}}
        try:
            self.graph.invoke(graph_input, config)
        except Exception as exc:
            # The run is marked failed either way; our own errors are reported, others re-raised.
            self.store.update_run(
                run_id, status="failed", outcome=type(exc).__name__, summary={"error": str(exc)}
            )
            if not isinstance(exc, DriftPilotError):
                raise
            return self.get_run(run_id)
        if self.graph.get_state(config).next:
            self.store.update_run(run_id, status="waiting_approval")
        return self.get_run(run_id)

    def get_run(self, run_id: str) -> RunView:
        run = self.store.get(Run, run_id)
        rows = self.store.approval_rows(run_id)
        pending = json.loads(rows[0].payload) if len(rows) == 1 else None
        summary = json.loads(run.summary or "{}")
        if run.status == "waiting_approval":  # not reported yet: read the checkpointed state
            values = self.graph.get_state({"configurable": {"thread_id": run_id}}).values
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
        )

    def list_runs(self, model: str | None = None, limit: int = 50) -> list[RunView]:
        where = [Run.model == model] if model else []
        rows = self.store.list_rows(Run, *where, order=Run.created_at.desc(), limit=limit)
        return [self.get_run(r.id) for r in rows]

    def resolve_run_id(self, prefix: str) -> str:
        """The full id of the one run whose id starts with ``prefix``."""
        matches = [r.id for r in self.store.list_rows(Run, Run.id.startswith(prefix), limit=2)]
        if len(matches) != 1:
            raise NotFound(f"{'no run' if not matches else 'several runs'} match {prefix!r}")
        return matches[0]

    def pending_approvals(self) -> list[RunView]:
        return [self.get_run(r.run_id) for r in self.store.pending_approvals()]

    # -- audit and rollback -----------------------------------------------------------------------

    def audit(self, run_id: str | None = None) -> Iterator[dict[str, Any]]:
        return self.store.export(run_id)

    def verify(self) -> VerifyResult:
        return self.store.verify()

    def champion_at(self, model: str, when: datetime | str) -> int | None:
        return self.store.champion_at(model, when)

    def rollback(
        self, model: str, actor: str, reason: str = "", key: str | None = None
    ) -> dict[str, Any]:
        """Move ``champion`` back to the previous champion, restoring its reference window.
        Idempotent per ``key``."""
        from tools import registry

        op_id = key or f"rollback-{uuid.uuid4().hex}"
        done = self.store.effect(op_id, "rollback")
        if done is not None:
            return done
        champions = registry.champion_history(model, self.settings)
        if len(champions) < 2:
            raise RegistryError(f"model {model!r} has no previous champion to roll back to")
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
        moved = registry.rollback(model, key=op_id, settings=self.settings)
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
