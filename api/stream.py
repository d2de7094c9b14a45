"""A run's server-sent events, read from the audit trail (so a stream works from any API
process, whichever process executes the run).

Events, in order:

    metadata    {"run_id", "thread_id", "assistant_id", "status", "trigger", "schedule_id"}
                                                                           once, first
    status      {"run_id", "status"}                                       when it changes
    step        {"seq", "agent", "action", "rationale", "fallback", "evidence", "at"}
                                                                           each agent decision
    approval    {"seq", "kind", "principal", "decision", "comment", "at"}  request and decision
    champion    {"seq", "model", "version", "previous_version", "action", "actor", "at"}
    interrupt   {"run_id", "interrupt": <Agent Inbox HumanInterrupt>}      the run waits
    outcome     {"run_id", "status", "outcome", "summary"}                 the run ended
    end         null                                                       last

Audit events carry an ``id`` (their position in the run's trail): a client reconnecting with
``Last-Event-ID`` gets only what follows. The stream ends when the run ends or waits for a
person (a run whose decision is recorded but not yet applied is watched on until it resumes
and ends); comments (``: ping``) keep idle connections open.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread

from api.schemas import STATUS, Run
from driftpilot.runs.plane import ControlPlane, RunView

AUDIT_EVENTS = {"decisions": "step", "approvals": "approval", "champion_history": "champion"}


def run_rows(cp: ControlPlane, run_id: str) -> list[dict[str, Any]]:
    """The run's decisions, approvals and champion changes in the order they happened."""
    rows = [r for r in cp.audit(run_id) if r["table"] in AUDIT_EVENTS]
    return sorted(rows, key=lambda r: (r["created_at"], r["table"], r["id"]))


def row_event(seq: int, row: dict[str, Any]) -> dict[str, Any]:
    """One audit row as an SSE event (``event``, ``id``, ``data``)."""
    table = row["table"]
    data: dict[str, Any] = {"seq": seq, "at": row["created_at"]}
    if table == "decisions":
        data |= {
            "agent": row["agent"],
            "action": row["action"],
            "rationale": row["rationale"],
            "fallback": bool(row["fallback"]),
            "evidence": _json(row.get("evidence")),
        }
    elif table == "approvals":
        data |= {
            "kind": row["kind"],
            "principal": row["principal"],
            "decision": row["decision"],
            "comment": row["comment"],
        }
    else:
        data |= {k: row.get(k) for k in ("model", "version", "previous_version", "action", "actor")}
    return {"event": AUDIT_EVENTS[table], "id": str(seq), "data": json.dumps(data, default=str)}


def _json(value: Any) -> Any:
    try:
        return json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return value


def _event(name: str, data: Any) -> dict[str, Any]:
    return {"event": name, "data": json.dumps(data, default=str)}


async def run_events(
    cp: ControlPlane, run_id: str, *, poll_s: float, last_event_id: int = 0
) -> AsyncIterator[dict[str, Any]]:
    """The events of one run until it ends or waits (see the module's docstring)."""
    view: RunView = await anyio.to_thread.run_sync(cp.get_run, run_id)
    status = STATUS.get(view.status, "error")
    yield _event(
        "metadata",
        {
            "run_id": run_id,
            "thread_id": run_id,
            "assistant_id": view.model,
            "status": status,
            "trigger": view.trigger,
            "schedule_id": view.schedule_id,
        },
    )
    sent = max(last_event_id, 0)
    while True:
        # The status first, then the rows: every row a finished run wrote is read after it.
        view = await anyio.to_thread.run_sync(cp.get_run, run_id)
        rows = await anyio.to_thread.run_sync(run_rows, cp, run_id)
        for seq, row in enumerate(rows[sent:], start=sent + 1):
            yield row_event(seq, row)
        sent = max(sent, len(rows))
        now = STATUS.get(view.status, "error")
        if now != status:
            status = now
            yield _event("status", {"run_id": run_id, "status": status})
        decided = any(r["table"] == "approvals" and r["kind"] == "decision" for r in rows)
        if status == "interrupted" and not decided:  # decided: it resumes soon, keep watching
            yield _event("interrupt", {"run_id": run_id, "interrupt": view.approval_request})
            break
        if status in ("success", "error"):
            run = Run.of(view)
            yield _event(
                "outcome",
                {
                    "run_id": run_id,
                    "status": run.status,
                    "outcome": run.outcome,
                    "summary": run.summary,
                },
            )
            break
        await anyio.sleep(poll_s)
    yield {"event": "end", "data": "null"}
