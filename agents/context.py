"""What agent nodes share: settings, policy, audit store, LLM backend, and the managed model's
data. Every deterministic tool call made through ``call`` is timed and audited."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
from pydantic import BaseModel

from agents.base import Llm, Outcome
from driftpilot.core.errors import AliasNotFound, ModelBusy, NotFound
from driftpilot.core.faults import fault_point
from driftpilot.core.llm import Backend
from driftpilot.core.policy import Policy
from driftpilot.core.settings import Settings
from driftpilot.core.tasks import Metric, check_task
from driftpilot.store import AuditStore
from driftpilot.store.audit import lease_holder
from driftpilot.store.models import BatchRecord, ManagedModel, Run
from tools.datasets import DatasetSpec
from tools.quality_profile import ReferenceProfile, profile_reference
from tools.train import Family, ParamValue, TrainSpec

R = TypeVar("R")
D = TypeVar("D", bound=BaseModel)


@dataclass
class RunContext:
    """Shared by the nodes of one graph (one process); holds no per-run state."""

    settings: Settings
    store: AuditStore
    policy: Policy
    backend: Backend
    _champions: dict[tuple[str, int], Any] = field(default_factory=dict)
    _profiles: dict[str, tuple[tuple[Any, ...], ReferenceProfile]] = field(default_factory=dict)

    # -- audit ----------------------------------------------------------------------------------

    def call(
        self,
        run_id: str,
        agent: str,
        tool: str,
        fn: Callable[[], R],
        args: dict[str, Any],
        summarize: Callable[[R], Any] = lambda r: r,
    ) -> R:
        """Run a deterministic tool, record the call (args, result summary, latency, ok)."""
        started = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:
            self.store.record_tool_call(
                run_id,
                agent,
                tool,
                args,
                {"error": f"{type(exc).__name__}: {exc}"},
                ok=False,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
            raise
        self.store.record_tool_call(
            run_id,
            agent,
            tool,
            args,
            _jsonable(summarize(result)),
            ok=True,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        return result

    def mutate(
        self,
        run_id: str,
        agent: str,
        step: str,
        tool: str,
        fn: Callable[[], R],
        args: dict[str, Any],
        summarize: Callable[[R], Any] = lambda r: r,
        *,
        fault: str = "",
    ) -> R:
        """A registry mutation, written ahead: an ``intent`` row, the audited tool call, then
        ``applied``. A replay (after a crash, or a node re-run on resume) finds the step's
        earlier rows and ends it ``reconciled``: ``fn`` must itself be idempotent against
        MLflow (idempotency keys, compare-and-swap)."""
        action = tool.rsplit(".", 1)[-1]
        last = self.store.last_mutation(run_id, step)
        # A step whose earlier attempt ended ``failed`` is attempted afresh, under a new intent.
        replay = last is not None and last.phase != "failed"
        if not replay:
            self.store.record_mutation(run_id, step, action, "intent", args)
        try:
            result = self.call(run_id, agent, tool, fn, args, summarize)
        except Exception as exc:
            self._close_failed(run_id, agent, step, action, args, exc)
            raise
        fault_point(fault)  # tests crash here: the effect happened, its record did not
        phase = "reconciled" if replay else "applied"
        self.store.record_mutation(run_id, step, action, phase, args, _jsonable(summarize(result)))
        return result

    def _close_failed(
        self,
        run_id: str,
        agent: str,
        step: str,
        action: str,
        args: dict[str, Any],
        exc: Exception,
    ) -> None:
        """End the open intent of a step whose effect raised ``exc``: ``close_failed`` with
        what MLflow shows of it. When that cannot be done (MLflow or the audit unreachable,
        a full disk) the intent stays open for ``recover`` and ``exc`` says why."""
        try:
            close_failed(
                self.store,
                self.settings,
                run_id,
                agent,
                step,
                action,
                args,
                f"{type(exc).__name__}: {exc}",
            )
        except Exception as closing:
            exc.add_note(
                f"intent of {action} ({step}) left open for `driftpilot recover`: "
                f"{type(closing).__name__}: {closing}"
            )

    def record(
        self,
        run_id: str,
        agent: str,
        outcome: Outcome[Any],
        action: str,
        rationale: str,
        evidence: dict[str, Any],
        flags: list[str] | None = None,
    ) -> None:
        flags = list(flags or [])
        if outcome.fallback:
            flags.append(f"llm_fallback: {outcome.error}")
        for call in outcome.tool_calls:
            self.store.record_tool_call(
                run_id,
                agent,
                f"llm:{call['tool']}",
                call["args"],
                _jsonable(call["result"]),
                ok=True,
                latency_ms=0.0,
            )
        self.store.record_decision(
            run_id,
            agent,
            action,
            rationale,
            evidence,
            backend=outcome.backend,
            llm_model=outcome.llm_model,
            fallback=outcome.fallback,
            flags=flags,
            tokens_in=outcome.tokens_in,
            tokens_out=outcome.tokens_out,
            latency_ms=outcome.latency_ms,
        )

    @property
    def llm(self) -> Llm:
        """This context's backend with the run's LLM limits: what agents' ``decide`` consult."""
        return Llm(self.backend, self.settings.llm_max_steps, self.settings.llm_retries)

    def require_lease(self, model: str, run_id: str) -> None:
        """Fence a mutation: this run must still hold the model's lease (a run whose lease
        expired may have been taken over by ``recover`` in another process)."""
        if not self.store.holds_lease(model, run_id, lease_holder.get()):
            raise ModelBusy(f"run {run_id[:12]} no longer holds the lease of model {model!r}")

    # -- the managed model and its data ----------------------------------------------------------

    def model(self, name: str) -> ManagedModel:
        return self.store.get(ManagedModel, name)

    def metric(self, name: str) -> Metric:
        """The metric ``name`` is measured, retrained and promoted by, with its direction: the
        model's own (``ManagedModel.metric``), else the policy's default for its task."""
        row = self.model(name)
        return self.policy.model_metric(row.metric, check_task(row.task))

    def spec(self, name: str) -> DatasetSpec:
        row = self.model(name)
        return DatasetSpec(
            name=row.name,
            task=check_task(row.task),
            target=row.target,
            time_col=row.time_col,
            batch_every="month",
            numeric=json.loads(row.numeric),
            categorical=json.loads(row.categorical),
        )

    def train_spec(
        self, name: str, family: Family, params: dict[str, ParamValue] | None = None
    ) -> TrainSpec:
        """What every fit of ``name`` trains on (its columns), with this run's threads and seed."""
        spec = self.spec(name)
        return TrainSpec(
            task=spec.task,
            family=family,
            target=spec.target,
            numeric=spec.numeric,
            categorical=spec.categorical,
            time_col=spec.time_col,
            params=params or {},
            threads=self.settings.threads,
            seed=self.settings.seed,
        )

    def reference(self, name: str) -> pl.DataFrame:
        row = self.model(name)
        if not row.reference_path or not Path(row.reference_path).exists():
            raise NotFound(f"model {name!r} has no reference window")
        return pl.read_parquet(row.reference_path)

    def reference_profile(self, name: str, reference: pl.DataFrame) -> ReferenceProfile:
        """The quality profile of ``name``'s reference window (``profile_reference`` of the
        spec's features, target and time column), read from ``reference`` (that window) once
        per window file in this process: every batch is checked against it, and the window
        changes only when a promotion writes a new one (written whole and renamed into place:
        another path, inode, size or mtime)."""
        spec, path = self.spec(name), Path(self.model(name).reference_path or "")
        columns = [*spec.features, spec.target, spec.time_col]
        stat = path.stat()
        key = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, tuple(columns))
        cached = self._profiles.get(name)
        if cached is None or cached[0] != key:
            profile = profile_reference(reference, columns, time_column=spec.time_col)
            self._profiles[name] = cached = (key, profile)
        return cached[1]

    def holdout(self, name: str) -> pl.DataFrame | None:
        """The champion's out-of-time holdout (rows it never trained on), None without one."""
        path = self.model(name).holdout_path
        return pl.read_parquet(path) if path and Path(path).exists() else None

    def accepted_batches(self, name: str) -> list[BatchRecord]:
        return self.store.list_rows(
            BatchRecord,
            BatchRecord.model == name,
            BatchRecord.status == "accepted",
            order=BatchRecord.id,
        )

    def history(self, name: str, exclude_run: str) -> list[dict[str, Any]]:
        """Summaries of ``name``'s completed runs, oldest first (``exclude_run`` left out),
        each with its ``run_id``: what the drift policy counts (recent signals, retrains,
        promotions, cooldown) and the drift episode names (its first run, each attempt's)."""
        runs = self.store.list_rows(
            Run, Run.model == name, Run.status == "completed", order=Run.created_at
        )
        return [
            {**json.loads(r.summary or "{}"), "run_id": r.id} for r in runs if r.id != exclude_run
        ]

    def model_dir(self, name: str) -> Path:
        assert self.settings.home is not None
        path = self.settings.home / "models" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def champion(self, name: str) -> tuple[Any, int] | None:
        """The champion model and version, or None (cached per version in this process)."""
        from tools import registry

        try:
            info = registry.get_alias(name, registry.CHAMPION, self.settings)
        except AliasNotFound:
            return None
        key = (name, info.version)
        if key not in self._champions:
            self._champions[key] = registry.load_version(name, info.version, self.settings)
        return self._champions[key], info.version


