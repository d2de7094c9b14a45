"""Alert bodies, URL redaction, webhook validation, the retry backoff, the SSRF guard's
address classes and allow list, and webhook signatures."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from typing import cast

import pytest
from pydantic import ValidationError

from driftpilot.alerts.destinations import Destination, check_peer, pinned_backend, within
from driftpilot.alerts.webhooks import (
    EVENT_KINDS,
    AlertSettings,
    Resolver,
    WebhookSpec,
    address_class,
    backoff,
    json_body,
    redact_url,
    resolve,
    signature_header,
    slack_body,
    verify_signature,
)
from driftpilot.core.errors import ConfigError, UnsafeURL
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import PlaneEvent


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
            "https://hooks.slack.com/…",
        ),
        ("http://127.0.0.1:8080/hook?token=abc", "http://127.0.0.1:8080/…"),
        ("https://user:pw@example.org/a#frag", "https://example.org/…"),
        ("https://example.org", "https://example.org"),
        ("http://[::1]:9000/x/y", "http://[::1]:9000/…"),
        # The first path segment can be the secret itself.
        ("https://api.telegram.org/botSECRET123:AAH/sendMessage", "https://api.telegram.org/…"),
        ("https://ntfy.sh/mysecrettopic", "https://ntfy.sh/…"),
    ],
)
def test_redaction_keeps_no_secret(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    for secret in ("SECRET", "token=abc", "pw", "frag", "B000", "mysecrettopic", "sendMessage"):
        if secret in url:
            assert secret not in redact_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/x",
        "file:///etc/passwd",
        "http:///nohost",
        "http://exa mple.org/x",
        "http://example.org:99999/x",
        "javascript:alert(1)",
    ],
)
def test_only_http_urls_with_a_host(url: str) -> None:
    with pytest.raises(ValidationError):
        WebhookSpec(url=url)


def test_events_default_to_all_and_unknown_ones_are_refused() -> None:
    assert WebhookSpec(url="https://example.org/h").events == list(EVENT_KINDS)
    assert WebhookSpec(
        url="https://example.org/h", events=["rollback", "promotion", "rollback"]
    ).events == [
        "promotion",
        "rollback",
    ]
    with pytest.raises(ValidationError):
        WebhookSpec(url="https://example.org/h", events=["coffee"])
    with pytest.raises(ValidationError):
        WebhookSpec(url="https://example.org/h", events=[])
    with pytest.raises(ValidationError):
        WebhookSpec(url="https://example.org/h", format="teams")


def test_json_and_slack_bodies() -> None:
    event = PlaneEvent(
        kind="rollback", model="flights", run_id="rb-1", detail={"from": 3, "to": 2, "by": "cy"}
    )
    body = json_body(event)
    assert body["event"] == "rollback" and body["model"] == "flights" and body["run_id"] == "rb-1"
    assert body["detail"] == {"from": 3, "to": 2, "by": "cy"}
    assert "v3 -> v2 by cy" in body["text"]
    slack = slack_body(event)
    assert set(slack) == {"text", "blocks"} and slack["text"] == body["text"]
    assert [b["type"] for b in slack["blocks"]] == ["section", "section"]
    assert all(f["type"] == "mrkdwn" for f in slack["blocks"][1]["fields"])
    waiting = PlaneEvent(
        kind="approval_waiting", model="m", run_id="r", detail={"request": {"description": "ok?"}}
    )
    assert json_body(waiting)["text"].endswith("waits for approval (run r): ok?")


def test_backoff_doubles_and_is_bounded() -> None:
    conf = AlertSettings(backoff_s=0.5, max_backoff_s=3.0)
    assert [backoff(a, conf) for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(ValidationError):
        AlertSettings(retries=11)


# -- the SSRF guard --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "named"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.169.254", "link-local (cloud metadata service)"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "special-purpose"),
        ("::ffff:127.0.0.1", "loopback (inside IPv6"),
        ("::ffff:169.254.169.254", "cloud metadata service) (inside IPv6"),
        ("2002:a00:1::1", "private (inside IPv6"),  # 6to4 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", "cloud metadata service) (inside IPv6"),  # NAT64
    ],
)
def test_internal_addresses_are_named(address: str, named: str) -> None:
    why = address_class(ipaddress.ip_address(address))
    assert why is not None and named in why, why


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert address_class(ipaddress.ip_address(address)) is None


def table(answers: dict[str, list[str]]) -> Resolver:
    """A DNS table (the unreachable internet's seam); an unknown name does not resolve."""

    def lookup(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"{host} does not resolve")
        return answers[host]

    return lookup


def test_resolve_checks_every_address_and_names_the_class() -> None:
    dns = table(
        {
            "metadata.test": ["169.254.169.254"],
            "mixed.test": ["93.184.215.14", "10.9.8.7"],
            "public.test": ["93.184.215.14", "2606:4700::1111"],
            "inside.test": ["127.0.0.1"],
        }
    )
    conf = AlertSettings(allow_hosts="inside.test:9000")
    with pytest.raises(UnsafeURL, match=r"169\.254\.169\.254, a link-local \(cloud metadata"):
        resolve("http://metadata.test/latest/meta-data/", conf, dns)
    with pytest.raises(UnsafeURL, match=r"10\.9\.8\.7, a private address"):
        resolve("https://mixed.test/hook", conf, dns)
    public = resolve("https://public.test/hook", conf, dns)
    assert public.addresses == ("93.184.215.14", "2606:4700::1111") and not public.allowed
    assert public.port == 443 and public.host == "public.test"
    assert resolve("http://inside.test:9000/h", conf, dns).allowed  # listed with its port
    with pytest.raises(UnsafeURL, match="loopback"):
        resolve("http://inside.test:9001/h", conf, dns)  # another port is not
    with pytest.raises(ConfigError, match="does not resolve") as unresolved:
        resolve("https://nowhere.test/h", conf, dns)
    assert not isinstance(unresolved.value, UnsafeURL)


def test_an_address_literal_is_checked_without_a_lookup() -> None:
    def no_lookup(host: str, port: int) -> list[str]:
        raise AssertionError(f"looked {host} up")

    conf = AlertSettings()
    for url, named in (
        ("http://169.254.169.254/latest", "cloud metadata"),
        ("http://[::ffff:7f00:1]:8080/x", "loopback"),
        ("http://[fe80::1%25eth0]/x", "link-local"),
    ):
        with pytest.raises(UnsafeURL, match=named):
            resolve(url, conf, no_lookup)
    assert resolve("https://93.184.215.14/h", conf, no_lookup).addresses == ("93.184.215.14",)


def test_allowed_hosts_are_parsed_and_checked() -> None:
    conf = AlertSettings(allow_hosts=" Hooks.Internal , 127.0.0.1:9000,[::1]:8080,::1")
    assert conf.allowed() == {
        ("hooks.internal", None),
        ("127.0.0.1", 9000),
        ("::1", 8080),
        ("::1", None),
    }
    for bad in ("a:b", "host:0", "host:70000", "a b", "http://x", "[::1"):
        with pytest.raises(ValidationError):
            AlertSettings(allow_hosts=bad)


def test_allowed_hosts_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTPILOT_ALERTS_ALLOW_HOSTS", "hooks.internal,10.0.0.5:8443")
    assert Settings().alerts.allowed() == {("hooks.internal", None), ("10.0.0.5", 8443)}


def test_the_peer_must_be_the_address_checked() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as sock:
            allowed = Destination("hook.test", port, ("127.0.0.1",), allowed=True)
            check_peer(sock, allowed, "127.0.0.1")  # the one checked: fine
            with pytest.raises(UnsafeURL, match=r"not 127\.0\.0\.2"):
                check_peer(sock, allowed, "127.0.0.2")
            checked = Destination("hook.test", port, ("127.0.0.1",), allowed=False)
            with pytest.raises(UnsafeURL, match="loopback"):
                check_peer(sock, checked, "127.0.0.1")


# -- signatures ------------------------------------------------------------------------------


def test_a_signature_verifies_and_anything_changed_does_not() -> None:
    secret, body, t = "k" * 43, b'{"event":"promotion"}', 1_800_000_000
    header = signature_header(secret, body, t)
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    assert header == f"t={t},v1={expected}"
    assert verify_signature(secret, header, body, now=t + 10)
    assert not verify_signature(secret, header, body + b" ", now=t)  # tampered body
    assert not verify_signature("x" * 43, header, body, now=t)  # wrong secret
    assert not verify_signature(secret, header, body, now=t + 301)  # stale
    assert not verify_signature(secret, header, body, now=t - 301)  # from the future
    assert verify_signature(secret, header, body, tolerance_s=600, now=t + 400)
    forged_t = header.replace(f"t={t}", f"t={t + 100}")  # a replay with a fresh time
    assert not verify_signature(secret, forged_t, body, now=t + 100)
    for broken in ("", "v1=" + expected, f"t=soon,v1={expected}", f"t={t},v1=é", f"t={t}"):
        assert not verify_signature(secret, broken, body, now=t)
    assert verify_signature(secret, f"t={t},v1={'0' * 64},v1={expected}", body, now=t)


# -- allowed IP literals, metadata addresses, the address cap ---------------------------------


def no_lookup(host: str, port: int) -> list[str]:
    """A resolver that fails the test: an address literal needs no lookup."""
    raise AssertionError(f"looked {host} up")


def test_allowed_ip_literals_compare_as_addresses() -> None:
    conf = AlertSettings(allow_hosts="[0::1]:8080,127.000.0.1:9000,[0:0:0:0:0:ffff:a00:5]")
    assert ("::1", 8080) in conf.allowed() and ("127.000.0.1", 9000) in conf.allowed()
    assert resolve("http://[::1]:8080/h", conf, no_lookup).allowed
    assert resolve("http://[0:0::1]:8080/h", conf, no_lookup).allowed  # spelt either way
    assert resolve("http://[::ffff:10.0.0.5]/h", conf, no_lookup).allowed
    with pytest.raises(UnsafeURL, match="loopback"):
        resolve("http://[::1]:8081/h", conf, no_lookup)  # the port still counts
    # Not an address to ipaddress (leading zeros): a name, never equal to 127.0.0.1.
    with pytest.raises(UnsafeURL, match="loopback"):
        resolve("http://127.0.0.1:9000/h", conf, no_lookup)


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200", "::ffff:169.254.169.254"]
)
def test_cloud_metadata_is_refused_even_for_an_allowed_host(address: str) -> None:
    assert "cloud metadata service" in (address_class(ipaddress.ip_address(address)) or "")
    literal = f"[{address}]" if ":" in address else address
    conf = AlertSettings(allow_hosts=f"hooks.internal,{literal}")
    dns = table({"hooks.internal": ["10.0.0.5", address]})
    with pytest.raises(UnsafeURL, match="cloud metadata service address: refused, even"):
        resolve("http://hooks.internal/h", conf, dns)
    with pytest.raises(UnsafeURL, match="cloud metadata service address: refused, even"):
        resolve(f"http://{literal}/latest/meta-data/", conf, no_lookup)
    assert resolve("http://hooks.internal/h", conf, table({"hooks.internal": ["10.0.0.5"]}))


