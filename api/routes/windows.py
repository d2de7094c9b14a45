"""Windows of the inference log: a model's window setting, its closed windows, and labels
that come later, joined by row id."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/models", tags=["inferences"])
