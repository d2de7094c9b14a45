"""Where a webhook may post: the SSRF guard.

A webhook URL is a request the server makes on someone's behalf, so its host must not lead
into the network the server sits in (OWASP API7). ``resolve`` looks the host up once and
refuses the URL when any address is loopback, private, link-local (the cloud metadata service
169.254.169.254 among them), multicast, reserved, unspecified or otherwise not global, also
inside an IPv4-mapped, 6to4, Teredo or NAT64 IPv6 address. It is called when a webhook is
created and again before every delivery attempt.

A delivery then connects to the addresses ``resolve`` validated, never to the name again
(``PinnedBackend``): a DNS answer that changes between the check and the connection (DNS
rebinding) cannot reach anything unchecked. The socket's peer is checked once more after
connecting. The Host header and TLS (SNI, certificate check) still use the host name.
Redirects are never followed, and proxy variables are not honoured (a proxy would connect on
its own terms). The only way to an internal receiver is ``DRIFTPILOT_ALERTS_ALLOW_HOSTS``;
a cloud metadata address (``METADATA``) is refused even for a listed host, whose name could
be made to resolve to it.

One attempt connects to at most ``max_addresses`` of the addresses (a name with a hundred
blackholed addresses would otherwise cost a connect timeout each), and every connect, send and
read of the attempt is bounded by one deadline (``DeadlineStream``): a receiver that answers a
byte at a time resets a read timeout forever, but not the deadline.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from driftpilot.core.errors import ConfigError, UnsafeURL
from driftpilot.core.settings import AlertSettings, normal_host

if TYPE_CHECKING:
    import ssl

    import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
"""``(host, port) -> addresses`` (text, IPv4 or IPv6). Raises OSError when the name does not
resolve. The system's is ``system_resolver``; tests pass a table of names (the DNS seam)."""

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
METADATA: dict[IPAddress, str] = {
    ipaddress.ip_address("169.254.169.254"): "link-local",  # AWS, GCP, Azure, OpenStack
    ipaddress.ip_address("fd00:ec2::254"): "private",  # AWS over IPv6
    ipaddress.ip_address("100.100.100.200"): "special-purpose",  # Alibaba Cloud
}
"""Cloud metadata services (credentials of the machine's role): never a webhook's address."""


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system's resolver gives for ``host`` (TCP), in its order.

    Raises:
        OSError: the name does not resolve.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_class(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination ("loopback", "link-local (cloud metadata
    service)", ...), or None when it is one. An IPv6 address carrying an IPv4 one
    (IPv4-mapped, 6to4, Teredo, NAT64) is judged by the IPv4 address too."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None:
            inner = address_class(embedded)
            if inner is not None:
                return f"{inner} (inside IPv6 {address})"
    if address in METADATA:
        return f"{METADATA[address]} (cloud metadata service)"
    for name, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),  # before private: 240.0.0.0/4 is both
        ("private", address.is_private),
    ):
        if flag:
            return name
    # Shared (100.64.0.0/10, carrier-grade NAT) and other special-purpose blocks are neither
    # private nor reserved to the ipaddress module, and not global either.
    return None if address.is_global else "special-purpose (not global)"


def is_metadata(address: IPAddress) -> bool:
    """Whether ``address`` is a cloud metadata service's, also inside an IPv6 address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None and embedded in METADATA:
            return True
    return address in METADATA


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address; the server's is public by design
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def parse_address(text: str) -> IPAddress:
    """An address from a resolver or ``getpeername``, without an IPv6 zone (``%eth0``)."""
    return ipaddress.ip_address(text.split("%", 1)[0])


@dataclass(frozen=True)
class Destination:
    """A webhook URL's host, its port, and the addresses a delivery may connect to."""

    host: str
    port: int
    addresses: tuple[str, ...]
    allowed: bool  # listed in DRIFTPILOT_ALERTS_ALLOW_HOSTS: internal addresses accepted


