"""Stop-gaps for what the service façade does not offer yet. Each function has the signature
the façade method should have (with the plane first) and names it; the routes call these, so
when the façade grows the method, the body here becomes one line.
"""

from __future__ import annotations

import json
from typing import Any

from driftpilot.runs.plane import ControlPlane


def model_versions(cp: ControlPlane, model: str) -> list[dict[str, Any]]:
    """Every registered version of ``model``, newest first, with the metrics of its training
    (validation split) and of its evaluation against the champion, from the audit trail:
    the ``registry.register_model`` tool call names the version, the run's
    ``train.train_model`` call has its training report, the evaluator's decision its scores.

    Façade gap: ``ControlPlane.model_versions(model) -> list[VersionView]`` (from MLflow:
    aliases, run metrics and tags, with the audit's run id).
    """
    rows, _ = cp.audit_rows(model=model, limit=10_000_000)  # its runs only, not the trail
    champion = cp.model_view(model).champion
    by_run: dict[str, dict[str, Any]] = {}
    for row in rows:
        run_id = row.get("run_id")
        if not run_id:
            continue
        facts = by_run.setdefault(run_id, {})
        if row["table"] == "tool_calls" and row.get("ok"):
            result = _json(row.get("result"))
            if row.get("tool") == "train.train_model" and isinstance(result, dict):
                facts["training"] = result
            if (
                row.get("tool") == "registry.register_model"
                and isinstance(result, dict)
                and result.get("name") == model
            ):
                facts["version"] = int(result["version"])
                facts["registered_at"] = row["created_at"]
        if row["table"] == "decisions" and row.get("agent") == "evaluator":
            facts["evaluation"] = _json(row.get("evidence"))
    history = cp.champion_history(model)
    versions = []
    for run_id, facts in by_run.items():
        if "version" not in facts:
            continue
        version = facts["version"]
        training = facts.get("training") or {}
        report = training.get("valid") or {}
        # Every metric of the model's task sits under "metrics"; reports recorded before
        # models had a task held the binary metrics flat.
        nested = report.get("metrics")
        valid = nested if isinstance(nested, dict) else report
        versions.append(
            {
                "name": model,
                "version": version,
                "run_id": run_id,
                "registered_at": facts["registered_at"],
                "family": training.get("family"),
                "is_champion": version == champion,
                "was_champion": any(h["version"] == version for h in history),
                "metrics": {
                    **{f"valid_{k}": v for k, v in valid.items() if _number(v)},
                    **{
                        f"eval_{k}": v
                        for k, v in (facts.get("evaluation") or {}).items()
                        if _number(v)
                    },
                },
                "training": {
                    k: training.get(k) for k in ("n_train", "n_valid", "best_iteration", "params")
                },
            }
        )
    return sorted(versions, key=lambda v: -int(v["version"]))


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
