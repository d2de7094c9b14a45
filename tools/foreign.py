"""A model we did not train, scored as our tasks read it.

Two kinds of foreign model reach DriftPilot: an adopted MLflow model (``tools.adopt``) and a
challenger the owner's code fitted (``tools.trainer``). Both answer with whatever their library
gives — ``predict_proba``'s array, a pyfunc's probability array, a frame with a column per
class, or bare labels — and both must score the way ``tools.metrics`` reads:

- binary: ``(n,)`` P(1) (0/1 for a label-only model);
- multiclass: ``(n, k)``, one column per class in the model's ``classes`` order (one-hot for a
  label-only model);
- regression: ``(n,)`` predictions.

One rule names classes for both: a column named by an estimator's ``classes_`` matches a class
by value (``numpy.int64(1)`` is 1); a frame's column name, which is text, stands for the known
label of the same text (``label_like``). Every score array is checked before it is returned
(``checked``): its shape, no NaN/inf, probabilities in [0, 1].

An adopted model's reading is chosen once, on the reference (``read_output``, kept in its
spec as a ``Scoring``), and applied on every batch (``scores``); a trainer's model always gives
probabilities and its output is read on every call (``task_scores``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from driftpilot.core.errors import ModelError
from driftpilot.core.tasks import Task
from tools.metrics import class_list, encode_labels

# How an adopted model's scores are read (chosen once, on the reference).
Output = Literal[
    "native_proba",  # the flavour's predict_proba, columns in its classes_ order
    "proba_frame",  # the pyfunc returns a frame with a probability column per class
    "proba_array",  # the pyfunc returns probabilities: (n,) P(1) or (n, k) in classes order
    "labels",  # the pyfunc returns labels: label-only
    "predictions",  # a regression's numbers
]


@dataclass(frozen=True)
class Scoring:
    """How a model's output is read, as found on the reference."""

    output: Output
    classes: list[Any]  # multiclass: the labels of the score columns
    columns: list[int]  # native_proba, proba_frame: the output's columns of ``classes``
    how: str  # in words, for the adoption note


# --------------------------------------------------------------------------- reading once


def read_output(raw: Any, task: Task, labels: pl.Series, flavour: str) -> Scoring:
    """How a pyfunc's output ``raw`` on the reference (labels ``labels``) is read.

    Raises:
        ModelError: the output fits no reading of the task.
    """
    import pandas as pd

    known = class_list(labels)
    if isinstance(raw, pd.DataFrame) and raw.shape[1] > 1:
        named = [label_like(c, known) for c in raw.columns.tolist()]
        columns, kept = class_columns(named, task)
        return Scoring("proba_frame", kept, columns, "probability columns of its pyfunc")
    values = np.asarray(raw)
    if values.ndim == 2 and values.shape[1] > 1:
        return _read_array(values, task, known)
    flat = flatten(values)
    if task == "binary" and np.issubdtype(flat.dtype, np.floating):
        outside = (flat < 0) | (flat > 1)
        if outside.any():
            raise ModelError(
                "a binary model must return P(1) or 0/1 labels; "
                f"{int(outside.sum())} predictions lie outside [0, 1]"
            )
        if not np.isin(flat, (0.0, 1.0)).all():
            return Scoring("proba_array", [], [], "P(1) from its pyfunc")
    return _read_labels(flat, task, known, flavour)


def native_scoring(classes_: Any, task: Task, flavour: str) -> Scoring:
    """The reading of a flavour's ``predict_proba``, whose columns are its ``classes_``."""
    classes = [plain(c) for c in np.asarray(classes_).tolist()]
    columns, kept = class_columns(classes, task)
    return Scoring("native_proba", kept, columns, f"probabilities of {flavour} predict_proba")


