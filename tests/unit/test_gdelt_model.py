"""The built-in GDELT model's frame, features and reference choice, on recorded-format exports."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from driftpilot.core.errors import SchemaError
from tests.fixtures.gdelt import export_bytes, series_export, series_stamps
from tools.datasets import BUILTIN_SPECS, GDELT, LIVE_SPECS, SPECS
from tools.gdelt import EVENT_COLUMNS, parse_export, parse_file_list
from tools.gdelt_model import LEAKING, model_frame, newest_exports
from tools.metrics import infer_task


@pytest.fixture(scope="module")
def series() -> pl.DataFrame:
    stamps = series_stamps("20261207040000", 3)
    return pl.concat([parse_export(series_export(s, 300)) for s in reversed(stamps)])


def test_conflict_is_quadclass_3_or_4_and_event_time_is_dateadded_in_utc(
    series: pl.DataFrame,
) -> None:
    framed = model_frame(series)
    assert framed.columns == [*series.columns, "conflict", "event_time"]  # raw columns kept
    assert framed.schema["conflict"] == pl.Int8
    assert framed.schema["event_time"] == pl.Datetime("us", "UTC")
    expected = framed["QuadClass"].is_in([3, 4]).cast(pl.Int8)
    assert (framed["conflict"] == expected).all()
    assert set(framed["conflict"].unique()) == {0, 1}
    first = framed.row(0, named=True)
    assert first["event_time"] == datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
    stamps = framed["event_time"].dt.strftime("%Y%m%d%H%M%S").cast(pl.Int64)
    assert (stamps == framed["DATEADDED"]).all()
    assert framed["event_time"].is_sorted()  # the exports came newest first
    assert model_frame(framed).equals(framed)  # a batch framed twice is the same batch
    task, reason = infer_task(framed["conflict"])
    assert task == GDELT.task == "binary", reason


def test_an_event_without_a_class_has_no_label_and_a_foreign_frame_is_refused() -> None:
    export = parse_export(export_bytes("20261122101500", 5))
    unclassed = export.with_columns(pl.lit(None, pl.Int8).alias("QuadClass"))
    assert model_frame(unclassed)["conflict"].null_count() == 5
    with pytest.raises(SchemaError, match="QuadClass"):
        model_frame(export.drop("QuadClass"))


def test_features_are_gdelt_columns_and_none_determines_the_label(series: pl.DataFrame) -> None:
    assert set(GDELT.features) <= set(EVENT_COLUMNS)
    assert not set(GDELT.features) & {*LEAKING, GDELT.target, GDELT.time_col, "DATEADDED"}
    # Why they leak: each root code names one class, and each event code one Goldstein score.
    by_root = series.group_by("EventRootCode").agg(pl.col("QuadClass").n_unique())
    assert (by_root["QuadClass"] == 1).all()
    by_code = series.group_by("EventCode").agg(pl.col("GoldsteinScale").n_unique())
    assert (by_code["GoldsteinScale"] == 1).all()
    framed = model_frame(series)
    assert all(framed.schema[c].is_numeric() for c in GDELT.numeric)
    assert all(framed.schema[c] == pl.String for c in GDELT.categorical)


def test_gdelt_is_live_never_among_the_offline_datasets() -> None:
    assert "gdelt" in LIVE_SPECS and "gdelt" not in SPECS
    assert BUILTIN_SPECS == {**SPECS, **LIVE_SPECS}
    assert not set(SPECS) & set(LIVE_SPECS)


def test_the_newest_exports_are_chosen_once_each_oldest_first() -> None:
    base = "http://gdelt.example/gdeltv2/"
    lines = [
        f"{100 + i} {i:032x} {base}{stamp}.{kind}"
        for i, stamp in enumerate(series_stamps("20261207040000", 5))
        for kind in ("export.CSV.zip", "mentions.CSV.zip", "gkg.csv.zip")
    ]
    master = parse_file_list("\n".join(lines))
    last = parse_file_list("\n".join(lines[-3:]))  # lastupdate repeats the newest window
    chosen = newest_exports(master + last, 3)
    assert [e.url.rsplit("/", 1)[-1] for e in chosen] == [
        "20261207043000.export.CSV.zip",
        "20261207044500.export.CSV.zip",
        "20261207050000.export.CSV.zip",
    ]
    assert len(newest_exports(last, 8)) == 1
    assert newest_exports([], 8) == []
