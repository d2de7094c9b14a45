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
    max_file_bytes: int = Field(
        1024 * 1024 * 1024, gt=0, description="Largest batch file read under a batch root."
    )
    max_batch_rows: int = Field(5_000_000, gt=0, description="Most rows of one batch.")
    workers: int = Field(2, ge=1, description="Threads that execute runs in the background.")
    recover_on_start: bool = Field(
        True,
        description="At start-up, recover what a dead process left (runs left running, "
        "recorded approvals never applied) and execute pending runs, in the background.",
    )
    keep_alive_s: int = Field(
        75,
        gt=0,
        description="How long an idle client connection stays open, s. Longer than a proxy's "
        "idle timeout (60 s is common) so the client side closes first: a server closing a "
        "connection the client is sending on makes the request fail (uvicorn's default is 5 s).",
    )
    sse_ping_s: float = Field(15.0, gt=0, description="Heartbeat of run event streams, s.")
    sse_poll_s: float = Field(0.5, gt=0, description="How often a stream reads the audit, s.")
    max_upload_columns: int = Field(1_000, gt=0, description="Most columns of one batch.")
    max_line_bytes: int = Field(
        1024 * 1024, gt=0, description="Longest line of an uploaded or read CSV batch, bytes."
    )
