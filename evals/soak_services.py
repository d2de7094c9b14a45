"""The processes a fault soak starts, kills and starts again (``evals.soak``, and
tests/integration/test_outage.py): a throwaway PostgreSQL server that can be stopped in
immediate mode (a crash: no checkpoint, clients cut off) and started again on the same port,
and ``driftpilot serve``/``driftpilot worker`` subprocesses that can be killed with -9.

    pg = Postgres(server)          # a tests.pg.PostgresServer that is running
    pg.stop_immediate(); pg.start()
    api = Service("api", ["serve", "--host", "127.0.0.1", "--port", "8123"], env, logs)
    api.start(ready_url="http://127.0.0.1:8123/healthz"); api.kill9(); api.start(...)
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.pg import PostgresServer, _as_server_user

DRIFTPILOT = str(Path(sys.executable).with_name("driftpilot"))


class Postgres:
    """Stop (immediate mode) and start again a running throwaway server, on the same port and
    with the same options: ``postmaster.opts``, written by the server at start, has them."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        opts = (server.data_dir / "postmaster.opts").read_text().strip()
        # The first word is the postgres binary, then "-D" "<dir>" and the -c options.
        self.options = shlex.split(opts)[1:]
        self.prefix = _as_server_user()

    def _pg_ctl(self, *args: str) -> None:
        cmd = [*self.prefix, str(self.server.bin_dir / "pg_ctl"), "-D", str(self.server.data_dir)]
        done = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {args[-1]} failed: {done.stdout}\n{done.stderr}")

    def stop_immediate(self) -> None:
        """``pg_ctl stop -m immediate``: every backend is killed at once, as in a crash (the
        next start replays the WAL)."""
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def start(self) -> None:
        """Start the server again with the options it had; returns once it accepts
        connections (crash recovery included)."""
        extra = [o for o in self.options if o not in ("-D", str(self.server.data_dir))]
        log = self.server.data_dir.parent / "server.log"
        self._pg_ctl("-l", str(log), "-w", "-t", "90", "-o", shlex.join(extra), "start")

    def accepts(self) -> bool:
        """The server answers a query."""
        try:
            return self.server.psql("SELECT 1") == "1"
        except RuntimeError:
            return False


class Service:
    """A ``driftpilot`` subprocess (``serve`` or ``worker``) with its log in ``logs``; every
    start appends to the same log."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.args, self.env = name, args, env
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_at = 0.0  # time.monotonic() of the last start

    def start(self, ready_url: str | None = None, timeout_s: float = 180) -> float:
        """Start the process; with ``ready_url``, wait until it answers 200 there. Returns the
        seconds it took.

        Raises:
            RuntimeError: it exited, or did not answer in ``timeout_s`` (with its log's end).
        """
        started = self.started_at = time.monotonic()
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {self.starts} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [DRIFTPILOT, *self.args], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        if ready_url is not None:
            self._wait_ready(ready_url, started + timeout_s)
        return time.monotonic() - started

    def _wait_ready(self, url: str, deadline: float) -> None:
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer {url}:\n{self.tail()}")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL, as a crash or the OOM killer: nothing is cleaned up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout_s: float = 120) -> None:
        """SIGTERM (runs in progress finish), then SIGKILL after ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def tail(self, chars: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-chars:]