def _read_array(values: np.ndarray, task: Task, known: list[Any]) -> Scoring:
    """An unnamed (n, k) output: binary (P(0), P(1)); multiclass the sorted labels' order."""
    if not np.issubdtype(values.dtype, np.number):
        raise ModelError(f"the model returned a {values.shape} array of {values.dtype}")
    if task == "binary" and values.shape[1] == 2:
        return Scoring("proba_frame", [], [1], "P(1), column 1 of its pyfunc's output")
    if task == "binary" or values.shape[1] != len(known):
        raise ModelError(
            f"the model returned {values.shape[1]} score columns; the reference holds "
            f"{len(known)} classes {known}"
        )
    how = "probability columns of its pyfunc, in the sorted order of the labels"
    return Scoring("proba_array", known, [], how)


def _read_labels(flat: np.ndarray, task: Task, known: list[Any], flavour: str) -> Scoring:
    how = f"labels of its {flavour} pyfunc (no probabilities)"
    said = sorted({plain(v) for v in flat.tolist()}, key=lambda v: (str(type(v)), v))
    if task == "binary":
        if not set(said) <= {0, 1}:
            raise ModelError(f"a binary model must predict 0/1 labels; it predicted {said[:5]}")
        return Scoring("labels", [], [], how)
    strange = [v for v in said if v not in known]
    if len(strange) > len(said) // 2:
        raise ModelError(
            f"the model predicted {said[:5]}..., not the reference's labels {known}: is it a "
            "multiclass model? Give --task"
        )
    classes = sorted({*known, *said}, key=lambda v: (str(type(v)), v))
    return Scoring("labels", classes, [], how)


def class_columns(classes: list[Any], task: Task) -> tuple[list[int], list[Any]]:
    """The probability columns to keep and the classes they stand for (binary: class 1), when
    the model's own classes name the columns."""
    if task == "binary":
        return [_class_one(classes)], []
    # A reference label that is none of the classes counts against the model (encode: -1).
    return list(range(len(classes))), classes


# --------------------------------------------------------------------------- reading each batch


def scores(raw: Any, scoring: Scoring, task: Task, n_rows: int) -> np.ndarray:
    """An adopted model's output on a batch, read the way ``scoring`` chose, checked."""
    out = scoring.output
    if out in ("native_proba", "proba_frame"):
        proba = np.asarray(raw, dtype=float)
        chosen = proba[:, scoring.columns]
        values = chosen[:, 0] if task == "binary" else chosen
    elif out == "labels":
        values = label_scores(flatten(raw), task, scoring.classes)
    else:
        array = np.asarray(raw, dtype=float)
        # Multiclass (n, k) as is; P(1) or a prediction given as (n, 1) is flattened.
        values = array if out == "proba_array" and task == "multiclass" else flatten(array)
    return checked(values, task, len(scoring.classes), n_rows)


def task_scores(
    raw: Any, task: Task, classes: list[Any], columns: list[Any] | None, n_rows: int
) -> np.ndarray:
    """A probability model's raw output as the task's scores (a label-only output is refused).
    ``columns`` names the output's columns when the model says (an estimator's ``classes_``,
    a frame's columns through ``frame_columns``): a binary model's P(1) is its column of class
    1; a multiclass model's columns are put in ``classes`` order (a class it never saw scores
    0). Without names, a two-column binary output is (P(0), P(1)) and a multiclass one is taken
    to be in ``classes`` order.

    Raises:
        ModelError: the output's shape, classes or values do not fit the task.
    """
    try:
        values = np.asarray(getattr(raw, "values", raw), dtype=float)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"the model's output is not numeric (labels only?): {exc}") from exc
    if task == "binary" and values.ndim == 2:
        values = _binary_column(values, columns)
    elif task == "regression" and values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if task == "multiclass":
        values = _in_class_order(values, classes, columns)
    return checked(values, task, len(classes), n_rows)


def frame_columns(raw: Any, task: Task, classes: list[Any]) -> list[Any] | None:
    """A frame output's column names as the labels they stand for (None: not a frame)."""
    if not hasattr(raw, "columns"):
        return None
    known = classes if task == "multiclass" else [0, 1]
    return [label_like(c, known) for c in list(raw.columns)]


