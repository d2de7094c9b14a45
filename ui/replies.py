"""What the chat answers with: plain data that ``ui/app.py`` turns into Chainlit messages (so
tests read replies directly)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driftpilot.core.errors import DriftPilotError

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
