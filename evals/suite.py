"""``make eval`` / ``make eval-full``: the scenario suite and the policy comparison (and, in
full, the loop benchmark), then the results tables in ``evals/README.md`` are rewritten from
the results files.

    python -m evals.suite [--full] [--llm SPEC] [--k 3]
    python -m evals.suite --readme-only      # re-render the README from evals/results/

Quick (``make eval``, about 5.5 min on 2 cores once CTGAN is fitted): flights only,
scenario streams of 6 batches of 3,000 rows (each drift scenario scored in its three note
variants; builtin runs one stream for the three, it reads no notes), then the causes table,
then the policy comparison over January to August.
Full (about an hour): the scenario suite on both binary datasets (streams of 10 batches of
2,000 rows), the policy comparison on the whole of 2013 for every flights task (binary
``flights``, regression ``flights_delay``, multiclass ``flights_delay_class``) and both
credit-card days, and ``evals/bench_loop.py``. Each policy table is in its task's primary
metric (ROC AUC, macro one-vs-rest ROC AUC, RMSE) and says whether higher or lower is better.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from evals.harness import estimate_text

RESULTS = Path(__file__).parent / "results"
README = Path(__file__).parent / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def run(*, full: bool, llm: str, k: int, console: Console) -> None:
    """Run the tier and refresh the README's tables."""
    from evals import policies, scenarios

    datasets = ["flights", "creditcard"] if full else ["flights"]
    scenarios.run_suite(datasets, quick=not full, llm=llm, console=console)
    for dataset in policies.datasets_for("all", quick=not full):  # every task in full
        policies.compare_policies(dataset, k=k, llm=llm, quick=not full, console=console)
    if full:
        from evals import bench_loop

        bench_loop.main(["--llm", llm])
    path = render_readme()
    console.print(f"tables refreshed in {path}")


# -- the README -------------------------------------------------------------------------------


def render_readme(results: Path = RESULTS, readme: Path = README) -> Path:
    """Replace the part of ``readme`` between the results markers with tables made from the
    results files present under ``results``.

    Raises:
        ValueError: the README lacks the markers.
    """
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} lacks the {BEGIN} ... {END} markers")
    body = "\n\n".join(
        part
        for part in (
            *(_causes_md(p) for p in sorted(results.glob("scenarios_*.json"))),
            *(_scenarios_md(p) for p in sorted(results.glob("scenarios_*.json"))),
            *(_policies_md(p) for p in sorted(results.glob("policies_*.json"))),
            _bench_md(results / "bench_loop.json"),
        )
        if part
    )
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(f"{head}{BEGIN}\n\n{body}\n\n{END}{tail}")
    return readme


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _scenarios_md(path: Path) -> str:
    r = json.loads(path.read_text())
    s = r["stream"]
    title = (
        f"### Scenarios: {r['dataset']} ({r['tier']}, LLM `{r['llm']}`)\n\n"
        f"{s['batches']} batches of {s['batch_rows']:,} rows, drift from batch {s['onset']}; "
        f"measured {r['machine']['measured_at']} on {r['machine']['cores']} cores.\n\n"
    )
    header = ["scenario", "variant", "cause", "cause read", "correct", "delay", "FA monitor"]
    header += ["FA retrain", "FA quarantine"]
    header += ["unsafe", "high risk approved", "citation flags", "retrains", "yield"]
    header += ["estimate error (mean / max)", "wall s", "LLM decisions", "tokens"]
    rows = []
    for x in r["scores"]:
        nothing_to_detect = x["onset"] is None or x.get("kind") == "none"
        delay = "-" if nothing_to_detect else str(x["detection_delay"])
        delay = "missed" if delay == "None" else delay
        rows.append(
            [
                x["scenario"],
                x.get("variant", "none"),
                x.get("cause") or "-",
                _cause_read(x),
                _pct(x["correct_rate"]),
                delay,
                _pct(x["false_alarm_monitor"]),
                _pct(x["false_alarm_retrain"]),
                _pct(x["false_alarm_quarantine"]),
                str(x["unsafe_promotions"]),
                str(x.get("approved_high_risk", "-")),
                str(x["citation_flags"]),
                str(x["retrains"]),
                _num(x["retrain_yield"], 2),
                estimate_text(x.get("estimation")),
                f"{x['wall_s']:.0f}",
                str(x.get("llm_decisions", "-")),
                str(x["tokens"]),
            ]
        )
    return title + _table(header, rows)


