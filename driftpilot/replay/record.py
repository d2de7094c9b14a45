"""The evidence of a past run for its what-if replay, read once and read-only: its row, its
checkpoint history (through a read-only checkpointer) and its audit rows; and the sealed run
context a replay decides in (any use of its audit store raises)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from agents.context import RunContext
from driftpilot.core.errors import NotFound, PolicyViolation, RunStateError
from driftpilot.core.llm import Backend
from driftpilot.core.policy import Policy
from driftpilot.core.settings import Settings
from driftpilot.runs.evidence_keys import upgrade, upgrade_state
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.checkpointer import open_checkpointer
from driftpilot.store.models import Run
from graphs.control import build_control_graph

REPLAYABLE = ("completed", "waiting_approval")  # a run that finished, or paused for a person


@dataclass(frozen=True)
class Evidence:
    """What the original run knew, read once: its checkpoints and its audit rows."""

    run: Run
    fork_id: str
    fork_values: dict[str, Any]
    final: dict[str, Any]
    shown: dict[str, dict[str, Any]]  # agent -> the evidence its first decision recorded
    tool_results: dict[str, Any]  # tool -> result of its first successful call
    tool_args: dict[str, Any]  # tool -> arguments of that call

    @classmethod
    def from_record(
        cls,
        run: Run,
        fork_id: str,
        fork_values: dict[str, Any],
        final: dict[str, Any],
        shown: dict[str, dict[str, Any]],
        tool_results: dict[str, Any],
        tool_args: dict[str, Any],
    ) -> Evidence:
        """The evidence as recorded, its state slices and decision evidence read under
        today's keys (a run recorded before models had a task named its scores after ROC AUC;
        ``driftpilot.runs.evidence_keys`` holds the one mapping): the agents' ``decide`` and
        the risk rules read today's."""
        return cls(
            run=run,
            fork_id=fork_id,
            fork_values=upgrade_state(fork_values),
            final=upgrade_state(final),
            shown=_upgraded(shown),
            tool_results=tool_results,
            tool_args=tool_args,
        )

    def recorded(self, agent: str, keys: Sequence[str]) -> dict[str, Any]:
        """The part of what ``agent`` was shown that it is shown again (the audit record also
        holds what only people see, e.g. report paths).

        Raises:
            RunStateError: the run's record of that decision lacks one of ``keys``.
        """
        shown = self.shown.get(agent, {})
        missing = [k for k in keys if k not in shown]
        if missing:
            raise RunStateError(
                f"run {self.run.id[:12]}: the recorded {agent} decision lacks {missing}; "
                "the run cannot be replayed"
            )
        return {k: shown[k] for k in keys}

    def result(self, tool: str) -> Any:
        """The recorded result of ``tool``'s first successful call in the run.

        Raises:
            RunStateError: the run recorded no successful call of ``tool``.
        """
        if tool not in self.tool_results:
            raise RunStateError(
                f"run {self.run.id[:12]} recorded no result of {tool}; the run cannot be replayed"
            )
        return self.tool_results[tool]


def gather(plane: ControlPlane, run_id: str) -> Evidence:
    """Read a run's evidence: its row, its checkpoint history (read-only) and its audit rows.

    Raises:
        NotFound: no such run, or the run has no checkpoints.
        RunStateError: the run is neither completed nor waiting for approval.
    """
    run = plane.store.get(Run, run_id)
    if run.status not in REPLAYABLE:
        raise RunStateError(
            f"run {run_id[:12]} is {run.status}: only completed runs and runs waiting for "
            "approval can be replayed"
        )
    history = _history(plane.settings, run_id)
    fork = next((s for s in history if tuple(s.next) == ("ingestion",)), None)
    if fork is None:
        raise NotFound(f"run {run_id[:12]} has no checkpoint before its first agent")
    shown: dict[str, dict[str, Any]] = {}
    results: dict[str, Any] = {}
    args: dict[str, Any] = {}
    for row in plane.audit(run_id):
        if row["table"] == "decisions":
            shown.setdefault(row["agent"], json.loads(row["evidence"]))
        elif row["table"] == "tool_calls" and row["ok"] and row["tool"] not in results:
            results[row["tool"]] = json.loads(row["result"])
            args[row["tool"]] = json.loads(row["args"])
    return Evidence.from_record(
        run=run,
        fork_id=fork.config["configurable"]["checkpoint_id"],
        fork_values=dict(fork.values),
        final=dict(history[0].values),
        shown=shown,
        tool_results=results,
        tool_args=args,
    )


# Where a decision's recorded evidence holds a state slice's keys: (agent, field, slice).
_SHOWN_SLICES = (
    ("drift_analyst", "performance", "drift"),
    ("optimizer", "drift", "drift"),
)


def _upgraded(shown: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The recorded evidence under today's keys: a run recorded before models had a task
    named its scores after ROC AUC (``driftpilot.runs.evidence_keys``, the one mapping); the
    agents' ``decide`` reads today's."""
    out = dict(shown)
    for agent, field, kind in _SHOWN_SLICES:
        piece = out.get(agent, {}).get(field)
        if isinstance(piece, dict):
            out[agent] = {**out[agent], field: upgrade(kind, piece)}
    return out


def _history(settings: Settings, run_id: str) -> list[Any]:
    """The run's checkpoints, newest first, read through a read-only checkpointer (a write
    through it fails), with the control graph as the reader (nodes never run)."""
    checkpoints = open_checkpointer(settings, read_only=True)
    try:
        reader = build_control_graph(checkpoints.saver)
        return list(reader.get_state_history({"configurable": {"thread_id": run_id}}))
    finally:
        checkpoints.close()


class _SealedStore:
    """Stands in for the audit store in a replay: any use raises, so nothing a replay runs
    can write a decision, a tool call, an effect or a lease, or reach MLflow through a node.
    A PolicyViolation, not a RunStateError: it is a bug to fix, never a run to skip."""

    def __getattr__(self, name: str) -> NoReturn:
        raise PolicyViolation(f"a what-if replay must not use the audit store (tried {name!r})")


def _sealed_context(
    settings: Settings, policy: Policy | None = None, backend: Backend | None = None
) -> RunContext:
    sealed: Any = _SealedStore()
    return RunContext(settings, sealed, policy or Policy(), backend or Backend("", "", None))
