"""Tuning tools: an Optuna study over a model family's hyper-parameters.

TPE sampling, median pruning on the validation loss of the model's task
(``driftpilot.core.tasks.TRAINING_LOSS``: log loss for binary and multiclass, RMSE for
regression) reported every few boosting rounds, RDB storage (SQLite under the home directory
by default, any SQLAlchemy URL works), resumable by study name: calling again with the same
name continues the same study until the trial budget is reached. Optuna is imported lazily.

Several processes (on several machines, with a PostgreSQL storage) may tune one study at once:
each stops when the study's finished and running trials reach the budget, so together they run
the budget, at most one trial over per extra process (two may start the last trial at once).
Optuna numbers trials under a row lock of the study, so no number is given twice.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import ModelError, TuningError
from driftpilot.core.tasks import TRAINING_LOSS
from tools.train import Family, ParamValue, TrainSpec, train_model


class TuneBudget(BaseModel):
    """How much search to spend."""

    n_trials: int = Field(
        20, ge=1, le=500, description="Total finished trials the study should hold."
    )
    timeout_s: float | None = Field(None, gt=0, description="Stop starting new trials after this.")
    report_every: int = Field(10, ge=1, description="Report validation loss every N rounds.")


class TrialSummary(BaseModel):
    number: int
    state: str = Field(description="COMPLETE, PRUNED or FAIL.")
    value: float | None = Field(description="Validation loss of the task (lower is better).")
    params: dict[str, ParamValue]


class TuneResult(BaseModel):
    """Outcome of a (possibly resumed) study."""

    study_name: str
    storage: str
    family: Family
    best_value: float = Field(description="Best validation loss of the task (lower is better).")
    best_params: dict[str, ParamValue] = Field(description="Parameters of the best trial.")
    best_trial: int
    n_complete: int
    n_pruned: int
    n_failed: int
    trials_run_now: int = Field(description="Trials run by this call (0 when the budget was met).")
    elapsed_s: float
    trials: list[TrialSummary]


def search_space(trial: Any, family: Family) -> dict[str, ParamValue]:
    """Sample one parameter set for a family (the space the optimizer agent can search).

    One space serves every task: the parameters bound tree shape, sampling and
    regularisation, none of which depends on the objective (LightGBM's and CatBoost's
    objectives per task are set by ``tools.train``)."""
    if family == "lightgbm":
        return {
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 200, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        }
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "depth": trial.suggest_int("depth", 3, 8),
        "l2_leaf_reg": trial.suggest_float("l2_leaf_reg", 0.5, 20.0, log=True),
    }


def tune(
    frame: pl.DataFrame,
    spec: TrainSpec,
    *,
    study_name: str,
    storage: str,
    budget: TuneBudget | None = None,
) -> TuneResult:
    """Search hyper-parameters of ``spec.family`` on ``frame``, minimising the validation loss
    of ``spec.task`` (log loss, or RMSE for regression).

    Args:
        frame: the training window (split into train/validation as ``train_model`` does).
        spec: columns, family and fitting budget; its ``params`` are overridden per trial.
        study_name: name of the study; an existing study of that name is resumed.
        storage: Optuna RDB URL, e.g. ``sqlite:///.driftpilot/optuna.db``.
        budget: total trials, wall-time limit, reporting interval.

    Returns:
        TuneResult with the best parameters, counts of complete/pruned/failed trials, and
        every trial's summary.

    Raises:
        TuningError: the storage is unusable, or no trial completed.
    """
    import optuna

    budget = budget or TuneBudget()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(optuna, study_name, storage, spec.seed)
    started = time.perf_counter()
    ran = _SharedBudget(budget.n_trials, optuna)
    left = budget.n_trials - ran.done(study)
    if left > 0:
        study.optimize(
            _objective(frame, spec, budget.report_every),
            n_trials=left,
            timeout=budget.timeout_s,
            catch=(ModelError,),
            callbacks=[ran],
            gc_after_trial=False,
        )
    return _summarise(
        study, optuna, storage, spec.family, ran.finished, time.perf_counter() - started
    )


class _SharedBudget:
    """An Optuna callback: counts the trials this call finished, and stops the study in this
    process once finished plus running trials (other processes' included) reach the budget.
    A trial left RUNNING by a killed process counts as taken until Optuna fails it."""

    def __init__(self, n_trials: int, optuna: Any) -> None:
        self.n_trials = n_trials
        state = optuna.trial.TrialState
        self.done_states = (state.COMPLETE, state.PRUNED)
        self.taken_states = (state.COMPLETE, state.PRUNED, state.RUNNING)
        self.finished = 0

    def done(self, study: Any) -> int:
        return len(study.get_trials(deepcopy=False, states=self.done_states))

    def taken(self, study: Any) -> int:
        """Trials that count against the budget: finished, or being run by someone now."""
        return len(study.get_trials(deepcopy=False, states=self.taken_states))

    def __call__(self, study: Any, trial: Any) -> None:
        if trial.state in self.done_states:
            self.finished += 1
        if self.taken(study) >= self.n_trials:
            study.stop()


def _open_study(optuna: Any, name: str, storage: str, seed: int) -> Any:
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        with _one_opener_at_a_time(storage):
            return optuna.create_study(
                study_name=name,
                storage=storage,
                load_if_exists=True,
                direction="minimize",
                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
                pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=20),
            )
    except Exception as exc:  # SQLAlchemy/optuna raise many types for a bad URL
        raise TuningError(f"cannot open Optuna study {name!r} at {storage}: {exc}") from exc


# Other storages (SQLite): one opener at a time within the process. Two runs tuning at once
# in one process (serve's run workers, the demo's second act) on a fresh SQLite storage both
# stamped Optuna's alembic_version: one failed on its UNIQUE constraint (TuningError).
_OPENING = threading.Lock()


@contextmanager
def _one_opener_at_a_time(storage: str) -> Iterator[None]:
    """On PostgreSQL, hold an advisory lock while the study is opened: Optuna creates its
    tables and the study without one, and two workers starting on a fresh storage at once
    would both run CREATE TABLE (one fails on the catalog's unique index). Elsewhere, a lock
    of this process."""
    if not storage.startswith("postgresql"):
        with _OPENING:
            yield
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(storage, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            key = zlib.crc32(b"driftpilot:optuna-open")
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


def _objective(frame: pl.DataFrame, spec: TrainSpec, report_every: int) -> Any:
    import optuna

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial, spec.family)
        pruned = False

        def report(step: int, loss: float) -> bool:
            nonlocal pruned
            trial.report(loss, step)
            pruned = trial.should_prune()
            return not pruned

        model = train_model(
            frame,
            spec.model_copy(update={"params": params}),
            on_iteration=report,
            report_every=report_every,
        )
        if pruned:
            raise optuna.TrialPruned()
        assert model.report is not None
        for name, value in model.report.valid.metrics.items():
            trial.set_user_attr(f"valid_{name}", value)
        trial.set_user_attr("best_iteration", model.report.best_iteration)
        loss = model.report.valid.get(TRAINING_LOSS[spec.task])
        if loss is None:
            raise ModelError(
                f"trial {trial.number}: the validation {TRAINING_LOSS[spec.task]} is undefined"
            )
        return loss

    return objective


def _summarise(
    study: Any, optuna: Any, storage: str, family: Family, ran: int, elapsed: float
) -> TuneResult:
    trials = study.get_trials(deepcopy=False)
    state = optuna.trial.TrialState
    complete = [t for t in trials if t.state == state.COMPLETE]
    if not complete:
        raise TuningError(f"study {study.study_name!r} has no completed trial")
    best = study.best_trial
    return TuneResult(
        study_name=study.study_name,
        storage=storage,
        family=family,
        best_value=float(best.value),
        best_params=dict(best.params),
        best_trial=best.number,
        n_complete=len(complete),
        n_pruned=sum(t.state == state.PRUNED for t in trials),
        n_failed=sum(t.state == state.FAIL for t in trials),
        trials_run_now=ran,
        elapsed_s=round(elapsed, 3),
        trials=[
            TrialSummary(number=t.number, state=t.state.name, value=t.value, params=dict(t.params))
            for t in trials
        ],
    )
