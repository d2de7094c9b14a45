"""LangGraph Platform's shapes for DriftPilot's resources (see ``api.langgraph``).

- An **assistant** is a managed model (``assistant_id`` = the model's name, ``graph_id``
  ``control``); the assistant ``control`` is the graph itself, with the model in the run's
  input (``input.model``) or config (``config.configurable.model``).
- A **thread** is one control run (``driftpilot.runs.threads``). Its ``values`` are the run summary:
  ``run_id``, ``model``, ``batch_id``, ``requested_by``, ``status``, ``outcome``, ``steps``
  (each agent decision: agent, action, rationale, fallback, at) and the slices the agents
  wrote (ingestion, drift, optimizer, retraining, evaluation, cicd, approval, promotion) —
  or ``error`` for a failed run. Thread ``status``: ``idle`` (no run yet, or it ended
  well), ``busy`` (pending, running, or approved/rejected and about to resume),
  ``interrupted`` (waiting for a person: the Agent Inbox ``HumanInterrupt`` is its
  interrupt) or ``error``.
- A **run** is the control run: ``run_id`` is the control run's id, also for a resume
  (``command.resume`` continues the same control run). Its status is LangGraph's
  ``pending | running | interrupted | success | error``; a run whose approval decision is
  recorded but not applied yet is ``pending`` (its resume is queued).
- **Stream events** (``runs.stream``): ``metadata`` ``{"run_id", "thread_id", "attempt"}``;
  per agent step, ``updates`` ``{<agent>: {"action", "rationale", "fallback", "evidence",
  "at"}}`` (approvals as ``{"approval": ...}``, champion changes as ``{"champion": ...}``)
  and ``values`` (the thread values so far); at the end a last ``values`` equal to the
  thread state, with ``__interrupt__`` when the run waits for a person (and ``updates``
  ``{"__interrupt__": [...]}``); ``error`` ``{"error", "message"}`` for a failed run; ``end``.
  Stream modes other than ``values`` and ``updates`` send nothing (the agents do not stream
  tokens or custom events).
- **Graph and schemas** (``assistants.get_graph/get_schemas``): the compiled control graph's
  nodes and edges as LangGraph's server draws them; the JSON schemas of a run's input
  (model and batch), its output (the thread values), the graph's state, and the config and
  context that may name the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import cache
from typing import Any, get_type_hints, is_typeddict

from pydantic import BaseModel, create_model

from api.schemas import ControlConfig, ControlContext, ControlInput, ControlValues
from api.stream import run_rows
from driftpilot.runs.plane import ControlPlane, ModelView, RunView
from driftpilot.runs.threads import ThreadRef
from graphs.state import SLICES, ControlState

GRAPH_ID = "control"
APPROVAL_NODE = "approval"
ENDED = {"success", "error"}
STREAM_MODES = {"values", "updates"}


# -- statuses ---------------------------------------------------------------------------------


def decided(view: RunView) -> bool:
    """Waiting for approval, with the decision already recorded (the resume is queued)."""
    return view.status == "waiting_approval" and view.approval_request is None


def run_status(view: RunView) -> str:
    """The control run's status in LangGraph's words."""
    if view.status == "waiting_approval":
        return "pending" if decided(view) else "interrupted"
    return {
        "pending": "pending",
        "running": "running",
        "completed": "success",
        "failed": "error",
    }.get(view.status, "error")


def thread_status(view: RunView | None) -> str:
    """idle | busy | interrupted | error."""
    if view is None:
        return "idle"
    return {
        "pending": "busy",
        "running": "busy",
        "interrupted": "interrupted",
        "success": "idle",
        "error": "error",
    }[run_status(view)]


def settled(view: RunView) -> bool:
    """The run stopped: it ended, or it waits for a person (not for its queued resume)."""
    return run_status(view) in ENDED | {"interrupted"}


# -- values, interrupts ---------------------------------------------------------------------------


def interrupt_id(run_id: str) -> str:
    """A stable id for the one interrupt a control run can have (its approval)."""
    return hashlib.sha256(f"{run_id}:{APPROVAL_NODE}".encode()).hexdigest()[:32]


def interrupts(view: RunView) -> list[dict[str, Any]]:
    """The run's open interrupts (LangGraph ``Interrupt``): its approval request, if any."""
    if view.approval_request is None or run_status(view) != "interrupted":
        return []
    return [{"value": view.approval_request, "id": interrupt_id(view.run_id)}]


