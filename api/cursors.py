"""Opaque page cursors: the sort key of a page's last item, as URL-safe base64 JSON."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from api.problems import Problem


def encode(*key: Any) -> str:
    raw = json.dumps(list(key)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, *types: type) -> tuple[Any, ...]:
    """The key a previous page ended at, each part of the given type.

    Raises:
        Problem: 422 for a cursor this API did not hand out.
    """
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if (
            isinstance(key, list)
            and len(key) == len(types)
            and all(type(part) is kind for part, kind in zip(key, types, strict=True))
        ):
            return tuple(key)
    except (ValueError, TypeError, binascii.Error):
        pass
    raise Problem(422, "invalid cursor: pass the next_cursor of the previous page unchanged")
