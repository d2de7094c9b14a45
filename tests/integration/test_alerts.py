"""Alerts on real flights and real control runs: webhooks posted to a real HTTP receiver on
loopback, a dead endpoint (a closed port) that never holds up a run, every attempt audited
with the URL redacted, and the webhook routes of the API.

The SSRF guard and the signatures: names that resolve to internal addresses are refused at
creation and before any connection at delivery; a real loopback receiver verifies the
signature of a real delivery. Loopback is allowed (``DRIFTPILOT_ALERTS_ALLOW_HOSTS``) only
where a test says so. Host names other than ``localhost`` resolve through ``FakeDNS`` (the
unreachable internet's seam), and a guard on ``socket.connect`` fails any connection that
is not to loopback: no test sends traffic anywhere else."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from driftpilot.alerts.webhooks import (
    AlertDispatcher,
    AlertSettings,
    Webhooks,
    WebhookSpec,
    resolve,
    verify_signature,
)
from driftpilot.core.settings import ApiSettings, Settings
from driftpilot.runs.plane import ControlPlane, PlaneEvent
from driftpilot.store.models import ToolCall, Webhook
from tests.conftest import add_flights

pytestmark = pytest.mark.integration
SECRET = "s3cr3t-token-value"
PROBLEM = "application/problem+json"


class Receiver:
    """A webhook receiver: records every POST (path, JSON body, headers, raw bytes);
    ``/flaky`` answers 503 to its first request, ``/redirect`` a 302 to ``/json``. A path with
    a secret in ``secrets`` verifies the signature as a receiver would: 401 when it fails."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.secrets: dict[str, str] = {}
        self.lock = threading.Lock()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                body = json.loads(raw or b"{}")
                path = self.path.split("?", 1)[0]
                with received.lock:
                    received.posts.append((path, body))
                    received.requests.append((path, dict(self.headers.items()), raw))
                    flaky_first = (
                        path == "/flaky" and sum(p == path for p, _ in received.posts) == 1
                    )
                    secret = received.secrets.get(path)
                status = 503 if flaky_first else 302 if path == "/redirect" else 200
                if secret is not None:
                    header = self.headers.get("X-DriftPilot-Signature", "")
                    if not verify_signature(secret, header, raw):
                        status = 401
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "/json")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def bodies(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [b for p, b in self.posts if p == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def loopback_settings(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Settings:
    """The ``settings`` fixture with 127.0.0.1 allowed (the receivers live there)."""
    monkeypatch.setenv("DRIFTPILOT_ALERTS_ALLOW_HOSTS", "127.0.0.1")
    made: Settings = request.getfixturevalue("settings")
    assert made.alerts.allowed() == {("127.0.0.1", None)}
    return made


class FakeDNS:
    """The DNS seam: a table of names, each with the answers of its successive lookups (the
    last one repeats). Every lookup is counted. An unknown name does not resolve."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append(host)
        answers = self.table.get(host)
        if answers is None:
            raise OSError(f"{host} does not resolve")
        return answers[min(self.lookups.count(host), len(answers)) - 1]


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address a socket connects to during the test; a connection anywhere but
    loopback fails before it is made (so no test can send traffic off the machine)."""
    made: list[Any] = []
    connect = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> None:
        made.append(address)
        host = address[0] if isinstance(address, tuple) else ""
        if host not in ("127.0.0.1", "::1"):
            raise OSError(f"test guard: connection to {address!r} refused")
        connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return made


def dead_url() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook?token={SECRET}"


def bad_batch(months: dict[str, pl.DataFrame], seed: int) -> pl.DataFrame:
    """A real month with a column missing: ingestion quarantines it (fast, no training)."""
    return months["2013-02"].sample(n=1500, seed=seed).sort("time_hour").drop("distance")


def wait_for(probe: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_alerts_reach_the_receiver_and_a_dead_endpoint_never_blocks_a_run(
    loopback_settings: Settings,
    jan_sample: pl.DataFrame,
    months: dict[str, pl.DataFrame],
    receiver: Receiver,
) -> None:
    cp = ControlPlane(loopback_settings)
    add_flights(cp, jan_sample)
    hooks = Webhooks(cp.store, loopback_settings.alerts)
    streak = ["quarantine_streak"]
    json_hook = hooks.add("flights", WebhookSpec(url=f"{receiver.url}/json", events=streak), "ann")
    hooks.add("flights", WebhookSpec(url=f"{receiver.url}/slack", format="slack"), "ann")
    flaky = hooks.add(
        "flights", WebhookSpec(url=f"{receiver.url}/flaky?token={SECRET}", events=streak), "ann"
    )
    hooks.add("flights", WebhookSpec(url=f"{receiver.url}/promo", events=["promotion"]), "ann")
    dead = hooks.add("flights", WebhookSpec(url=dead_url(), events=streak), "ann")
    assert (
        SECRET not in dead.url
        and dead.url.endswith(":" + dead.url.rsplit(":", 1)[1])
        and dead.url.endswith("/…")
    )

    # Retries: 3 attempts 1 s and 2 s apart, so the dead endpoint takes >= 3 s to give up.
    conf = AlertSettings(
        timeout_s=2,
        retries=2,
        backoff_s=1.0,
        max_backoff_s=2.0,
        workers=2,
        allow_hosts="127.0.0.1",
    )
    with AlertDispatcher(cp, conf) as dispatcher:
        first = cp.start_run("flights", bad_batch(months, 1), "bad-1", requested_by="ann")
        started = time.monotonic()
        second = cp.start_run("flights", bad_batch(months, 2), "bad-2", requested_by="ann")
        run_s = time.monotonic() - started
        assert first.outcome == second.outcome == "quarantined"
        # The run returned while the dead endpoint is still being retried.
        assert not dispatcher.wait_idle(0) and run_s < 3.0, run_s
        assert dispatcher.wait_idle(30)
    assert time.monotonic() - started >= 3.0

    (event,) = receiver.bodies("/json")
    assert event["source"] == "driftpilot" and event["event"] == "quarantine_streak"
    assert event["model"] == "flights" and event["run_id"] == second.run_id
    assert event["detail"] == {"streak": 2} and "quarantined" in event["text"]
    (slack,) = receiver.bodies("/slack")  # all events: only the streak happened
    assert set(slack) == {"text", "blocks"} and "flights" in slack["text"]
    assert slack["blocks"][0] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": slack["text"]},
    }
    assert any(second.run_id in f["text"] for f in slack["blocks"][1]["fields"])
    assert receiver.bodies("/promo") == []  # not subscribed to quarantine streaks
    assert len(receiver.bodies("/flaky")) == 2  # a 503, then delivered on the retry

    calls = cp.store.list_rows(
        ToolCall, ToolCall.agent == "alerts", ToolCall.tool == "webhook.post", order=ToolCall.id
    )
    attempts: dict[str, list[tuple[bool, Any, Any]]] = {}
    for call in calls:
        args, result = json.loads(call.args), json.loads(call.result)
        assert SECRET not in call.args + call.result
        assert call.run_id == second.run_id and args["event"] == "quarantine_streak"
        attempts.setdefault(args["webhook_id"], []).append(
            (call.ok, result["status"], args["attempt"])
        )
    assert attempts[json_hook.webhook_id] == [(True, 200, 1)]
    assert attempts[flaky.webhook_id] == [(False, 503, 1), (True, 200, 2)]
    assert attempts[dead.webhook_id] == [(False, None, 1), (False, None, 2), (False, None, 3)]
    dead_calls = [c for c in calls if json.loads(c.args)["webhook_id"] == dead.webhook_id]
    assert json.loads(dead_calls[-1].result)["error"] == "ConnectError"
    assert json.loads(dead_calls[-1].args)["url"].startswith("http://127.0.0.1:")
    assert cp.verify().ok
    cp.close()


def test_webhooks_over_the_api(
    loopback_settings: Settings,
    jan_sample: pl.DataFrame,
    months: dict[str, pl.DataFrame],
    receiver: Receiver,
    connects: list[Any],
) -> None:
    cp = ControlPlane(loopback_settings)
    add_flights(cp, jan_sample)
    _, operator = cp.create_api_key("olga", "operator")
    _, viewer = cp.create_api_key("vic", "viewer")
    ops, view = {"X-Api-Key": operator}, {"X-Api-Key": viewer}
    url = f"{receiver.url}/json?token={SECRET}"
    with TestClient(create_app(cp, ApiSettings(recover_on_start=False))) as client:
        body = {"url": url, "events": ["quarantine_streak", "run_failed"]}
        assert client.post("/models/flights/webhooks", json=body, headers=view).status_code == 403
        for bad in ({"url": "ftp://example.org/x"}, {"url": url, "events": ["coffee"]}):
            answer = client.post("/models/flights/webhooks", json=bad, headers=ops)
            assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM
        assert client.post("/models/nope/webhooks", json=body, headers=ops).status_code == 404

        # Internal addresses are refused at creation, naming their class; only 127.0.0.1
        # is allowed here, not what localhost or an IPv4-mapped address resolve to.
        for internal, named in (
            ("http://169.254.169.254/latest/meta-data/", "link-local (cloud metadata service)"),
            (f"http://localhost:{receiver.httpd.server_address[1]}/json", "loopback"),
            ("http://[::ffff:10.0.0.7]/hook", "private (inside IPv6"),
            ("http://[fe80::1]:8080/hook", "link-local"),
        ):
            refused = client.post("/models/flights/webhooks", json={"url": internal}, headers=ops)
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"] == PROBLEM
            assert named in refused.json()["detail"], refused.json()
            assert "DRIFTPILOT_ALERTS_ALLOW_HOSTS" in refused.json()["detail"]
        assert connects == []  # refused without connecting anywhere

        made = client.post("/models/flights/webhooks", json=body, headers=ops)
        assert made.status_code == 201, made.text
        hook = made.json()
        assert SECRET not in made.text and hook["created_by"] == "olga"
        assert hook["events"] == ["quarantine_streak", "run_failed"]
        secret = hook["secret"]  # shown this once
        assert isinstance(secret, str) and len(secret) >= 43
        receiver.secrets["/json"] = secret  # the receiver answers 401 to a bad signature
        again = client.post("/models/flights/webhooks", json=body, headers=ops)
        assert again.status_code == 422 and "already" in again.json()["detail"]
        listed = client.get("/models/flights/webhooks", headers=ops)
        assert [h["webhook_id"] for h in listed.json()] == [hook["webhook_id"]]
        assert SECRET not in listed.text and secret not in listed.text
        assert "secret" not in listed.json()[0]
        assert client.get("/models/flights/webhooks", headers=view).status_code == 403

        # The app's dispatcher posts what runs in this process announce, signed.
        for seed in (3, 4):
            cp.start_run("flights", bad_batch(months, seed), f"bad-{seed}", requested_by="ann")
        (event,) = wait_for(lambda: receiver.bodies("/json"), 30, "the alert")
        assert event["event"] == "quarantine_streak"
        posted = wait_for(
            lambda: [
                c
                for c in cp.store.list_rows(ToolCall, ToolCall.tool == "webhook.post")
                if json.loads(c.result)["final"]
            ],
            30,
            "the audited delivery",
        )
        assert [json.loads(c.result)["status"] for c in posted] == [200]  # verified: not 401
        (path, headers, raw) = receiver.requests[-1]
        assert verify_signature(secret, headers["X-DriftPilot-Signature"], raw)
        assert headers["X-DriftPilot-Delivery"] == event["delivery_id"]
        every_call = cp.store.list_rows(ToolCall)
        assert all(secret not in c.args + c.result for c in every_call)

        path = f"/models/flights/webhooks/{hook['webhook_id']}"
        assert client.post(f"{path}/secret", headers=view).status_code == 403
        rotated = client.post(f"{path}/secret", headers=ops)
        assert rotated.status_code == 200, rotated.text
        fresh = rotated.json()["secret"]
        listing = client.get("/models/flights/webhooks", headers=ops).text
        assert fresh != secret and fresh not in listing
        stored = cp.store.list_rows(Webhook, Webhook.id == hook["webhook_id"])
        assert [w.secret for w in stored] == [fresh]  # the old secret signs nothing now
        assert client.delete(path, headers=ops).status_code == 204
        assert client.delete(path, headers=ops).status_code == 404
        assert client.get("/models/flights/webhooks", headers=ops).json() == []


PUBLIC = "93.184.215.14"  # a public address: validated, never connected to (see FakeDNS)


def stored_hook(url: str, secret: str = "k" * 43, fmt: str = "json") -> Webhook:
    """A webhook row as one made before the guard existed would be (not checked at
    creation): delivery is where it must be stopped."""
    return Webhook(
        id=uuid.uuid4().hex,
        model="flights",
        url=url,
        format=fmt,
        events=json.dumps(["run_failed"]),
        description="",
        created_by="ann",
        created_at="2026-12-07T00:00:00+00:00",
        secret=secret,
    )


def audited_attempts(cp: ControlPlane, hook: Webhook) -> list[tuple[dict[str, Any], bool]]:
    calls = cp.store.list_rows(ToolCall, ToolCall.tool == "webhook.post", order=ToolCall.id)
    return [
        (json.loads(c.result), c.ok) for c in calls if json.loads(c.args)["webhook_id"] == hook.id
    ]


EVENT = PlaneEvent(kind="run_failed", model="flights", run_id="r-ssrf", detail={"error": "x"})


def test_internal_destinations_are_refused_at_delivery_before_any_connection(
    settings: Settings, receiver: Receiver, connects: list[Any]
) -> None:
    port = receiver.httpd.server_address[1]
    dns = FakeDNS(
        {
            "metadata.test": [["169.254.169.254"]],
            "local.test": [["127.0.0.1"]],
            "mixed.test": [[PUBLIC, "10.1.2.3"]],
            "v6.test": [["fe80::1%2"]],
            "mapped.test": [["::ffff:127.0.0.1"]],
            # Public when the webhook was made, loopback when it is delivered: a rebinding.
            "rebind.test": [[PUBLIC], ["127.0.0.1"]],
        }
    )
    cp = ControlPlane(settings)
    conf = AlertSettings(retries=2, backoff_s=0.0, allow_hosts="other.test")
    with AlertDispatcher(cp, conf, resolver=dns) as dispatcher:
        # The creation check passes the rebinding name (its first answer is public).
        assert resolve(f"http://rebind.test:{port}/json", conf, dns).addresses == (PUBLIC,)
        cases = {
            f"http://metadata.test:{port}/latest/meta-data/": "link-local (cloud metadata",
            f"http://local.test:{port}/json": "127.0.0.1, a loopback",
            f"http://mixed.test:{port}/json": "10.1.2.3, a private",
            f"http://v6.test:{port}/json": "fe80::1, a link-local",
            f"http://mapped.test:{port}/json": "loopback (inside IPv6",
            f"http://rebind.test:{port}/json": "127.0.0.1, a loopback",
            f"http://127.0.0.1:{port}/json": "127.0.0.1, a loopback",
            f"https://[::1]:{port}/json": "::1, a loopback",
            f"http://0.0.0.0:{port}/json": "unspecified",
            f"http://224.0.0.1:{port}/json": "multicast",
            f"http://240.0.0.1:{port}/json": "reserved",
            f"http://100.64.0.1:{port}/json": "special-purpose",
        }
        for url, named in cases.items():
            hook = stored_hook(url)
            assert dispatcher.deliver(hook, EVENT) is False
            [(result, ok)] = audited_attempts(cp, hook)  # refused once: never retried
            assert not ok and result["status"] is None and result["final"] is True
            assert result["error"] == "UnsafeURL" and named in result["refused"], (url, result)
    assert connects == []  # no connection was even attempted
    assert receiver.posts == []
    assert dns.lookups.count("rebind.test") == 2  # checked at creation, checked again here
    cp.close()


def test_a_signed_delivery_goes_to_the_checked_address_and_the_receiver_verifies_it(
    settings: Settings, receiver: Receiver, connects: list[Any]
) -> None:
    port = receiver.httpd.server_address[1]
    # hook.test exists only in FakeDNS: the one way to reach the receiver is the address the
    # guard checked (the system's resolver would fail), with the Host header still the name.
    dns = FakeDNS({"hook.test": [["127.0.0.1"]]})
    cp = ControlPlane(settings)
    conf = AlertSettings(retries=2, backoff_s=0.0, allow_hosts=f"hook.test:{port}")
    secret = "s" * 43
    with AlertDispatcher(cp, conf, resolver=dns) as dispatcher:
        hook = stored_hook(f"http://hook.test:{port}/flaky?token={SECRET}", secret=secret)
        receiver.secrets["/flaky"] = secret
        assert dispatcher.deliver(hook, EVENT) is True
        # Allowed by host and port only: another port of the same name is refused.
        other = stored_hook(f"http://hook.test:{port + 1 if port < 65535 else 1}/x")
        assert dispatcher.deliver(other, EVENT) is False
        assert audited_attempts(cp, other)[0][0]["error"] == "UnsafeURL"
        # A 3xx is a failed delivery, not followed: /json never sees it.
        moved = stored_hook(f"http://hook.test:{port}/redirect")
        assert dispatcher.deliver(moved, EVENT) is False
    assert [(r["status"], ok) for r, ok in audited_attempts(cp, moved)] == [(302, False)]
    assert receiver.bodies("/json") == []
    assert dns.lookups.count("hook.test") == 4  # once per attempt: 2, 1 refused, 1 moved
    assert {a for a in connects} == {("127.0.0.1", port)}

    first, second = [(h, raw) for p, h, raw in receiver.requests if p == "/flaky"]
    assert [(r["status"], ok) for r, ok in audited_attempts(cp, hook)] == [
        (503, False),
        (200, True),  # the receiver verified the signature, else 401
    ]
    for headers, raw in (first, second):
        assert headers["Host"] == f"hook.test:{port}"
        assert headers["X-DriftPilot-Signature"].startswith(
            f"t={headers['X-DriftPilot-Timestamp']},v1="
        )
        assert verify_signature(secret, headers["X-DriftPilot-Signature"], raw)
        assert json.loads(raw)["delivery_id"] == headers["X-DriftPilot-Delivery"]
    # One delivery, one id across its retries.
    assert first[0]["X-DriftPilot-Delivery"] == second[0]["X-DriftPilot-Delivery"]
    headers, raw = second
    signed = headers["X-DriftPilot-Signature"]
    stamp = int(headers["X-DriftPilot-Timestamp"])
    assert not verify_signature(secret, signed, raw.replace(b"run_failed", b"promotion"))
    assert not verify_signature("t" * 43, signed, raw)
    assert not verify_signature(secret, signed, raw, now=stamp + 301)
    assert verify_signature(secret, signed, raw, now=stamp + 299)
    calls = cp.store.list_rows(ToolCall)
    assert all(secret not in c.args + c.result and SECRET not in c.args for c in calls)
    cp.close()


def self_signed(name: str) -> tuple[bytes, bytes]:
    """A certificate for ``name`` (and its key), PEM: the receiver's, trusted by the test."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def test_https_delivery_to_the_checked_address_verifies_the_certificate_of_the_name(
    settings: Settings, tmp_path: Any, connects: list[Any]
) -> None:
    cert, key = self_signed("hook.test")
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    names: list[str | None] = []
    server.sni_callback = lambda sock, name, ctx: names.append(name)
    receiver = Receiver(tls=server)
    port = receiver.httpd.server_address[1]
    trusted = ssl.create_default_context(cadata=cert.decode("ascii"))
    dns = FakeDNS({"hook.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]})
    conf = AlertSettings(retries=0, allow_hosts="hook.test,other.test")
    cp = ControlPlane(settings)
    try:
        with AlertDispatcher(cp, conf, resolver=dns, ssl_context=trusted) as dispatcher:
            good = stored_hook(f"https://hook.test:{port}/json")
            assert dispatcher.deliver(good, EVENT) is True
            # Same address, another name: the certificate is checked against the name.
            wrong = stored_hook(f"https://other.test:{port}/json")
            assert dispatcher.deliver(wrong, EVENT) is False
        [(result, _)] = audited_attempts(cp, wrong)
        assert result["status"] is None and result["error"] == "ConnectError"
        assert names[0] == "hook.test"  # SNI is the name, not the address connected to
        assert len(receiver.bodies("/json")) == 1
        [(_, headers, _)] = receiver.requests
        assert headers["Host"] == f"hook.test:{port}"
        assert {a for a in connects} == {("127.0.0.1", port)}
    finally:
        receiver.close()
        cp.close()


class Dribbler:
    """A hostile receiver: it reads the request, then answers one byte of a status line and
    headers that never end every ``every_s`` seconds, for ``for_s`` seconds at most (each
    byte resets a read timeout), then closes. ``lasted`` is how long it kept a client."""

    def __init__(self, every_s: float, for_s: float) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.every_s, self.for_s = every_s, for_s
        self.lasted: list[float] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        started = time.monotonic()
        answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000
        with conn:
            conn.recv(65536)
            for byte in answer:
                if time.monotonic() - started > self.for_s:
                    break
                try:
                    conn.sendall(bytes([byte]))
                except OSError:  # the client gave up: what the test waits for
                    break
                time.sleep(self.every_s)
        self.lasted.append(time.monotonic() - started)

    def close(self) -> None:
        self.server.close()


def test_a_receiver_answering_a_byte_at_a_time_holds_an_attempt_until_its_deadline_only(
    settings: Settings, connects: list[Any]
) -> None:
    """Each byte comes well within the read timeout (0.1 s apart, timeout 1 s); the attempt
    still ends at its 1.5 s deadline, not when the receiver stops after 12 s."""
    dribbler = Dribbler(every_s=0.1, for_s=12.0)
    cp = ControlPlane(settings)
    conf = AlertSettings(timeout_s=1.0, deadline_s=1.5, retries=0, allow_hosts="127.0.0.1")
    try:
        with AlertDispatcher(cp, conf) as dispatcher:
            hook = stored_hook(f"http://127.0.0.1:{dribbler.port}/slow")
            started = time.monotonic()
            assert dispatcher.deliver(hook, EVENT) is False
            took = time.monotonic() - started
        assert 1.4 < took < 4.0, took
        [(result, ok)] = audited_attempts(cp, hook)
        assert not ok and result["status"] is None and result["error"] == "ReadTimeout", result
        lasted = wait_for(lambda: dribbler.lasted, 15, "the receiver to see the client go")
        assert lasted[0] < 4.0, lasted  # the connection was closed, not left to dribble
        assert connects == [("127.0.0.1", dribbler.port)]
    finally:
        dribbler.close()
        cp.close()
