"""The label checks and the alignment of late labels to a filed batch (driftpilot.runs.labels),
without a model: what is accepted as a label, how rows are matched, what the audit says."""

from __future__ import annotations

import polars as pl
import pytest

from driftpilot.core.errors import DataError, SchemaError
from driftpilot.runs.labels import LabelsView, _align, _differences, _label_values, _rationale


@pytest.mark.parametrize(
    "values",
    [
        [1, 0, None, 1],
        [1.0, 0.0, None, 1.0],
        [True, False, None, True],
        ["1", "false", None, " TRUE "],
    ],
)
def test_zero_one_booleans_and_their_words_are_labels(values: list[object]) -> None:
    labels = pl.DataFrame({"y": values}, strict=False)
    assert _label_values(labels, "y", pl.Int8()).to_list() == [1, 0, None, 1]


@pytest.mark.parametrize(
    ("values", "found"),
    [([0, 2, 1], "[2]"), ([0.5, 1.0], "[0.5]"), (["yes", "maybe"], "['maybe']")],
)
def test_other_values_are_refused_naming_the_column(values: list[object], found: str) -> None:
    with pytest.raises(DataError, match=r"column 'y' of the labels must hold 0/1") as caught:
        _label_values(pl.DataFrame({"y": values}), "y", pl.Int8())
    assert found in str(caught.value)


def test_a_missing_or_empty_target_is_refused() -> None:
    with pytest.raises(SchemaError, match="no 'y' column"):
        _label_values(pl.DataFrame({"z": [1]}), "y", pl.Int8())
    with pytest.raises(DataError, match="holds no label"):
        _label_values(pl.DataFrame({"y": [None, None]}, schema={"y": pl.Int8}), "y", pl.Int8())


def test_row_order_needs_the_same_count_and_a_key_joins() -> None:
    batch = pl.DataFrame(
        {"id": [3, 1, 2], "y": [None, None, None]}, schema_overrides={"y": pl.Int8}
    )
    labels = pl.DataFrame({"id": ["2", "3", "9"], "y": [1, 0, 1]})
    values = _label_values(labels, "y", pl.Int8())
    with pytest.raises(DataError, match=r"2 rows and batch 'b' has 3.*--key COLUMN"):
        _align(batch, labels.head(2), values.head(2), "b", None)
    # the key is text in the labels and a number in the batch: it is converted
    assert _align(batch, labels, values, "b", "id").to_list() == [0, None, 1]
    with pytest.raises(DataError, match="not unique"):
        doubled = pl.concat([labels, labels.head(1)])
        _align(batch, doubled, _label_values(doubled, "y", pl.Int8()), "b", "id")
    with pytest.raises(DataError, match="matches a row"):
        other = pl.DataFrame({"id": [7], "y": [1]})
        _align(batch, other, _label_values(other, "y", pl.Int8()), "b", "id")


def test_only_a_label_against_another_is_a_difference() -> None:
    old = pl.Series([1, 0, None], dtype=pl.Int8)
    assert _differences(old, pl.Series([1, 0, None], dtype=pl.Int8)) == 0
    assert _differences(old, pl.Series([1, 1, 0], dtype=pl.Int8)) == 1  # row 3 adds a label
    assert _differences(old, pl.Series([None, 1, 0], dtype=pl.Int8)) == 1  # row 1 keeps its own


def test_the_rationale_says_how_far_off_the_estimate_was() -> None:
    view = LabelsView(
        model="flights",
        batch_id="2013-02",
        run_id="r",
        rows=2000,
        rows_labelled=1800,
        champion_version=3,
        metric="roc_auc",
        realised_score=0.712,
        estimated_score=0.725,
        estimation_error=0.725 - 0.712,
        path="x.parquet",
    )
    text = _rationale(view, "ann", {"unmatched_label_rows": 0})
    assert text.startswith("ann attached labels to 1800 of 2000 rows of batch 2013-02")
    assert "realised ROC AUC 0.7120 (higher is better)" in text
    assert "estimated ROC AUC 0.7250 (higher is better)" in text
    assert "the estimate was off by +0.013" in text
    unestimated = view.model_copy(update={"estimated_score": None, "estimation_error": None})
    assert "no estimate was made" in _rationale(unestimated, "ann", {"unmatched_label_rows": 2})


def test_a_regressions_rationale_names_its_metric_and_direction() -> None:
    view = LabelsView(
        model="delays",
        batch_id="2013-02",
        run_id="r",
        rows=100,
        rows_labelled=100,
        champion_version=1,
        metric="rmse",
        higher_is_better=False,
        realised_score=38.21,
        estimated_score=36.0,
        estimation_error=36.0 - 38.21,
        path="x.parquet",
    )
    text = _rationale(view, "ann", {"unmatched_label_rows": 0})
    assert "realised RMSE 38.21 (lower is better)" in text
    assert "estimated RMSE 36 (lower is better)" in text and "off by -2.210" in text


def test_an_answer_recorded_before_tasks_reads_as_a_roc_auc() -> None:
    """A labels answer stored under the old keys (realised_roc_auc, estimated_roc_auc) is
    read back under today's, with the metric it was."""
    old = {
        "model": "flights",
        "batch_id": "2013-02",
        "run_id": "r",
        "rows": 10,
        "rows_labelled": 10,
        "champion_version": 1,
        "realised_roc_auc": 0.71,
        "estimated_roc_auc": 0.7,
        "estimation_error": -0.01,
        "path": "x.parquet",
    }
    view = LabelsView.model_validate(old)
    assert (view.metric, view.higher_is_better) == ("roc_auc", True)
    assert (view.realised_score, view.estimated_score) == (0.71, 0.7)


def test_multiclass_labels_are_class_names_and_regression_labels_numbers() -> None:
    classes = pl.DataFrame({"y": ["late", None, "on_time", "very_late"]})
    assert _label_values(classes, "y", pl.String(), "multiclass").to_list() == [
        "late",
        None,
        "on_time",
        "very_late",
    ]
    minutes = pl.DataFrame({"y": [12, -3, None]})
    values = _label_values(minutes, "y", pl.Float64(), "regression")
    assert values.dtype == pl.Float64 and values.to_list() == [12.0, -3.0, None]
    with pytest.raises(DataError, match="must hold numbers"):
        _label_values(pl.DataFrame({"y": ["12", "x"]}), "y", pl.Float64(), "regression")
    with pytest.raises(DataError, match="NaN or infinite"):
        _label_values(pl.DataFrame({"y": [1.0, float("nan")]}), "y", pl.Float64(), "regression")
    with pytest.raises(DataError, match="does not convert"):
        _label_values(pl.DataFrame({"y": ["a"]}), "y", pl.Int64(), "multiclass")
