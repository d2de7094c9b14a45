"""``make demo``: the control loop over a year of real flights (or the credit-card file).

A champion is trained on the first batch; every later batch goes through the six agents.
High-risk promotions pause for a person: asked on a terminal, approved with ``--approve-as``
otherwise, or left waiting (``driftpilot approve`` finishes them later).
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.prompt import Prompt
from rich.table import Table

from driftpilot.service import ControlPlane, RunView

REQUESTER = "driftpilot-demo"


def _batches(dataset: str) -> list[tuple[str, Any]]:
    from tools.data import split_batches
    from tools.datasets import SPECS, load_dataset

    spec = SPECS[dataset]
    frame = load_dataset(dataset)  # type: ignore[arg-type]
    if dataset == "creditcard":  # two days of transactions: cut into 8 time-ordered batches
        return [
            (f"part-{i + 1}", b.frame)
            for i, b in enumerate(split_batches(frame, spec.time_col, n_rows=36_000))
        ]
    return [
        (b.info.batch_id, b.frame)
        for b in split_batches(frame, spec.time_col, every=spec.batch_every)
    ]


def _free_name(plane: ControlPlane, base: str) -> str:
    taken = {m.name for m in plane.list_models()}
    return next(
        n for n in (base if i == 1 else f"{base}-{i}" for i in range(1, 1000)) if n not in taken
    )


def run_demo(
    console: Console,
    *,
    dataset: str = "flights",
    approve_as: str | None = None,
    interactive: bool = False,
) -> dict[str, Any]:
    """Run the demo story and return its rows (for tests)."""
    from tools.datasets import SPECS

    if dataset not in SPECS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(SPECS)}")
    started = time.perf_counter()
    plane = ControlPlane()
    spec = SPECS[dataset]
    console.rule(f"[bold]DriftPilot demo - {dataset}, LLM backend: {plane.backend.name}")
    batches = _batches(dataset)
    name = _free_name(plane, f"{dataset}-demo")
    first_id, first = batches[0]
    with console.status(f"training the first champion on {first_id}..."):
        model = plane.add_model(
            name,
            first,
            target=spec.target,
            time_col=spec.time_col,
            numeric=spec.numeric,
            categorical=spec.categorical,
            source=dataset,
            principal=REQUESTER,
        )
    console.print(
        f"Model [bold]{name}[/]: champion v{model.champion} trained on {first_id} "
        f"({first.height:,} rows), validation roc_auc {model.baseline:.3f}."
    )
    rows = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task("control runs", total=len(batches) - 1)
        for batch_id, frame in batches[1:]:
            progress.update(task, description=f"control run on {batch_id}")
            view = plane.start_run(name, frame, batch_id, trigger="demo", requested_by=REQUESTER)
            if view.status == "waiting_approval":
                view = _ask(console, progress, plane, view, approve_as, interactive)
            rows.append(_row(view))
            progress.advance(task)
    console.print(_table(rows, dataset))
    _closing(console, plane, started)
    return {"model": name, "rows": rows, "verify": plane.verify()}


def _ask(
    console: Console,
    progress: Progress,
    plane: ControlPlane,
    view: RunView,
    approve_as: str | None,
    interactive: bool,
) -> RunView:
    request = view.approval_request or {}
    console.print(
        f"\n[yellow bold]High-risk promotion waits for a person[/] (run {view.run_id[:12]}):\n"
        f"{request.get('description', '')}"
    )
    if approve_as:
        console.print(f"Approved by [bold]{approve_as}[/] (--approve-as).")
        return plane.decide(
            view.run_id, "approve", approve_as, "approved with --approve-as in the demo"
        )
    if interactive:
        progress.stop()
        answer = Prompt.ask("approve or reject?", choices=["approve", "reject"], default="approve")
        who = Prompt.ask("your name", default="reviewer")
        progress.start()
        console.print(f"{answer.capitalize()}d by [bold]{who}[/].")
        return plane.decide(view.run_id, answer, who, "answered at the demo prompt")
    console.print(f"Left waiting. Finish it with: driftpilot approve {view.run_id} --as NAME")
    return view


def _row(view: RunView) -> dict[str, Any]:
    drift = view.summary.get("drift") or {}
    promotion = view.summary.get("promotion") or {}
    return {
        "batch": view.batch_id,
        "drift_share": drift.get("drift_share"),
        "weighted_share": drift.get("weighted_share"),
        "champion_auc": drift.get("roc_auc"),
        "fresh_gain": drift.get("fresh_gain"),
        "action": drift.get("action") or (view.summary.get("ingestion") or {}).get("action"),
        "outcome": view.outcome or view.status,
        "promoted": promotion.get("version") if promotion.get("status") != "superseded" else None,
        "approved_by": promotion.get("approved_by"),
        "run_id": view.run_id,
    }


def _table(rows: list[dict[str, Any]], dataset: str) -> Table:
    table = Table(title=f"{dataset}: one control run per batch")
    columns = ("batch", "drift share", "weighted drift", "champion AUC", "retrain would win")
    for col in (*columns, "decision", "result"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["batch"],
            _fmt(r["drift_share"], 2),
            _fmt(r["weighted_share"], 2),
            _fmt(r["champion_auc"], 3),
            _fmt(r["fresh_gain"], 3),
            r["action"] or "-",
            _result(r),
        )
    table.caption = (
        "drift share: Evidently's share of drifted columns; weighted drift: the champion's "
        "importance on materially shifted columns; retrain would win: a quick retrain's ROC "
        "AUC gain on the batch's holdout"
    )
    return table


def _result(row: dict[str, Any]) -> str:
    if row["promoted"]:
        by = row["approved_by"]
        how = "low risk, automatic" if by == "policy:low-risk" else f"approved by {by}"
        return f"champion -> v{row['promoted']} ({how})"
    return {
        "challenger_rejected": "challenger not better: kept champion",
        "approval_rejected": "promotion rejected by a person",
        "waiting_approval": "waiting for approval",
        "quarantined": "batch quarantined",
        "superseded": "champion moved meanwhile: not promoted",
    }.get(row["outcome"], "-")


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _closing(console: Console, plane: ControlPlane, started: float) -> None:
    result = plane.verify()
    if result.ok:
        console.print(
            f"[green bold]audit verified[/]: {sum(result.checked.values())} chained records "
            f"({', '.join(f'{k} {v}' for k, v in result.checked.items())})."
        )
    else:
        console.print(f"[red bold]audit BROKEN[/]: {result.first_broken or ''}")
        for problem in result.problems:
            console.print(f"  [red]-[/] {problem}")
    settings = plane.settings
    console.print(f"Evidently reports: {settings.reports_dir}")
    console.print("Audit trail:       driftpilot audit   (verify: driftpilot audit --verify)")
    console.print(
        f"MLflow UI:         mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}"
    )
    console.print(f"Wall time: {time.perf_counter() - started:.0f} s.")
