"""The demo story driven by a real LLM behind an OpenAI-compatible server (opt-in tier).

Runs the flights year through the control loop with ``openai:<model>`` and reports, per agent,
how often the LLM's answer was used or fell back to the policy, citation flags, latency and
tokens. Writes ``evals/results/real_llm.json``. Set up a server with evals/real_llm_setup.sh.

    python -m evals.real_llm --base-url http://127.0.0.1:8089/v1 [--model qwen2.5-coder-0.5b]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    args = parser.parse_args(argv)
    os.environ.update(
        {
            "DRIFTPILOT_HOME": tempfile.mkdtemp(prefix="driftpilot-real-llm-"),
            "DRIFTPILOT_LLM": f"openai:{args.model}",
            "DRIFTPILOT_LLM_BASE_URL": args.base_url,
        }
    )
    from driftpilot.audit.models import Decision
    from driftpilot.demo import run_demo
    from driftpilot.service import ControlPlane

    console = Console()
    story = run_demo(console, approve_as="eval-approver")
    plane = ControlPlane()
    per_agent: dict[str, list[Decision]] = defaultdict(list)
    for decision in plane.store.list_rows(Decision):
        if decision.backend == "openai":
            per_agent[decision.agent].append(decision)
    summary = {agent: _agent_stats(rows) for agent, rows in per_agent.items()}
    result = {
        "model": args.model,
        "base_url": args.base_url,
        "agents": summary,
        "months": story["rows"],
        "audit_ok": story["verify"].ok,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "real_llm.json").write_text(json.dumps(result, indent=2, default=str))
    console.print(_table(summary, args.model))
    return result


def _agent_stats(rows: list[Any]) -> dict[str, Any]:
    flags = [f for r in rows for f in json.loads(r.flags) if not f.startswith("llm_fallback")]
    return {
        "decisions": len(rows),
        "fallbacks": sum(r.fallback for r in rows),
        "fallback_reasons": [json.loads(r.flags)[-1] for r in rows if r.fallback][:5],
        "citation_flags": len([f for f in flags if f.startswith("citation")]),
        "median_latency_ms": round(statistics.median(r.latency_ms for r in rows), 1),
        "tokens_in": sum(r.tokens_in for r in rows),
        "tokens_out": sum(r.tokens_out for r in rows),
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
            str(s["fallbacks"]),
            str(s["citation_flags"]),
            f"{s['median_latency_ms'] / 1000:.1f} s",
            f"{s['tokens_in']}/{s['tokens_out']}",
        )
    return table


if __name__ == "__main__":
    main()