def step(row: dict[str, Any]) -> dict[str, Any]:
    """One agent decision, as a values entry."""
    return {
        "agent": row["agent"],
        "action": row["action"],
        "rationale": row["rationale"],
        "fallback": bool(row["fallback"]),
        "at": row["created_at"],
    }


def values(view: RunView, rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The thread values of a run: who and what, its steps so far, and its summary."""
    return {
        "run_id": view.run_id,
        "model": view.model,
        "batch_id": view.batch_id,
        "requested_by": view.requested_by,
        "status": run_status(view),
        "outcome": view.outcome,
        "steps": [step(r) for r in rows if r["table"] == "decisions"],
        **view.summary,
    }


def final_values(view: RunView, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``runs.join`` and ``runs.wait`` answer: the values, with ``__interrupt__`` when
    it waits and ``__error__`` (``{"error", "message"}``) when it failed."""
    found = values(view, rows)
    waiting = interrupts(view)
    if waiting:
        found["__interrupt__"] = waiting
    if run_status(view) == "error":
        found["__error__"] = failure(view)
    return found


def failure(view: RunView) -> dict[str, str]:
    """Why a failed run failed, as LangGraph reports an error."""
    message = view.summary.get("error") or f"the run failed: {view.outcome}"
    return {"error": view.outcome or "error", "message": str(message)}


def read(cp: ControlPlane, run_id: str) -> tuple[RunView, list[dict[str, Any]]]:
    """The run and its audit rows (decisions, approvals, champion changes), in order. The
    status is read first, so every row a finished run wrote is in the rows."""
    view = cp.get_run(run_id)
    return view, run_rows(cp, run_id)


def updated_at(view: RunView, rows: list[dict[str, Any]]) -> str:
    return max([view.created_at, *(str(r["created_at"]) for r in rows)])


# -- resources -----------------------------------------------------------------------------------


def assistant(model: ModelView, created_at: str) -> dict[str, Any]:
    """A managed model as a LangGraph assistant."""
    return {
        "assistant_id": model.name,
        "graph_id": GRAPH_ID,
        "config": {"configurable": {"model": model.name}},
        "context": {},
        "created_at": created_at,
        "updated_at": created_at,
        "metadata": {
            "model": model.name,
            "target": model.target,
            "family": model.family,
            "metric": model.metric,
            "champion": model.champion,
            "baseline": model.baseline,
        },
        "version": 1,
        "name": model.name,
        "description": (
            f"DriftPilot's control loop for the managed model {model.name!r} (target "
            f"{model.target!r}, {model.family}, champion v{model.champion}): ingestion, "
            "drift analysis, retraining, evaluation and a guarded promotion."
        ),
    }


def control_assistant(created_at: str) -> dict[str, Any]:
    """The control graph itself; a run names its model in ``input.model``."""
    return {
        "assistant_id": GRAPH_ID,
        "graph_id": GRAPH_ID,
        "config": {},
        "context": {},
        "created_at": created_at,
        "updated_at": created_at,
        "metadata": {"created_by": "system"},
        "version": 1,
        "name": GRAPH_ID,
        "description": (
            "DriftPilot's control graph for any managed model: give the model in the run's "
            "input ('model') or in config.configurable.model."
        ),
    }


def thread_metadata(ref: ThreadRef, view: RunView | None) -> dict[str, Any]:
    meta: dict[str, Any] = {**ref.metadata, "graph_id": GRAPH_ID}
    if view is not None:
        meta |= {"assistant_id": ref.assistant_id or view.model, "run_id": view.run_id}
    if ref.created_by:
        meta.setdefault("created_by", ref.created_by)
    return meta


def thread(
    ref: ThreadRef, view: RunView | None, rows: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A thread: a placeholder without a run, or the run it shows."""
    rows = rows or []
    found: dict[str, Any] = {
        "thread_id": ref.thread_id,
        "created_at": ref.created_at,
        "updated_at": updated_at(view, rows) if view is not None else ref.created_at,
        "metadata": thread_metadata(ref, view),
        "status": thread_status(view),
        "values": values(view, rows) if view is not None else {},
        "interrupts": {},
    }
    if view is not None:
        waiting = interrupts(view)
        if waiting:
            found["interrupts"] = {interrupt_id(view.run_id): waiting}
        if view.status == "failed":
            found["error"] = view.summary.get("error") or view.outcome
    return found


def thread_state(
    ref: ThreadRef, view: RunView | None, rows: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``threads.get_state``: the values, what runs next (``approval`` while it waits), the
    open interrupt as a task. There are no checkpoint ids to travel to."""
    rows = rows or []
    waiting = interrupts(view) if view is not None else []
    tasks = [
        {
            "id": w["id"],
            "name": APPROVAL_NODE,
            "error": None,
            "interrupts": [w],
            "checkpoint": None,
            "state": None,
            "result": None,
        }
        for w in waiting
    ]
    return {
        "values": values(view, rows) if view is not None else {},
        "next": [APPROVAL_NODE] if waiting else [],
        "checkpoint": {
            "thread_id": ref.thread_id,
            "checkpoint_ns": "",
            "checkpoint_id": None,
            "checkpoint_map": None,
        },
        "metadata": thread_metadata(ref, view),
        "created_at": updated_at(view, rows) if view is not None else ref.created_at,
        "parent_checkpoint": None,
        "tasks": tasks,
        "interrupts": waiting,
    }


def run(
    ref: ThreadRef,
    view: RunView,
    *,
    assistant_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    multitask_strategy: str | None = None,
    kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A control run as a LangGraph run on its thread."""
    return {
        "run_id": view.run_id,
        "thread_id": ref.thread_id,
        "assistant_id": assistant_id or ref.assistant_id or view.model,
        "created_at": view.created_at,
        "updated_at": view.created_at,
        "status": run_status(view),
        "metadata": metadata if metadata is not None else ref.run_metadata,
        # As submitted (recorded with the run); null for a run older than that record.
        "multitask_strategy": multitask_strategy or ref.multitask_strategy,
        "kwargs": kwargs or {},
    }


# -- the graph and its schemas ------------------------------------------------------------------


def graph_json(compiled: Any, xray: bool | int) -> dict[str, Any]:
    """The compiled graph drawn as LangGraph's server answers ``GET
    /assistants/{id}/graph``: ``{"nodes": [{"id", "type", "data"}], "edges": [{"source",
    "target", "conditional"?}]}``, without the nodes' Python import paths (``data.id``)."""
    drawn: dict[str, Any] = compiled.get_graph(xray=xray).to_json()
    for node in drawn["nodes"]:
        data = node.get("data")
        if isinstance(data, dict):
            data.pop("id", None)
    return drawn


@cache
def _values_model() -> type[BaseModel]:
    """``ControlValues`` with one optional object per agent slice (in flow order)."""
    slices: dict[str, Any] = {name: (dict[str, Any] | None, None) for name in SLICES}
    return create_model("ControlValues", __base__=ControlValues, **slices)


def typed_dict_model(typed: Any) -> type[BaseModel]:
    """A pydantic model of a ``typing.TypedDict`` (pydantic reads only ``typing_extensions``'
    on Python 3.11, and so LangGraph's own ``get_input_jsonschema`` fails on the graph's
    state): its keys, the optional ones defaulting to null, nested TypedDicts as models."""
    fields: dict[str, Any] = {}
    for name, hint in get_type_hints(typed).items():  # Annotated reducers are dropped
        kind = typed_dict_model(hint) if is_typeddict(hint) else hint
        required = name in typed.__required_keys__
        fields[name] = (kind, ...) if required else (kind | None, None)
    return create_model(typed.__name__, __doc__=typed.__doc__, **fields)


@cache
def schemas() -> dict[str, Any]:
    """The JSON schemas of ``GET /assistants/{id}/schemas`` (the same for every assistant:
    one graph). The state is the graph's own ``ControlState``."""
    return {
        "graph_id": GRAPH_ID,
        "input_schema": ControlInput.model_json_schema(),
        "output_schema": _values_model().model_json_schema(),
        "state_schema": typed_dict_model(ControlState).model_json_schema(),
        "config_schema": ControlConfig.model_json_schema(),
        "context_schema": ControlContext.model_json_schema(),
    }
