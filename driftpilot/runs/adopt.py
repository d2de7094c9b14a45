"""Adopting a model DriftPilot did not train: an MLflow model (``tools.adopt``) becomes a
managed model whose first champion it is.

The model is fetched, loaded as a pyfunc and checked against the labelled reference before
anything is written: a model whose inputs do not match (``SchemaError``), or whose output fits
no reading of the task, leaves no managed model and no registry version behind. Then, under
the model's lease and as a bootstrap (run id ``bootstrap_id``, the audit's agent
``bootstrap``): the load is recorded as a tool call, its predictions on the reference give the
baseline with a bootstrap interval (on the latest rows when a time column orders them), it is
registered in DriftPilot's registry with its lineage (ManagedModel.lineage and the version's
``driftpilot.adopted.*`` tags) and promoted champion v1 by the person adopting it through the
one champion-move transaction of ``tools.champion``, audited like any promotion.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import ConfigError, NotFound, SchemaError
from driftpilot.core.identity import normalize_principal
from driftpilot.core.tasks import METRICS, Task, check_task
from driftpilot.runs import leases
from driftpilot.runs.models import Models, bootstrap_id
from driftpilot.runs.views import ModelView
from driftpilot.store.audit import now
from driftpilot.store.models import ManagedModel


class AdoptionView(BaseModel):
    """What adopting a model did: the managed model, its task, baseline and lineage."""

    model: ModelView
    task: Task
    task_reason: str = Field(description="Why this task: given, or inferred from the target.")
    metric: str = Field(description="The primary metric the model is measured by.")
    higher_is_better: bool
    baseline: float | None
    baseline_low: float | None
    baseline_high: float | None
    baseline_rows: int = Field(description="Labelled rows the baseline was measured on.")
    scores: str = Field(description="How its scores are read (probabilities, labels, ...).")
    metrics: list[str] = Field(description="The task's metrics it can be measured by.")
    missing_metrics: list[str] = Field(
        description="The task's metrics it cannot be measured by (label-only: no probabilities)."
    )
    lineage: dict[str, Any]
    note: str = Field(description="The adoption in words.")


@dataclass(frozen=True)
class AdoptRequest:
    """What to adopt and against which reference."""

    name: str
    model_uri: str
    reference: pl.DataFrame
    target: str
    time_col: str | None = None
    task: str | None = None
    tracking_uri: str | None = None  # None: DriftPilot's own tracking server
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    source: str = ""  # where the reference came from (a file, a dataset batch)
    trainer: str | None = None  # package.module:fit that fits its challengers (tools.trainer)


class Adoptions:
    """Adopts models into the managed models of ``models`` (its store, registry, audit)."""

    def __init__(self, models: Models) -> None:
        self.models = models

    def adopt(self, request: AdoptRequest, principal: str | None = None) -> AdoptionView:
        """Adopt ``request.model_uri`` as managed model ``request.name``, champion v1.

        Raises:
            ConfigError: the model exists, a bad URI, an unknown task.
            SchemaError: the reference lacks the target or time column, or the model's inputs
                do not match it (every mismatch named).
            ModelError: the model cannot be loaded or fails on the reference.
            RegistryError: the source server does not know it, or DriftPilot's registry failed.
        """
        m = self.models
        actor = normalize_principal(principal or m.settings.principal)
        self._check_new(request.name)
        if request.trainer:  # checked before anything is fetched; never imported here
            from tools.trainer import check_trainer

            check_trainer(request.trainer)
        labelled, task, reason = _reference(request)
        run_id = bootstrap_id(request.name)
        ttl_s = m.settings.lease_ttl_s
        with tempfile.TemporaryDirectory(prefix="driftpilot-adopt-") as tmp:
            lease = leases.acquire(m.store, ttl_s, request.name, run_id, wait=False)
            try:
                with leases.LeaseKeeper(m.store, request.name, run_id, lease, ttl_s):
                    view = self._adopt(request, labelled, task, reason, run_id, actor, Path(tmp))
            finally:
                m.sign()
        return view

    def _check_new(self, name: str) -> None:
        m = self.models
        try:
            m.store.get(ManagedModel, name)
        except NotFound:
            return
        # One whose adoption or bootstrap died before its first champion may be adopted again.
        if m.store.champion_generation(name) > 0:
            raise ConfigError(f"model {name!r} already exists")

    def _adopt(
        self,
        request: AdoptRequest,
        labelled: pl.DataFrame,
        task: Task,
        reason: str,
        run_id: str,
        actor: str,
        tmp: Path,
    ) -> AdoptionView:
        from tools import adopt

        m = self.models
        tracking = request.tracking_uri or m.settings.mlflow_tracking_uri
        loaded = m.ctx.call(
            run_id,
            "bootstrap",
            "adopt.load",
            lambda: adopt.load(
                request.model_uri,
                tracking,
                labelled,
                target=request.target,
                task=task,
                numeric=list(request.numeric),
                categorical=list(request.categorical),
                dst=tmp / "source",
            ),
            {"model_uri": request.model_uri, "tracking_uri": adopt.redact(tracking)},
            lambda lo: {**lo.model.spec.model_dump(mode="json"), "how": lo.how},
        )
        usable, missing = adopt.metrics_of(task, loaded.model.label_only)
        metric = adopt.primary_metric(task, usable)
        lineage = {
            **loaded.source.lineage(),
            "flavour": loaded.model.spec.flavour,
            "scores": loaded.how,
            "missing_metrics": missing,
            "adopted_by": actor,
            "adopted_at": now(),
        }
        reference, holdout, holdout_path = self._write_reference(request, labelled, run_id)
        self._write_row(request, loaded.model, task, metric, lineage, reference)
        scored = m.ctx.call(
            run_id,
            "bootstrap",
            "metrics.interval",
            lambda: _baseline(loaded.model, holdout, request.target, metric, task, m),
            {"metric": metric, "task": task, "rows": holdout.height},
        )
        version = self._register(request.name, loaded, run_id, lineage, scored.value, metric)
        note = _note(request, task, reason, metric, scored, holdout, loaded.how, missing, lineage)
        self._promote(request.name, run_id, actor, version, scored, holdout_path, reference, note)
        return AdoptionView(
            model=m.model_view(request.name),
            task=task,
            task_reason=reason,
            metric=metric,
            higher_is_better=METRICS[metric].higher_is_better,
            baseline=scored.value,
            baseline_low=scored.low,
            baseline_high=scored.high,
            baseline_rows=holdout.height,
            scores=loaded.how,
            metrics=usable,
            missing_metrics=missing,
            lineage=lineage,
            note=note,
        )

    def _write_reference(
        self, request: AdoptRequest, labelled: pl.DataFrame, run_id: str
    ) -> tuple[Path, pl.DataFrame, Path]:
        """The reference window and the rows the baseline is measured on: with a time column
        the latest ``holdout_fraction`` of them (as a bootstrap's out-of-time holdout), else
        all. Those rows calibrate the estimates made on batches without labels."""
        from tools.data import write_parquet_atomic
        from tools.train import split_holdout

        folder = self.models.ctx.model_dir(request.name)
        reference = folder / f"window-{run_id}.parquet"
        write_parquet_atomic(request.reference, reference)  # a full disk leaves no torn file
        holdout = labelled
        if request.time_col:
            fraction = self.models.policy.retraining.holdout_fraction
            _, holdout = split_holdout(labelled, request.time_col, fraction)
        holdout_path = folder / f"holdout-{run_id}.parquet"
        write_parquet_atomic(holdout, holdout_path)
        return reference, holdout, holdout_path

    def _write_row(
        self,
        request: AdoptRequest,
        model: Any,
        task: Task,
        metric: str,
        lineage: dict[str, Any],
        reference: Path,
    ) -> None:
        fields = {
            "source": request.source or request.model_uri,
            "target": request.target,
            "time_col": request.time_col or "",
            "numeric": json.dumps(model.spec.numeric),
            "categorical": json.dumps(model.spec.categorical),
            "family": model.family,
            "metric": metric,
            "task": task,
            "lineage": json.dumps(lineage),
            "trainer": request.trainer,
            "reference_path": str(reference),
            "baseline": None,
        }
        store = self.models.store
        try:
            store.update_model(request.name, **fields)  # adopted again after a failure
        except NotFound:
            store.add(ManagedModel(name=request.name, created_at=now(), **fields))

    def _register(
        self,
        name: str,
        loaded: Any,
        run_id: str,
        lineage: dict[str, Any],
        baseline: float | None,
        metric: str,
    ) -> int:
        from tools import adopt, registry

        m = self.models
        request = registry.RegisterRequest(
            name=name,
            key=f"{run_id}:adopt",
            params={"source_uri": lineage["source_uri"], "flavour": lineage["flavour"]},
            metrics={f"reference_{metric}": baseline} if baseline is not None else {},
            tags=adopt.version_tags(lineage),
        )
        info = m.ctx.mutate(
            run_id,
            "bootstrap",
            "bootstrap:register",
            "registry.register_model",
            lambda: adopt.register(loaded, request, m.settings),
            {"name": name, "key": request.key, "source_uri": lineage["source_uri"]},
            lambda v: v.model_dump(mode="json"),
            fault="after_register",
        )
        return int(info.version)

    def _promote(
        self,
        name: str,
        run_id: str,
        actor: str,
        version: int,
        scored: Any,
        holdout_path: Path,
        reference: Path,
        note: str,
    ) -> None:
        m = self.models
        m.promote_first(
            run_id,
            name,
            version,
            actor,
            scored,
            holdout_path=holdout_path,
            reference=reference,
            rationale=note,
            evidence={
                "version": version,
                "rows": scored.n_rows,
                "adopted": True,
                "metric": scored.metric,
            },
            effect={"family": m.store.get(ManagedModel, name).family, "adopted": True},
        )


def _reference(request: AdoptRequest) -> tuple[pl.DataFrame, Task, str]:
    """The reference's labelled rows, and the task (given, or inferred from the target)."""
    from tools.metrics import infer_task

    frame = request.reference
    needed = [request.target, *([request.time_col] if request.time_col else [])]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise SchemaError(f"the reference has no column(s) {missing}")
    labelled = frame.filter(pl.col(request.target).is_not_null())
    if labelled.height == 0:
        raise SchemaError(f"the reference has no labelled rows (target {request.target!r})")
    if request.task:
        task = check_task(request.task)
        return labelled, task, f"given: --task {task}"
    task, reason = infer_task(labelled[request.target])
    return labelled, task, f"inferred: {reason}"


def _baseline(
    model: Any, rows: pl.DataFrame, target: str, metric: str, task: Task, models: Models
) -> Any:
    from tools.metrics import interval

    return interval(
        metric,
        task,
        model.encode(rows[target]),
        model.predict_scores(rows),
        n_boot=models.policy.evaluator.n_boot,
        confidence=models.policy.evaluator.confidence,
        seed=models.settings.seed,
    )


def _note(
    request: AdoptRequest,
    task: Task,
    reason: str,
    metric: str,
    scored: Any,
    holdout: pl.DataFrame,
    how: str,
    missing: list[str],
    lineage: dict[str, Any],
) -> str:
    where = (
        f"the latest {holdout.height} rows of the reference by {request.time_col}"
        if request.time_col
        else f"all {holdout.height} labelled rows of the reference (no time column)"
    )
    source = request.model_uri
    if lineage.get("source_version"):
        source += f" (version {lineage['source_version']} of {lineage['registered_model']!r})"
    elif lineage.get("source_run_id"):
        source += f" (run {lineage['source_run_id']})"
    parts = [
        f"Adopted {source} by {lineage['adopted_by']} as the champion of {request.name!r}.",
        f"Task {task} ({reason}).",
        f"Scores: {how}.",
        f"Baseline {metric}={_num(scored.value)} on {where} "
        f"(interval {_num(scored.low)} to {_num(scored.high)}).",
    ]
    if missing:
        parts.append(
            f"Label-only: it gives no probabilities, so {', '.join(missing)} cannot be "
            f"measured; its primary metric is {metric}."
        )
    if not request.time_col:
        parts.append("Control runs need a time column: adopt it with --time-col to run batches.")
    return " ".join(parts)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
