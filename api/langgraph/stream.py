"""LangGraph's event stream of a run (``runs.stream``), read from the audit trail (the
events are listed in ``api.langgraph.shapes``)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread

from api.langgraph.shapes import failure, final_values, read, run_status, settled, step, values
from driftpilot.runs.plane import ControlPlane


def _sse(name: str, data: Any) -> dict[str, Any]:
    return {"event": name, "data": json.dumps(data, default=str)}


def _update(row: dict[str, Any]) -> dict[str, Any]:
    table = row["table"]
    if table == "decisions":
        evidence = row.get("evidence")
        with contextlib.suppress(ValueError):
            evidence = json.loads(evidence) if isinstance(evidence, str) else evidence
        return {row["agent"]: {**step(row), "evidence": evidence}}
    if table == "approvals":
        said = ("kind", "principal", "decision", "comment", "created_at")
        return {"approval": {k: row.get(k) for k in said}}
    changed = ("model", "version", "previous_version", "action", "actor", "created_at")
    return {"champion": {k: row.get(k) for k in changed}}


async def events(
    cp: ControlPlane,
    thread_id: str,
    run_id: str,
    modes: set[str],
    *,
    poll_s: float,
    skip: int = 0,
) -> AsyncIterator[dict[str, Any]]:
    """The run's events in LangGraph's stream format (see the module's docstring), from its
    ``skip``-th audit row on, until it ends or waits for a person."""
    yield _sse("metadata", {"run_id": run_id, "thread_id": thread_id, "attempt": 1})
    sent = skip
    while True:
        view, rows = await anyio.to_thread.run_sync(read, cp, run_id)
        for index in range(sent, len(rows)):
            row = rows[index]
            if "updates" in modes:
                yield _sse("updates", _update(row))
            if "values" in modes and row["table"] == "decisions":
                yield _sse("values", values(view, rows[: index + 1]))
        sent = max(sent, len(rows))
        if settled(view):
            final = final_values(view, rows)
            if "updates" in modes and "__interrupt__" in final:
                yield _sse("updates", {"__interrupt__": final["__interrupt__"]})
            if "values" in modes:
                yield _sse("values", final)
            if run_status(view) == "error":
                yield _sse("error", failure(view))
            yield _sse("end", {"run_id": run_id, "status": run_status(view)})
            return
        await anyio.sleep(poll_s)
