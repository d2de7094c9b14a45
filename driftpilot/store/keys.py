"""API keys: a principal and a role per key; only the secret's SHA-256 is stored.
(Password users are ``driftpilot.store.users``.)"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select

from driftpilot.core.errors import ConfigError
from driftpilot.core.identity import ROLES, normalize_principal
from driftpilot.store.engine import now
from driftpilot.store.models import ApiKey
from driftpilot.store.queries import Queries


class ApiKeys(Queries):
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
        """The live key whose secret this is (None: unknown or revoked)."""
        table = ApiKey.__table__
        with self._reading_connection() as conn:
            found = (
                conn.execute(select(table).where(table.c.secret_hash == _secret_hash(secret)))
                .mappings()
                .first()
            )
        if found is None or found["revoked_at"] is not None:
            return None
        return ApiKey(**found)

    def revoke_api_key(self, key_id: str) -> ApiKey:
        return self._update(ApiKey, key_id, {"revoked_at": now()})


def _secret_hash(secret: str) -> str:
    # Secrets are 190 random bits: a fast hash is enough (no dictionary to guess from).
    return hashlib.sha256(secret.encode()).hexdigest()
