"""A crashed test worker's fatal-error dump, printed at the end of the session.

pytest-xdist's worker that dies of a fatal signal (a segmentation fault in a C library) writes
Python's ``faulthandler`` dump, every thread's stack, to the terminal in the middle of the
run, interleaved with the other worker's progress; CI keeps only part of a long output, and
the dump of CI's run of 6f19839 was cut before the crashing thread's own stack. Here each
worker writes its dump to a file of the session's instead, and the controller prints the
files that are not empty in the terminal summary: at the end, beside the name of the test
the worker crashed on (``make test`` runs with ``--max-worker-restart=0``).

Interface (tests/conftest.py registers the plugin):

``pytest_configure``
    The controller (with xdist workers to come: ``-n`` > 0) makes a directory and names it in
    ``DRIFTPILOT_TEST_CRASH_DIR``, which the workers it starts inherit.
``pytest_sessionstart``
    A worker enables ``faulthandler`` on ``<dir>/<worker id>.log`` (all threads), after
    pytest's own plugin enabled it on the terminal.
``pytest_terminal_summary``
    The controller prints each non-empty dump, the crashing thread's stack first, then
    removes the directory.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO

import pytest

DIR_VAR = "DRIFTPILOT_TEST_CRASH_DIR"
MAX_LINES = 120  # the crashing thread first; a dump of every thread runs to hundreds
_made = pytest.StashKey[Path]()
_stream = pytest.StashKey[IO[str]]()


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return  # a worker, or one process (its crash ends the run at the terminal)
    made = Path(tempfile.mkdtemp(prefix="driftpilot-crash-"))
    os.environ[DIR_VAR] = str(made)
    config.stash[_made] = made


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    folder = os.environ.get(DIR_VAR)
    if not hasattr(config, "workerinput") or not folder:
        return
    worker = config.workerinput["workerid"]
    # Kept open for the process's life: faulthandler writes to its descriptor at the crash.
    stream = Path(folder, f"{worker}.log").open("w")  # noqa: SIM115
    config.stash[_stream] = stream
    faulthandler.enable(file=stream, all_threads=True)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    made = terminalreporter.config.stash.get(_made, None)
    if made is None:
        return
    for log in sorted(made.glob("*.log")):
        text = log.read_text(errors="replace").strip()
        if text:
            terminalreporter.section(f"worker {log.stem}: fatal error (faulthandler)", sep="=")
            terminalreporter.write_line(crashing_first(text))
    shutil.rmtree(made, ignore_errors=True)


def crashing_first(dump: str) -> str:
    """The dump with the crashing thread's block (``Current thread ...``) moved right after
    its first line, and cut to ``MAX_LINES``."""
    blocks = dump.split("\n\n")
    current = [b for b in blocks if b.lstrip().startswith("Current thread")]
    rest = [b for b in blocks if b not in current]
    lines = "\n\n".join([*rest[:1], *current, *rest[1:]]).splitlines()
    cut = len(lines) - MAX_LINES
    return "\n".join(lines[:MAX_LINES] + ([f"... {cut} more lines"] if cut > 0 else []))