class Peer:
    """A connected socket's one method ``check_peer`` reads: no machine here has a metadata
    service to connect to."""

    def __init__(self, address: str) -> None:
        self.address = address

    def getpeername(self) -> tuple[str, int]:
        return (self.address, 80)


def test_the_peer_of_an_allowed_host_is_never_a_metadata_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as sock:
            allowed = Destination("hook.test", port, ("127.0.0.1",), allowed=True)
            check_peer(sock, allowed, "127.0.0.1")
            metadata = cast(socket.socket, Peer("169.254.169.254"))
            with pytest.raises(UnsafeURL, match="cloud metadata"):
                check_peer(metadata, allowed, "169.254.169.254")


def test_an_attempt_connects_to_max_addresses_at_most() -> None:
    """A name's addresses are tried in order, the first ``max_addresses`` only: here the
    listening one is fifth, behind four loopback addresses nothing listens on."""
    import httpcore

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        closed = tuple(f"127.0.0.{i}" for i in range(2, 6))
        hook = Destination("hook.test", port, (*closed, "127.0.0.1"), allowed=True)
        deadline = time.monotonic() + 30
        with pytest.raises(httpcore.ConnectError):
            pinned_backend(hook, max_addresses=4, deadline=deadline).connect_tcp(
                "hook.test", port, timeout=5
            )
        stream = pinned_backend(hook, max_addresses=5, deadline=deadline).connect_tcp(
            "hook.test", port, timeout=5
        )
        assert stream.get_extra_info("socket").getpeername()[0] == "127.0.0.1"
        stream.close()


def test_every_operation_of_an_attempt_ends_by_its_deadline() -> None:
    """On a fake clock: each timeout shrinks to what is left, and nothing is left after the
    deadline, whatever the per-operation timeout."""
    import httpcore

    now = [100.0]

    def clock() -> float:
        return now[0]

    assert within(5.0, 110.0, clock, httpcore.ReadTimeout) == 5.0
    now[0] = 108.5
    assert within(5.0, 110.0, clock, httpcore.ReadTimeout) == 1.5
    assert within(None, 110.0, clock, httpcore.ReadTimeout) == 1.5
    now[0] = 110.0
    with pytest.raises(httpcore.ReadTimeout, match="deadline"):
        within(5.0, 110.0, clock, httpcore.ReadTimeout)
    hook = Destination("hook.test", 9, ("127.0.0.1",), allowed=True)
    with pytest.raises(httpcore.ConnectTimeout):  # before any connection is tried
        pinned_backend(hook, max_addresses=4, deadline=110.0, clock=clock).connect_tcp(
            "hook.test", 9, timeout=5
        )
