"""LangGraph checkpoints on every backend (``driftpilot.store.checkpointer``): a checkpoint put
on a thread is got back (the latest, or by id), listed newest first, kept apart from other
threads, and still there for a checkpointer opened afterwards (a restarted process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import empty_checkpoint

from driftpilot.core.settings import Settings
from driftpilot.store.checkpointer import open_checkpointer
from tests.conformance.conftest import Backend

KINDS = {"sqlite": "sqlite", "postgres": "postgresql"}


def thread(thread_id: str, checkpoint_id: str | None = None) -> Any:
    configurable = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def put(saver: Any, config: Any, answer: str, step: int) -> Any:
    """Put a checkpoint whose one channel ``answer`` holds ``answer``; returns its config."""
    checkpoint = empty_checkpoint()
    version = saver.get_next_version(None, None)
    for _ in range(step):
        version = saver.get_next_version(version, None)
    checkpoint["channel_values"] = {"answer": answer}
    checkpoint["channel_versions"] = {"answer": version}
    metadata: Any = {"source": "loop", "step": step, "parents": {}}
    return saver.put(config, checkpoint, metadata, {"answer": version})


def test_a_checkpoint_is_put_got_and_listed(backend: Backend, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", db_url=backend.url).ensure_dirs()
    first = open_checkpointer(settings)
    assert first.kind == KINDS[backend.name]
    try:
        saver = first.saver
        config = thread("run-1")
        ids = []
        for step, answer in enumerate(("ask", "wait", "approve")):
            config = put(saver, config, answer, step)
            ids.append(config["configurable"]["checkpoint_id"])
        put(saver, thread("run-2"), "other", 0)
        latest = saver.get_tuple(thread("run-1"))
        assert latest is not None and latest.config["configurable"]["checkpoint_id"] == ids[-1]
        assert latest.checkpoint["channel_values"] == {"answer": "approve"}
        assert latest.metadata["step"] == 2
        assert latest.parent_config is not None
        assert latest.parent_config["configurable"]["checkpoint_id"] == ids[1]
        middle = saver.get_tuple(thread("run-1", ids[1]))
        assert middle is not None and middle.checkpoint["channel_values"] == {"answer": "wait"}
        listed = [t.config["configurable"]["checkpoint_id"] for t in saver.list(thread("run-1"))]
        assert listed == ids[::-1]
    finally:
        first.close()
    second = open_checkpointer(settings, read_only=True)
    try:
        again = second.saver.get_tuple(thread("run-1"))
        assert again is not None and again.checkpoint["channel_values"] == {"answer": "approve"}
        assert len(list(second.saver.list(thread("run-2")))) == 1
        assert second.saver.get_tuple(thread("run-3")) is None
    finally:
        second.close()
