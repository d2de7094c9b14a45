"""``make demo``: the control loop over a year of real flights (or the credit-card file).

A champion is trained on the first batch; every later batch goes through the six agents
(the stream runner of ``driftpilot.stream``, the one the evals run). Then a second act on the
same data: a model first checked long after its training, whose challenger the policy rates
high risk. A run that waits for a person (a promotion of a tier other than low, or a
quarantine streak escalated) says why, and is asked on a terminal, approved with
``--approve-as`` otherwise, or left waiting (``driftpilot approve`` finishes it later). The
end names the API, the chat and the audit commands.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.prompt import Prompt
from rich.table import Table

from driftpilot.core import metric_text
from driftpilot.runs.evidence_keys import upgrade
from driftpilot.runs.plane import ControlPlane, RunView
from driftpilot.stream import (
    Answer,
    Columns,
    Reply,
    Wait,
    add_builtin_model,
    answer_waits,
    first_champion,
    progress_bar,
    run_batch,
    run_batches,
)

REQUESTER = "driftpilot-demo"

# The second act: (training batch, first check) of a model nobody looked at in between. On
# flights, January's champion meets July's summer delays: a quick retrain wins back a lot, and
# the summer challenger's probabilities move far from the winter champion's, which the default
# policy's ``max_divergence`` rule rates high risk. The policy decides the tier; the demo only
# picks the months. Other datasets have no second act.
LATE_CHECK: dict[str, tuple[str, str]] = {"flights": ("2013-01", "2013-07")}


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
    second_act: bool = True,
) -> dict[str, Any]:
    """Run the demo story and return its rows (for tests and evals); ``second_act`` False
    stops after the year (an eval comparing years leaves the act's extra run out)."""
    columns = Columns.builtin(dataset, source=True)  # raises ValueError on an unknown dataset
    started = time.perf_counter()
    plane = ControlPlane()
    console.rule(f"[bold]DriftPilot demo - {dataset}, LLM backend: {plane.backend.name}")
    batches = _batches(dataset)
    name = _free_name(plane, f"{dataset}-demo")
    first_id, first = batches[0]
    with console.status(f"training the first champion on {first_id}..."):
        model = first_champion(plane, name, columns, batches, requester=REQUESTER)
    baseline = metric_text.describe(model.metric, model.baseline)
    console.print(
        f"Model [bold]{name}[/]: champion v{model.champion} trained on {first_id} "
        f"({first.height:,} rows), out-of-time {baseline}."
    )
    progress = progress_bar(console)
    # The year's runs use one core (one thread per fit, one BLAS thread): the second act's run,
    # on another model (its own lease), goes alongside in a thread, as `driftpilot serve`
    # runs two at once, and is presented after the year. The process is warmed first, as
    # serve's executor warms it before its first run: the graph is built and the libraries a
    # run and its report import are imported, since two threads importing one package tree at
    # once can meet a module the other is still initialising (importlib hands one of them the
    # half-made module).
    from driftpilot.execution.inprocess import warm

    with console.status("loading the run's libraries (MLflow, LightGBM, SciPy, Evidently)..."):
        warm(plane)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-act-two") as pool, progress:
        act = _start_act_two(pool, progress, plane, dataset, batches) if second_act else None
        rows = _year(console, progress, plane, name, batches[1:], approve_as, interactive)
        for ran in rows:  # the reports, for people: rendered after the decisions, meanwhile
            plane.render_report_later(ran["run_id"])
        late = act.result() if act is not None else None
    console.print(_table(rows, dataset))
    row = _act_two(console, plane, late, approve_as, interactive) if late else None
    _closing(console, plane, started, row)
    return {"model": name, "rows": rows, "act_two": row, "verify": plane.verify()}


def _year(
    console: Console,
    progress: Progress,
    plane: ControlPlane,
    name: str,
    batches: list[tuple[str, Any]],
    approve_as: str | None,
    interactive: bool,
) -> list[dict[str, Any]]:
    """One control run per batch, in order; a run that waits is put to a person."""
    runs = run_batches(
        plane,
        name,
        batches,
        trigger="demo",
        requester=REQUESTER,
        answer=_answerer(console, progress, approve_as, interactive),
        start=1,
        progress=progress,
    )
    return [_row(run.view) for run in runs]


@dataclass(frozen=True)
class LateRun:
    """The second act's run: a model trained on one batch and first checked on a later one."""

    model: str
    trained_on: str
    checked_on: str
    view: RunView


def _start_act_two(
    pool: ThreadPoolExecutor,
    progress: Progress,
    plane: ControlPlane,
    dataset: str,
    batches: list[tuple[str, Any]],
) -> Future[LateRun] | None:
    if dataset not in LATE_CHECK:
        return None
    trained_on, checked_on = LATE_CHECK[dataset]
    name = _free_name(plane, f"{dataset}-late")
    task = progress.add_task(f"act two: {name}'s champion on {trained_on}", total=2)
    frames = dict(batches)

    def late_run() -> LateRun:
        add_builtin_model(
            plane, name, frames[trained_on], dataset, principal=REQUESTER, source=True
        )
        progress.update(task, advance=1, description=f"act two: control run on {checked_on}")
        run = run_batch(  # left waiting: its question is put after the year's table
            plane, name, frames[checked_on], checked_on, trigger="demo", requester=REQUESTER
        )
        progress.advance(task)
        return LateRun(name, trained_on, checked_on, run.view)

    return pool.submit(late_run)


def _act_two(
    console: Console,
    plane: ControlPlane,
    late: LateRun,
    approve_as: str | None,
    interactive: bool,
) -> dict[str, Any]:
    """A model first checked long after its training: the run the policy sends to a person."""
    view = late.view
    console.rule("[bold]Act two - a promotion that waits for a person")
    console.print(
        f"Model [bold]{late.model}[/]: a champion trained on {late.trained_on}, checked for the "
        f"first time on {late.checked_on} (its run went alongside the year's). Whether its "
        "challenger may replace the champion is the policy's call "
        "(driftpilot/core/policy.yaml, risk)."
    )
    cicd = view.summary.get("cicd") or {}
    _explain(console, view)
    view, _ = answer_waits(plane, view, _answerer(console, None, approve_as, interactive))
    row = {
        **_row(view),
        "model": late.model,
        "tier": cicd.get("tier"),
        "reasons": cicd.get("reasons") or [],
    }
    console.print(f"Act two result: {_result(row)}.")
    return row


def _explain(console: Console, view: RunView) -> None:
    """What the run found and why the policy chose its tier, from the run's own numbers."""
    drift = view.summary.get("drift") or {}
    evaluation = view.summary.get("evaluation") or {}
    cicd = view.summary.get("cicd") or {}
    console.print(
        f"Drift analyst: {drift.get('action', '-')} ({'; '.join(drift.get('signals', []))})."
    )
    if evaluation:
        name = evaluation.get("metric")
        console.print(
            f"Evaluator: {evaluation.get('action')}: {metric_text.label(name)} "
            f"{metric_text.value(name, evaluation['champion'])} -> "
            f"{metric_text.value(name, evaluation['challenger'])} "
            f"({metric_text.direction(name)}) on {evaluation['n_rows']:,} holdout rows "
            f"(gain {evaluation['gain']:+.4f}, CI {evaluation['ci_low']:+.4f} to "
            f"{evaluation['ci_high']:+.4f}); prediction divergence "
            f"{evaluation['prediction_divergence']:.3f}."
        )
    if cicd and view.status != "waiting_approval":  # a waiting run's request names its reasons
        reasons = "; ".join(cicd.get("reasons") or []) or "no high-risk rule fired"
        console.print(f"Policy risk tier [bold]{cicd.get('tier')}[/]: {reasons}.")


def _answerer(
    console: Console, progress: Progress | None, approve_as: str | None, interactive: bool
) -> Answer:
    """The demo's answer to a waiting run: say why it waits, then approve as ``approve_as``,
    ask at the terminal, or leave it waiting."""

    def answer(wait: Wait) -> Reply:
        console.print(
            f"\n[yellow bold]{wait.headline}[/] (run {wait.run_id[:12]}):\n{wait.description}"
        )
        if approve_as:
            console.print(f"Approved by [bold]{approve_as}[/] (--approve-as).")
            return "approve", approve_as, "approved with --approve-as in the demo"
        if interactive:
            if progress is not None:  # a live bar would redraw over the prompt
                progress.stop()
            choice = Prompt.ask(
                "approve or reject?", choices=["approve", "reject"], default="approve"
            )
            who = Prompt.ask("your name", default="reviewer")
            if progress is not None:
                progress.start()
            console.print(f"{choice.capitalize()}d by [bold]{who}[/].")
            return choice, who, "answered at the demo prompt"
        console.print(f"Left waiting. Finish it with: driftpilot approve {wait.run_id} --as NAME")
        return None

    return answer


def _row(view: RunView) -> dict[str, Any]:
    drift = upgrade("drift", view.summary.get("drift"))
    promotion = view.summary.get("promotion") or {}
    return {
        "batch": view.batch_id,
        "drift_share": drift.get("drift_share"),
        "weighted_share": drift.get("weighted_share"),
        "metric": drift.get("metric"),
        "champion_score": drift.get("score"),
        "fresh_gain": drift.get("fresh_gain"),
        "action": drift.get("action") or (view.summary.get("ingestion") or {}).get("action"),
        "outcome": view.outcome or view.status,
        "status": view.status,
        "promoted": promotion.get("version") if promotion.get("status") != "superseded" else None,
        "approved_by": promotion.get("approved_by"),
        "run_id": view.run_id,
    }


def _table(rows: list[dict[str, Any]], dataset: str) -> Table:
    table = Table(title=f"{dataset}: one control run per batch")
    name = next((r["metric"] for r in rows if r["metric"]), None)
    measure = f"champion {metric_text.label(name)}"
    columns = ("batch", "drift share", "weighted drift", measure, "retrain would win")
    for col in (*columns, "decision", "result"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["batch"],
            _fmt(r["drift_share"], 2),
            _fmt(r["weighted_share"], 2),
            _fmt(r["champion_score"], 3),
            _fmt(r["fresh_gain"], 3),
            r["action"] or "-",
            _result(r),
        )
    table.caption = (
        "drift share: Evidently's share of drifted columns; weighted drift: the champion's "
        f"importance on materially shifted columns; {measure}: "
        f"{metric_text.direction(name)}; retrain would win: a quick retrain's gain in "
        f"{metric_text.label(name)} on the batch's holdout"
    )
    return table


def _result(row: dict[str, Any]) -> str:
    if row["promoted"]:
        by = row["approved_by"]
        how = "low risk, automatic" if by == "policy:low-risk" else f"approved by {by}"
        return f"champion -> v{row['promoted']} ({how})"
    if row["status"] == "failed":  # the outcome names the error; the run's summary has it all
        return f"run failed: {row['outcome']}"
    return {
        "challenger_rejected": "challenger not better: kept champion",
        "approval_rejected": "promotion rejected by a person",
        "waiting_approval": "waiting for approval",
        "quarantined": "batch quarantined",
        "superseded": "champion moved meanwhile: not promoted",
    }.get(row["outcome"], "-")


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _closing(
    console: Console, plane: ControlPlane, started: float, late: dict[str, Any] | None
) -> None:
    if late is not None:
        plane.render_report_later(late["run_id"])
    with console.status("Evidently reports: finishing the ones still rendering..."):
        plane.reports.drain(timeout_s=600)  # their audit records come before the verification
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
    console.print(f"Evidently reports: {settings.reports_dir}", soft_wrap=True)
    console.rule("[bold]Next")
    console.print(
        f"Home: {settings.home} (elsewhere, set DRIFTPILOT_HOME to it first).", soft_wrap=True
    )
    for command, what in _next_steps(settings.mlflow_tracking_uri, late):
        console.print(f"  [bold]{command}[/]\n      {what}", soft_wrap=True, highlight=False)
    console.print(f"Wall time: {time.perf_counter() - started:.0f} s.")


def _next_steps(mlflow_uri: str, late: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The commands that take a person further: the API, the chat, approvals and the audit."""
    run = late["run_id"] if late else "<run-id>"
    steps = [
        ("driftpilot serve", "the REST API on http://127.0.0.1:8000 (interactive docs: /docs)"),
        (
            "driftpilot keys create --name NAME --role approver; driftpilot ui",
            "the chat on http://127.0.0.1:8001: sign in with NAME and the key, then /help",
        ),
        ("driftpilot approvals", "what waits for a person"),
        (f"driftpilot audit --run {run}", "every decision, tool call and approval of a run"),
        ("driftpilot audit --verify", "walk the hash chains and check the signed checkpoint"),
        (f"mlflow ui --backend-store-uri {mlflow_uri}", "the registry: versions and aliases"),
    ]
    if late and late["status"] == "waiting_approval":
        steps.insert(0, (f"driftpilot approve {run} --as NAME", "finish act two (or reject)"))
    return steps
