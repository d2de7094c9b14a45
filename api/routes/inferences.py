"""The inference log: POST /models/{name}/inferences (JSON, NDJSON) and its upload."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/models", tags=["inferences"])
