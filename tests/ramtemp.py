"""The test session's temporary files on a RAM file system (``/dev/shm``).

Every test home lives under pytest's base temporary directory: the audit's, Optuna's and
MLflow's SQLite files, the checkpoints, the filed batches. On disk each SQLite commit waits
for fsync (~5 ms on this machine's ext4), thousands of times a module (Optuna records every
boosting round of every trial): ``test_control_graph`` alone took 66 s with its files on
disk and 47 s on ``/dev/shm``, the same 51 CPU seconds. The tests' PostgreSQL already runs
with fsync off (``tests/pg.py``). Nothing tested depends on the disk: a process killed -9
leaves its writes in the page cache either way, and the full-disk test mounts a tmpfs of its
own.

Interface (tests/conftest.py registers the hooks):

``pytest_configure``
    Unless ``--basetemp`` was given, ``DRIFTPILOT_TEST_TMPFS=0`` is set, or ``/dev/shm`` is not
    writable or has less than ``MIN_FREE`` (2 GB) free: the base temporary directory is a new
    ``/dev/shm/driftpilot-pytest-*`` of this session's (pytest-xdist's workers get theirs under
    it, as under any base), and beside it ``<directory>.owner`` naming this process (beside,
    not in it: pytest empties a given base when it first makes it). Earlier sessions'
    directories kept after a failure (their ``FAILED`` mark) are removed first, and those of a
    session killed before it could say (its owner gone: a CI timeout, a kill): /dev/shm is
    memory, and one such directory held 525 MB.
``pytest_sessionfinish`` / ``pytest_unconfigure``
    The directory is removed when the session passed; after a failure it is kept (marked
    ``FAILED``, its path in the terminal summary) until the next session starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

RAM = Path("/dev/shm")
OFF_VAR = "DRIFTPILOT_TEST_TMPFS"
PREFIX = "driftpilot-pytest-"
FAILED_MARK = "FAILED"
OWNER = ".owner"  # beside a session's directory: the pid of the session that made it
_made = pytest.StashKey[Path]()
_status = pytest.StashKey[int]()


MIN_FREE = 2 * 1024**3  # a suite writes well under this; a container's 64 MB /dev/shm is not


def _wanted(config: pytest.Config) -> bool:
    if config.option.basetemp is not None or hasattr(config, "workerinput"):
        return False  # given, or an xdist worker (its base is under the controller's)
    if os.environ.get(OFF_VAR, "1") == "0" or not RAM.is_dir() or not os.access(RAM, os.W_OK):
        return False
    stat = os.statvfs(RAM)
    return stat.f_bavail * stat.f_frsize >= MIN_FREE


@pytest.hookimpl(tryfirst=True)  # before pytest's tmp_path plugin reads --basetemp
def pytest_configure(config: pytest.Config) -> None:
    if not _wanted(config):
        return
    for old in RAM.glob(f"{PREFIX}*"):  # only ended sessions' are marked
        if old.is_dir() and ((old / FAILED_MARK).exists() or _owner_gone(old)):
            _remove(old)
    made = Path(tempfile.mkdtemp(prefix=PREFIX, dir=RAM))
    _owner_file(made).write_text(str(os.getpid()))
    config.option.basetemp = str(made)
    config.stash[_made] = made


def _owner_gone(folder: Path) -> bool:
    """Whether the session that made ``folder`` is no longer running (the process its owner
    file names does not exist). Without the file (made before it was written) nothing is
    known: kept."""
    try:
        pid = int(_owner_file(folder).read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: alive
        pass
    return False


def _owner_file(folder: Path) -> Path:
    return folder.with_name(folder.name + OWNER)


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    _owner_file(folder).unlink(missing_ok=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_status] = int(exitstatus)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    made = config.stash.get(_made, None)
    if made is not None and config.stash.get(_status, 1) != 0:
        terminalreporter.write_line(f"temporary files kept in {made} (on /dev/shm)")


def pytest_unconfigure(config: pytest.Config) -> None:
    made = config.stash.get(_made, None)
    if made is None or not made.exists():
        return
    if config.stash.get(_status, 1) == 0:
        _remove(made)
    else:
        (made / FAILED_MARK).touch()