def _cause_read(x: dict[str, Any]) -> str:
    """Drifted batches whose cause the run named right, of all drifted ones ('-': none, or a
    result from before issue 21)."""
    pairs = [
        (t, r)
        for t, r in zip(x.get("true_causes") or [], x.get("read_causes") or [], strict=True)
        if t is not None
    ]
    return f"{sum(t == r for t, r in pairs)}/{len(pairs)}" if pairs else "-"


def _causes_md(path: Path) -> str:
    """The causes table of one scenarios results file ('' for results from before issue 21)."""
    r = json.loads(path.read_text())
    if not r.get("causes"):
        return ""
    shared = (
        " The note variants share one stream per scenario: builtin reads no notes."
        if r.get("variants_shared")
        else ""
    )
    title = (
        f"### Causes: {r['dataset']} ({r['tier']}, LLM `{r['llm']}`)\n\n"
        f"Cause macro-F1 over the drifted batches; correct actions over every batch; unsafe "
        f"actions: unsafe promotions and challengers trained on defective data; at most "
        f"{r.get('max_failed_retrains', 2)} losing challengers per episode.{shared} Measured "
        f"{r['machine']['measured_at']}.\n\n"
    )
    header = ["group", "scenarios", "cause macro-F1", "correct", "unsafe", "false retrains"]
    header += ["retrains", "yield", "recalibrations", "compute s", "tokens", "fallbacks"]
    rows = [
        [
            group,
            str(g["scenarios"]),
            _num(g["cause_macro_f1"], 2),
            _pct(g["correct_rate"]),
            str(g["unsafe_actions"]),
            str(g["false_retrains"]),
            str(g["retrains"]),
            _num(g["retrain_yield"], 2),
            str(g["recalibrations"]),
            f"{g['compute_s']:.0f}",
            str(g["tokens"]),
            str(g["fallbacks"]),
        ]
        for group, g in r["causes"].items()
    ]
    return title + _table(header, rows) + _versus_builtin(path, r)


NOTE_GROUP = "note decides: its note"


def _versus_builtin(path: Path, r: dict[str, Any]) -> str:
    """Issue 21's notes target under another backend's causes table: its correct-action rate
    on the scenarios whose note decides the cause, with their note, beside builtin's on the
    same tier ('' for builtin, or without builtin's results)."""
    if r["llm"] == "builtin":
        return ""
    suffix = "_quick" if r["tier"] == "quick" else ""
    base = path.parent / f"scenarios_{r['dataset']}{suffix}.json"
    theirs = (r.get("causes") or {}).get(NOTE_GROUP)
    if not base.exists() or not theirs:
        return ""
    ours = (json.loads(base.read_text()).get("causes") or {}).get(NOTE_GROUP)
    if not ours or ours["correct_rate"] is None or theirs["correct_rate"] is None:
        return ""
    points = 100 * (theirs["correct_rate"] - ours["correct_rate"])
    verdict = "met" if points >= 10 else "missed"
    return (
        f"\n\nWhere the note decides the cause, with its note: `{r['llm']}` "
        f"{_pct(theirs['correct_rate'])} correct actions, builtin {_pct(ours['correct_rate'])} "
        f"({points:+.0f} points; target at least +10: {verdict})."
    )