def _binary_column(values: np.ndarray, columns: list[Any] | None) -> np.ndarray:
    if columns is not None:
        return values[:, _class_one(columns)]
    if values.shape[1] not in (1, 2):
        raise ModelError(f"a binary model must give P(1), got {values.shape[1]} columns")
    return values[:, -1]  # (P(1),) or (P(0), P(1))


def _in_class_order(
    values: np.ndarray, classes: list[Any], columns: list[Any] | None
) -> np.ndarray:
    if values.ndim != 2:
        raise ModelError(
            f"a multiclass model must give one probability column per class, got shape "
            f"{values.shape} (labels only?)"
        )
    if columns is None or all(isinstance(c, int) and c == i for i, c in enumerate(columns)):
        return values  # unnamed (or a frame's default 0..k-1): taken to be in classes order
    named = [plain(c) for c in columns]
    unknown = [c for c in named if c not in classes]
    if unknown:
        raise ModelError(f"the model's classes {unknown} are not among the target's {classes}")
    out = np.zeros((values.shape[0], len(classes)))
    for j, c in enumerate(named):
        out[:, classes.index(c)] = values[:, j]
    return out


def _class_one(classes: list[Any]) -> int:
    """The column of class 1 (by value: 1, True, 1.0 or numpy's 1; text is mapped first)."""
    named = [plain(c) for c in classes]
    if 1 not in named:
        raise ModelError(f"a binary model's classes {classes} name no class 1")
    return named.index(1)


def checked(values: np.ndarray, task: Task, n_classes: int, n_rows: int) -> np.ndarray:
    """``values`` if they are the task's scores for ``n_rows`` rows.

    Raises:
        ModelError: another shape, NaN/inf, or probabilities outside [0, 1].
    """
    want = (n_rows, n_classes) if task == "multiclass" else (n_rows,)
    if values.shape != want:
        raise ModelError(f"a {task} model must give scores of shape {want}, got {values.shape}")
    if not np.isfinite(values).all():
        raise ModelError(f"the scores hold {int((~np.isfinite(values)).sum())} NaN/inf values")
    if task != "regression" and values.size and (values.min() < 0 or values.max() > 1):
        raise ModelError(
            f"a {task} model must give probabilities in [0, 1], got values from "
            f"{values.min():.4g} to {values.max():.4g}"
        )
    return values


# --------------------------------------------------------------------------- shared pieces


def flatten(raw: Any) -> np.ndarray:
    """One value per row: ``(n,)`` or ``(n, 1)`` as ``(n,)``."""
    values = np.asarray(raw)
    if values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0]
    if values.ndim != 1:
        raise ModelError(f"the model returned shape {values.shape}, expected one value per row")
    return values


def label_scores(labels: np.ndarray, task: Task, classes: list[Any]) -> np.ndarray:
    """Labels as scores: binary 0/1, multiclass one-hot (an unknown label: all zeros)."""
    if task == "binary":
        return encode_labels(labels, "binary").astype(float)
    index = encode_labels(labels, "multiclass", classes)
    onehot = np.zeros((len(index), len(classes)))
    known = index >= 0
    onehot[np.flatnonzero(known), index[known]] = 1.0
    return onehot


def label_like(column: Any, known: list[Any]) -> Any:
    """A column name as the label it stands for ('1' -> 1 when labels are numbers)."""
    for label in known:
        if str(label) == str(column):
            return label
    return plain(column)


def plain(value: Any) -> Any:
    """A NumPy scalar as the Python value (JSON-able, comparable with Polars' labels)."""
    out = value.item() if isinstance(value, np.generic) else value
    if isinstance(out, bool):
        return int(out)
    if isinstance(out, float) and out.is_integer():
        return int(out)
    return out
