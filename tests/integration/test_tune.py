"""Real Optuna studies in SQLite storage."""

from __future__ import annotations

import threading
from pathlib import Path

import polars as pl
import pytest

from driftpilot.core.errors import TuningError
from driftpilot.core.settings import Settings
from tools.datasets import FLIGHTS
from tools.train import TrainSpec
from tools.tune import TuneBudget, tune

pytestmark = pytest.mark.integration


def spec(family: str = "lightgbm") -> TrainSpec:
    return TrainSpec(
        family=family,
        target=FLIGHTS.target,
        numeric=FLIGHTS.numeric,  # type: ignore[arg-type]
        categorical=FLIGHTS.categorical,
        time_col=FLIGHTS.time_col,
        max_rounds=150,
    )


def test_study_is_resumable_by_name(jan_sample: pl.DataFrame, settings: Settings) -> None:
    first = tune(
        jan_sample,
        spec(),
        study_name="s",
        storage=settings.optuna_storage,
        budget=TuneBudget(n_trials=8, report_every=5),
    )
    assert first.trials_run_now == 8 and first.n_complete + first.n_pruned == 8
    assert first.n_complete >= 5 and first.best_value < 0.7
    assert set(first.best_params) == {
        "learning_rate",
        "num_leaves",
        "min_child_samples",
        "feature_fraction",
        "bagging_fraction",
        "lambda_l2",
    }
    again = tune(
        jan_sample,
        spec(),
        study_name="s",
        storage=settings.optuna_storage,
        budget=TuneBudget(n_trials=10, report_every=5),
    )
    assert again.trials_run_now == 2 and len(again.trials) == 10
    assert again.best_value <= first.best_value
    done = tune(
        jan_sample,
        spec(),
        study_name="s",
        storage=settings.optuna_storage,
        budget=TuneBudget(n_trials=10),
    )
    assert done.trials_run_now == 0


def test_catboost_space_and_time_budget(jan_sample: pl.DataFrame, settings: Settings) -> None:
    result = tune(
        jan_sample.head(2000),
        spec("catboost"),
        study_name="c",
        storage=settings.optuna_storage,
        budget=TuneBudget(n_trials=50, timeout_s=4),
    )
    assert 1 <= result.trials_run_now < 50
    assert set(result.best_params) == {"learning_rate", "depth", "l2_leaf_reg"}


def test_unusable_storage(jan_sample: pl.DataFrame) -> None:
    with pytest.raises(TuningError, match="cannot open"):
        tune(
            jan_sample,
            spec(),
            study_name="s",
            storage="notadb://nowhere",
            budget=TuneBudget(n_trials=1),
        )


def test_studies_opened_at_once_on_a_fresh_sqlite_storage(tmp_path: Path) -> None:
    """Two runs of one process (serve's workers, the demo's second act) may open their first
    studies together: without the opener lock, Optuna's schema stamp failed 5 of 5 times."""
    import optuna

    from tools.tune import _open_study

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    start = threading.Barrier(4)
    errors: list[Exception] = []

    def open_one(i: int) -> None:
        start.wait()
        try:
            _open_study(optuna, f"study-{i}", storage, seed=1)
        except TuningError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {f"study-{i}" for i in range(4)}
