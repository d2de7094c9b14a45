"""Adopt a model DriftPilot did not train: an MLflow model, loaded as a pyfunc, checked
against a labelled reference and scored the way every DriftPilot model scores.

Where the model comes from: ``tools.adopt_source`` (``fetch``). What it takes:
``tools.adopt_inputs`` (``check_inputs``). How its output becomes the task's scores:
``tools.foreign`` (shared with ``tools.trainer``). How it enters DriftPilot's registry:
``tools.adopt_register``. This module puts them together (``load``) and holds the adopted
model itself.

How it scores (``AdoptedModel.predict_scores``, the shape ``tools.metrics`` reads):

- a classifier gives probabilities where its flavour can: ``predict_proba`` of an sklearn
  estimator or pipeline, a LightGBM / XGBoost / CatBoost classifier; or its pyfunc's
  ``predict`` returns them (a LightGBM or XGBoost booster, a custom model returning a
  probability array or a frame with a column per class);
- otherwise it is label-only: its scores are its predicted labels (binary 0/1, multiclass
  one-hot), which only the metrics that need no probabilities read (F1, macro F1);
- a regression scores its predictions.

The way is chosen once, on the reference, and kept in the model's ``AdoptedSpec``: a batch
on which a probability model happens to say only 0 and 1 is still read as probabilities.

In DriftPilot's registry the adopted model is a pyfunc (``tools._pyfunc.AdoptedPyfunc``) that
carries the owner's MLflow model directory unchanged as an artifact and loads it with its own
flavour, so ``tools.registry`` loads it back as an ``AdoptedModel`` like any champion.
MLflow is imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import ModelError
from driftpilot.core.tasks import METRICS, PRIMARY, Task, metrics_for
from tools import foreign
from tools.adopt_inputs import check_inputs, flavour_of, model_input, signature_inputs
from tools.adopt_register import SOURCE_ARTIFACT, register, version_tags
from tools.adopt_source import Source, fetch, redact
from tools.foreign import Output, Scoring
from tools.metrics import encode_labels

# The entry points callers reach through this module (``driftpilot.runs.adopt``, tests).
__all__ = [
    "SOURCE_ARTIFACT",
    "AdoptedModel",
    "AdoptedSpec",
    "Loaded",
    "Source",
    "check_inputs",
    "choose_scoring",
    "fetch",
    "load",
    "metrics_of",
    "model_input",
    "open_model",
    "primary_metric",
    "redact",
    "register",
    "version_tags",
]

NATIVE_FLAVOURS = ("sklearn", "lightgbm", "xgboost", "catboost")


class AdoptedSpec(BaseModel):
    """What DriftPilot knows of an adopted model: its columns, task and how it scores."""

    task: Task
    target: str
    numeric: list[str] = Field(description="Numeric inputs (drift is measured per column).")
    categorical: list[str] = Field(description="Categorical inputs.")
    inputs: dict[str, str] = Field(
        description="Every input in the order the model takes them, with the MLflow type it is "
        "given as (double, long, string, ...)."
    )
    flavour: str = Field(description="The MLflow flavour it was saved with (sklearn, ...).")
    output: Output
    classes: list[Any] = Field(
        default_factory=list, description="Multiclass: the labels of the score columns."
    )
    columns: list[int] = Field(
        default_factory=list,
        description="native_proba, proba_frame: the output's columns of ``classes`` (binary: "
        "the column of class 1).",
    )

    @property
    def features(self) -> list[str]:
        return list(self.inputs)


@dataclass
class AdoptedModel:
    """An adopted MLflow model that scores Polars frames like a ``TrainedModel``."""

    spec: AdoptedSpec
    pyfunc: Any  # mlflow.pyfunc.PyFuncModel
    native: Any = None  # the flavour's own model when its predict_proba is used
    report: None = None  # it was not trained here: no training report

    @property
    def task(self) -> Task:
        return self.spec.task

    @property
    def classes(self) -> list[Any]:
        return self.spec.classes

    @property
    def family(self) -> str:
        return f"adopted:{self.spec.flavour}"

    @property
    def label_only(self) -> bool:
        return self.spec.output == "labels"

    def encode(self, labels: Any) -> np.ndarray:
        return encode_labels(labels, self.task, self.classes)

    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
        """Binary P(1) ``(n,)`` (0/1 if label-only), multiclass ``(n, k)`` in ``classes``
        order (one-hot if label-only), regression predictions ``(n,)``.

        Raises:
            ModelError: the output no longer fits the reading chosen at adoption (shape,
                NaN/inf, probabilities outside [0, 1]).
        """
        x = model_input(frame, self.spec.inputs)
        if self.spec.output == "native_proba":
            raw = self.native.predict_proba(x)
        else:
            raw = self.pyfunc.predict(x)
        scoring = Scoring(self.spec.output, self.spec.classes, self.spec.columns, "")
        return foreign.scores(raw, scoring, self.task, frame.height)


def choose_scoring(
    pyfunc: Any, native: Any, x: Any, task: Task, labels: pl.Series, flavour: str
) -> Scoring:
    """How the model's scores are read (see the module docstring), tried on the reference's
    inputs ``x``; ``native_proba`` when ``native`` (the flavour's model) has predict_proba.

    Raises:
        ModelError: the model's output fits no reading of the task.
    """
    if task == "regression":
        return Scoring("predictions", [], [], f"predictions of its {flavour} pyfunc")
    if native is not None and hasattr(native, "predict_proba") and hasattr(native, "classes_"):
        return foreign.native_scoring(native.classes_, task, flavour)
    return foreign.read_output(pyfunc.predict(x), task, labels, flavour)


def load_native(path: Path, flavour: str) -> Any:
    """The flavour's own model (for predict_proba), or None when its flavour has none or
    its library is not installed here."""
    if flavour not in NATIVE_FLAVOURS:
        return None
    import importlib

    try:
        module = importlib.import_module(f"mlflow.{flavour}")
    except ImportError:  # the flavour's library (e.g. xgboost) is not installed
        return None
    try:
        return module.load_model(str(path))
    except Exception as exc:  # the owner's file, unpickled here: any error is theirs to read
        raise ModelError(f"cannot load the model's {flavour} flavour: {exc}") from exc


def metrics_of(task: Task, label_only: bool) -> tuple[list[str], list[str]]:
    """The task's metrics the model can be measured by, and those it cannot (label-only:
    the ones that need probabilities)."""
    names = metrics_for(task)
    usable = [n for n in names if not (label_only and METRICS[n].needs_probabilities)]
    return usable, [n for n in names if n not in usable]


def primary_metric(task: Task, usable: list[str]) -> str:
    """The task's primary metric, or the first one the model can be measured by."""
    return PRIMARY[task] if PRIMARY[task] in usable else usable[0]


