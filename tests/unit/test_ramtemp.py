"""tests/ramtemp.py: a session's directory names its owner, and a new session removes those
of sessions that failed or were killed before they could say (their owner gone), keeping
those still running and those it knows nothing of."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests import ramtemp


def session_dir(base: Path, name: str, owner: int | None, failed: bool = False) -> Path:
    folder = base / f"{ramtemp.PREFIX}{name}"
    folder.mkdir()
    if owner is not None:
        Path(f"{folder}{ramtemp.OWNER}").write_text(str(owner))
    if failed:
        (folder / ramtemp.FAILED_MARK).touch()
    return folder


def test_a_new_session_removes_the_failed_and_the_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead = int(ended.stdout)  # a process that has exited: a session killed mid-run
    monkeypatch.setattr(ramtemp, "RAM", tmp_path)
    monkeypatch.setattr(ramtemp, "MIN_FREE", 0)
    monkeypatch.delenv(ramtemp.OFF_VAR, raising=False)
    killed = session_dir(tmp_path, "killed", dead)
    failed = session_dir(tmp_path, "failed", os.getpid(), failed=True)
    running = session_dir(tmp_path, "running", os.getppid())
    unknown = session_dir(tmp_path, "unknown", None)
    config: Any = SimpleNamespace(option=SimpleNamespace(basetemp=None), stash=pytest.Stash())
    ramtemp.pytest_configure(config)
    assert not killed.exists() and not failed.exists()
    assert not Path(f"{killed}{ramtemp.OWNER}").exists()  # removed with its directory
    assert running.exists() and unknown.exists()
    made = Path(config.option.basetemp)
    assert made.parent == tmp_path
    # beside the directory: pytest empties a given base when it first makes it
    assert Path(f"{made}{ramtemp.OWNER}").read_text() == str(os.getpid())
