"""Settings of the API itself, read from ``DRIFTPILOT_API_*`` (the rest is ``Settings``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """Limits and locations of the HTTP API."""

    model_config = SettingsConfigDict(env_prefix="DRIFTPILOT_API_", extra="ignore")

    batch_roots: list[Path] = Field(
        default_factory=list,
        description="Folders a run's batch 'path' may name files under (relative paths only). "
        "Empty: '<home>/inbox'. As JSON in the environment: '[\"/data/in\"]'.",
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Largest request body (uploads included), bytes."
    )
    max_batch_rows: int = Field(5_000_000, gt=0, description="Most rows of one batch.")
    workers: int = Field(2, ge=1, description="Threads that execute runs in the background.")
