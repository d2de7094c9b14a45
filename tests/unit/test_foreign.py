"""tools.foreign: how a model we did not train (an adopted one, a trainer's) has its output read
as the task's scores, on real flights labels; no MLflow, no process."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest

from driftpilot.core.errors import ModelError
from driftpilot.core.tasks import Task
from tools import foreign
from tools.foreign import Scoring, task_scores
from tools.metrics import encode_labels

CLASSES = ["early", "late", "on_time", "very_late"]


@pytest.fixture(scope="module")
def rows(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return months["2013-02"].head(400)


# -- an adopted model: the reading is chosen once, on the reference ---------------------------


def test_a_classifiers_output_is_read_once(rows: pl.DataFrame) -> None:
    labels = rows["delay_class"]
    known = sorted(labels.unique().to_list())
    frame = pd.DataFrame(np.full((rows.height, len(known)), 0.25), columns=known[::-1])
    read = foreign.read_output(frame, "multiclass", labels, "python_function")
    assert (read.output, read.classes, read.columns) == ("proba_frame", known[::-1], [0, 1, 2, 3])
    two = np.column_stack([np.full(rows.height, 0.7), np.full(rows.height, 0.3)])
    binary = foreign.read_output(two, "binary", rows["delayed"], "lightgbm")
    assert (binary.output, binary.columns) == ("proba_frame", [1])
    p = np.linspace(0.01, 0.99, rows.height)
    assert foreign.read_output(p, "binary", rows["delayed"], "x").output == "proba_array"
    said = foreign.read_output(rows["delayed"].to_numpy(), "binary", rows["delayed"], "x")
    assert said.output == "labels"
    words = foreign.read_output(labels.to_numpy(), "multiclass", labels, "x")
    assert (words.output, words.classes) == ("labels", known)
    with pytest.raises(ModelError, match="outside \\[0, 1\\]"):
        foreign.read_output(p * 3, "binary", rows["delayed"], "x")
    with pytest.raises(ModelError, match="3 score columns"):
        foreign.read_output(np.ones((rows.height, 3)), "multiclass", labels, "x")
    # A frame's text column '1' stands for the label 1; an estimator's classes_ match by value.
    named = pd.DataFrame({"0": 1 - p, "1": p})
    assert foreign.read_output(named, "binary", rows["delayed"], "x").columns == [1]
    assert foreign.native_scoring(np.array([True, False]), "binary", "sklearn").columns == [0]
    with pytest.raises(ModelError, match="no class 1"):
        foreign.native_scoring(np.array(["0", "1"]), "binary", "sklearn")


def test_label_scores_are_zero_one_or_one_hot() -> None:
    onehot = foreign.label_scores(
        np.array(["late", "early", "odd"]), "multiclass", ["early", "late"]
    )
    assert onehot.tolist() == [[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]
    assert foreign.label_scores(np.array([1, 0, 1]), "binary", []).tolist() == [1.0, 0.0, 1.0]


def test_a_batch_is_read_as_chosen_and_checked() -> None:
    """The reading chosen on the reference is kept (a batch of 0/1 probabilities is still
    probabilities), and a batch's scores are checked as a trainer's are."""
    frame = Scoring("proba_frame", CLASSES[::-1], [0, 1, 2, 3], "")
    proba = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    np.testing.assert_allclose(foreign.scores(proba, frame, "multiclass", 2), proba)
    p1 = Scoring("proba_array", [], [], "")
    np.testing.assert_allclose(foreign.scores(np.array([[1.0], [0.0]]), p1, "binary", 2), [1, 0])
    labels = Scoring("labels", ["early", "late"], [], "")
    one_hot = foreign.scores(np.array(["late", "early"]), labels, "multiclass", 2)
    assert one_hot.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    numbers = Scoring("predictions", [], [], "")
    np.testing.assert_allclose(foreign.scores([[3.5], [-2.0]], numbers, "regression", 2), [3.5, -2])
    with pytest.raises(ModelError, match="NaN"):
        foreign.scores(np.array([np.nan, 1.0]), numbers, "regression", 2)
    with pytest.raises(ModelError, match="\\[0, 1\\]"):
        foreign.scores(np.array([0.5, 1.5]), p1, "binary", 2)
    with pytest.raises(ModelError, match="shape \\(3,\\)"):
        foreign.scores(np.array([0.5, 0.5]), p1, "binary", 3)


# -- a trainer's model: probabilities, read on every call ------------------------------------


def test_task_scores_reads_named_columns_in_the_targets_class_order() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    # Three of the four classes, named as the model's classes_ order has them.
    out = task_scores(proba, "multiclass", CLASSES, ["on_time", "early", "very_late"], 2)
    np.testing.assert_allclose(out, [[0.2, 0.0, 0.7, 0.1], [0.1, 0.0, 0.1, 0.8]])
    binary = task_scores(np.array([[0.9, 0.1], [0.3, 0.7]]), "binary", [], [0, 1], 2)
    np.testing.assert_allclose(binary, [0.1, 0.7])
    unnamed = task_scores(np.array([[0.9, 0.1], [0.3, 0.7]]), "binary", [], None, 2)
    np.testing.assert_allclose(unnamed, [0.1, 0.7])
    assert encode_labels(pl.Series(["late", "early"]), "multiclass", CLASSES).tolist() == [1, 0]
    # A frame's text columns stand for the labels of the same text (ints here).
    text = pd.DataFrame({"2": [0.3, 0.6], "1": [0.7, 0.4]})
    columns = foreign.frame_columns(text, "multiclass", [1, 2])
    assert columns == [2, 1]
    np.testing.assert_allclose(
        task_scores(text, "multiclass", [1, 2], columns, 2), [[0.7, 0.3], [0.4, 0.6]]
    )
    assert foreign.frame_columns(np.zeros(2), "binary", []) is None


@pytest.mark.parametrize(
    ("raw", "task", "columns", "problem"),
    [
        (np.array(["late", "early"]), "multiclass", None, "not numeric"),  # labels only
        (np.array([2.0, 0.0]), "multiclass", None, "one probability column per class"),
        (np.array([[0.5, 0.5], [0.2, 0.8]]), "multiclass", ["early", "gate_hold"], "gate_hold"),
        (np.array([1.5, -0.2]), "binary", None, "[0, 1]"),  # not probabilities
        (np.array([[0.4, 0.6], [0.5, 0.5]]), "binary", ["no", "yes"], "no class 1"),
        (np.array([[0.4, 0.6], [0.5, 0.5]]), "binary", ["0", "1"], "no class 1"),  # by value
        (np.array([np.nan, 3.0]), "regression", None, "NaN"),
        (np.array([1.0, 2.0, 3.0]), "regression", None, "shape (2,)"),
    ],
)
def test_task_scores_refuses_what_does_not_fit_the_task(
    raw: Any, task: Task, columns: list[Any] | None, problem: str
) -> None:
    classes = CLASSES if task == "multiclass" else []
    with pytest.raises(ModelError) as refused:
        task_scores(raw, task, classes, columns, 2)
    assert problem in str(refused.value)
