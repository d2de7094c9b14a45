"""API keys: created with their secret shown once, authenticated, listed and revoked; and
admitted under the limits on guessing (``driftpilot.store.throttle``).

A client address that reached the limit is refused everything while locked, a right key
included: a guesser at that address learns nothing, whatever it sends. A key id that reached
the limit (wrong secrets naming ``dp_<id>_``) is answered "locked" for wrong secrets only, and
its own secret still passes. Why: per-name locks exist to stop guesses spread over many
addresses at one low-entropy secret; a key's secret has 190 random bits, which no rate of
guessing dents, and key ids are not secret (``keys list``, the secret's own prefix), so a key
id lock that refused the right secret would let anyone shut an automation out. The id's
lockouts are still counted and audited: they show that someone aims at that key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from driftpilot.core.settings import AuthLimitSettings
from driftpilot.runs.views import ApiKeyView, key_view
from driftpilot.store import AuditStore
from driftpilot.store.keys import KeyLookup
from driftpilot.store.models import ApiKey
from driftpilot.store.throttle import Subject, retry_after, seconds_left


@dataclass(frozen=True)
class Admission:
    """What to answer a request's key: the key (admitted), or ``retry_after`` seconds (locked:
    429), or neither (unknown or revoked: 401). ``settle`` records what it implies."""

    key: ApiKeyView | None
    retry_after: int | None
    lookup: KeyLookup
    address: Subject


class ApiKeys:
    def __init__(self, store: AuditStore) -> None:
        self.store = store

    def create_api_key(self, name: str, role: str) -> tuple[ApiKeyView, str]:
        """A new API key; the secret is returned once and only its hash is stored."""
        row, secret = self.store.create_api_key(name, role)
        return key_view(row), secret

    def authenticate(self, secret: str) -> ApiKeyView | None:
        """The live key with this secret (None: unknown or revoked). Not limited: for trusted
        callers (the CLI, a chat sign-in already limited by ``ui``); requests use ``admit``."""
        row = self.store.authenticate(secret)
        return key_view(row) if row is not None else None

    def admit(self, secret: str, address: Subject) -> Admission:
        """The verdict on a request's ``secret`` from ``address``: one read (the key and the
        locks in one statement), no write. ``settle`` does the writes the verdict needs."""
        lookup = self.store.look_up_key(secret, address)
        at = self.store.clock()
        row = lookup.row
        live = row is not None and row.revoked_at is None
        # The locks that refuse this secret: the address's always, the key id's for a wrong
        # secret. Retry-After is the later end: before it, a retry is refused again.
        ends = [lookup.address_locked_until] + ([] if live else [lookup.key_locked_until])
        waits = [w for w in (_left(end, at) for end in ends) if w is not None]
        if waits:
            return Admission(None, retry_after(max(waits)), lookup, address)
        return Admission(key_view(row) if live and row else None, None, lookup, address)

    def settle(self, admission: Admission, limits: AuthLimitSettings) -> None:
        """Record what ``admission`` implies: a failure of its address and key id (unknown or
        revoked key), or a success clearing the key id's failures. Nothing for a refusal
        while locked, and nothing (no write) for a right key with no failures to clear."""
        if admission.retry_after is not None:
            return
        lookup = admission.lookup
        if admission.key is None:
            subjects = [admission.address] + ([lookup.key] if lookup.key else [])
            self.store.record_failures(subjects, limits, via="api")
        elif lookup.key is not None and lookup.key_failures:
            self.store.clear_failures(lookup.key)

    def list_api_keys(self) -> list[ApiKeyView]:
        return [key_view(r) for r in self.store.list_rows(ApiKey, order=ApiKey.created_at)]

    def revoke_api_key(self, key_id: str) -> ApiKeyView:
        return key_view(self.store.revoke_api_key(key_id))


def needs_writing(admission: Admission) -> bool:
    """Whether ``settle`` would write (the hot path of a right key writes nothing)."""
    if admission.retry_after is not None:
        return False
    return admission.key is None or bool(admission.lookup.key_failures)


def _left(locked_until: str | None, at: datetime) -> float | None:
    return seconds_left(datetime.fromisoformat(locked_until) if locked_until else None, at)
