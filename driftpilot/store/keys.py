"""API keys: a principal and a role per key; only the secret's SHA-256 is stored.
(Password users are ``driftpilot.store.users``.)

A key is found by the SHA-256 of the secret presented, through the unique index on
``secret_hash``; that comparison is not constant-time, and need not be: what its timing could
reveal is how much of SHA-256(guess) matches a stored hash, and knowing bits of a hash of
one's own guess brings no closer to a secret of 190 random bits (a preimage of SHA-256).
Guesses themselves are limited by ``driftpilot.store.throttle``.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ScalarSelect, Select, bindparam, literal, select
from sqlalchemy.orm import InstrumentedAttribute

from driftpilot.core.errors import ConfigError
from driftpilot.core.identity import ROLES, normalize_principal
from driftpilot.store.engine import now
from driftpilot.store.models import ApiKey, AuthFailure
from driftpilot.store.throttle import Subject, Throttle, key_subject


@dataclass(frozen=True)
class KeyLookup:
    """A secret's key row (live or revoked; None: unknown) and the locks that bear on it."""

    row: ApiKey | None
    key: Subject | None  # the key id the secret names, if it has the dp_<id>_ shape
    address_locked_until: str | None
    key_locked_until: str | None
    key_failures: int  # failures counted against that key id (0: nothing to clear)


class ApiKeys(Throttle):
    """Create, authenticate and revoke API keys."""

    def create_api_key(self, principal: str, role: str) -> tuple[ApiKey, str]:
        """A new key for ``principal`` with ``role``; returns the row and the secret (shown
        once: only its SHA-256 is stored).

        Raises:
            InvalidPrincipal: the name is empty, blank or has invisible characters.
            ConfigError: unknown role.
        """
        if role not in ROLES:
            raise ConfigError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        key_id = secrets.token_hex(6)
        secret = f"dp_{key_id}_{secrets.token_urlsafe(24)}"
        row = ApiKey(
            id=key_id,
            principal=normalize_principal(principal),
            role=role,
            secret_hash=_secret_hash(secret),
            created_at=now(),
            revoked_at=None,
        )
        self.add(row)
        return row, secret

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key whose secret this is (None: unknown or revoked). Not limited: the
        API's requests go through ``look_up_key`` and ``driftpilot.runs.keys``."""
        found = self.look_up_key(secret, Subject("address", "")).row
        if found is None or found.revoked_at is not None:
            return None
        return found

    def look_up_key(self, secret: str, address: Subject) -> KeyLookup:
        """The key of ``secret`` with the locks of ``address`` and of the key id the secret
        names, in one statement: every API request runs it, and the locks cost no round
        trip of their own (two primary-key lookups inside the same query)."""
        keys = ApiKey.__table__
        subject = key_subject(secret)
        params = {
            "address": address.name,
            "key_id": subject.name if subject is not None else "",
            "secret_hash": _secret_hash(secret),
        }
        with self._reading_connection() as conn:
            found = conn.execute(_lookup_query(), params).mappings().one()
        row = None
        if found["id"] is not None:
            row = ApiKey(**{c.name: found[c.name] for c in keys.c})
        return KeyLookup(
            row=row,
            key=subject,
            address_locked_until=found["address_locked_until"],
            key_locked_until=found["key_locked_until"] if subject else None,
            key_failures=(found["key_failures"] or 0) if subject else 0,
        )

    def revoke_api_key(self, key_id: str) -> ApiKey:
        return self._update(ApiKey, key_id, {"revoked_at": now()})


@functools.cache
def _lookup_query() -> Select[Any]:
    """``look_up_key``'s statement, built once: building it (seven comparisons, its cache
    key) took twice as long as running it on SQLite."""
    keys = ApiKey.__table__
    one = select(literal(1).label("one")).subquery()
    return select(
        _column_of(AuthFailure.locked_until, "address", "address").label("address_locked_until"),
        _column_of(AuthFailure.locked_until, "key", "key_id").label("key_locked_until"),
        _column_of(AuthFailure.failures, "key", "key_id").label("key_failures"),
        *keys.c,
    ).select_from(one.outerjoin(keys, keys.c.secret_hash == bindparam("secret_hash")))


def _column_of(column: InstrumentedAttribute[Any], kind: str, name: str) -> ScalarSelect[Any]:
    """A scalar subquery: ``column`` of the ``auth_failures`` row of ``kind`` and the name
    bound as ``name`` (NULL: no row)."""
    return (
        select(column)
        .where(AuthFailure.kind == kind, AuthFailure.name == bindparam(name))
        .scalar_subquery()
    )


def _secret_hash(secret: str) -> str:
    # Secrets are 190 random bits: a fast hash is enough (no dictionary to guess from).
    return hashlib.sha256(secret.encode()).hexdigest()
