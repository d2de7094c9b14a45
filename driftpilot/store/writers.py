"""The queue the writers of one SQLite file wait on before they ask SQLite for its lock.

A writer that finds SQLite's lock taken sleeps in SQLite's busy handler by steps of 1, 2, 5,
10, 15, 20, 25, 25, 25, 50, 50, 100 ms, however soon the lock is free: behind a run's 10-40 ms
commits a request waited 53, 78 or 103 ms (issue 23). Here a writer waits for the writer
before it and starts the moment it is done: threads of one process on a re-entrant lock, and
processes (the API and the children executing its runs, ``driftpilot.execution.processes``)
on an exclusive ``flock`` of a file beside the database (``<database>.writers``), polled at
most ``POLL_MAX_S`` apart. Both waits count against the caller's one timeout; SQLite's own
lock stays the guard under them (a process that does not queue here meets it as before).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)
POLL_MIN_S, POLL_MAX_S = 0.0002, 0.002  # a waiter looks again this often, doubling up to max


class WriterQueue:
    """Writers of the SQLite file ``database``: ``acquire(timeout)``/``release`` (or ``with``),
    re-entrant within a thread (only the outermost acquisition takes the file's lock)."""

    def __init__(self, database: Path) -> None:
        self.path = Path(f"{database}.writers")
        self._threads = threading.RLock()
        self._depth = 0  # acquisitions held by the thread holding _threads
        self._fd: int | None = None
        self._pid = 0  # the process that opened _fd (a forked child opens its own)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Wait for the writers before this one, in this process and in others, at most
        ``timeout`` seconds in all (-1: as long as it takes); whether it holds the queue."""
        deadline = None if timeout < 0 else time.monotonic() + timeout
        if not self._threads.acquire(blocking, timeout):
            return False
        if self._depth == 0 and not self._lock_file(blocking, deadline):
            self._threads.release()
            return False
        self._depth += 1
        return True

    def release(self) -> None:
        """Let the next writer in (the file's lock goes with the outermost release)."""
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def _lock_file(self, blocking: bool, deadline: float | None) -> bool:
        fd = self._file()
        if fd is None:
            return True  # no file to lock (see _file): SQLite's lock orders the processes
        pause = POLL_MIN_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if not blocking or (deadline is not None and time.monotonic() >= deadline):
                    return False
                time.sleep(pause)
                pause = min(pause * 2, POLL_MAX_S)

    def _file(self) -> int | None:
        """The lock file's descriptor of this process (None when it cannot be created: a
        read-only folder; then processes meet at SQLite's lock only)."""
        if self._fd is None or self._pid != os.getpid():
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                log.warning("no writer queue across processes for %s: %s", self.path, exc)
                self._fd = None
            self._pid = os.getpid()
        return self._fd
