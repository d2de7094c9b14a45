"""The reference window's quality profile: read once per window file, again when it changes."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from agents.context import RunContext
from driftpilot.core.llm import Backend
from driftpilot.core.policy import Policy
from driftpilot.core.settings import Settings
from driftpilot.store import AuditStore
from tests.rows import model_without_champion


def _window(path: Path, top: float) -> pl.DataFrame:
    frame = pl.DataFrame({"x": [0.0, 1.0, top], "y": [0, 1, 1], "t": [1, 2, 3]})
    frame.write_parquet(path)
    return frame


def test_the_profile_is_reused_until_a_promotion_writes_a_new_window(tmp_path: Path) -> None:
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    window = tmp_path / "reference.parquet"
    first = _window(window, 2.0)
    model = model_without_champion("m")  # inputs x, target y, time t
    model.reference_path = str(window)
    store.add(model)
    ctx = RunContext(Settings(home=tmp_path), store, Policy(), Backend("builtin", "", None))
    profile = ctx.reference_profile("m", first)
    assert [c.name for c in profile.columns] == ["x", "y", "t"]
    assert ctx.reference_profile("m", first) is profile
    stamp = window.stat().st_mtime_ns
    second = _window(window, 50.0)
    os.utime(window, ns=(stamp + 1_000_000, stamp + 1_000_000))
    again = ctx.reference_profile("m", second)
    assert again is not profile
    assert next(c.max for c in again.columns if c.name == "x") == 50.0
    # A window written whole and renamed into place (as promotions write them) with the very
    # same size and mtime is still another file.
    stamp = window.stat()
    fresh = tmp_path / "fresh.parquet"
    third = _window(fresh, 60.0)
    os.utime(fresh, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert fresh.stat().st_size == stamp.st_size
    fresh.replace(window)
    assert next(c.max for c in ctx.reference_profile("m", third).columns if c.name == "x") == 60.0
    store.engine.dispose()
