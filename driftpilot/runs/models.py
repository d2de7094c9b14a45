"""Managed models: adding one (its bootstrap trains, registers and promotes the first
champion, through the one champion-move transaction of ``tools.champion``) and viewing them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import func, select

from agents.context import RunContext
from driftpilot.core import tasks
from driftpilot.core.errors import ConfigError, NotFound, SchemaError
from driftpilot.core.identity import normalize_principal
from driftpilot.core.policy import Policy
from driftpilot.core.settings import Settings
from driftpilot.core.tasks import PRIMARY, Task
from driftpilot.runs import leases
from driftpilot.runs.views import ModelView
from driftpilot.store import AuditStore
from driftpilot.store.audit import now
from driftpilot.store.models import ChampionChange, ManagedModel


def bootstrap_id(model: str) -> str:
    """The run id of a model's bootstrap (at most 40 characters, the audit's run id width)."""
    readable = f"bootstrap-{model}"
    if len(readable) <= 40:
        return readable
    return f"bootstrap-{hashlib.sha256(model.encode()).hexdigest()[:30]}"


@dataclass(frozen=True)
class TaskChoice:
    """A new model's task and primary metric, and why (said to the person adding it)."""

    task: Task
    metric: str
    note: str


def choose_task(
    initial: pl.DataFrame, target: str, task: str | None = None, metric: str | None = None
) -> TaskChoice:
    """The task (``task``, or inferred from the target's values) and the primary metric
    (``metric``, or the task's primary one), checked together before anything is trained.

    Raises:
        ConfigError: an unknown task, or a metric that does not measure the task (the error
            names the task's metrics).
        SchemaError: the task is to be inferred and ``initial`` has no ``target`` column.
        DataError: the target holds fewer than two values (nothing to infer or learn).
    """
    from tools.metrics import infer_task

    if task is None:
        if target not in initial.columns:
            raise SchemaError(f"the initial window has no target column {target!r}")
        chosen, reason = infer_task(initial[target])
        why = f"task {chosen} inferred: {reason}"
    else:
        chosen, why = tasks.check_task(task), f"task {task} as given"
    name = metric or PRIMARY[chosen]
    info = tasks.metric(name, chosen)
    direction = "higher" if info.higher_is_better else "lower"
    source = "as given" if metric else f"the {chosen} primary"
    return TaskChoice(chosen, name, f"{why}; metric {name} ({source}, {direction} is better)")


