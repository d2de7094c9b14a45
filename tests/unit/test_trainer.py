"""The owner's trainer (tools.trainer.run_trainer) on real flights: each fixture trainer of
tests/fixtures/trainers runs in its own process, as a retrain would run it; the good ones give
a challenger that scores later flights for every task, the bad ones a TrainerFailed with the
reason and the log's tail."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from driftpilot.core.errors import TrainerFailed
from driftpilot.core.tasks import PRIMARY, Task
from tools.datasets import FLIGHT_CATEGORICAL, FLIGHT_NUMERIC
from tools.metrics import class_list, value
from tools.train import TrainedModel, TrainSpec
from tools.trainer import TRAINER_FAMILY, TrainerModel, TrainerResult, run_trainer

TARGETS: dict[Task, str] = {
    "binary": "delayed",
    "multiclass": "delay_class",
    "regression": "arr_delay",
}
FIXTURES = "tests.fixtures.trainers"


@pytest.fixture(scope="module")
def flights_jan(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return months["2013-01"].sample(n=4000, seed=11, shuffle=True)


@pytest.fixture(scope="module")
def window(flights_jan: pl.DataFrame) -> pl.DataFrame:
    """2,500 January flights: the window a trainer fits."""
    return flights_jan.head(2500).sort("time_hour")


@pytest.fixture(scope="module")
def later(flights_jan: pl.DataFrame) -> pl.DataFrame:
    """1,500 other January flights: rows none of the trainers saw."""
    return flights_jan.tail(1500)


def spec_for(task: Task) -> TrainSpec:
    return TrainSpec(
        task=task,
        target=TARGETS[task],
        numeric=FLIGHT_NUMERIC,
        categorical=FLIGHT_CATEGORICAL,
        time_col="time_hour",
    )


def run(reference: str, window: pl.DataFrame, task: Task, tmp_path: Path, **limits: Any) -> Any:
    limits = {"timeout_s": 120.0, "memory_mb": 2048, **limits}
    return run_trainer(
        f"{FIXTURES}.{reference}", window, spec_for(task), workdir=tmp_path / "work", **limits
    )


def better_than_chance(model: TrainedModel, later: pl.DataFrame, task: Task) -> None:
    """The challenger learned something: its primary metric on unseen flights beats the
    no-information model (ROC AUC 0.5, by more than 3 standard errors at 1,500 rows; the
    target's standard deviation, a constant's RMSE)."""
    scores = model.predict_scores(later)
    target = later[TARGETS[task]]
    y = model.encode(target)
    if task == "multiclass":
        assert scores.shape == (later.height, len(model.classes))
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
    else:
        assert scores.shape == (later.height,)
    score = value(PRIMARY[task], task, y, scores)
    assert score is not None
    if task == "regression":
        spread = float(np.std(target.drop_nulls().to_numpy()))
        assert score < spread, (score, spread)
    else:
        assert score > 0.55, score


@pytest.fixture(scope="module")
def sklearn_run(
    window: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Task], TrainerResult]:
    """The sklearn trainer's result per task, fitted once for the module (the sklearn test
    checks it, the pyfunc test compares its own model with it)."""
    done: dict[Task, TrainerResult] = {}

    def get(task: Task) -> TrainerResult:
        if task not in done:
            done[task] = run("sklearn_fit:fit", window, task, tmp_path_factory.mktemp(task))
        return done[task]

    return get


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_an_sklearn_trainer_gives_a_challenger_for_every_task(
    task: Task,
    window: pl.DataFrame,
    later: pl.DataFrame,
    sklearn_run: Callable[[Task], TrainerResult],
) -> None:
    result = sklearn_run(task)
    model = result.model
    assert isinstance(model, TrainerModel) and isinstance(model, TrainedModel)
    assert (model.kind, model.family, model.task) == ("sklearn", TRAINER_FAMILY, task)
    assert model.classes == (class_list(window["delay_class"]) if task == "multiclass" else [])
    better_than_chance(model, later, task)
    log = result.log_path.read_text()
    assert f"owner's sklearn trainer: {window.height} rows, task {task}" in log
    given = pl.read_parquet(result.log_path.parent / "train.parquet")  # what fit was given
    assert set(given.columns) == {*spec_for(task).features, TARGETS[task], "time_hour"}
    workdir = result.log_path.parent  # the workdir run_trainer was given
    assert workdir.name == "work" and result.model_path.is_file()
    assert result.model_path.parent == workdir


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_pyfunc_trainer_scores_as_its_estimator_would(
    task: Task,
    window: pl.DataFrame,
    later: pl.DataFrame,
    tmp_path: Path,
    sklearn_run: Callable[[Task], TrainerResult],
) -> None:
    """The pyfunc wraps the very pipeline sklearn_fit fits (deterministic): its scores equal
    that estimator's, though it answers P(1) alone (binary) or class columns in reverse order
    named as text (multiclass)."""
    result = run("pyfunc_fit:fit", window, task, tmp_path)
    assert result.model.kind == "pyfunc" and result.model_path.is_dir()
    better_than_chance(result.model, later, task)
    plain = sklearn_run(task).model
    np.testing.assert_allclose(result.model.predict_scores(later), plain.predict_scores(later))


def test_a_trainer_that_raises_fails_with_its_error_and_log(
    window: pl.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(TrainerFailed) as failed:
        run("raises:fit", window, "binary", tmp_path)
    err = failed.value
    assert err.reason == "raised"
    assert "KeyError" in str(err) and "route_congestion" in str(err)
    assert "Traceback" in err.log_tail and "loading the feature store" in err.log_tail
    assert err.log_path is not None and err.log_tail in Path(err.log_path).read_text()


def test_a_hanging_trainer_is_killed_with_what_it_started(
    window: pl.DataFrame, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    started = time.monotonic()
    with pytest.raises(TrainerFailed) as failed:
        run("hangs:fit", window, "binary", tmp_path, timeout_s=1.5, project=project)
    assert failed.value.reason == "timeout"
    # 1.5 s from the moment the owner's code ran, after the child's own start (slow when busy).
    assert 1.5 <= time.monotonic() - started < 1.5 + 30.0
    assert "waiting for a lock that never frees" in failed.value.log_tail
    helper = int((project / "helper.pid").read_text())  # the trainer's own child process
    assert not alive(helper)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and not yet reaped by init, does not)."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z":
            return False
        time.sleep(0.1)
    return True


def test_a_trainer_past_its_memory_limit_fails_as_out_of_memory(
    window: pl.DataFrame, tmp_path: Path
) -> None:
    """oom:fit holds 3 GB before fitting; 256 MB beyond the runtime stops it."""
    with pytest.raises(TrainerFailed) as failed:
        run("oom:fit", window, "regression", tmp_path, memory_mb=256)
    assert failed.value.reason == "out_of_memory"
    assert "memory limit: 256 MB" in failed.value.log_tail
    assert "held" not in failed.value.log_tail  # it never got its 3 GB


def test_a_trainer_whose_process_dies_is_read_from_its_exit(
    window: pl.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(TrainerFailed) as failed:
        run("crashes:fit", window, "binary", tmp_path)
    assert failed.value.reason == "crashed"
    assert "killed by signal SIGKILL" in str(failed.value)
    assert "calling into a native library" in failed.value.log_tail


@pytest.mark.parametrize(
    ("reference", "task", "lacks"),
    [
        ("unusable:fit", "regression", "dict, which lacks predict"),
        ("unusable:fit_labels_only", "binary", "RidgeClassifier, which lacks predict_proba"),
    ],
)
def test_a_trainer_returning_what_cannot_score_is_unusable(
    reference: str, task: Task, lacks: str, window: pl.DataFrame, tmp_path: Path
) -> None:
    with pytest.raises(TrainerFailed) as failed:
        run(reference, window, task, tmp_path)
    assert failed.value.reason == "unusable"
    assert lacks in str(failed.value)


def test_a_bad_reference_fails_before_any_process(window: pl.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(TrainerFailed) as failed:
        run_trainer("fit.py", window, spec_for("binary"), workdir=tmp_path / "work")
    assert failed.value.reason == "invalid"
    assert not (tmp_path / "work").exists()
    with pytest.raises(TrainerFailed) as failed:
        run("raises:no_such_fit", window, "binary", tmp_path)
    assert failed.value.reason == "invalid" and "no function 'no_such_fit'" in str(failed.value)


def test_a_failed_trainer_routes_the_run_to_its_report_as_challenger_failed() -> None:
    from graphs.control import run_outcome
    from graphs.state import ControlState, after_retraining

    failed: ControlState = {
        "ingestion": {"action": "accept"},
        "drift": {"action": "retrain"},
        "retraining": {"failed": True, "reason": "timeout", "window": 3},
    }
    assert after_retraining(failed) == "report"
    assert run_outcome(failed) == "challenger_failed"
    assert after_retraining({"retraining": {"window": 3, "family": "trainer"}}) == "evaluator"


@pytest.mark.parametrize("written", ['{"ok": tr', '["ok"]', '{"ok": false}', ""])
def test_a_torn_or_foreign_result_file_is_a_crash_not_an_error(
    tmp_path: Path, written: str
) -> None:
    from tools.trainer import LOG_NAME, RESULT_NAME, _read_result

    (tmp_path / RESULT_NAME).write_text(written)  # a child killed mid-write, or the owner's file
    (tmp_path / LOG_NAME).write_text("fitting...\n")
    with pytest.raises(TrainerFailed) as failed:
        _read_result(tmp_path, 0, tmp_path / LOG_NAME, "owner.train:fit")
    assert failed.value.reason == "crashed" and "unreadable result" in str(failed.value)
