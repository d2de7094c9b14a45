from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from driftpilot.core.errors import FormatError
from tests.fixtures.gdelt import export_bytes, write_gdelt_fixtures
from tools.gdelt import EVENT_COLUMNS, parse_export, parse_file_list


def test_sixty_one_columns_in_order() -> None:
    assert len(EVENT_COLUMNS) == 61
    assert EVENT_COLUMNS[:2] == ["GLOBALEVENTID", "SQLDATE"] and EVENT_COLUMNS[-2:] == [
        "DATEADDED",
        "SOURCEURL",
    ]


def test_parse_file_list(tmp_path: Path) -> None:
    write_gdelt_fixtures(tmp_path, "http://127.0.0.1:1/gdeltv2/")
    entries = parse_file_list((tmp_path / "lastupdate.txt").read_text())
    assert [e.kind for e in entries] == ["export", "mentions", "gkg"]
    assert entries[0].timestamp == datetime(2026, 11, 22, 10, 30)
    assert len(parse_file_list((tmp_path / "masterfilelist.txt").read_text())) == 6


@pytest.mark.parametrize(
    "line",
    [
        "123 abc http://x/20261122101500.export.CSV.zip",
        "12 0123456789abcdef0123456789abcdef http://x/readme.txt",
        "only two",
    ],
)
def test_bad_file_list_lines_are_named(line: str) -> None:
    with pytest.raises(FormatError, match="line 2"):
        parse_file_list("\n".join(["", line]))


def test_export_types_keep_codes_as_strings() -> None:
    frame = parse_export(export_bytes("20261122103000", 25))
    assert frame.height == 25 and frame.width == 63
    assert frame.schema["EventCode"] == pl.String and frame.schema["EventRootCode"] == pl.String
    assert set(frame["EventRootCode"].to_list()) <= {"01", "02", "04", "19", "14"}
    assert frame["EventCode"].str.starts_with("0").any()  # leading zeros survive
    assert frame.schema["GLOBALEVENTID"] == pl.Int64 and frame.schema["AvgTone"] == pl.Float64
    assert frame.schema["ActionGeo_Lat"] == pl.Float64
    assert frame["date_added"].dt.hour().unique().to_list() == [10]
    assert frame["event_date"].unique().to_list()[0].isoformat() == "2026-11-22"


def test_gdelt_one_files_are_rejected() -> None:
    with pytest.raises(FormatError, match=r"GDELT 1\.0"):
        parse_export(export_bytes("20130401000000", 5, n_cols=58))


def test_garbage_is_rejected() -> None:
    with pytest.raises(FormatError, match="columns"):
        parse_export(b"just,a,csv\n1,2,3\n")