class Models:
    """Adds managed models and reads them; ``sign`` signs the audit heads after a bootstrap."""

    def __init__(
        self,
        store: AuditStore,
        settings: Settings,
        policy: Policy,
        ctx: RunContext,
        sign: Callable[[], str],
    ) -> None:
        self.store, self.settings, self.policy, self.ctx = store, settings, policy, ctx
        self.sign = sign

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
        """Register a managed model and its first champion, trained on ``initial``.

        ``task`` None is inferred from the target's values; ``metric`` None is the task's
        primary metric (``choose_task``: the view's ``note`` says which and why). The
        bootstrap champion is promoted by the person adding the model; the decision is
        audited like any promotion.

        Raises:
            ConfigError: the model exists, an unknown task, or a metric of another task
                (nothing is registered).
        """
        actor = normalize_principal(principal or self.settings.principal)
        choice = choose_task(initial, target, task, metric)
        if trainer:  # the owner's package.module:fit retrains it (tools.trainer)
            from tools.trainer import check_trainer

            check_trainer(trainer)
        try:
            self.store.get(ManagedModel, name)
            if self.store.champion_generation(name) > 0:
                raise ConfigError(f"model {name!r} already exists")
            # Its bootstrap died or failed before the first champion: adding it again
            # finishes it (every registry step is idempotent per bootstrap id).
        except NotFound:
            pass
        run_id = bootstrap_id(name)
        ttl_s = self.settings.lease_ttl_s
        lease = leases.acquire(self.store, ttl_s, name, run_id, wait=False)
        try:
            with leases.LeaseKeeper(self.store, name, run_id, lease, ttl_s):
                self.bootstrap(
                    name,
                    initial,
                    run_id,
                    actor,
                    target=target,
                    time_col=time_col,
                    numeric=numeric,
                    categorical=categorical,
                    family=family,
                    choice=choice,
                    source=source,
                    trainer=trainer,
                )
        finally:
            self.sign()
        return self.model_view(name).model_copy(update={"note": choice.note})

    def bootstrap(
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
        choice: TaskChoice,
        source: str,
        trainer: str | None = None,
    ) -> None:
        from tools import registry
        from tools.data import write_parquet_atomic
        from tools.metrics import interval
        from tools.train import split_holdout, train_model

        task, metric = choice.task, choice.metric

        folder = self.ctx.model_dir(name)
        reference = folder / f"window-{run_id}.parquet"
        # whole or not at all: a full disk must not leave a file that reads as a broken model
        write_parquet_atomic(initial, reference)
        fields = {
            "source": source,
            "target": target,
            "time_col": time_col,
            "numeric": json.dumps(numeric),
            "categorical": json.dumps(categorical),
            "family": family,
            "task": task,
            "metric": metric,
            "reference_path": str(reference),
            "baseline": None,
            "trainer": trainer,
        }
        try:
            self.store.update_model(name, **fields)  # a bootstrap added again after a failure
        except NotFound:
            self.store.add(ManagedModel(name=name, created_at=now(), **fields))
        spec = self.ctx.train_spec(name, family)  # type: ignore[arg-type]
        # As for every challenger, the latest rows are held out of training: the champion's
        # score on them is its out-of-time baseline, and they calibrate its probabilities
        # for the estimates on batches whose labels come later.
        labelled = initial.filter(pl.col(target).is_not_null())
        fit, holdout = split_holdout(labelled, time_col, self.policy.retraining.holdout_fraction)
        holdout_path = folder / f"holdout-{run_id}.parquet"
        write_parquet_atomic(holdout, holdout_path)
        model = self.ctx.call(
            run_id,
            "bootstrap",
            "train.train_model",
            lambda: train_model(fit, spec),
            {"rows": fit.height, "holdout_rows": holdout.height, "family": family, "task": task},
            lambda m: m.report.model_dump() if m.report else {},
        )
        scored = self.ctx.call(
            run_id,
            "bootstrap",
            "metrics.interval",
            lambda: interval(
                metric,
                task,
                model.encode(holdout[target]),
                model.predict_scores(holdout),
                n_boot=self.policy.evaluator.n_boot,
                confidence=self.policy.evaluator.confidence,
                seed=self.settings.seed,
            ),
            {"metric": metric, "task": task, "holdout_rows": holdout.height},
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
        baseline = scored.value
        self.promote_first(
            run_id,
            name,
            version,
            actor,
            scored,
            holdout_path=holdout_path,
            reference=reference,
            rationale=f"Initial champion v{version}, a {task} {family} model, trained on "
            f"{fit.height} rows by {actor} ({choice.note}); out-of-time {metric}={baseline} "
            f"on the latest {holdout.height} rows (interval {scored.low} to {scored.high}).",
            evidence={"version": version, "rows": initial.height, "task": task},
            effect={"family": family, "task": task, "metric": metric},
        )

    def promote_first(
        self,
        run_id: str,
        name: str,
        version: int,
        actor: str,
        scored: Any,
        *,
        holdout_path: Path,
        reference: Path,
        rationale: str,
        evidence: dict[str, Any],
        effect: dict[str, Any],
    ) -> None:
        """Make ``version`` the first champion of ``name`` (trained here or adopted), its
        baseline ``scored`` (a ``tools.metrics.MetricInterval``) on ``holdout_path``: one
        champion move, audited as the bootstrap's promotion by ``actor``."""
        from tools import champion

        champion.promote(
            self.ctx,
            run_id,
            name,
            version,
            expected=None,
            actor=actor,
            kind="bootstrap",
            settle=lambda moved: champion.Record(
                version=version,
                previous=moved.previous,
                model_fields={
                    "baseline": scored.value,
                    "baseline_low": scored.low,
                    "baseline_high": scored.high,
                    "holdout_path": str(holdout_path),
                },
                rationale=rationale,
                evidence=evidence,
                effect={
                    "version": version,
                    "window_path": str(reference),
                    "baseline": scored.value,
                    **effect,
                },
            ),
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
        return _view(row, last[0].version if last else None)

    def list_models(self) -> list[ModelView]:
        """Every managed model by name, in two queries (the models, their latest champion
        change)."""
        rows = self.store.list_rows(ManagedModel, order=ManagedModel.name)
        if not rows:
            return []
        latest = select(func.max(ChampionChange.id)).group_by(ChampionChange.model)
        champions = {
            c.model: c.version
            for c in self.store.list_rows(ChampionChange, ChampionChange.id.in_(latest))
        }
        return [_view(r, champions.get(r.name)) for r in rows]


def _view(row: ManagedModel, champion: int | None) -> ModelView:
    known = tasks.METRICS.get(row.metric)
    return ModelView(
        name=row.name,
        target=row.target,
        family=row.family,
        task=row.task,
        metric=row.metric,
        higher_is_better=known.higher_is_better if known else True,
        champion=champion,
        baseline=row.baseline,
        baseline_low=row.baseline_low,
        baseline_high=row.baseline_high,
        features=json.loads(row.numeric) + json.loads(row.categorical),
        created_at=row.created_at,
    )
