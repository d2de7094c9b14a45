"""tests/crashlog.py: a worker that dies of a segmentation fault has its faulthandler dump
printed at the end of the session, the crashing thread's stack first, beside the test it
crashed on (a real pytest-xdist session in a subprocess, on a test that faults)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.crashlog import MAX_LINES, crashing_first

ROOT = Path(__file__).resolve().parents[2]
CRASHING = """
import ctypes
import threading


def test_fine():
    pass


def test_crash():
    threading.Thread(target=threading.Event().wait, args=(30,), daemon=True).start()
    ctypes.string_at(0)  # reads address 0: SIGSEGV
"""


def test_a_crashed_workers_dump_is_printed_at_the_end(tmp_path: Path) -> None:
    (tmp_path / "test_faults.py").write_text(CRASHING)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DRIFTPILOT_TEST_CRASH_DIR", None)
    args = ["-n", "1", "--max-worker-restart=0", "-p", "tests.crashlog", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "test_faults.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    summary = out[out.index("worker gw0: fatal error (faulthandler)") :]
    dump = summary.splitlines()[1:]
    assert dump[0].startswith("Fatal Python error: Segmentation fault")
    current = next(i for i, line in enumerate(dump) if line.startswith("Current thread"))
    assert current <= 3  # right after the error's line, before the other threads
    assert 'test_faults.py", line 12 in test_crash' in "\n".join(dump[current : current + 8])
    assert "crashed while running 'test_faults.py::test_crash'" in out


def test_the_crashing_thread_comes_first_and_a_long_dump_is_cut() -> None:
    threads = "\n\n".join(f"Thread 0x{i:x} (most recent call first):\n  File x" for i in range(9))
    dump = f"Fatal Python error: Segmentation fault\n\n{threads}\n\nCurrent thread 0x1 (most"
    first = crashing_first(dump).splitlines()
    assert first[0].startswith("Fatal") and first[2].startswith("Current thread")
    long = crashing_first("\n".join(f"line {i}" for i in range(MAX_LINES + 5)))
    assert long.splitlines()[-1] == "... 5 more lines" and len(long.splitlines()) == MAX_LINES + 1
