"""A real ``mlflow server`` for tests, one per pytest process.

Interface (test modules rely on it):

``mlflow_server`` (pytest fixture, session scope; tests/conftest.py registers it) -> :class:`Server`
    ``mlflow server`` on a free loopback port with a SQLite backend store and proxied
    artifacts (a folder of its own). Started, not waited for: it boots (10-20 s on 2 cores)
    while the tests that asked for it read data and train; :meth:`Server.wait` waits for it.
    Shared by the modules that use it (tests/integration/test_mlflow_server.py and
    test_adopt.py: each registers models under names of its own), stopped at the end of the
    session.

:class:`Server`
    ``uri`` (``http://127.0.0.1:<port>``), ``artifacts`` (the folder its artifacts land in),
    ``proc``, ``log``; ``wait()``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from driftpilot.core.llm import free_port


@dataclass(frozen=True)
class Server:
    """A started ``mlflow server``: its tracking URI and the folder its artifacts land in."""

    uri: str
    artifacts: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def wait(self) -> None:
        """Return once it answers /health; fail with its log if it died or never did."""
        from tests.conftest import wait_serving

        wait_serving(self.proc, f"{self.uri}/health", self.log.read_text, timeout_s=120)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``mlflow server`` on loopback with a SQLite backend and proxied artifacts, for the
    session (see the module's docstring)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    argv = [
        str(mlflow_cli),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'm.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",  # 4 by default: on 2 cores each worker's start-up costs seconds
    ]
    # Its background job runner (huey) is not needed to track and register models.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log_path = root / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        yield Server(f"http://127.0.0.1:{port}", root / "artifacts", proc, log_path)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (uvicorn and anything it spawned, even if the
    server itself died), SIGKILL if it does not exit in time."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return  # nothing of the group is left
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
