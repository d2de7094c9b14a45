"""Webhook signatures: how a receiver knows a delivery is DriftPilot's, and fresh.

Every delivery carries ``X-DriftPilot-Signature: t=<unix seconds>,v1=<hex>``, where ``v1`` is
the HMAC-SHA256, keyed with the webhook's secret, of ``"<t>.<raw body>"``. Each attempt is
signed at its own time, so a retry after a long backoff is still fresh. A receiver recomputes
it over the raw bytes it received (before parsing the JSON), compares in constant time and
rejects a timestamp older than its tolerance: a captured delivery replayed later fails. Within
the tolerance, ``X-DriftPilot-Delivery`` (the same on every retry of one delivery, and in the
signed body of the ``json`` format as ``delivery_id``) lets a receiver drop duplicates.

``verify_signature`` uses only the standard library: receivers can copy it as it is.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-DriftPilot-Signature"
DELIVERY_HEADER = "X-DriftPilot-Delivery"
TIMESTAMP_HEADER = "X-DriftPilot-Timestamp"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with ``secret``."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-DriftPilot-Signature`` value for ``body`` at ``timestamp`` (default: now)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={signature(secret, t, body)}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    tolerance_s: int = 300,
    now: float | None = None,
) -> bool:
    """Whether ``header`` (``X-DriftPilot-Signature``) signs ``body`` (the raw bytes received)
    with ``secret``, at a time within ``tolerance_s`` of ``now`` (default: the clock). False
    for a malformed header, a stale or future timestamp, or no matching ``v1``; never raises."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body)
    # Bytes: compare_digest refuses str with non-ASCII characters (a forged header may have).
    wanted = expected.encode("ascii")
    return any(hmac.compare_digest(wanted, v.encode("utf-8")) for v in fields.get("v1", []))
