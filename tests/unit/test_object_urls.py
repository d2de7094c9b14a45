"""Object-store URLs and globs (driftpilot.sources.objects), without a store: parsing, the
allowed roots, glob matching across segments, and the ledger key of an object's version."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from driftpilot.core.errors import ConfigError
from driftpilot.core.settings import SourceSettings
from driftpilot.sources.objects import (
    KEY_LIMIT,
    ObjectNotAllowed,
    check_object_glob,
    is_object_url,
    ledger_key,
    matches,
    parse_object_url,
)

if TYPE_CHECKING:
    from obstore import ObjectMeta

CONF = SourceSettings(object_roots=["s3://data-lake/batches/", "s3://whole-bucket"])


def test_is_object_url() -> None:
    assert is_object_url("s3://b/k.csv") and is_object_url("S3://b/k.csv")
    assert not is_object_url("flights/*.parquet") and not is_object_url("/s3://x")


@pytest.mark.parametrize(
    "url",
    [
        "s3://data-lake/batches/*.parquet",
        "s3://data-lake/batches/2026/**/*.csv",
        "s3://data-lake/batches/day-??.csv",
        "s3://whole-bucket/anything/*.csv",
    ],
)
def test_globs_under_a_root_are_allowed(url: str) -> None:
    assert check_object_glob(url, CONF) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("s3://data-lake/other/*.parquet", "not under an allowed object root"),
        ("s3://data-lake/batch*/x.csv", "not under an allowed object root"),
        ("s3://data-lake/*/x.csv", "not under an allowed object root"),
        ("s3://elsewhere/batches/*.csv", "not under an allowed object root"),
        ("s3://data-lake/batches/../secret/*.csv", "without '..'"),
        ("s3://data-lake/batches//x.csv", "without '..'"),
        ("s3://data-lake/batches/a\\b.csv", "without '..'"),
        ("s3://data-lake/", "without '..'"),
        ("s3://Data_Lake/batches/x.csv", "not a valid bucket name"),
        ("s3://data-lake/batches/a**/x.csv", "'**' must be a whole path segment"),
        ("https://data-lake/batches/x.csv", "not an object-store URL"),
    ],
)
def test_other_urls_are_refused_as_config_errors(url: str, reason: str) -> None:
    with pytest.raises(ObjectNotAllowed, match=re.escape(reason)) as refused:
        check_object_glob(url, CONF)
    assert isinstance(refused.value, ConfigError)


def test_no_roots_refuses_every_url() -> None:
    with pytest.raises(ObjectNotAllowed, match="DRIFTPILOT_SOURCES_OBJECT_ROOTS"):
        check_object_glob("s3://data-lake/batches/*.csv", SourceSettings())


def test_parse_keeps_bucket_and_key() -> None:
    parsed = parse_object_url("s3://data-lake/batches/2026/*.csv")
    assert (parsed.bucket, parsed.key, parsed.fixed) == (
        "data-lake",
        "batches/2026/*.csv",
        "batches/2026/",
    )
    assert str(parsed) == "s3://data-lake/batches/2026/*.csv"


@pytest.mark.parametrize(
    ("key", "pattern", "expected"),
    [
        ("b/jan.csv", "b/*.csv", True),
        ("b/sub/jan.csv", "b/*.csv", False),  # '*' stays within a segment
        ("b/sub/jan.csv", "b/**/*.csv", True),
        ("b/jan.csv", "b/**/*.csv", True),  # '**' spans no segment too
        ("b/x/y/z/jan.parquet", "b/**/*.parquet", True),
        ("b/jan.csv", "b/j?n.csv", True),
        ("b/jan.csv", "b/[a-i]*.csv", False),
        ("b/Jan.csv", "b/jan.csv", False),  # keys are case-sensitive
    ],
)
def test_glob_matching(key: str, pattern: str, expected: bool) -> None:
    assert matches(key, pattern) is expected


def test_the_ledger_key_changes_with_any_part_of_the_version() -> None:
    when = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
    meta: ObjectMeta = {
        "path": "b/jan.csv",
        "last_modified": when,
        "size": 10,
        "e_tag": '"abc"',
        "version": None,
    }
    key = ledger_key("bkt", meta)
    assert key.startswith("glob:s3://bkt/b/jan.csv:")
    changed: list[ObjectMeta] = [
        {**meta, "size": 11},
        {**meta, "e_tag": '"abd"'},
        {**meta, "last_modified": when.replace(second=1)},
    ]
    assert all(ledger_key("bkt", other) != key for other in changed)
    hashed = ledger_key("bkt", {**meta, "path": "b/" + "x" * 600 + ".csv"})
    assert len(hashed) <= KEY_LIMIT and hashed.startswith("glob:s3-sha256:")
