"""Evidence recorded before models had a task: its keys, read as today's.

Runs recorded before issue 19 named the champion's score after the only metric there was
(``roc_auc``, ``estimated_roc_auc``, ``challenger_roc_auc``, ``valid_roc_auc``). Today's keys
name no metric (``score``, ``estimated_score``, ...) and carry the metric beside the value
(``metric``, ``higher_is_better``). Every reader of a recorded run (the what-if replay, late
labels, the chat's trend and chart) reads it through ``upgrade``, so the mapping lives here
and nowhere else. Every run recorded under the old keys was a binary model scored by ROC AUC,
its estimate made by CBPE: that is what an upgraded slice states.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# old key -> today's key, per state slice (and per evidence holding that slice's keys)
RENAMED: dict[str, dict[str, str]] = {
    "drift": {
        "roc_auc": "score",
        "roc_auc_low": "score_low",
        "roc_auc_high": "score_high",
        "estimated_roc_auc": "estimated_score",
    },
    "evaluation": {"challenger_roc_auc": "challenger_score"},
    "retraining": {"valid_roc_auc": "valid_score"},
    "labels": {"realised_roc_auc": "realised_score", "estimated_roc_auc": "estimated_score"},
}
# What a slice with old keys measured, said the way today's slices say it.
IMPLIED: dict[str, dict[str, Any]] = {
    "drift": {"metric": "roc_auc", "higher_is_better": True},
    "evaluation": {},
    "retraining": {"valid_metric": "roc_auc"},
    "labels": {"metric": "roc_auc", "higher_is_better": True},
}


def upgrade(kind: str, piece: Mapping[str, Any] | None) -> dict[str, Any]:
    """``piece`` (a ``kind`` slice, or evidence holding its keys) with old keys under today's
    names. A piece already in today's keys comes back as it was (a copy); where both keys are
    present today's wins. The implied metric is added only to a piece that had an old key."""
    out = dict(piece or {})
    renamed = RENAMED[kind]
    old = [k for k in renamed if k in out]
    if not old:
        return out
    for key in old:
        value = out.pop(key)
        out.setdefault(renamed[key], value)
    for key, value in IMPLIED[kind].items():
        out.setdefault(key, value)
    if kind == "drift" and out.get("estimated_score") is not None:
        out.setdefault("estimate_method", "cbpe")
    return out


def upgrade_state(values: Mapping[str, Any]) -> dict[str, Any]:
    """A control run's state (or its summary) with each slice's old keys upgraded."""
    out = dict(values)
    for kind in ("drift", "evaluation", "retraining"):
        if isinstance(out.get(kind), Mapping):
            out[kind] = upgrade(kind, out[kind])
    return out
