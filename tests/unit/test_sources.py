"""The one built-in batch resolver (cached, worded errors) and the file reader's refusals
as the source layer raises them (the API's wording of them: tests/unit/test_api_basics.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftpilot.core.errors import DataError, NotFound
from driftpilot.core.settings import Settings
from driftpilot.sources import files, resolver

LIMITS = files.Limits(max_rows=100, max_columns=10, max_bytes=10_000, max_line_bytes=50)


def test_an_unknown_dataset_is_named_with_the_known_ones(settings: Settings) -> None:
    with pytest.raises(resolver.UnknownDataset) as caught:
        resolver.dataset_batch("nope:2013-01", settings)
    assert isinstance(caught.value, NotFound)
    assert str(caught.value) == (
        "unknown dataset 'nope'; built-in datasets: flights, flights_delay, "
        "flights_delay_class, creditcard, seattle_weather, gapminder, gdelt"
    )


def test_flights_batches_are_loaded_once_and_sampled_in_time_order(settings: Settings) -> None:
    first = resolver.dataset_batches("flights", settings)
    assert resolver.dataset_batches("flights", settings) is first  # cached
    assert list(first)[:3] == ["2013-01", "2013-02", "2013-03"]
    whole, batch_id = resolver.dataset_batch("flights:2013-03", settings)
    assert batch_id == "2013-03" and whole.height == first["2013-03"].info.n_rows
    part, _ = resolver.dataset_batch("flights:2013-03", settings, max_rows=100, seed=1)
    assert part.height == 100 and part["time_hour"].is_sorted()
    with pytest.raises(resolver.UnknownBatch, match=r"flights has no batch '2014-01'; batches: "):
        resolver.dataset_batch("flights:2014-01", settings)


def test_file_refusals_carry_their_status(tmp_path: Path) -> None:
    with pytest.raises(files.BatchRefused) as caught:
        files.resolve_under([tmp_path], "../x.csv")
    assert isinstance(caught.value, DataError)
    assert (caught.value.status, caught.value.slug) == (422, "path-not-allowed")
    with pytest.raises(files.BatchRefused) as caught:
        files.read_upload(b"x", "b.exe", LIMITS)
    assert caught.value.status == 415 and caught.value.slug is None
    (tmp_path / "ok.csv").write_text("a,b\n1,2\n")
    path = files.resolve_under([tmp_path], "ok.csv")
    assert files.read_file(path, LIMITS).shape == (1, 2)
