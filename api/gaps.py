"""Stop-gaps for what the service façade does not offer yet. Each function has the signature
the façade method should have (with the plane first) and names it; the routes call these, so
when the façade grows the method, the body here becomes one line.

Everything here reads through the façade (``audit``, ``list_runs``, ``get_run``) except
``cancel_pending``, which must write: it uses the audit store directly, guarded by a
compare-and-set on the run's status, and audits the cancellation as a decision.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import update

from api.problems import Problem
from driftpilot.audit.models import Run as RunRow
from driftpilot.audit.store import now
from driftpilot.identity import normalize_principal
from driftpilot.service import ControlPlane, RunView

CANCELLED = "cancelled"  # the outcome of a cancelled run (its status is 'failed': it did not end)


def list_runs(
    cp: ControlPlane, model: str | None = None, status: str | None = None
) -> list[RunView]:
    """Every run (of ``model``, in ``status``), newest first.

    Façade gap: ``ControlPlane.list_runs(model=None, status=None, limit=50, before=None)``
    filtering and paging in SQL; this reads every run of the model.
    """
    views = cp.list_runs(model, limit=1_000_000)
    return [v for v in views if status is None or v.status == status]


def cancel_pending(cp: ControlPlane, run_id: str, principal: str, reason: str = "") -> RunView:
    """Cancel a run that has not started: ``pending`` becomes ``failed`` with the outcome
    ``cancelled``, atomically, and the cancellation is audited as a decision of ``api``.

    Façade gap: ``ControlPlane.cancel_run(run_id, principal, reason="") -> RunView``. Even
    with the compare-and-set here, ``execute_run`` reads ``pending`` and then writes
    ``running`` without one, so a cancel landing between the two is overwritten; the façade
    should claim a run with a compare-and-set (pending -> running) too.

    Raises:
        Problem: 409 when the run is not pending (running, waiting for approval, or ended).
    """
    who = normalize_principal(principal)
    view = cp.get_run(run_id)
    summary = {"cancelled_by": who, "reason": reason}
    with cp.store.session() as session:
        done = session.execute(
            update(RunRow)
            .where(RunRow.id == run_id, RunRow.status == "pending")
            .values(
                status="failed",
                outcome=CANCELLED,
                summary=json.dumps(summary),
                updated_at=now(),
            )
        )
        changed = getattr(done, "rowcount", 0) == 1
    if not changed:
        current = cp.get_run(run_id)
        raise not_cancellable(current)
    cp.store.record_decision(
        run_id,
        "api",
        "cancel",
        f"{who} cancelled the pending run of {view.model} on batch {view.batch_id}"
        + (f": {reason}" if reason else ""),
        summary,
        backend="api",
    )
    return cp.get_run(run_id)


def not_cancellable(view: RunView) -> Problem:
    if view.status == "running":
        detail = (
            f"run {view.run_id} is running: the service cannot stop a run between its steps "
            "yet; it ends (or waits for approval) on its own"
        )
    elif view.status == "waiting_approval":
        detail = (
            f"run {view.run_id} waits for approval: reject it instead "
            f"(POST /approvals/{view.run_id} with decision 'reject')"
        )
    else:
        detail = f"run {view.run_id} has ended ({view.status}); there is nothing to cancel"
    return Problem(409, detail, slug="not-cancellable", title="Run cannot be cancelled")


def model_run_ids(cp: ControlPlane, model: str) -> set[str]:
    """Every run id the audit files under ``model``: its control runs, its bootstrap and its
    rollback operations (named in its champion history).

    Façade gap: ``ControlPlane.audit(run_id=None, model=None, table=None, agent=None,
    since=None, until=None, after=None, limit=None)`` querying in SQL.
    """
    ids = {v.run_id for v in cp.list_runs(model, limit=1_000_000)}
    ids.add(f"bootstrap-{model}")
    ids |= {r["run_id"] for r in champion_history(cp, model)}
    return ids


def champion_history(cp: ControlPlane, model: str) -> list[dict[str, Any]]:
    """The champion changes of ``model``, oldest first (bootstrap, promote, rollback).

    Façade gap: ``ControlPlane.champion_history(model) -> list[ChampionChangeView]``.
    """
    return [
        row
        for row in cp.audit()
        if row["table"] == "champion_history" and row.get("model") == model
    ]


def model_versions(cp: ControlPlane, model: str) -> list[dict[str, Any]]:
    """Every registered version of ``model``, newest first, with the metrics of its training
    (validation split) and of its evaluation against the champion, from the audit trail:
    the ``registry.register_model`` tool call names the version, the run's
    ``train.train_model`` call has its training report, the evaluator's decision its scores.

    Façade gap: ``ControlPlane.model_versions(model) -> list[VersionView]`` (from MLflow:
    aliases, run metrics and tags, with the audit's run id).
    """
    rows = list(cp.audit())
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
    history = champion_history(cp, model)
    versions = []
    for run_id, facts in by_run.items():
        if "version" not in facts:
            continue
        version = facts["version"]
        training = facts.get("training") or {}
        valid = training.get("valid") or {}
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
