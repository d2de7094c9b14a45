"""What the LangGraph routers share: the request body base, path ids, paging and the
refusal of options this API cannot honour."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from fastapi import Depends, Path
from pydantic import BaseModel, ConfigDict

from api.deps import caller
from api.problems import Problem
from driftpilot.runs.plane import ApiKeyView

TAGS: list[str | Enum] = ["langgraph"]
Caller = Annotated[ApiKeyView, Depends(caller)]
Id = Annotated[str, Path(min_length=1, max_length=200)]
SortOrder = Literal["asc", "desc"]
THREAD_404: dict[int | str, dict[str, Any]] = {404: {"description": "Unknown thread"}}


class _Body(BaseModel):
    """A LangGraph request body: the fields used here are typed, others are ignored (the
    SDK sends options such as ``stream_subgraphs`` or ``durability`` that mean nothing here)."""

    model_config = ConfigDict(extra="allow")


def matches(found: dict[str, Any], wanted: dict[str, Any] | None) -> bool:
    return all(found.get(k) == v for k, v in (wanted or {}).items())


def page(
    items: list[dict[str, Any]],
    sort_by: str | None,
    sort_order: str | None,
    default: str,
    offset: int,
    limit: int,
    select: list[str] | None,
) -> tuple[list[dict[str, Any]], bool]:
    """Sorted (by ``sort_by`` or ``default``, newest first unless ``asc``), one page of it
    with the ``select``ed keys, and whether more follow. For lists that are small in memory
    anyway (assistants, crons); threads are paged in SQL."""
    key = sort_by or default
    items = sorted(items, key=lambda i: str(i.get(key) or ""), reverse=sort_order != "asc")
    found = items[offset : offset + limit]
    if select:
        found = [{k: i.get(k) for k in select} for i in found]
    return found, offset + limit < len(items)


def unsupported(**options: Any) -> None:
    """422 for the options given (set to anything but their empty default).

    Raises:
        Problem: 422 naming them.
    """
    given = sorted(k for k, v in options.items() if v not in (None, [], {}, False, 0))
    if given:
        raise Problem(
            422,
            f"not supported by DriftPilot's LangGraph API: {', '.join(given)}",
            slug="unsupported-option",
            title="Unsupported option",
        )
