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


def test_a_label_against_none_is_a_difference() -> None:
    old = pl.Series([1, 0, None], dtype=pl.Int8)
    assert _differences(old, pl.Series([1, 0, None], dtype=pl.Int8)) == 0
    assert _differences(old, pl.Series([1, 1, 0], dtype=pl.Int8)) == 2


def test_the_rationale_says_how_far_off_the_estimate_was() -> None:
    view = LabelsView(
        model="flights",
        batch_id="2013-02",
        run_id="r",
        rows=2000,
        rows_labelled=1800,
        champion_version=3,
        realised_roc_auc=0.712,
        estimated_roc_auc=0.725,
        estimation_error=0.725 - 0.712,
        path="x.parquet",
    )
    text = _rationale(view, "ann", {"unmatched_label_rows": 0})
    assert text.startswith("ann attached labels to 1800 of 2000 rows of batch 2013-02")
    assert "realised roc_auc=0.7120" in text and "estimated roc_auc=0.7250" in text
    assert "the estimate was off by +0.013" in text
    unestimated = view.model_copy(update={"estimated_roc_auc": None, "estimation_error": None})
    assert "no estimate was made" in _rationale(unestimated, "ann", {"unmatched_label_rows": 2})
