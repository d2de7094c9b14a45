"""The demo year driven by a real LLM (opt-in tier), against the same year with ``builtin``.

Runs the flights year through the control loop twice: with ``openai:<model>`` (the local
llama-server that ``make llm-local`` built, started here on a free loopback port, or any
OpenAI-compatible server given by ``--base-url``), and with the ``builtin`` policy. Reports,
per agent, how often the LLM's answer was used or fell back to the policy, citation flags,
latency and tokens; promotions the governance rules did not allow (unsafe: must be 0); and,
batch by batch, where the LLM chose differently from ``builtin`` and what that cost or gained
in prequential AUC (each batch scored by the champion of its time, before any decision on it).
Writes ``evals/results/real_llm.json``.

    python -m evals.real_llm                       # start the local llama-server
    python -m evals.real_llm --base-url http://127.0.0.1:8089/v1 [--model qwen2.5-coder-0.5b]
    python -m evals.real_llm --save-builtin year.json; python -m evals.real_llm --builtin year.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from driftpilot.runs.evidence_keys import upgrade
from evals.common import write_json

RESULTS = Path(__file__).parent / "results"
APPROVER = "eval-approver"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", help="an OpenAI-compatible server; default: start one")
    parser.add_argument("--model", default=None, help="model name the server serves")
    parser.add_argument(
        "--builtin", type=Path, help="reuse this earlier result's builtin year instead of a run"
    )
    parser.add_argument(
        "--save-builtin", type=Path, help="run only the builtin year and write it here"
    )
    parser.add_argument(
        "--from-home",
        type=Path,
        help="only read the audit of a year run in this home (one cut short: a partial result)",
    )
    args = parser.parse_args(argv)
    from driftpilot.core.llm import LOCAL_MODEL_NAME, local_server
    from driftpilot.core.settings import Settings

    console = Console()
    if args.save_builtin:  # the builtin year alone, for later --builtin runs
        year = {"builtin": _year(console, "builtin", None)}
        write_json(args.save_builtin, year)
        return year
    model = args.model or LOCAL_MODEL_NAME
    if args.from_home:
        return _partial(console, args.from_home, model, args.builtin)
    serving = (
        nullcontext(args.base_url)
        if args.base_url
        else local_server(Settings(), log_path=Path(tempfile.gettempdir()) / "llama-server.log")
    )
    with serving as base_url:
        llm = _year(console, f"openai:{model}", base_url)
    builtin = (
        json.loads(args.builtin.read_text())["builtin"]
        if args.builtin
        else _year(console, "builtin", None)
    )
    result = {
        "model": model,
        "base_url": base_url,
        "agents": llm["agents"],
        "unsafe_promotions": llm["unsafe"],
        "audit_ok": llm["audit_ok"],
        "wall_s": llm["wall_s"],
        "months": llm["months"],
        "builtin": builtin,
        "comparison": compare(llm["months"], builtin["months"]),
    }
    write_json(RESULTS / "real_llm.json", result)
    console.print(_table(result["agents"], model))
    console.print(_comparison_table(result["comparison"]))
    return result


def _year(console: Console, spec: str, base_url: str | None) -> dict[str, Any]:
    """One demo year in a fresh home with the ``spec`` backend; its months and audit stats."""
    os.environ.update(
        {
            "DRIFTPILOT_HOME": tempfile.mkdtemp(prefix=f"driftpilot-{spec.split(':')[0]}-"),
            "DRIFTPILOT_LLM": spec,
        }
    )
    if base_url:
        os.environ["DRIFTPILOT_LLM_BASE_URL"] = base_url
        # A 0.5B model on a busy 2-core CPU may take minutes for one answer: a timeout that
        # cuts it would be retried from scratch, paying the same prompt again.
        os.environ.setdefault("DRIFTPILOT_LLM_TIMEOUT_S", "300")
    from driftpilot.core.settings import get_settings
    from driftpilot.demo import run_demo

    get_settings.cache_clear()
    started = time.perf_counter()
    story = run_demo(console, approve_as=APPROVER, second_act=False)  # years stay comparable
    wall = time.perf_counter() - started
    stats = _audit_stats(spec)
    return {
        "spec": spec,
        "agents": stats["agents"],
        "unsafe": stats["unsafe"],
        "audit_ok": story["verify"].ok,
        "wall_s": round(wall, 1),
        "months": story["rows"],
        "prequential_auc": prequential_auc(story["rows"]),
    }


def _audit_stats(spec: str) -> dict[str, Any]:
    """Per-agent stats of the ``spec`` backend's decisions and the unsafe promotions, from
    the audit of the home the settings point at."""
    from driftpilot.runs.plane import ControlPlane
    from driftpilot.store.models import Decision

    plane = ControlPlane()
    per_agent: dict[str, list[Decision]] = defaultdict(list)
    for decision in plane.store.list_rows(Decision):
        if decision.backend == spec.split(":")[0]:  # the agents' own decisions
            per_agent[decision.agent].append(decision)
    return {
        "agents": {agent: _agent_stats(rows) for agent, rows in per_agent.items()},
        "unsafe": unsafe_promotions(plane),
        "audit_ok": plane.verify().ok,
    }


def _partial(
    console: Console, home: Path, model: str, builtin: Path | None = None
) -> dict[str, Any]:
    """The stats of a year cut short (its home's audit so far), marked partial; compared,
    on the batches it finished, with a saved builtin year when one is given."""
    from driftpilot.core.settings import get_settings
    from driftpilot.runs.plane import ControlPlane
    from driftpilot.store.models import Run

    os.environ["DRIFTPILOT_HOME"] = str(home)
    get_settings.cache_clear()
    stats = _audit_stats(f"openai:{model}")
    runs = sorted(
        (r for r in ControlPlane().store.list_rows(Run) if r.status != "running"),
        key=lambda r: r.created_at,
    )
    months = [_month(r) for r in runs]
    result: dict[str, Any] = {
        "model": model,
        "partial": True,
        "runs_done": len(runs),
        "agents": stats["agents"],
        "unsafe_promotions": stats["unsafe"],
        "audit_ok": stats["audit_ok"],
        "months": months,
    }
    if builtin:
        year = json.loads(builtin.read_text())["builtin"]
        done = {m["batch"] for m in months}
        result["builtin"] = year
        result["comparison"] = compare(months, [m for m in year["months"] if m["batch"] in done])
        console.print(_comparison_table(result["comparison"]))
    write_json(RESULTS / "real_llm.json", result)
    console.print(_table(result["agents"], f"{model} (partial: {len(runs)} runs)"))
    return result


def _month(run: Any) -> dict[str, Any]:
    """A finished run as the demo's row (the fields ``compare`` reads)."""
    summary = json.loads(run.summary)
    drift, promotion = upgrade("drift", summary.get("drift")), summary.get("promotion") or {}
    # The flights model is binary: its score is a ROC AUC (the results' key says so).
    return {
        "batch": run.batch_id,
        "action": drift.get("action") or (summary.get("ingestion") or {}).get("action"),
        "outcome": run.outcome or run.status,
        "champion_auc": drift.get("score") if drift.get("metric") == "roc_auc" else None,
        "promoted": promotion.get("version") if promotion.get("status") == "promoted" else None,
    }


def _agent_stats(rows: list[Any]) -> dict[str, Any]:
    flags = [f for r in rows for f in json.loads(r.flags) if not f.startswith("llm_fallback")]
    fallbacks = sum(r.fallback for r in rows)
    return {
        "decisions": len(rows),
        "fallbacks": fallbacks,
        "fallback_rate": round(fallbacks / len(rows), 3) if rows else 0.0,
        "fallback_reasons": [json.loads(r.flags)[-1] for r in rows if r.fallback][:5],
        "citation_flags": len([f for f in flags if f.startswith("citation")]),
        "citation_flag_examples": [f for f in flags if f.startswith("citation")][:5],
        "actions": dict(sorted(_count(r.action for r in rows).items())),
        "median_latency_ms": round(statistics.median(r.latency_ms for r in rows), 1),
        "tokens_in": sum(r.tokens_in for r in rows),
        "tokens_out": sum(r.tokens_out for r in rows),
    }


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for v in values:
        counts[v] += 1
    return counts


def unsafe_promotions(plane: Any) -> list[str]:
    """Promotions the governance rules forbid: one whose challenger's gain interval did not
    lie above zero, or one of a high-risk tier without an approval by a principal other
    than the requester. Each is named; the list must be empty."""
    from driftpilot.store.models import Approval, ChampionChange, Decision

    found = []
    for change in plane.store.list_rows(ChampionChange, ChampionChange.action == "promote"):
        decisions = plane.store.list_rows(Decision, Decision.run_id == change.run_id)
        evaluation = next((d for d in decisions if d.agent == "evaluator"), None)
        cicd = next(
            (d for d in decisions if d.agent == "cicd" and d.action.startswith("risk")), None
        )
        ci_low = json.loads(evaluation.evidence).get("ci_low") if evaluation else None
        if ci_low is None or ci_low <= 0:
            found.append(f"{change.run_id}: promoted v{change.version} with gain CI low {ci_low}")
        if cicd is None or cicd.action != "risk:low":
            rows = plane.store.list_rows(Approval, Approval.run_id == change.run_id)
            requester = rows[0].principal if rows else None
            approved = [r for r in rows[1:] if r.decision == "approve"]
            if not approved or approved[-1].principal == requester:
                found.append(f"{change.run_id}: high-risk v{change.version} without approval")
    return found


def champion_auc(month: dict[str, Any]) -> float | None:
    """A batch's ROC AUC under the champion of its time: the demo's row names its score and
    metric (``champion_score``, ``metric``) since models have a task; a partial result's row
    and one written before tasks name it ``champion_auc``."""
    if "champion_auc" in month:
        return month["champion_auc"]
    return month.get("champion_score") if month.get("metric") == "roc_auc" else None


def prequential_auc(months: list[dict[str, Any]]) -> float | None:
    """Mean ROC AUC of each batch under the champion of its time (scored before any decision
    on the batch): what the year's decisions bought, batch after batch."""
    scores = [auc for m in months if (auc := champion_auc(m)) is not None]
    return round(statistics.fmean(scores), 4) if scores else None


def compare(llm: list[dict[str, Any]], builtin: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch by batch: the drift action and the outcome of each year where they differ, the
    champion AUC under each, and the difference in prequential AUC."""
    by_batch = {m["batch"]: m for m in builtin}
    differ = []
    for m in llm:
        b = by_batch.get(m["batch"], {})
        if (m["action"], m["outcome"]) != (b.get("action"), b.get("outcome")):
            differ.append(
                {
                    "batch": m["batch"],
                    "llm": f"{m['action']} -> {m['outcome']}",
                    "builtin": f"{b.get('action')} -> {b.get('outcome')}",
                    "llm_champion_auc": champion_auc(m),
                    "builtin_champion_auc": champion_auc(b) if b else None,
                }
            )
    llm_auc, builtin_auc = prequential_auc(llm), prequential_auc(builtin)
    # A quarantined batch is scored in one year only: compare on the batches both scored.
    both = {m["batch"] for m in llm if champion_auc(m) is not None} & {
        m["batch"] for m in builtin if champion_auc(m) is not None
    }
    common = {
        "batches": len(both),
        "llm": prequential_auc([m for m in llm if m["batch"] in both]),
        "builtin": prequential_auc([m for m in builtin if m["batch"] in both]),
    }
    return {
        "batches": len(llm),
        "differ": differ,
        "promotions": {
            "llm": sum(bool(m.get("promoted")) for m in llm),
            "builtin": sum(bool(m.get("promoted")) for m in builtin),
        },
        "retrains": {
            "llm": sum(m.get("action") == "retrain" for m in llm),
            "builtin": sum(m.get("action") == "retrain" for m in builtin),
        },
        "prequential_auc": {"llm": llm_auc, "builtin": builtin_auc},
        "prequential_auc_delta": (
            round(llm_auc - builtin_auc, 4) if llm_auc is not None and builtin_auc else None
        ),
        "prequential_auc_both_scored": common,
    }


def _table(summary: dict[str, Any], model: str) -> Table:
    table = Table(title=f"real LLM in the loop: {model}")
    for col in (
        "agent",
        "decisions",
        "fell back",
        "citation flags",
        "median latency",
        "tokens in/out",
    ):
        table.add_column(col)
    for agent, s in summary.items():
        table.add_row(
            agent,
            str(s["decisions"]),
            f"{s['fallbacks']} ({s['fallback_rate']:.0%})",
            str(s["citation_flags"]),
            f"{s['median_latency_ms'] / 1000:.1f} s",
            f"{s['tokens_in']}/{s['tokens_out']}",
        )
    return table


def _comparison_table(comparison: dict[str, Any]) -> Table:
    auc = comparison["prequential_auc_both_scored"]
    table = Table(
        title=f"where the LLM chose differently from builtin (prequential AUC on the "
        f"{auc['batches']} batches both scored: LLM {auc['llm']}, builtin {auc['builtin']})"
    )
    for col in ("batch", "LLM", "builtin", "champion AUC LLM / builtin"):
        table.add_column(col)
    for d in comparison["differ"]:
        table.add_row(
            d["batch"],
            d["llm"],
            d["builtin"],
            f"{_fmt(d['llm_champion_auc'])} / {_fmt(d['builtin_champion_auc'])}",
        )
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    main()
