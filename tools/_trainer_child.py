"""The child process of ``tools.trainer.run_trainer``: ``python -m tools._trainer_child WORKDIR``.

It reads the window and the spec, limits its own address space, imports the owner's module,
calls ``fit``, checks the returned model scores rows of the window for the task, saves it, and
writes ``result.json``: ``{"ok": true, "kind": "sklearn" | "pyfunc"}`` or ``{"ok": false,
"reason": ..., "message": ...}``. Its stdout and stderr are the trainer's log (tracebacks
included), which the parent keeps. A death it cannot report (a signal, an abort on a failed
allocation) the parent reads from the exit code and the log.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from tools.metrics import class_list
from tools.train import TrainSpec
from tools.trainer import (
    CHECK_ROWS,
    PYFUNC_DIR,
    REQUEST_NAME,
    RESULT_NAME,
    SKLEARN_FILE,
    STARTED_NAME,
    TRAIN_NAME,
    TrainerModel,
    parse_trainer,
)

T = TypeVar("T")


class _Failed(Exception):
    """A failure of the trainer, with the reason the parent reports."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _stage(reason: str, what: str, step: Callable[[], T]) -> T:
    """Run one step of the owner's code; what it raises becomes ``reason`` (running out of
    memory is told apart), with the traceback in the log."""
    try:
        return step()
    except _Failed:
        raise
    except (Exception, SystemExit) as exc:  # the owner's code may raise anything, even exit
        traceback.print_exc()
        out_of_memory = isinstance(exc, MemoryError) or (
            isinstance(exc, OSError) and exc.errno == errno.ENOMEM
        )
        if out_of_memory:
            raise _Failed("out_of_memory", f"ran out of memory while {what}") from exc
        raise _Failed(reason, f"raised while {what}: {type(exc).__name__}: {exc}") from exc


def limit_memory(memory_mb: int | None) -> None:
    """Cap the address space at what the runtime holds now plus ``memory_mb``: Polars' thread
    pool alone reserves gigabytes of address space it never touches, so a bare cap would
    measure the runtime rather than the owner's code."""
    if memory_mb is None:
        return
    import resource

    now = _address_space()
    cap = now + memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    print(f"[driftpilot] memory limit: {memory_mb} MB beyond the runtime's {now >> 20} MB")


def _address_space() -> int:
    """This process's address space in bytes (0 where /proc is not there)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0
    for line in status.read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def load_fit(reference: str) -> Callable[..., Any]:
    import importlib

    module_name, function = parse_trainer(reference)
    module = _stage(
        "raised", f"importing {module_name}", lambda: importlib.import_module(module_name)
    )
    fit = getattr(module, function, None)
    if not callable(fit):
        raise _Failed("invalid", f"module {module_name} has no function {function!r}")
    return fit


def _python_model_class() -> type | None:
    """MLflow's PythonModel if MLflow was imported (a pyfunc model's module imports it)."""
    module = sys.modules.get("mlflow.pyfunc.model")
    return getattr(module, "PythonModel", None) if module else None


def save(model: Any, spec: TrainSpec, workdir: Path, module_name: str) -> str:
    """Save what fit returned (the kind: 'sklearn' or 'pyfunc').

    The owner's package is pickled by value, so that the parent (and whoever loads the
    challenger from MLflow) need not import it."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[module_name.split(".")[0]])
    python_model = _python_model_class()
    if python_model is not None and isinstance(model, python_model):
        import mlflow.pyfunc

        shutil.rmtree(workdir / PYFUNC_DIR, ignore_errors=True)
        # Explicit (empty) requirements: inferring them runs the model in another process.
        mlflow.pyfunc.save_model(str(workdir / PYFUNC_DIR), python_model=model, pip_requirements=[])
        return "pyfunc"
    needed = ["predict"] if spec.task == "regression" else ["predict", "predict_proba", "classes_"]
    missing = [name for name in needed if not hasattr(model, name)]
    if missing:
        raise _Failed(
            "unusable",
            f"fit returned {type(model).__name__}, which lacks {', '.join(missing)}: neither an "
            f"sklearn-compatible {spec.task} estimator nor an MLflow PythonModel",
        )
    with (workdir / SKLEARN_FILE).open("wb") as handle:
        cloudpickle.dump(model, handle)
    return "sklearn"


def check(kind: str, model: Any, spec: TrainSpec, train: pl.DataFrame, workdir: Path) -> None:
    """Score rows of the window as the parent will; a pyfunc is checked as saved and loaded."""
    if kind == "pyfunc":
        import mlflow.pyfunc

        model = mlflow.pyfunc.load_model(str(workdir / PYFUNC_DIR))
    classes = class_list(train[spec.target]) if spec.task == "multiclass" else []
    scorer = TrainerModel(spec=spec, booster=model, classes=classes, kind=kind)
    scores = scorer.predict_scores(train.head(CHECK_ROWS))
    print(f"[driftpilot] checked: {kind} model scores {scores.shape} on {CHECK_ROWS} rows")


def run(workdir: Path) -> str:
    """The child's work; the kind of model saved."""
    request = json.loads((workdir / REQUEST_NAME).read_text())
    spec = TrainSpec.model_validate(request["spec"])
    train = pl.read_parquet(workdir / TRAIN_NAME)
    train.head(1).to_pandas()  # the runtime's pandas and pyarrow, loaded before the cap
    import cloudpickle  # noqa: F401  # loaded before the cap as well

    limit_memory(request["memory_mb"])
    trainer = request["trainer"]
    print(f"[driftpilot] {trainer}: fitting a {spec.task} model on {train.height} rows")
    (workdir / STARTED_NAME).touch()  # the parent's clock starts: the owner's code runs now
    fit = load_fit(trainer)
    started = time.perf_counter()
    model = _stage("raised", "fitting", lambda: fit(train, spec))
    print(
        f"[driftpilot] fit returned {type(model).__name__} in {time.perf_counter() - started:.1f}s"
    )
    module_name = parse_trainer(trainer)[0]
    kind = _stage("unusable", "saving its model", lambda: save(model, spec, workdir, module_name))
    _stage("unusable", "scoring the window", lambda: check(kind, model, spec, train, workdir))
    return kind


def main(argv: list[str]) -> int:
    workdir = Path(argv[1])
    try:
        result: dict[str, Any] = {"ok": True, "kind": run(workdir)}
    except _Failed as failed:
        result = {"ok": False, "reason": failed.reason, "message": str(failed)}
    # Written whole or not at all: a child killed mid-write leaves no half a result to misread.
    partial = workdir / f"{RESULT_NAME}.partial"
    partial.write_text(json.dumps(result))
    os.replace(partial, workdir / RESULT_NAME)
    sys.stdout.flush()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