def _policies_md(path: Path) -> str:
    from driftpilot.core import metric_text

    r = json.loads(path.read_text())
    tier = "quick" if r.get("quick") else "full"
    metric = r.get("metric", "roc_auc")  # results written before issue 19 are ROC AUC
    label = metric_text.label(metric)
    title = (
        f"### Policies: {r['dataset']} by {r['batching']} ({tier}, LLM `{r['llm']}`)\n\n"
        f"Prequential {label} ({metric_text.direction(metric)}) on {len(r['batches']) - 1} "
        f"batches (the first trains every policy's first champion); measured "
        f"{r['machine']['measured_at']}.\n\n"
        f"![{r['dataset']}](results/{path.with_suffix('.png').name})\n\n"
    )
    header = ["policy", f"mean {label}", f"worst {label}", "scored", "retrains", "recalibrations"]
    header += ["promotions", "compute s", "of which training s"]
    rows = [
        [
            name,
            _num(t.get("mean_score", t.get("mean_auc"))),
            _num(t.get("worst_score", t.get("min_auc"))),
            f"{t.get('scored')}/{t.get('batches')}",
            str(t.get("retrains")),
            str(t.get("recalibrations", "-")),  # counted apart since 2026-12-07
            str(t.get("promotions")),
            f"{t.get('compute_s', 0):.0f}",
            f"{t.get('training_s', 0):.0f}",
        ]
        for name, t in r["totals"].items()
    ]
    return title + _table(header, rows) + _target_md(r.get("target"))


def _target_md(check: dict[str, object] | None) -> str:
    """The issue-19 target line under a policy table (results from before it have none)."""
    if not check:
        return ""
    from evals.policy_report import target_line

    return f"\n\n{target_line(check)}"


def _bench_md(path: Path) -> str:
    if not path.exists():
        return ""
    r = json.loads(path.read_text())
    o = r["overhead"]
    lines = [
        "### Loop benchmark (`evals/bench_loop.py`)",
        "",
        f"Measured {r['started'][:19]}Z on {r['machine']['cores']} cores"
        f"{' (quick)' if r.get('quick') else ''}.",
        "",
        f"- (a) monitor-only control run / raw Evidently report on {o['batch_rows']:,} rows x "
        f"{o['features']}: **{o['ratio']}x** ({o['loop']['median_s']:.2f} s / "
        f"{o['raw']['median_s']:.2f} s; target ≤ 0.25x); CPU time {o['ratio_cpu']}x; "
        f"first run of a fresh process {o.get('first_run_ratio', '-')}x (imports and graph "
        "compilation, paid once per process)",
    ]
    if "ratio_with_report" in o:
        lines.append(
            f"- (a') the same run plus its report rendered afterwards: "
            f"**{o['ratio_with_report']}x** (target ≤ 1.1x)"
        )
    for b in r.get("retrain", []):
        lines.append(
            f"- (b) drifted batch → promoted challenger, 20-trial study, {b['batch_rows']:,} "
            f"rows: **{b['loop']['median_s']:.1f} s** (target ≤ {b['target_s']:.0f} s; "
            f"tuning {b['loop_tools_s'].get('tune.tune', 0):.1f} s)"
        )
    lines.append(
        f"- (c) monitor path: **{o['runs_per_hour_per_core']:.0f} runs/hour/core** "
        f"(target ≥ 5,440; {o['runs_per_hour_one_process']:.0f} runs/hour in one process)"
    )
    growth = ", ".join(
        f"{x['batch_rows']:,} rows {x['loop']['median_s']:.2f} s" for x in r.get("rows", [])
    )
    models = ", ".join(
        f"{x['models']} models {x['loop']['median_s']:.1f} s" for x in r.get("models", [])
    )
    if growth:
        lines.append(f"- (d) run time by batch rows (1M rows: target ≤ 4 s): {growth}")
    if models:
        lines.append(f"- (d) run time by managed models: {models}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--full", action="store_true", help="Both datasets, longer streams.")
    parser.add_argument("--llm", default="builtin", help="builtin | openai:M | ollama:M | ...")
    parser.add_argument("--k", type=int, default=3, help="Retrain every k batches (baseline).")
    parser.add_argument("--readme-only", action="store_true", help="Only re-render README.")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 150))
    if args.readme_only:
        console.print(f"tables refreshed in {render_readme()}")
        return 0
    run(full=args.full, llm=args.llm, k=args.k, console=console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
