from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from driftpilot.core.errors import DataError, FormatError, IntegrityError, SchemaError
from driftpilot.core.settings import Settings
from tools.data import (
    batch_dir,
    content_hash,
    load_table,
    make_batch,
    persist_batch,
    read_batch,
    split_batches,
)


def test_load_csv_parquet_glob_and_lazy(tmp_path: Path, jan_sample: pl.DataFrame) -> None:
    small = jan_sample.head(100).drop("time_hour")
    small.write_csv(tmp_path / "a.csv")
    small.write_parquet(tmp_path / "a.parquet")
    small.write_parquet(tmp_path / "b.parquet")
    assert load_table(tmp_path / "a.csv").shape == small.shape  # type: ignore[union-attr]
    assert load_table(tmp_path / "a.parquet").equals(small)  # type: ignore[union-attr]
    assert load_table(str(tmp_path / "*.parquet")).height == 200  # type: ignore[union-attr]
    lazy = load_table(tmp_path / "a.parquet", lazy=True)
    assert isinstance(lazy, pl.LazyFrame)


def test_load_rejects_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_table(tmp_path / "nope.csv")
    (tmp_path / "x.xlsx").write_text("not a table")
    with pytest.raises(FormatError, match="unsupported file type"):
        load_table(tmp_path / "x.xlsx")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(FormatError, match="cannot read"):
        load_table(tmp_path / "bad.parquet")


def test_flights_split_into_twelve_real_months(months: dict[str, pl.DataFrame]) -> None:
    assert list(months) == [f"2013-{m:02d}" for m in range(1, 13)]
    assert all(frame["month"].unique().to_list() == [int(k[-2:])] for k, frame in months.items())
    assert sum(f.height for f in months.values()) == 327_346


def test_numeric_time_is_cut_into_fixed_windows() -> None:
    frame = pl.DataFrame({"Time": [0.0, 10.0, 3599.0, 3600.0, 90_000.0], "x": [1, 2, 3, 4, 5]})
    hours = split_batches(frame, "Time", every="hour")
    assert [b.info.n_rows for b in hours] == [3, 1, 1]
    assert [b.info.batch_id for b in hours] == ["hour-00000", "hour-00001", "hour-00025"]
    with pytest.raises(SchemaError, match="cannot be cut by month"):
        split_batches(frame, "Time", every="month")


def test_row_count_batches_and_bad_arguments(jan_sample: pl.DataFrame) -> None:
    batches = split_batches(jan_sample, "time_hour", n_rows=2500)
    assert [b.info.n_rows for b in batches] == [2500, 2500, 1000]
    assert batches[0].info.end <= batches[1].info.start  # type: ignore[operator]
    with pytest.raises(SchemaError, match="time column"):
        split_batches(jan_sample, "no_such_col")
    with pytest.raises(DataError, match="n_rows"):
        split_batches(jan_sample, "time_hour", n_rows=0)
    with pytest.raises(DataError, match="every must be"):
        split_batches(jan_sample, "time_hour", every="fortnight")  # type: ignore[arg-type]


def test_content_hash_ignores_row_order_but_not_content(jan_sample: pl.DataFrame) -> None:
    a = jan_sample.head(500)
    assert content_hash(a) == content_hash(a.reverse())
    changed = a.with_columns(pl.col("temp") + 0.01)
    assert content_hash(a) != content_hash(changed)
    assert content_hash(a) != content_hash(a.rename({"temp": "t"}))


def test_persist_is_atomic_and_read_checks_the_hash(
    tmp_path: Path, jan_sample: pl.DataFrame
) -> None:
    batch = make_batch(jan_sample.head(300), "2013-01", "time_hour")
    info = persist_batch(batch, tmp_path)
    assert info.path is not None and Path(info.path).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["2013-01.parquet"]  # no temp files left
    assert read_batch(info).frame.equals(batch.frame)
    batch.frame.head(10).write_parquet(info.path)  # tamper
    with pytest.raises(IntegrityError, match="changed"):
        read_batch(info)
    with pytest.raises(DataError, match="no persisted file"):
        read_batch(batch.info)


def test_batches_persist_under_the_home(settings: Settings, jan_sample: pl.DataFrame) -> None:
    info = persist_batch(make_batch(jan_sample.head(20), "b1"), batch_dir("flights"))
    assert info.path == str(settings.batches_dir / "flights" / "b1.parquet")


def test_batch_info_carries_time_range(jan_sample: pl.DataFrame) -> None:
    batch = make_batch(jan_sample, "x", "time_hour")
    assert isinstance(batch.info.start, datetime)
    assert batch.info.start.month == 1 and batch.info.end.month == 1  # type: ignore[union-attr]


def test_conform_gives_a_batch_the_windows_types_without_changing_a_value() -> None:
    from datetime import datetime

    from tools.data import conform

    zone = "America/New_York"
    reference = pl.DataFrame(
        {
            "t": pl.Series([datetime(2013, 1, 1, 5)]).dt.replace_time_zone(zone),
            "x": [1.5],
            "n": pl.Series([1], dtype=pl.Int32),
            "c": pl.Series(["a"], dtype=pl.Categorical),
        }
    ).schema
    as_csv = pl.DataFrame(
        {
            "t": pl.Series([datetime(2013, 7, 1, 9)]).dt.replace_time_zone("UTC"),
            "x": [2],  # integers where the window has floats
            "n": [2.5],  # a fraction cannot become an Int32: left for the quality checks
            "c": ["b"],
        }
    )
    conformed, notes = conform(as_csv, reference)
    assert conformed.schema["t"] == reference["t"] and conformed.schema["x"] == pl.Float64
    assert conformed["t"][0] == as_csv["t"][0]  # the same instant, now in New York time
    assert conformed["t"].dt.hour()[0] == 5
    assert conformed.schema["n"] == pl.Float64 and conformed["n"][0] == 2.5
    assert conformed.schema["c"] == pl.Categorical
    assert [n.split()[1] for n in notes] == ["'t'", "'x'", "'c'"]
    naive = pl.DataFrame({"t": [datetime(2013, 7, 1, 5)]})
    wall, _ = conform(naive, reference)
    assert wall["t"].dt.hour()[0] == 5 and wall.schema["t"] == reference["t"]

    fall_back = pl.DataFrame({"t": [datetime(2013, 11, 3, 1, 30), datetime(2013, 3, 10, 2, 30)]})
    dst, _ = conform(fall_back, reference)  # an hour that happened twice, one that never did
    assert dst["t"].dt.hour()[0] == 1 and dst["t"].null_count() == 1