def effect_found(action: str, args: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """What MLflow shows of a mutation whose call did not return (it raised, or its process
    died): the logged run and the partly logged ones under the intent's idempotency key, the
    version registered under it, or where the alias points now.

    Raises:
        Exception: MLflow could not be asked (the effect is then unknown).
    """
    from tools import registry

    name, key = args.get("name"), args.get("key")
    if action == "log_model" and name and key:
        logged = registry.find_logged(name, key, settings)
        return {
            "logged": logged.model_dump(mode="json") if logged else None,
            "partial_runs": _partial_runs(name, key, settings),
        }
    if action == "register_model" and name and key:
        info = registry.find_by_key(name, key, settings)
        return {"version": info.model_dump(mode="json") if info else None}
    if action == "set_alias" and name and args.get("alias"):
        try:
            return {"alias_version": registry.get_alias(name, args["alias"], settings).version}
        except AliasNotFound:
            return {"alias_version": None}
    if name:
        return {"champion": registry.current_champion(name, settings)}
    return {}


def _partial_runs(name: str, key: str, settings: Settings) -> list[str]:
    """MLflow runs logged under ``key`` whose logging died before their model was stored
    (``find_logged`` skips them, so no later attempt reuses one)."""
    from tools import registry

    client = registry.mlflow_client(settings)
    experiment = client.get_experiment_by_name(f"driftpilot/{name}")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id], f"tags.`{registry.KEY_TAG}` = '{key}'")
    return [r.info.run_id for r in runs if registry.MODEL_URI_TAG not in r.data.tags]


def close_failed(
    store: AuditStore,
    settings: Settings,
    run_id: str,
    agent: str,
    step: str,
    action: str,
    args: dict[str, Any],
    error: str,
) -> dict[str, Any]:
    """End an open intent as ``failed``: an audited row with ``error`` and what MLflow shows
    of the effect (``effect_found``). A version that was registered although the call failed
    is accounted for by a ``registry.register_model`` tool call naming it (audit verify checks
    every registered version has one). Returns the row's result.

    Raises:
        Exception: MLflow or the audit store could not be reached; the intent stays open.
    """
    found = effect_found(action, args, settings)
    version = found.get("version")
    if version and version["version"] not in store.logged_versions(version["name"]):
        store.record_tool_call(
            run_id,
            agent,
            "registry.register_model",
            {**args, "found_after": error},
            version,
            ok=True,
            latency_ms=0.0,
        )
    result = {"error": error, "found": found}
    store.record_mutation(run_id, step, action, "failed", args, result)
    return result


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value
