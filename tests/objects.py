"""A real S3-compatible server for tests: moto's standalone server in a child process.

Interface (test modules rely on it):

``s3`` (pytest fixture, session scope) -> :class:`S3Server`
    One server per pytest process: ``python -m moto.server`` on a free loopback port, with
    IAM authentication on (``INITIAL_NO_AUTH_ACTION_COUNT``): only the first three requests,
    which make the ``admin`` user, its key and its allow-all policy, go unauthenticated; every
    later request must be signed by a key the server issued, and is allowed only by that key's
    user's policy. Stopped at the end of the session; its log is in a temporary directory.

``s3_env`` (pytest fixture, function scope) -> :class:`S3Server`
    The same server, with the admin's credentials and a region in the environment
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``; restored after the test),
    which is where ``driftpilot.sources.objects`` reads them.

:class:`S3Server`
    ``endpoint`` (``http://127.0.0.1:<port>``), ``admin`` (:class:`Credentials`);
    ``client(credentials=None)`` a boto3 S3 client (admin's by default);
    ``bucket(prefix="b") -> str`` a new empty bucket with a unique name;
    ``put(bucket, key, body)``; ``user(name, actions) -> Credentials`` an IAM user whose
    policy allows only ``actions`` (``[]``: none); ``sources(*roots)`` the
    ``SourceSettings`` that reach this server with those object roots.

:func:`start_s3` (context manager)
    The same server outside pytest: ``with start_s3() as s3:``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from driftpilot.core.llm import free_port
from driftpilot.core.settings import SourceSettings

REGION = "us-east-1"
# The admin's user, key and policy are made by the server's first three (unsigned) requests.
_UNSIGNED_SETUP_REQUESTS = 3
_ALLOW_ALL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


@dataclass(frozen=True)
class Credentials:
    """An access key the server issued."""

    access_key_id: str
    secret_access_key: str


@dataclass(frozen=True)
class S3Server:
    """A running moto server and its admin's key."""

    endpoint: str
    admin: Credentials
    log: Path

    def _boto(self, service: str, credentials: Credentials | None) -> Any:
        import boto3

        key = credentials or self.admin
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            aws_access_key_id=key.access_key_id,
            aws_secret_access_key=key.secret_access_key,
            region_name=REGION,
        )

    def client(self, credentials: Credentials | None = None) -> Any:
        """A boto3 S3 client signing with ``credentials`` (the admin's by default)."""
        return self._boto("s3", credentials)

    def bucket(self, prefix: str = "b") -> str:
        """A new empty bucket, named uniquely so tests sharing the server do not meet."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, body: bytes) -> None:
        """Write one object (as the admin)."""
        self.client().put_object(Bucket=bucket, Key=key, Body=body)

    def user(self, name: str, actions: list[str]) -> Credentials:
        """A new IAM user allowed ``actions`` on every resource (none when empty), its key."""
        iam = self._boto("iam", None)
        user = f"{name}-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=user)
        if actions:
            statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
            document = {"Version": "2012-10-17", "Statement": [statement]}
            iam.put_user_policy(
                UserName=user, PolicyName="only", PolicyDocument=json.dumps(document)
            )
        key = iam.create_access_key(UserName=user)["AccessKey"]
        return Credentials(key["AccessKeyId"], key["SecretAccessKey"])

    def sources(self, *roots: str, timeout_s: float = 10.0) -> SourceSettings:
        """Source settings that reach this server, allowing ``roots``."""
        return SourceSettings(
            object_roots=list(roots),
            s3_endpoint_url=self.endpoint,
            s3_region=REGION,
            object_timeout_s=timeout_s,
        )


def _wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Until the server accepts connections (a TCP connect: an HTTP request would use up
    one of the unsigned requests)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"moto server exited {process.returncode}: {log.read_text()[-2000:]}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto server did not listen on {port} in 30 s: {log.read_text()[-2000:]}")


def _make_admin(endpoint: str) -> Credentials:
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        aws_access_key_id="unsigned-setup",
        aws_secret_access_key="unsigned-setup",
        region_name=REGION,
    )
    iam.create_user(UserName="admin")
    iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(_ALLOW_ALL))
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    return Credentials(key["AccessKeyId"], key["SecretAccessKey"])


def _launch(log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The server on a free port; another port when one was taken between the probe and the
    server's bind (the child then exits at once)."""
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_UNSIGNED_SETUP_REQUESTS)}
    for attempt in range(3):
        port = free_port()
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            _wait_listening(process, port, log)
            return process, port
        except RuntimeError:
            _stop(process)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def start_s3() -> Iterator[S3Server]:
    """Start moto's server on a free loopback port with IAM authentication on; stop it on
    exit.

    Raises:
        RuntimeError: the server exited or did not listen within 30 s, three times (its log
            attached).
    """
    log = Path(tempfile.mkdtemp(prefix="driftpilot-s3-")) / "moto.log"
    process, port = _launch(log)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        yield S3Server(endpoint, _make_admin(endpoint), log)
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One moto S3 server for the pytest process (see the module docstring)."""
    with start_s3() as server:
        yield server


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The server, with the admin's key and the region in the environment for this test."""
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.admin.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.admin.secret_access_key)
    monkeypatch.setenv("AWS_REGION", REGION)
    return s3
