"""Managed models: list, get, rollback, and which version was champion at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Operator, Plane, Viewer
from api.problems import Problem
from api.schemas import ChampionAt, ModelView, Rollback, RollbackIn

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=list[ModelView])
def list_models(cp: Plane, _: Viewer) -> list[ModelView]:
    """Every managed model with its current champion version."""
    return cp.list_models()


@router.get("/{name}", response_model=ModelView)
def get_model(name: str, cp: Plane, _: Viewer) -> ModelView:
    """One managed model (404 if unknown)."""
    return cp.model_view(name)


@router.post("/{name}/rollback", response_model=Rollback)
def rollback(name: str, body: RollbackIn, cp: Plane, key: Operator) -> Rollback:
    """Move ``champion`` back to the previous champion, as the key's principal (audited).
    409 when a run holds the model or there is no previous champion."""
    result = cp.rollback(name, key.principal, body.reason)
    return Rollback.model_validate(result)


@router.get("/{name}/champion-at", response_model=ChampionAt)
def champion_at(
    name: str,
    cp: Plane,
    _: Viewer,
    time: Annotated[datetime, Query(description="An ISO 8601 time, with its offset.")],
) -> ChampionAt:
    """Which version was the champion at ``time``, from the audit's champion history."""
    if time.tzinfo is None:
        raise Problem(422, "give 'time' with a UTC offset, e.g. 2026-01-01T00:00:00Z")
    cp.model_view(name)  # 404 for an unknown model
    return ChampionAt(model=name, time=time.isoformat(), version=cp.champion_at(name, time))
