"""Fault injection for crash tests: kill this process at a named point.

Off in production: nothing happens unless ``DRIFTPILOT_FAULTS`` names the point (comma
separated). Tests set it in a child process to kill -9 it inside a node, e.g. between the
MLflow alias move and its audit record, then check that ``driftpilot recover`` finishes the run.

Points: ``after_log`` (retraining: challenger logged as an MLflow run, audit not yet written),
``after_register`` (cicd: challenger version registered, challenger alias not yet set),
``after_alias`` (promote: champion alias moved, audit record not yet written),
``after_filing`` (ingestion: batch filed, its decision not yet recorded),
``before_interrupt`` (approval request written, graph not yet paused), ``after_rollback``
(rollback: champion alias moved back, audit record not yet written),
``before_admission_record`` / ``after_admission_record`` (escalation: an approved batch is
about to be / has been filed as accepted, its decision and effect not yet written).
"""

from __future__ import annotations

import os
import signal

ENV = "DRIFTPILOT_FAULTS"
POINTS = (
    "after_filing",
    "after_log",
    "after_register",
    "after_alias",
    "before_interrupt",
    "after_rollback",
    "before_admission_record",
    "after_admission_record",
)


def fault_point(name: str) -> None:
    """SIGKILL this process if the environment asks for a crash at ``name``."""
    armed = os.environ.get(ENV, "")
    if name and armed and name in armed.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
