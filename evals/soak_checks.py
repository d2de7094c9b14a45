"""The soak's end checks (``evals.soak``): the store and the MLflow registry against the
clients' ledger.

- lost runs: an acknowledged run (202) missing from the store, or any run (acknowledged,
  answered late or fired by the schedule) that did not end (completed or failed) by the end
  of the drain;
- doubled runs: one request (its ``soak_id``) that made two runs, or a run that moved the
  champion twice;
- duplicate registry versions: two MLflow versions tagged with the same run;
- unsafe promotions: a promotion whose run's risk tier is not low and that has no approval by
  a principal other than the run's requester;
- ``audit --verify`` ok after every fault and at the end; no 5xx other than a 503
  problem+json with Retry-After.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from evals.soak_traffic import Ledger

if TYPE_CHECKING:
    from evals.soak import Soak

TERMINAL = ("completed", "failed")
# Registry intents with no later row (applied, reconciled, void) of their step, and the run's
# state: an open intent of an ended run fails verify and keeps its model refusing new runs.
OPEN_INTENTS = """
SELECT m.run_id, m.step, r.model, r.status, r.outcome FROM mutations m
JOIN runs r ON r.id = m.run_id
WHERE m.phase = 'intent' AND NOT EXISTS (
    SELECT 1 FROM mutations n WHERE n.run_id = m.run_id AND n.step = m.step AND n.id > m.id)
"""


def _rows(url: str) -> dict[str, list[Any]]:
    import sqlalchemy as sa

    queries = {
        "runs": "SELECT id, status, outcome, trigger, requested_by FROM runs",
        "metadata": "SELECT run_id, result FROM step_effects WHERE step = 'metadata'",
        "champions": "SELECT model, version, action, run_id FROM champion_history ORDER BY id",
        "tiers": "SELECT run_id, action FROM decisions WHERE action LIKE 'risk:%'",
        "approvals": "SELECT run_id, principal, decision FROM approvals WHERE decision = 'approve'",
        "open_intents": OPEN_INTENTS,
    }
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {k: list(conn.execute(sa.text(q)).all()) for k, q in queries.items()}
    finally:
        engine.dispose()


def _soak_ids(metadata: list[Any]) -> dict[str, list[str]]:
    """soak_id -> the runs that carry it."""
    out: dict[str, list[str]] = {}
    for run_id, result in metadata:
        soak_id = json.loads(result).get("soak_id") if result else None
        if soak_id:
            out.setdefault(soak_id, []).append(run_id)
    return out


def _registry(soak: Soak) -> dict[str, Any]:
    """Versions per model and those sharing a run tag."""
    from driftpilot.core.settings import Settings
    from tools import registry

    settings = Settings()  # the soak's home: evals.soak.prepare put its variables in os.environ
    versions, duplicates = 0, []
    for name in ("m1", "m2", "m3"):
        found = registry.list_versions(name, settings)
        versions += len(found)
        by_run = Counter(v.tags.get("driftpilot.run_id") for v in found)
        duplicates += [
            {"model": name, "run_id": run, "versions": n}
            for run, n in by_run.items()
            if run and n > 1
        ]
    return {"versions": versions, "duplicates": duplicates}


def _unsafe(rows: dict[str, list[Any]]) -> list[dict[str, Any]]:
    requester = {r[0]: r[4] for r in rows["runs"]}
    tiers = {run_id: action for run_id, action in rows["tiers"]}
    approvers: dict[str, set[str]] = {}
    for run_id, principal, _ in rows["approvals"]:
        approvers.setdefault(run_id, set()).add(principal.strip().lower())
    unsafe = []
    for model, version, action, run_id in rows["champions"]:
        if action != "promote":
            continue
        tier = tiers.get(run_id)
        others = approvers.get(run_id, set()) - {str(requester.get(run_id, "")).strip().lower()}
        if tier != "risk:low" and not others:
            unsafe.append({"model": model, "version": version, "run_id": run_id, "tier": tier})
    return unsafe


def checks(soak: Soak, ledger: Ledger, result: dict[str, Any]) -> dict[str, Any]:
    """Every check of the module docstring, with the evidence of any failure."""
    rows = _rows(soak.env["DRIFTPILOT_DB_URL"])
    status = {r[0]: r[1] for r in rows["runs"]}
    acked = {s.run_id for s in ledger.runs.values() if s.run_id}
    missing = sorted(acked - status.keys())
    unfinished = sorted(run_id for run_id, st in status.items() if st not in TERMINAL)
    by_soak_id = _soak_ids(rows["metadata"])
    doubled = {k: v for k, v in by_soak_id.items() if len(v) > 1}
    promotions = Counter(r[3] for r in rows["champions"] if r[2] == "promote")
    promoted_twice = sorted(run for run, n in promotions.items() if n > 1)
    unacknowledged = sorted(
        run
        for soak_id, runs in by_soak_id.items()
        for run in runs
        if ledger.runs.get(soak_id) is None or ledger.runs[soak_id].run_id != run
    )
    registry = _registry(soak)
    unsafe = _unsafe(rows)
    verifies = [f["verify"]["ok"] for f in result["faults"]] + [result["final_verify"]["ok"]]
    out = {
        "runs_in_store": len(status),
        "runs_by_status_outcome": dict(
            Counter(f"{r[1]}:{r[2]}" for r in rows["runs"]).most_common()
        ),
        "runs_by_trigger": dict(Counter(r[3] for r in rows["runs"])),
        "acknowledged_runs": len(acked),
        "runs_made_without_a_202_seen": len(unacknowledged),
        "lost_runs": len(missing) + len(unfinished),
        "lost_detail": {"acknowledged_not_in_store": missing, "not_ended": unfinished},
        "doubled_runs": len(doubled) + len(promoted_twice),
        "doubled_detail": {
            "requests_with_two_runs": doubled,
            "runs_promoting_twice": promoted_twice,
        },
        "registry_versions": registry["versions"],
        "duplicate_registry_versions": len(registry["duplicates"]),
        "duplicate_detail": registry["duplicates"],
        "promotions": sum(promotions.values()),
        "unsafe_promotions": len(unsafe),
        "unsafe_detail": unsafe,
        "verify_ok_after_every_fault": all(verifies),
        "verify_results": verifies,
        "raw_5xx": len(ledger.violations),
        "open_intents_of_ended_runs": [
            {"run_id": r[0], "step": r[1], "model": r[2], "status": r[3], "outcome": r[4]}
            for r in rows["open_intents"]
            if r[3] in TERMINAL
        ],
    }
    out["all_ok"] = (
        out["lost_runs"] == 0
        and out["doubled_runs"] == 0
        and out["duplicate_registry_versions"] == 0
        and out["unsafe_promotions"] == 0
        and out["verify_ok_after_every_fault"]
        and out["raw_5xx"] == 0
    )
    return out
