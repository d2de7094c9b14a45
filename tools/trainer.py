"""The owner's training code: fit a challenger with ``package.module:fit`` in a subprocess.

``fit(train: polars.DataFrame, spec: TrainSpec) -> model`` is the owner's function. It runs in
a child process (``python -m tools._trainer_child``, the same interpreter) so that whatever it
does — raise, hang, eat memory, crash the interpreter — ends only its own step:

- the training window goes to the child as a Parquet file, the spec as JSON;
- the child gets a memory limit (``RLIMIT_AS``, set after its own runtime is loaded, before the
  owner's module is imported: ``memory_mb`` is what the owner's code may add) and the parent
  kills its whole process group once the owner's code (its import and ``fit``) ran
  ``timeout_s``;
- the child's stdout and stderr go to ``trainer.log`` in the work folder (kept: the caller
  attaches it to the challenger's MLflow run);
- the model fit returns must score the task: an sklearn-compatible estimator (``predict``, and
  ``predict_proba`` with ``classes_`` for a classifier) or an MLflow ``PythonModel``. The child
  checks it on rows of the window, saves it (cloudpickle, or ``mlflow.pyfunc.save_model``) and
  the parent loads it back as a ``TrainerModel``, a ``TrainedModel`` whose ``predict_scores``
  returns the task's score shape (binary P(1), multiclass (n, k) in ``classes`` order,
  regression predictions), read by ``tools.foreign.task_scores``.

Both kinds of model are called with a pandas frame of the spec's feature columns (numeric, then
categorical), as MLflow serves a pyfunc. Every failure is a ``TrainerFailed`` with its reason
(``driftpilot.core.errors.TRAINER_FAILURES``) and the tail of the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from driftpilot.core.errors import ConfigError, ModelError, TrainerFailed
from tools.foreign import frame_columns, task_scores
from tools.metrics import class_list
from tools.train import TrainedModel, TrainSpec

TRAINER_FAMILY = "trainer"  # the family a challenger of the owner's code is recorded under
DEFAULT_TIMEOUT_S = 1800.0
DEFAULT_MEMORY_MB = 4096
LOG_NAME, RESULT_NAME, REQUEST_NAME, TRAIN_NAME = (
    "trainer.log",
    "result.json",
    "request.json",
    "train.parquet",
)
SKLEARN_FILE, PYFUNC_DIR = "model.pkl", "model"
STARTED_NAME = "started"  # the child writes it when it turns to the owner's code
STARTUP_S = 120.0  # for the child's own start (Python, Polars, reading the window)
CHECK_ROWS = 200  # rows of the window the returned model must score before it is accepted
_TAIL_CHARS = 2000
_REFERENCE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
# What a process that ran out of memory leaves in its output: Python's MemoryError, a Rust
# (Polars) or C++ allocation failure, an OSError ENOMEM.
_OOM_MARKS = ("MemoryError", "memory allocation of", "std::bad_alloc", "Cannot allocate memory")


def check_trainer(reference: str) -> str:
    """``reference`` if it is of the form ``package.module:function`` (what a model's
    ``trainer`` stores; checked when a model is added, without importing the owner's code).

    Raises:
        ConfigError: it is not.
    """
    if not _REFERENCE.match(reference or ""):
        raise ConfigError(f"trainer {reference!r} is not of the form 'package.module:function'")
    return reference


def parse_trainer(reference: str) -> tuple[str, str]:
    """``package.module:fit`` -> (module, function).

    Raises:
        TrainerFailed: (reason ``invalid``) the reference is not of that form.
    """
    try:
        check_trainer(reference)
    except ConfigError as exc:
        raise TrainerFailed("invalid", str(exc)) from exc
    module, function = reference.split(":")
    return module, function


@dataclass
class TrainerModel(TrainedModel):
    """A model the owner's code fitted, scoring like a built-in one.

    ``booster`` holds the sklearn-compatible estimator (``kind`` 'sklearn') or the loaded
    ``mlflow.pyfunc.PyFuncModel`` (``kind`` 'pyfunc'); ``report`` stays None (the owner's code
    reports nothing we can trust as a validation score: the evaluator's holdout does)."""

    kind: str = "sklearn"
    trainer: str = ""

    @property
    def family(self) -> str:  # type: ignore[override]  # the owner's code, not a built-in family
        return TRAINER_FAMILY

    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
        """The task's scores for ``frame`` (which must hold the feature columns).

        Raises:
            ModelError: the model's output does not fit the task (shape, classes, range).
        """
        missing = [c for c in self.spec.features if c not in frame.columns]
        if missing:
            raise ModelError(f"cannot score: columns {missing} are missing")
        design = frame.select(self.spec.features).to_pandas()
        if self.kind == "pyfunc":
            raw = self.booster.predict(design)
            columns = frame_columns(raw, self.task, self.classes)
        elif self.task == "regression":
            raw, columns = self.booster.predict(design), None
        else:
            raw = self.booster.predict_proba(design)
            columns = np.asarray(self.booster.classes_).tolist()
        return task_scores(raw, self.task, self.classes, columns, frame.height)


@dataclass(frozen=True)
class TrainerResult:
    """A challenger the owner's code fitted, and where its traces are."""

    model: TrainerModel
    trainer: str
    log_path: Path  # the trainer's stdout and stderr (an artifact of the challenger's run)
    model_path: Path
    elapsed_s: float


def run_trainer(
    trainer: str,
    train: pl.DataFrame,
    spec: TrainSpec,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_mb: int | None = DEFAULT_MEMORY_MB,
    workdir: Path,
    project: Path | None = None,
) -> TrainerResult:
    """Fit a challenger with the owner's ``trainer`` (``package.module:fit``) on ``train``.

    The fit runs in a child process with ``project`` (default: the current directory) as its
    working directory and first on its import path; ``workdir`` (created) receives the
    window (the spec's features, target and time column), the spec, the log and the saved
    model.

    Raises:
        TrainerFailed: the reference is invalid, or the trainer raised, ran past ``timeout_s``,
            past ``memory_mb`` (None: no limit), crashed, or returned no usable model.
    """
    parse_trainer(trainer)
    # The model's columns only: another target of the same rows (flights' arr_delay beside
    # delayed) would leak into the owner's fit, and the model is scored on its features only.
    keep = [*spec.features, spec.target, *([spec.time_col] if spec.time_col else [])]
    train = train.select([c for c in dict.fromkeys(keep) if c in train.columns])
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in (
        RESULT_NAME,
        SKLEARN_FILE,
        STARTED_NAME,
    ):  # a retry must not read an earlier attempt's
        (workdir / stale).unlink(missing_ok=True)
    shutil.rmtree(workdir / PYFUNC_DIR, ignore_errors=True)
    train.write_parquet(workdir / TRAIN_NAME)
    request = {"trainer": trainer, "spec": spec.model_dump(mode="json"), "memory_mb": memory_mb}
    (workdir / REQUEST_NAME).write_text(json.dumps(request))
    log_path = workdir / LOG_NAME
    started = time.perf_counter()
    returncode = _run_child(workdir, log_path, timeout_s, project or Path.cwd(), spec.threads)
    elapsed = round(time.perf_counter() - started, 3)
    result = _read_result(workdir, returncode, log_path, trainer)
    model = _load(result["kind"], workdir, trainer, spec, train, log_path)
    return TrainerResult(
        model=model,
        trainer=trainer,
        log_path=log_path,
        model_path=workdir / (SKLEARN_FILE if result["kind"] == "sklearn" else PYFUNC_DIR),
        elapsed_s=elapsed,
    )


# The native thread pools a trainer's libraries start (OpenMP: scikit-learn, LightGBM, XGBoost;
# BLAS): sized to the run's thread budget unless the environment sizes them. Left at the core
# count, a spinning OpenMP pool on a busy machine made a 3,000-row fit 5x slower.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _child_env(project: Path, threads: int) -> dict[str, str]:
    """The parent's environment with the owner's project and DriftPilot's root (for the child
    module) first on the import path, and the thread pools sized to ``threads``."""
    root = Path(__file__).resolve().parent.parent
    paths = [str(project), str(root), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
    pools = {name: str(threads) for name in _THREAD_VARIABLES}
    return {**pools, **os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def _run_child(
    workdir: Path, log_path: Path, timeout_s: float, project: Path, threads: int
) -> int | None:
    """Run the child to its end or its time limit; None when it was killed for the time."""
    # Unbuffered (-u): a child killed for its time still leaves its output in the log.
    command = [sys.executable, "-u", "-m", "tools._trainer_child", str(workdir)]
    with log_path.open("wb") as log:
        # Its own session: its process group is the child and whatever the trainer started.
        child = subprocess.Popen(
            command,
            cwd=project,
            env=_child_env(project, threads),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return _wait(child, workdir / STARTED_NAME, timeout_s)
        finally:
            _kill_group(child)


def _wait(child: subprocess.Popen[bytes], started: Path, timeout_s: float) -> int | None:
    """The child's exit code, or None once it ran past its time: ``timeout_s`` from the moment
    it turns to the owner's code (it writes ``started``), so that a slow start of DriftPilot's
    own runtime on a busy machine does not eat the trainer's time; the start itself gets
    ``STARTUP_S``."""
    deadline = time.monotonic() + STARTUP_S
    counting = False
    while (code := child.poll()) is None:
        if not counting and started.exists():
            counting, deadline = True, time.monotonic() + timeout_s
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    return code


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    """Kill what is left of the child's process group (all of it after a timeout; after a
    normal end, whatever the trainer started and did not stop)."""
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def log_tail(log_path: Path, limit: int = _TAIL_CHARS) -> str:
    """The end of the trainer's log (what an audit row can carry)."""
    if not log_path.exists():
        return ""
    text = log_path.read_bytes()[-limit * 4 :].decode("utf-8", errors="replace")
    return text[-limit:].strip()


def _result_file(path: Path) -> dict[str, Any] | None:
    """The child's result.json, or None when it is not one (the owner's code can write there)."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or not isinstance(found.get("ok"), bool):
        return None
    if not found["ok"] and not {"reason", "message"} <= found.keys():
        return None
    return found


def _read_result(
    workdir: Path, returncode: int | None, log_path: Path, trainer: str
) -> dict[str, Any]:
    """The child's own account (result.json), or the parent's reading of how it died."""
    tail = log_tail(log_path)
    path = workdir / RESULT_NAME
    if returncode is None:
        reason, message = "timeout", "ran past its time limit and was killed"
        if not (workdir / STARTED_NAME).exists():
            message = f"did not start within {STARTUP_S:.0f} s and was killed"
    elif path.exists():
        result = _result_file(path)
        if result is None:
            reason, message = "crashed", f"exited with code {returncode} with an unreadable result"
        elif result["ok"] and returncode == 0:
            return result
        elif result["ok"]:  # it saved a model, then died on its way out: not to be trusted
            reason, message = "crashed", f"exited with code {returncode} after saving its model"
        else:
            reason, message = result["reason"], result["message"]
    elif any(mark in tail for mark in _OOM_MARKS):
        reason, message = "out_of_memory", "ran out of memory (its memory limit)"
    elif returncode < 0:
        reason, message = "crashed", f"was killed by signal {signal.Signals(-returncode).name}"
    else:
        reason, message = "crashed", f"exited with code {returncode} without a result"
    raise TrainerFailed(reason, f"trainer {trainer} {message}", tail, str(log_path))


def _load(
    kind: str,
    workdir: Path,
    trainer: str,
    spec: TrainSpec,
    train: pl.DataFrame,
    log_path: Path,
) -> TrainerModel:
    """Load the child's saved model here and check it scores rows of the window."""
    classes = class_list(train[spec.target]) if spec.task == "multiclass" else []
    try:
        if kind == "sklearn":
            import cloudpickle

            with (workdir / SKLEARN_FILE).open("rb") as handle:
                booster = cloudpickle.load(handle)
        else:
            import mlflow.pyfunc

            booster = mlflow.pyfunc.load_model(str(workdir / PYFUNC_DIR))
        model = TrainerModel(
            spec=spec, booster=booster, classes=classes, kind=kind, trainer=trainer
        )
        model.predict_scores(train.head(CHECK_ROWS))
    except Exception as exc:  # unpickling and a foreign model's predict raise anything
        raise TrainerFailed(
            "unusable",
            f"trainer {trainer}: its saved model cannot be loaded and scored here: "
            f"{type(exc).__name__}: {exc}",
            log_tail(log_path),
            str(log_path),
        ) from exc
    return model
