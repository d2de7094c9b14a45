"""GDELT 2.0 tools: the real fetcher for the 15-minute event exports.

GDELT publishes ``lastupdate.txt`` (the newest files) and ``masterfilelist.txt`` (all files),
one ``<bytes> <md5> <url>`` line per file. An event export is a zip holding one tab-separated
file of 61 columns without a header. Event codes (CAMEO) are strings with leading zeros and
stay strings. GDELT 1.0 files (57/58 columns) are rejected with a clear error.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import DatasetUnavailable, FormatError, IntegrityError

DEFAULT_BASE_URL = "http://data.gdeltproject.org/gdeltv2/"

_ACTOR = [
    "Code",
    "Name",
    "CountryCode",
    "KnownGroupCode",
    "EthnicCode",
    "Religion1Code",
    "Religion2Code",
    "Type1Code",
    "Type2Code",
    "Type3Code",
]
_GEO = ["Type", "FullName", "CountryCode", "ADM1Code", "ADM2Code", "Lat", "Long", "FeatureID"]

EVENT_COLUMNS: list[str] = [
    "GLOBALEVENTID",
    "SQLDATE",
    "MonthYear",
    "Year",
    "FractionDate",
    *[f"Actor1{c}" for c in _ACTOR],
    *[f"Actor2{c}" for c in _ACTOR],
    "IsRootEvent",
    "EventCode",
    "EventBaseCode",
    "EventRootCode",
    "QuadClass",
    "GoldsteinScale",
    "NumMentions",
    "NumSources",
    "NumArticles",
    "AvgTone",
    *[f"Actor1Geo_{c}" for c in _GEO],
    *[f"Actor2Geo_{c}" for c in _GEO],
    *[f"ActionGeo_{c}" for c in _GEO],
    "DATEADDED",
    "SOURCEURL",
]

_INTS: dict[str, type[pl.DataType]] = {
    "GLOBALEVENTID": pl.Int64,
    "SQLDATE": pl.Int32,
    "MonthYear": pl.Int32,
    "Year": pl.Int16,
    "IsRootEvent": pl.Int8,
    "QuadClass": pl.Int8,
    "NumMentions": pl.Int32,
    "NumSources": pl.Int32,
    "NumArticles": pl.Int32,
    "DATEADDED": pl.Int64,
    "Actor1Geo_Type": pl.Int8,
    "Actor2Geo_Type": pl.Int8,
    "ActionGeo_Type": pl.Int8,
}
_FLOATS = {
    "FractionDate",
    "GoldsteinScale",
    "AvgTone",
    *(f"{g}_{c}" for g in ("Actor1Geo", "Actor2Geo", "ActionGeo") for c in ("Lat", "Long")),
}
EVENT_SCHEMA: dict[str, type[pl.DataType]] = {
    name: _INTS.get(name, pl.Float64 if name in _FLOATS else pl.String) for name in EVENT_COLUMNS
}

_STAMP = re.compile(r"(\d{14})\.(export|mentions|gkg)\.", re.IGNORECASE)


class GdeltFile(BaseModel):
    """One entry of lastupdate.txt / masterfilelist.txt."""

    size: int = Field(description="Size of the zip in bytes.")
    md5: str = Field(description="MD5 of the zip.")
    url: str
    kind: Literal["export", "mentions", "gkg"]
    timestamp: datetime = Field(description="Start of the 15-minute window (UTC).")


def parse_file_list(text: str) -> list[GdeltFile]:
    """Parse lastupdate.txt or masterfilelist.txt into entries.

    Blank lines are skipped. Raises FormatError naming the first line that is not
    ``<bytes> <md5> <url>`` with a GDELT 2.0 file name.
    """
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit() or not re.fullmatch(r"[0-9a-f]{32}", parts[1]):
            raise FormatError(f"line {number} is not '<bytes> <md5> <url>': {line[:120]!r}")
        match = _STAMP.search(parts[2])
        if match is None:
            raise FormatError(f"line {number} names no GDELT 2.0 file: {parts[2][:120]!r}")
        entries.append(
            GdeltFile(
                size=int(parts[0]),
                md5=parts[1],
                url=parts[2],
                kind=match.group(2).lower(),
                timestamp=datetime.strptime(match.group(1), "%Y%m%d%H%M%S"),
            )
        )
    return entries


def fetch_file_list(
    base_url: str = DEFAULT_BASE_URL, *, master: bool = False, timeout: float = 30.0
) -> list[GdeltFile]:
    """Download and parse lastupdate.txt (or masterfilelist.txt when ``master``).

    Raises:
        DatasetUnavailable: the server cannot be reached or answers with an error.
    """
    url = base_url.rstrip("/") + ("/masterfilelist.txt" if master else "/lastupdate.txt")
    return parse_file_list(_get(url, timeout).decode("utf-8", errors="replace"))


def fetch_list_tail(
    base_url: str = DEFAULT_BASE_URL, *, tail_bytes: int = 64_000, timeout: float = 30.0
) -> list[GdeltFile]:
    """The newest entries of masterfilelist.txt: about its last ``tail_bytes`` bytes.

    The master list names every file since 2015 (over 100 MB) and grows at its end, so only
    its tail is asked for (an HTTP Range request). A server that ignores Range sends the whole
    list: it is streamed and only the lines of the last ``tail_bytes`` are kept, so memory
    stays bounded either way.

    Raises:
        DatasetUnavailable: the server cannot be reached or answers with an error.
        FormatError: a kept line is not a GDELT 2.0 list entry.
    """
    import httpx

    url = base_url.rstrip("/") + "/masterfilelist.txt"
    headers = {"Range": f"bytes=-{tail_bytes}"}
    kept: deque[str] = deque()
    size = 0
    try:
        with httpx.stream(
            "GET", url, headers=headers, timeout=timeout, follow_redirects=True
        ) as response:
            response.raise_for_status()
            # 206 from byte 0 on is the whole list; from further on, a cut first line
            cut = response.status_code == 206 and not response.headers.get(
                "content-range", ""
            ).startswith("bytes 0-")
            for line in response.iter_lines():
                kept.append(line)
                size += len(line) + 1
                while size > tail_bytes and len(kept) > 1:
                    size -= len(kept.popleft()) + 1
    except httpx.HTTPError as exc:
        raise DatasetUnavailable(f"cannot fetch {url}: {exc}") from exc
    if cut and kept:
        kept.popleft()  # it begins mid-line: never parse a fragment
    return parse_file_list("\n".join(kept))


def download(entry: GdeltFile, cache_dir: Path, *, timeout: float = 60.0) -> Path:
    """Download a listed zip into ``cache_dir`` (once) and check its size and md5.

    Raises:
        DatasetUnavailable: download failed.
        IntegrityError: size or md5 differ from the list entry (the file is not kept).
    """
    target = cache_dir / "gdelt" / entry.url.rsplit("/", 1)[-1]
    if target.exists() and _md5(target.read_bytes()) == entry.md5:
        return target
    payload = _get(entry.url, timeout)
    if len(payload) != entry.size:
        raise IntegrityError(f"{entry.url}: got {len(payload)} bytes, list says {entry.size}")
    if _md5(payload) != entry.md5:
        raise IntegrityError(f"{entry.url}: md5 {_md5(payload)} differs from listed {entry.md5}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(payload)
    tmp.replace(target)
    return target


def parse_export(source: Path | bytes) -> pl.DataFrame:
    """Read a GDELT 2.0 event export (the zip, or the CSV inside it) into typed columns.

    Adds ``event_date`` (from SQLDATE) and ``date_added`` (from DATEADDED, UTC).

    Raises:
        FormatError: not a zip/CSV, a GDELT 1.0 file (57/58 columns), or any other column count.
    """
    raw = source.read_bytes() if isinstance(source, Path) else source
    if raw[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            names = archive.namelist()
            if len(names) != 1:
                raise FormatError(f"export zip should hold one file, holds {names}")
            raw = archive.read(names[0])
    first = raw.split(b"\n", 1)[0]
    n_cols = first.count(b"\t") + 1 if first else 0
    if n_cols in (57, 58):
        raise FormatError(f"file has {n_cols} columns: a GDELT 1.0 export; GDELT 2.0 has 61")
    if n_cols != len(EVENT_COLUMNS):
        raise FormatError(f"file has {n_cols} columns; a GDELT 2.0 event export has 61")
    try:
        frame = pl.read_csv(
            raw,
            separator="\t",
            has_header=False,
            new_columns=EVENT_COLUMNS,
            schema_overrides=EVENT_SCHEMA,
            quote_char=None,
        )
    except pl.exceptions.PolarsError as exc:
        raise FormatError(f"cannot parse GDELT export: {exc}") from exc
    return frame.with_columns(
        pl.col("SQLDATE").cast(pl.String).str.to_date("%Y%m%d", strict=False).alias("event_date"),
        pl.col("DATEADDED")
        .cast(pl.String)
        .str.to_datetime("%Y%m%d%H%M%S", time_zone="UTC", strict=False)
        .alias("date_added"),
    )


def fetch_latest_events(cache_dir: Path, base_url: str = DEFAULT_BASE_URL) -> pl.DataFrame:
    """The newest 15-minute event export: list, download, verify, parse."""
    exports = [e for e in fetch_file_list(base_url) if e.kind == "export"]
    if not exports:
        raise FormatError("lastupdate.txt lists no event export")
    return parse_export(download(exports[-1], cache_dir))


def _md5(payload: bytes) -> str:
    return hashlib.md5(payload, usedforsecurity=False).hexdigest()


def _get(url: str, timeout: float) -> bytes:
    import httpx

    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise DatasetUnavailable(f"cannot fetch {url}: {exc}") from exc
    return response.content
