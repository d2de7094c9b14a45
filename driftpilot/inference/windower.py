"""The windower: a thread that closes and drives windows (``Windows.tick``) every tick,
started by the runtime in the process that executes runs (``driftpilot.runtime``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from driftpilot.inference.windows import Windows

log = logging.getLogger(__name__)
POKE_GAP_S = 0.2


class Windower:
    """A thread that runs ``Windows.tick`` every ``tick_s`` (default
    ``settings.inference.tick_s``) from ``start`` to ``shutdown``; ``poke`` runs one at once
    (a request that logged rows may have filled a window), or ``POKE_GAP_S`` after the
    last one started."""

    def __init__(
        self,
        windows: Windows,
        tick_s: float | None = None,
        *,
        prepare: Callable[[], object] | None = None,
    ) -> None:
        self.windows = windows
        self.tick_s = tick_s or windows.plane.settings.inference.tick_s
        # Called once, when a tick first finds a windowed model: the executor starts its run
        # children then, so the first windows' runs do not wait for their imports.
        self._prepare = prepare
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> Windower:
        """Start ticking (the first tick re-drives what a dead process left); idempotent."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="driftpilot-windower", daemon=True
            )
            self._thread.start()
        return self

    def poke(self) -> None:
        self._wake.set()

    def shutdown(self) -> None:
        """Stop after the tick in progress."""
        thread, self._thread = self._thread, None
        self._stop.set()
        self._wake.set()
        if thread is not None:
            thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if self._prepare is not None and self.windows.windowed_models():
                    prepare, self._prepare = self._prepare, None
                    prepare()
                self.windows.tick()
            except Exception:  # a lost database: tried again at the next tick
                log.exception("the windower's tick failed")
            self._wake.wait(self.tick_s)
            self._wake.clear()
            # Every logged request pokes: ticks stay at least POKE_GAP_S apart (a poke in
            # the gap is kept for the next tick), not one per request.
            rest = min(POKE_GAP_S, self.tick_s) - (time.monotonic() - started)
            if rest > 0:
                self._stop.wait(rest)
