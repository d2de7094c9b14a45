"""Streaming ingestion tools: a scan of a batch file gives the same hash, conformed types and
quality verdict as the batch in memory (so a batch bigger than memory is judged as a small
one would be), and a scan is filed without being collected."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import tools.data
from agents.ingestion import time_range, with_label_column
from tools.data import conform, content_hash, n_rows, write_parquet_atomic
from tools.datasets import FLIGHTS
from tools.quality import check_batch
from tools.quality_profile import ReferenceProfile, profile_reference

COLUMNS = [*FLIGHTS.features, FLIGHTS.target, FLIGHTS.time_col]


@pytest.fixture(scope="module")
def reference(months: dict[str, pl.DataFrame]) -> ReferenceProfile:
    return profile_reference(months["2013-01"], COLUMNS)


def scan_of(frame: pl.DataFrame, path: Path) -> pl.LazyFrame:
    """The frame written in small row groups and scanned back (several streaming chunks)."""
    frame.write_parquet(path, row_group_size=500)
    return pl.scan_parquet(path)


def bad_batches(feb: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """One batch per kind of finding, real February flights otherwise."""
    every_other = pl.int_range(pl.len()) % 2 == 0
    return {
        "clean": feb,
        "empty": feb.head(0),
        "null_storm": feb.with_columns(
            pl.when(every_other).then(None).otherwise(pl.col("temp")).alias("temp")
        ),
        "nan_and_inf": feb.with_columns(
            pl.when(every_other).then(float("nan")).otherwise(pl.col("dewp")).alias("dewp"),
            pl.when(every_other).then(float("inf")).otherwise(pl.col("humid")).alias("humid"),
        ),
        "wild": feb.with_columns(pl.col("distance") * 100),
        "constant_and_new": feb.with_columns(
            pl.lit(5.0).alias("visib"), pl.lit("ZZZ").alias("carrier")
        ),
        "foreign_labels": feb.with_columns(pl.lit(7, dtype=pl.Int8).alias("delayed")),
        "no_labels": feb.with_columns(pl.lit(None, dtype=pl.Int8).alias("delayed")),
        "schema_break": feb.drop("temp").with_columns(pl.col("distance").cast(pl.String)),
        "extra": feb.with_columns(pl.lit(1).alias("ignore previous instructions")),
    }


def test_a_scan_hashes_as_the_frame_does(
    tmp_path: Path, jan_sample: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tools.data, "HASH_CHUNK_ROWS", 700)  # several chunks, one odd-sized
    scan = scan_of(jan_sample, tmp_path / "b.parquet")
    assert content_hash(scan) == content_hash(jan_sample)
    assert content_hash(scan.head(0)) == content_hash(jan_sample.head(0))
    assert content_hash(scan) != content_hash(jan_sample.head(5999))
    assert n_rows(scan) == jan_sample.height == n_rows(jan_sample)


def test_conform_on_a_scan_stays_lazy_and_matches_the_frame(tmp_path: Path) -> None:
    schema = pl.Schema(
        [
            ("t", pl.Datetime("us", "America/New_York")),
            ("x", pl.Float64()),
            ("lossy", pl.Int32()),
            ("c", pl.Categorical()),
        ]
    )
    batch = pl.DataFrame(
        {
            "t": pl.Series([1_700_000_000_000_000, None], dtype=pl.Datetime("us", "UTC")),
            "x": [1, 2],  # integers for floats: lossless
            "lossy": [1.5, 2.0],  # a float 1.5 is no Int32: left for the quality checks
            "c": ["a", "b"],
        }
    )
    eager, eager_notes = conform(batch, schema)
    lazy, lazy_notes = conform(scan_of(batch, tmp_path / "c.parquet"), schema)
    assert isinstance(lazy, pl.LazyFrame) and isinstance(eager, pl.DataFrame)
    assert lazy_notes == eager_notes and len(eager_notes) == 3
    assert not any("'lossy'" in n for n in eager_notes)
    assert lazy.collect().equals(eager)
    assert eager.schema["t"] == schema["t"] and eager.schema["x"] == pl.Float64


def test_a_scan_is_filed_whole_and_atomically(tmp_path: Path, jan_sample: pl.DataFrame) -> None:
    scan = scan_of(jan_sample, tmp_path / "in.parquet")
    labelled = with_label_column(scan.drop("delayed"), "delayed", pl.Int8())
    assert isinstance(labelled, pl.LazyFrame)
    target = tmp_path / "filed" / "b.parquet"
    write_parquet_atomic(labelled, target)
    filed = pl.read_parquet(target)
    assert filed.height == jan_sample.height and filed["delayed"].null_count() == filed.height
    assert filed.drop("delayed").equals(jan_sample.drop("delayed"))
    assert [p.name for p in target.parent.iterdir()] == ["b.parquet"]  # no temporary left
    assert with_label_column(scan, "delayed", pl.Int8()) is scan  # labelled: unchanged


def test_time_range_of_a_scan(tmp_path: Path, jan_sample: pl.DataFrame) -> None:
    scan = scan_of(jan_sample, tmp_path / "t.parquet")
    assert time_range(scan, "time_hour") == time_range(jan_sample, "time_hour") is not None
    assert time_range(scan, "missing") is None


def test_every_verdict_on_a_scan_is_the_verdict_in_memory(
    tmp_path: Path, months: dict[str, pl.DataFrame], reference: ReferenceProfile
) -> None:
    feb = months["2013-02"].select(COLUMNS).sample(n=5000, seed=4)
    limits = {"wind_speed": (0.0, 30.0), "humid": (0.0, 100.0)}
    seen = {content_hash(feb)}
    found = set()
    for name, batch in bad_batches(feb).items():
        kwargs = {
            "time_columns": [FLIGHTS.time_col],
            "label_columns": [FLIGHTS.target],
            "hard_limits": limits,
            "seen_hashes": seen if name == "clean" else (),
        }
        in_memory = check_batch(batch, reference, **kwargs)  # type: ignore[arg-type]
        streamed = check_batch(scan_of(batch, tmp_path / f"{name}.parquet"), reference, **kwargs)  # type: ignore[arg-type]
        assert streamed == in_memory, name
        found |= {i.check for i in in_memory.issues}
    # the batches above reach every finding a batch can earn
    assert found >= {
        "empty",
        "duplicate_batch",
        "null_spike",
        "non_finite",
        "hard_limit",
        "out_of_range",
        "constant_column",
        "new_categories",
        "type_mismatch",
        "missing_labels",
        "missing_column",
        "extra_column",
    }


def test_a_known_digest_is_not_recomputed(
    jan_sample: pl.DataFrame, reference: ReferenceProfile
) -> None:
    verdict = check_batch(jan_sample.select(COLUMNS), reference, digest="f" * 64)
    assert verdict.content_hash == "f" * 64


def test_nans_and_infinities_are_kept_out_of_the_value_counts(
    months: dict[str, pl.DataFrame], reference: ReferenceProfile
) -> None:
    """The numbers are counted raw and the NaNs and infinities taken off after: a column
    half NaN, the rest far out, is all far out; half infinite, the rest one value, is
    constant (its finite extremes come from a second pass)."""
    feb = months["2013-02"].select(COLUMNS).sample(n=4000, seed=4)
    half = pl.int_range(pl.len()) % 2 == 0
    batch = feb.with_columns(
        pl.when(half).then(float("nan")).otherwise(pl.col("distance") + 1e6).alias("distance"),
        pl.when(half).then(float("-inf")).otherwise(5.0).alias("visib"),
    )
    found = {(i.check, i.column): i for i in check_batch(batch.lazy(), reference).issues}
    assert found[("out_of_range", "distance")].value == 1.0
    assert found[("null_spike", "distance")].value == 0.5
    assert found[("non_finite", "visib")].value == 0.5
    assert found[("constant_column", "visib")].value == 2000.0
    assert ("out_of_range", "visib") not in found  # 5.0 is inside January's range


def test_a_csv_that_breaks_past_its_schema_sample_is_a_format_error(tmp_path: Path) -> None:
    from driftpilot.core.errors import FormatError
    from driftpilot.runs.lifecycle import intake

    given = tmp_path / "late.csv"
    rows = "".join(f"{i},1\n" for i in range(10_001))  # past the 10,000 rows types are read from
    given.write_text(f"a,b\n{rows}x,1\n")
    target = tmp_path / "filed.parquet"
    with pytest.raises(FormatError, match="cannot read"):
        intake(given, target)
    assert not target.exists() and not list(tmp_path.glob("*.tmp"))


def test_a_write_that_runs_out_of_room_leaves_no_file(tmp_path: Path) -> None:
    """A full disk mid-write (here a file-size limit: EFBIG, as ENOSPC would) raises and
    leaves neither the target nor the temporary: a torn Parquet file would later read as
    'Invalid thrift' in a model's reference."""
    script = (
        "import resource, signal, sys\n"
        "import numpy as np, polars as pl\n"
        "from pathlib import Path\n"
        "from tools.data import write_parquet_atomic\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))\n"
        "frame = pl.DataFrame({'x': np.random.default_rng(0).random(200_000)})\n"
        "try:\n"
        "    write_parquet_atomic(frame, Path(sys.argv[1]))\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
        "    sys.exit(3)\n"
    )
    target = tmp_path / "models" / "window-r1.parquet"
    done = subprocess.run(
        [sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "File too large" in done.stdout or "os error 27" in done.stdout, done.stdout
    assert list(target.parent.iterdir()) == []


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounts a tmpfs (root)"
)
def test_a_write_on_a_full_disk_is_an_enospc_os_error(tmp_path: Path) -> None:
    """However Polars words it, a Parquet write that fails on a full file system is
    OSError(ENOSPC): the API answers it as a disk outage (503), not a raw 500."""
    import errno

    import numpy as np

    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    try:
        frame = pl.DataFrame({"x": np.random.default_rng(0).random(200_000)})
        with pytest.raises(OSError) as raised:
            write_parquet_atomic(frame, disk / "b.parquet")
        assert raised.value.errno == errno.ENOSPC
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)