# --------------------------------------------------------------------------- loading


def open_model(path: Path, spec: AdoptedSpec) -> AdoptedModel:
    """An adopted model from its MLflow directory and the spec found when it was adopted
    (what ``tools._pyfunc.AdoptedPyfunc`` does when DriftPilot loads it back)."""
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(str(path))
    native = load_native(path, spec.flavour) if spec.output == "native_proba" else None
    return AdoptedModel(spec=spec, pyfunc=pyfunc, native=native)


@dataclass(frozen=True)
class Loaded:
    """A fetched, checked model with its scores on the reference."""

    model: AdoptedModel
    path: Path
    source: Source
    how: str


def load(
    uri: str,
    tracking_uri: str,
    reference: pl.DataFrame,
    *,
    target: str,
    task: Task,
    numeric: list[str],
    categorical: list[str],
    dst: Path,
) -> Loaded:
    """Fetch ``uri``, check its inputs against ``reference`` and find how it scores.

    Raises:
        ConfigError, RegistryError: see ``fetch``.
        SchemaError: see ``check_inputs``.
        ModelError: the model fails on the reference, or its output fits no reading of the task.
    """
    import mlflow.pyfunc

    path, source = fetch(uri, tracking_uri, dst)
    try:
        pyfunc = mlflow.pyfunc.load_model(str(path))
    except Exception as exc:  # MLflow and the flavour's library raise their own
        raise ModelError(f"cannot load {uri} as a pyfunc: {type(exc).__name__}: {exc}") from exc
    inputs, num, cat = check_inputs(
        reference, target, signature_inputs(pyfunc), numeric, categorical
    )
    flavour = flavour_of(pyfunc)
    x = model_input(reference, inputs)
    native = load_native(path, flavour) if task != "regression" else None
    try:
        scoring = choose_scoring(pyfunc, native, x, task, reference[target], flavour)
    except ModelError:
        raise
    except Exception as exc:  # the owner's code: any error is the model failing
        raise ModelError(f"the model fails on the reference: {type(exc).__name__}: {exc}") from exc
    spec = AdoptedSpec(
        task=task,
        target=target,
        numeric=num,
        categorical=cat,
        inputs=inputs,
        flavour=flavour,
        output=scoring.output,
        classes=scoring.classes,
        columns=scoring.columns,
    )
    kept = native if scoring.output == "native_proba" else None
    model = AdoptedModel(spec, pyfunc, kept)
    return Loaded(model=model, path=path, source=source, how=scoring.how)