def host_port(url: str) -> tuple[str, int]:
    """The URL's host (lower-case, IPv6 without brackets) and port (80/443 by default).

    Raises:
        ConfigError: not an http(s) URL with a host.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"invalid webhook URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("a webhook URL must be http:// or https:// with a host")
    host = parts.hostname.rstrip(".")
    if not host.isascii():
        import idna  # httpx's own IDNA encoder: the name checked is the name connected to

        try:
            host = idna.encode(host).decode("ascii")
        except idna.IDNAError as exc:
            raise ConfigError(f"invalid webhook host: {exc}") from exc
    return host, port or (443 if parts.scheme == "https" else 80)


def is_allowed(host: str, port: int, conf: AlertSettings) -> bool:
    """Whether ``host`` (on ``port``) is in ``DRIFTPILOT_ALERTS_ALLOW_HOSTS``."""
    allowed, host = conf.allowed(), normal_host(host)
    return (host, None) in allowed or (host, port) in allowed


def resolve(url: str, conf: AlertSettings, resolver: Resolver = system_resolver) -> Destination:
    """Resolve the URL's host once and check every address it resolves to.

    Raises:
        UnsafeURL: an address is not public and the host is not allowed (the message names
            the address and its class).
        ConfigError: not an http(s) URL with a host, or the host does not resolve.
    """
    host, port = host_port(url)
    try:
        literal: IPAddress | None = parse_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        texts: Sequence[str] = [str(literal)]
    else:
        try:
            texts = resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise ConfigError(f"webhook host {host} does not resolve ({exc})") from exc
    if not texts:
        raise ConfigError(f"webhook host {host} does not resolve")
    allowed = is_allowed(host, port, conf)
    addresses = tuple(str(parse_address(t)) for t in texts)
    for text in addresses:
        check_address(host, parse_address(text), allowed=allowed)
    return Destination(host, port, addresses, allowed)


def check_address(host: str, address: IPAddress, *, allowed: bool = False) -> None:
    """Refuse a non-public ``address`` of ``host`` unless the host is ``allowed``; refuse a
    cloud metadata address in any case.

    Raises:
        UnsafeURL: naming the address class.
    """
    if allowed:
        if is_metadata(address):
            raise UnsafeURL(
                f"webhook host {host} resolves to {address}, a cloud metadata service address: "
                "refused, even for a host in DRIFTPILOT_ALERTS_ALLOW_HOSTS"
            )
        return
    why = address_class(address)
    if why is not None:
        raise UnsafeURL(
            f"webhook host {host} resolves to {address}, a {why} address: refused (an "
            "internal receiver must be listed in DRIFTPILOT_ALERTS_ALLOW_HOSTS)"
        )


def check_peer(sock: socket.socket, destination: Destination, expected: str) -> None:
    """The connected socket's peer is the validated address it was meant to reach.

    Raises:
        UnsafeURL: the peer differs from ``expected`` or is not public (and not allowed).
    """
    peer = parse_address(str(sock.getpeername()[0]))
    if peer != parse_address(expected):
        raise UnsafeURL(f"webhook {destination.host} connected to {peer}, not {expected}")
    check_address(destination.host, peer, allowed=destination.allowed)


Clock = Callable[[], float]


def within(
    timeout: float | None, deadline: float, clock: Clock, timed_out: type[Exception]
) -> float:
    """``timeout`` shortened to what is left until ``deadline`` (on ``clock``).

    Raises:
        timed_out: nothing is left.
    """
    left = deadline - clock()
    if left <= 0:
        raise timed_out("the delivery attempt's deadline passed")
    return left if timeout is None else min(timeout, left)


def deadline_stream(
    stream: httpcore.NetworkStream, deadline: float, clock: Clock = time.monotonic
) -> httpcore.NetworkStream:
    """``stream`` with every read, write and TLS handshake ending by ``deadline``: the
    per-operation timeouts still apply, but no sequence of them outlasts the deadline."""
    import httpcore

    class DeadlineStream(httpcore.NetworkStream):
        """Shortens each operation's timeout to the time left (``within``)."""

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return stream.read(max_bytes, within(timeout, deadline, clock, httpcore.ReadTimeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            stream.write(buffer, within(timeout, deadline, clock, httpcore.WriteTimeout))

        def close(self) -> None:
            stream.close()

        def start_tls(
            self,
            ssl_context: ssl.SSLContext,
            server_hostname: str | None = None,
            timeout: float | None = None,
        ) -> httpcore.NetworkStream:
            bounded = within(timeout, deadline, clock, httpcore.ConnectTimeout)
            return deadline_stream(
                stream.start_tls(ssl_context, server_hostname, bounded), deadline, clock
            )

        def get_extra_info(self, info: str) -> Any:
            return stream.get_extra_info(info)

    return DeadlineStream()


def pinned_backend(
    destination: Destination,
    *,
    max_addresses: int,
    deadline: float,
    clock: Clock = time.monotonic,
) -> httpcore.NetworkBackend:
    """An httpcore network backend that connects only to ``destination``'s addresses, to the
    first ``max_addresses`` of them at most, and whose streams end by ``deadline`` (a time on
    ``clock``, ``time.monotonic`` by default): connects included."""
    import httpcore

    class PinnedBackend(httpcore.SyncBackend):
        """Connects to the validated addresses (in order) instead of resolving again."""

        def connect_tcp(
            self,
            host: str,
            port: int,
            timeout: float | None = None,
            local_address: str | None = None,
            socket_options: Iterable[Any] | None = None,
        ) -> httpcore.NetworkStream:
            if host.rstrip(".").lower() != destination.host or port != destination.port:
                raise UnsafeURL(f"webhook connection to {host}:{port} is not the one checked")
            failure: Exception | None = None
            for address in destination.addresses[:max_addresses]:
                bounded = within(timeout, deadline, clock, httpcore.ConnectTimeout)
                try:
                    stream = super().connect_tcp(
                        address, port, bounded, local_address, socket_options
                    )
                except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                    failure = exc
                    continue
                try:
                    check_peer(stream.get_extra_info("socket"), destination, address)
                except BaseException:
                    stream.close()
                    raise
                return deadline_stream(stream, deadline, clock)
            assert failure is not None  # a Destination has at least one address
            raise failure

    return PinnedBackend()
