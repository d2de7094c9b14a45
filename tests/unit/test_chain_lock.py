"""The process's chain lock (one chained append at a time) is waited for within the write's
deadline: an append behind an append that never finishes fails as an AuditWriteError that
says so, instead of hanging its thread for good (issue 23's leftover)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from driftpilot.core.errors import AuditWriteError
from driftpilot.store import AuditStore
from driftpilot.store import chain as chain_module
from driftpilot.store import engine as engine_module


def test_an_append_behind_a_held_chain_lock_fails_after_the_write_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "BUSY_TIMEOUT_MS", 300)
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with chain_module._CHAIN_LOCK:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    started = time.monotonic()
    try:
        with pytest.raises(AuditWriteError, match="chain lock"):
            store.record_decision("r", "a", "act", "why", {}, backend="test")
        took = time.monotonic() - started
    finally:
        release.set()
        holder.join(10)
    assert 0.25 <= took < 3.0, took  # the holder would hold it 10 s
    store.record_decision("r", "a", "act", "why", {}, backend="test")  # free again: written
    assert len(list(store.export("r"))) == 1
    store.engine.dispose()
