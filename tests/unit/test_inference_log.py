"""The inference log's rows and appends (issue 22): validation against the model's schema
(binary, multiclass, regression; an instant or a numeric time), canonical payloads and their
digests, idempotency by row id, all-or-nothing requests, and the batch frame of a window."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from sqlalchemy import func, select

from driftpilot.core.errors import NotFound
from driftpilot.core.settings import Settings
from driftpilot.inference.log import RowConflict, TooManyRows, append
from driftpilot.inference.rows import (
    MAX_ERRORS,
    RowsRefused,
    digest_of,
    frame_of_rows,
    rows_of_table,
    schema_of,
    validate_rows,
)
from driftpilot.store import AuditStore
from driftpilot.store.models import InferenceRow, ManagedModel
from tests.rows import model_without_champion, window_of_rows


def binary_model() -> ManagedModel:
    """Binary, numeric ``x``, categorical ``c``, time ``t``, target ``y``; no reference."""
    model = model_without_champion("m")
    model.categorical = json.dumps(["c"])
    model.task = "binary"
    return model


def row(i: int | str, **over: Any) -> dict[str, Any]:
    return {"row_id": i, "t": "2026-03-01T10:00:00", "x": 1.5, "c": "a", "prediction": 1} | over


def with_reference(model: ManagedModel, tmp_path: Path, frame: pl.DataFrame) -> ManagedModel:
    path = tmp_path / f"{model.name}-reference.parquet"
    frame.write_parquet(path)
    model.reference_path = str(path)
    return model


@pytest.fixture
def store(settings: Settings) -> AuditStore:
    made = AuditStore(settings.db_url)
    made.add(binary_model())
    return made


def logged(store: AuditStore, model: str = "m") -> list[InferenceRow]:
    with store.reading() as session:
        query = select(InferenceRow).where(InferenceRow.model == model).order_by(InferenceRow.id)
        return list(session.scalars(query))


# --- validation and digests ---------------------------------------------------------------


def test_a_valid_row_is_made_canonical_and_its_digest_is_of_that() -> None:
    schema = schema_of(binary_model())
    [one] = validate_rows(schema, [row(7, c=3, prediction=True, probabilities=0.8, y=False)])
    payload = json.loads(one.payload)
    assert one.row_id == "7" and payload["row_id"] == "7"  # an int id is its decimal string
    assert one.event_time == "2026-03-01T10:00:00.000000+00:00"  # naive is UTC
    assert payload == {
        "row_id": "7",
        "t": one.event_time,
        "x": 1.5,
        "c": "3",  # a number for a categorical is its text
        "prediction": 1,
        "probabilities": 0.8,
        "y": 0,
    }
    assert one.payload == json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert one.digest == digest_of(one.payload) and len(one.digest) == 64
    assert one.label == "0"


def test_the_same_row_written_differently_has_the_same_digest() -> None:
    schema = schema_of(binary_model())
    a = row("r1", x=2, prediction=1)
    b = {
        "prediction": True,
        "c": "a",
        "x": 2.0,
        "event_time": "2026-03-01T12:00:00+02:00",  # the alias, another offset, same instant
        "row_id": "r1",
    }
    [one], [two] = validate_rows(schema, [a]), validate_rows(schema, [b])
    assert one.digest == two.digest
    [other] = validate_rows(schema, [row("r1", x=2.5)])
    assert other.digest != one.digest


@pytest.mark.parametrize(
    ("bad", "column", "reason"),
    [
        ({"x": None} | {"c": None} | {"row_id": None}, "row_id", "missing row_id"),
        ({"row_id": "r" * 201}, "row_id", "1 to 200"),
        ({"row_id": 1.5}, "row_id", "must be a string"),
        ({"row_id": "a\x00b"}, "row_id", "printable"),
        ({"row_id": "\ud800"}, "row_id", "printable"),
        ({"x": 10**400}, "x", "finite"),
        ({"t": "yesterday"}, "t", "not an ISO 8601 time"),
        ({"t": None}, "t", "missing event time"),
        ({"x": "1.5"}, "x", "must be a number"),
        ({"x": float("inf")}, "x", "finite"),
        ({"x": True}, "x", "must be a number"),
        ({"c": ["a"]}, "c", "must be a string"),
        ({"prediction": 2}, "prediction", "0/1"),
        ({"prediction": None}, "prediction", "missing prediction"),
        ({"probabilities": 1.2}, "probabilities", "between 0 and 1"),
        ({"y": "maybe"}, "y", "0/1"),
        ({"z": 1}, "z", "unknown column"),
        ({"event_time": "2026-03-01"}, "event_time", "given twice"),
    ],
)
def test_a_bad_value_is_refused_with_its_row_column_and_reason(
    bad: dict[str, Any], column: str, reason: str
) -> None:
    schema = schema_of(binary_model())
    with pytest.raises(RowsRefused) as refused:
        validate_rows(schema, [row(0), row(1) | bad])
    [error] = refused.value.errors
    assert (error.row, error.column) == (1, column)
    assert reason in error.reason, error.reason


def test_a_missing_feature_is_refused_not_taken_for_null() -> None:
    schema = schema_of(binary_model())
    bare = row(0)
    del bare["c"]
    with pytest.raises(RowsRefused) as refused:
        validate_rows(schema, [bare])
    assert refused.value.errors[0].column == "c"
    assert "missing feature" in refused.value.errors[0].reason


def test_a_refusal_lists_the_first_errors_and_counts_them_all() -> None:
    schema = schema_of(binary_model())
    rows = [row(i, x="bad") for i in range(MAX_ERRORS + 5)]
    with pytest.raises(RowsRefused) as refused:
        validate_rows(schema, [row("ok"), *rows])
    assert len(refused.value.errors) == MAX_ERRORS and refused.value.count == MAX_ERRORS + 5
    assert [e.row for e in refused.value.errors] == list(range(1, MAX_ERRORS + 1))
    assert str(refused.value).startswith("row 1, column 'x': must be a number")


def test_a_row_id_twice_in_a_request_is_kept_once_if_the_same_refused_if_not() -> None:
    schema = schema_of(binary_model())
    assert len(validate_rows(schema, [row(1), row(2), row(1)])) == 2
    with pytest.raises(RowsRefused) as refused:
        validate_rows(schema, [row(1), row(2), row(1, x=9.0)])
    [error] = refused.value.errors
    assert (error.row, error.column) == (2, "row_id") and "also row 0" in error.reason


def test_multiclass_rows_and_their_batch_frame(tmp_path: Path) -> None:
    reference = pl.DataFrame(
        {"t": [datetime(2026, 1, 1, tzinfo=UTC)] * 3, "x": [1.0, 2, 3], "c": ["a"] * 3}
        | {"y": ["sun", "rain", "fog"]}
    )
    model = with_reference(binary_model(), tmp_path, reference)
    model.task = "multiclass"
    schema = schema_of(model)
    assert schema.classes == ("fog", "rain", "sun")
    good = [
        row(1, prediction="rain", probabilities={"rain": 0.7, "sun": 0.2, "fog": 0.1}),
        row(2, prediction="snow"),  # a class the reference never saw is kept
    ]
    valid = validate_rows(schema, good)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"probabilities": {"rain": 0.7, "sun": 0.7}}, "sum to 1.4000"),
        ({"probabilities": 0.3}, "object {class: p}"),
        ({"prediction": 1.5}, "string or an integer"),
    ]
    for bad, reason in cases:
        with pytest.raises(RowsRefused, match=reason):
            validate_rows(schema, [row(3) | bad])
    frame = frame_of_rows(model, [v.payload for v in valid], [None, '"fog"'])
    assert frame.columns == [
        "row_id", "t", "x", "c", "prediction", "proba_fog", "proba_rain", "proba_sun", "y"
    ]  # fmt: skip
    assert frame["prediction"].to_list() == ["rain", "snow"]
    assert frame["proba_rain"].to_list() == [0.7, None]
    assert frame["y"].to_list() == [None, "fog"] and frame["y"].dtype == pl.String


def test_regression_rows_have_no_probabilities_and_float_columns() -> None:
    model = binary_model()
    model.task = "regression"
    schema = schema_of(model)
    with pytest.raises(RowsRefused, match="no probabilities"):
        validate_rows(schema, [row(1, prediction=3.5, probabilities=0.5)])
    with pytest.raises(RowsRefused, match="must be a number"):
        validate_rows(schema, [row(1, prediction="high")])
    valid = validate_rows(schema, [row(1, prediction=3), row(2, prediction=-1.25, y=4)])
    frame = frame_of_rows(model, [json.loads(v.payload) for v in valid], [None, None])
    assert dict(frame.schema) == {
        "row_id": pl.String,
        "t": pl.Datetime("us", "UTC"),
        "x": pl.Float64,
        "c": pl.String,
        "prediction": pl.Float64,
        "y": pl.Float64,
    }
    assert frame["y"].to_list() == [None, 4.0]  # the label logged with the row


def test_a_numeric_time_column_takes_numbers_and_keeps_the_reference_dtype(
    tmp_path: Path,
) -> None:
    reference = pl.DataFrame({"t": [1, 2], "x": [0.5, 1.0], "c": ["a", "b"], "y": [0, 1]})
    reference = reference.with_columns(pl.col("y").cast(pl.Int8))
    model = with_reference(binary_model(), tmp_path, reference)
    schema = schema_of(model)
    with pytest.raises(RowsRefused, match="must be a number"):
        validate_rows(schema, [row(1)])
    aliased = row(2, event_time=1701, probabilities=0.25)
    del aliased["t"]
    valid = validate_rows(schema, [row(1, t=1700), aliased])
    assert [v.event_time for v in valid] == ["1700.0", "1701.0"]
    frame = frame_of_rows(model, [v.payload for v in valid], ["1", None])
    assert frame["t"].dtype == pl.Int64 and frame["t"].to_list() == [1700, 1701]
    assert frame["y"].dtype == pl.Int8 and frame["y"].to_list() == [1, None]
    assert frame["prediction"].dtype == pl.Int8
    assert frame["proba_1"].to_list() == [None, 0.25]


def test_a_table_upload_becomes_the_same_rows_as_json() -> None:
    schema = schema_of(binary_model())
    table = pl.DataFrame(
        {
            "row_id": ["a", "b"],
            "t": [datetime(2026, 3, 1, 11, tzinfo=UTC), datetime(2026, 3, 1, 12, tzinfo=UTC)],
            "x": [1.5, None],
            "c": ["a", None],
            "prediction": [1, 0],
            "proba_1": [0.9, 0.1],
        }
    ).with_columns(pl.col("t").dt.convert_time_zone("Europe/Paris"))
    from_table = validate_rows(schema, rows_of_table(table))
    as_json = [
        row("a", t="2026-03-01T11:00:00Z", probabilities=0.9),
        row("b", t="2026-03-01T12:00:00Z", x=None, c=None, prediction=0, probabilities=0.1),
    ]
    assert [v.digest for v in from_table] == [v.digest for v in validate_rows(schema, as_json)]


def test_a_window_frame_from_text_or_parsed_payloads_and_an_empty_one() -> None:
    model = binary_model()
    valid = validate_rows(schema_of(model), [row(1, probabilities=0.6), row(2, c=None)])
    texts = frame_of_rows(model, [v.payload for v in valid], ["1", None])
    parsed = frame_of_rows(model, [json.loads(v.payload) for v in valid], ["1", None])
    assert texts.equals(parsed)
    assert texts.to_dicts() == [
        {"row_id": "1", "t": datetime(2026, 3, 1, 10, tzinfo=UTC), "x": 1.5, "c": "a"}
        | {"prediction": 1, "proba_1": 0.6, "y": 1},
        {"row_id": "2", "t": datetime(2026, 3, 1, 10, tzinfo=UTC), "x": 1.5, "c": None}
        | {"prediction": 1, "proba_1": None, "y": None},
    ]
    empty = frame_of_rows(model, [], [])
    assert empty.height == 0 and empty["t"].dtype == pl.Datetime("us", "UTC")
    assert empty["y"].dtype == pl.Int8


def test_a_table_date_is_midnight_utc() -> None:
    schema = schema_of(binary_model())
    table = pl.DataFrame({"row_id": ["d"], "t": [datetime(2026, 3, 1).date()], "x": [1.0]})
    table = table.with_columns(c=pl.lit("a"), prediction=pl.lit(0))
    [one] = validate_rows(schema, rows_of_table(table))
    assert one.event_time == "2026-03-01T00:00:00.000000+00:00"


# --- appends --------------------------------------------------------------------------------


def test_a_retried_request_writes_nothing_twice(store: AuditStore) -> None:
    rows = [row(i) for i in range(5)]
    first = append(store, "m", rows, max_rows=100)
    assert (first.accepted, first.duplicates, first.rows) == (5, 0, 5)
    again = append(store, "m", [*rows, row(5)], max_rows=100)
    assert (again.accepted, again.duplicates, again.rows) == (1, 5, 6)
    stored = logged(store)
    assert [r.row_id for r in stored] == [str(i) for i in range(6)]
    assert all(r.label is None for r in stored)
    assert set(window_of_rows(store, "m").values()) == {None}  # open: no window yet
    assert stored[0].digest == digest_of(stored[0].payload)
    assert stored[0].received_at < stored[5].received_at


def test_a_row_id_logged_with_other_content_refuses_the_whole_request(store: AuditStore) -> None:
    append(store, "m", [row(1)], max_rows=100)
    with pytest.raises(RowConflict) as conflict:
        append(store, "m", [row(2), row(1, x=99.0), row(3)], max_rows=100)
    assert conflict.value.row_ids == ["1"] and "'1'" in str(conflict.value)
    assert [r.row_id for r in logged(store)] == ["1"]  # rows 2 and 3 were not written


def test_a_bad_row_or_too_many_rows_write_nothing(store: AuditStore) -> None:
    with pytest.raises(RowsRefused):
        append(store, "m", [row(1), row(2, x="NaN")], max_rows=100)
    with pytest.raises(TooManyRows, match="3 rows; the limit is 2"):
        append(store, "m", [row(1), row(2), row(3)], max_rows=2)
    with pytest.raises(NotFound, match="no model 'nope'"):
        append(store, "nope", [row(1)], max_rows=100)
    assert logged(store) == []


def test_a_label_logged_with_a_row_is_stored_as_its_label(store: AuditStore) -> None:
    append(store, "m", [row(1, y=True), row(2)], max_rows=100)
    one, two = logged(store)
    assert (one.label, two.label) == ("1", None)
    assert one.labelled_at == one.received_at and two.labelled_at is None


def test_racing_requests_log_each_row_once(store: AuditStore) -> None:
    """Requests sharing row ids, in threads at once: every row is logged exactly once and
    every request is answered (a duplicate, never an error)."""
    answers: list[Any] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def send(offset: int) -> Callable[[], None]:
        def go() -> None:
            start.wait()
            try:
                answers.append(
                    append(store, "m", [row(offset + i) for i in range(50)], max_rows=100)
                )
            except BaseException as exc:  # collected, asserted below
                errors.append(exc)

        return go

    threads = [threading.Thread(target=send(o)) for o in (0, 0, 25, 25, 50, 50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum(a.accepted for a in answers) == 100
    assert sum(a.duplicates for a in answers) == 200
    with store.reading() as session:
        assert session.scalar(select(func.count()).select_from(InferenceRow)) == 100


# --- labels: one class however it is sent ----------------------------------------------------


def test_a_class_sent_as_a_number_or_as_its_text_is_one_label(
    settings: Settings, tmp_path: Path
) -> None:
    from sqlalchemy import update

    from driftpilot.inference.labels import post_labels
    from driftpilot.runs.plane import ControlPlane

    when = [datetime(2026, 1, 1, tzinfo=UTC)] * 3
    base = {"t": when, "x": [1.0, 2, 3], "c": ["a"] * 3}
    models = []
    for name, classes in (("ints", [1, 2, 3]), ("words", ["1", "2", "3"])):
        model = binary_model()
        model.name, model.task = name, "multiclass"
        models.append(with_reference(model, tmp_path, pl.DataFrame(base | {"y": classes})))
    cp = ControlPlane(settings)
    try:
        cp.store.add_all([*models, binary_model()])
        for name in ("ints", "words"):
            append(cp.store, name, [row(1, y=3, prediction="3"), row(2), row(3)], max_rows=9)
            # The label the row came with, sent again as text; then one sent as both.
            done = post_labels(cp, name, [{"row_id": 1, "y": "3"}, {"row_id": 2, "y": 2}], "a")
            assert (done.accepted, done.duplicates) == (1, 1), name
            again = post_labels(cp, name, [{"row_id": 2, "y": "2"}, {"row_id": 1, "y": 3}], "a")
            assert (again.accepted, again.duplicates) == (0, 2), name
        with cp.store.reading() as session:
            labels = session.execute(
                select(InferenceRow.model, InferenceRow.label, InferenceRow.payload).where(
                    InferenceRow.row_id == "1"
                )
            ).all()
        stored = {m: (label, json.loads(p)["prediction"]) for m, label, p in labels}
        assert stored == {"ints": ("3", 3), "words": ('"3"', "3")}  # typed as the classes
        # A label stored as text before labels were typed is still the same class.
        with cp.store.session() as session:
            session.execute(
                update(InferenceRow)
                .where(InferenceRow.model == "ints", InferenceRow.row_id == "3")
                .values(label='"1"')
            )
        assert post_labels(cp, "ints", [{"row_id": 3, "y": 1}], "a").duplicates == 1
        append(cp.store, "m", [row(1, y=True)], max_rows=9)  # binary: true and 1 are one
        assert post_labels(cp, "m", [{"row_id": 1, "y": 1}], "a").duplicates == 1
    finally:
        cp.close()
