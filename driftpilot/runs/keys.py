"""API keys: created with their secret shown once, authenticated, listed and revoked."""

from __future__ import annotations

from driftpilot.runs.views import ApiKeyView, key_view
from driftpilot.store import AuditStore
from driftpilot.store.models import ApiKey


class ApiKeys:
    def __init__(self, store: AuditStore) -> None:
        self.store = store

    def create_api_key(self, name: str, role: str) -> tuple[ApiKeyView, str]:
        """A new API key; the secret is returned once and only its hash is stored."""
        row, secret = self.store.create_api_key(name, role)
        return key_view(row), secret

    def authenticate(self, secret: str) -> ApiKeyView | None:
        """The live key with this secret (None: unknown or revoked)."""
        row = self.store.authenticate(secret)
        return key_view(row) if row is not None else None

    def list_api_keys(self) -> list[ApiKeyView]:
        return [key_view(r) for r in self.store.list_rows(ApiKey, order=ApiKey.created_at)]

    def revoke_api_key(self, key_id: str) -> ApiKeyView:
        return key_view(self.store.revoke_api_key(key_id))
