"""What the chat answers with: plain data that ``ui/app.py`` turns into Chainlit messages (so
tests read replies directly)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driftpilot.core.episodes import episode_of, label, lifted_by
from driftpilot.core.errors import DriftPilotError
from ui import markup

if TYPE_CHECKING:
    from driftpilot.runs.plane import RunView
    from ui.acting import Proposal


@dataclass
class Chart:
    title: str
    figure: Any  # a plotly Figure


@dataclass
class Reply:
    """One answer of the chat; ``followups`` are sent after it, each as its own message."""

    text: str
    charts: list[Chart] = field(default_factory=list)
    files: list[tuple[str, Path]] = field(default_factory=list)
    decide: RunView | None = None  # show Approve / Reject for this waiting run
    stream: str | None = None  # a pending run to execute and stream step by step
    proposal: Proposal | None = None  # show Confirm / Cancel for this change
    stale: bool = False  # the waiting run was compared with a champion that is no longer it
    followups: list[Reply] = field(default_factory=list)


class Refused(DriftPilotError):
    """The signed-in person may not do this (role too low, or their own run)."""


def episode_lines(summary: dict[str, Any], run_id: str | None = None) -> list[str]:
    """The run's drift episode, for a run's reply (markdown, data escaped): its state and
    the challengers lost against the limit, how the evidence changed, and, escalated, the
    diagnosis: what was tried and why it lost. Nothing for a run without an episode."""
    ep = episode_of(summary, run_id)
    if ep is None:
        return []
    lines = [
        f"Drift episode {markup.code(ep.id[:12] or '?')}: **{markup.text(label(ep))}** "
        f"({ep.batches} batches, challengers lost / limit)."
    ]
    lines += [f"Evidence changed: {markup.text(change)}." for change in lifted_by(summary)]
    if ep.state == "escalated" and ep.diagnosis:
        lines.append(f"**Escalated:** {markup.text(ep.diagnosis)}")
    return lines
