"""``driftpilot eval``: the control loop over a labelled table a user brings (or a built-in
dataset), in a home of its own, ending with a per-batch table and a JSON file.

Beside the loop, the baselines of ``evals.policies`` (never retrain, retrain every batch,
every ``k`` batches) are scored prequentially on the same batches (``--no-baselines`` skips
them): a table, a plot (``<results>_policies.png``) and the ``comparison`` key of the JSON
show what the policy would have done for this model against simple schedules.

    driftpilot eval --data sales.parquet --target churned --time ts --batch week
    driftpilot eval --data log.csv --target y --order-by row --batch 5000 --initial 2
    driftpilot eval --dataset flights --approvals reject --llm ollama:qwen2.5:7b
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, Field
from rich.console import Console

from driftpilot.core import metric_text
from driftpilot.core.errors import ConfigError
from driftpilot.core.settings import get_settings
from driftpilot.core.tasks import METRICS
from driftpilot.runs.plane import ControlPlane
from evals.common import machine, write_json
from evals.harness import (
    Approvals,
    StreamResult,
    StreamSpec,
    batch_table,
    cut,
    load_table,
    plane_for,
    prepare,
    run_stream,
)

# A built-in dataset's batches when --batch is not given: its spec's period, but credit
# cards (two days of seconds) in 4 hours.
BUILTIN_BATCH = {"creditcard": "4h"}


class EvalRequest(BaseModel):
    """One ``driftpilot eval`` invocation."""

    data: Path | None = Field(None, description="A labelled CSV or Parquet file.")
    dataset: str | None = Field(
        None, description="Or a built-in dataset (tools.datasets.SPECS), e.g. flights."
    )
    target: str | None = None
    positive: str | None = Field(None, description="The target value that counts as 1.")
    time_col: str | None = None
    order_by_row: bool = False
    batch: str | None = Field(None, description="month|week|day|hour|<N>h|<N> rows")
    numeric: list[str] | None = None
    categorical: list[str] | None = None
    initial: int = 1
    approvals: Approvals = "approve"
    escalations: Approvals = "reject"
    approver: str = "evaluator"
    llm: str | None = None
    policy: Path | None = None
    family: str = "lightgbm"
    max_batches: int | None = None
    home: Path | None = None
    out: Path | None = None
    name: str | None = None
    baselines: bool = Field(True, description="Score never / every batch / every k beside it.")
    k: int = Field(3, ge=1, description="The every-k baseline's period, in batches.")


def run_eval(request: EvalRequest, console: Console) -> tuple[StreamResult, Path]:
    """Run the eval a request describes; print the notes, the per-batch table and the totals,
    then (unless ``request.baselines`` is off) the baselines beside the loop
    (``compare_baselines``, under the JSON's ``comparison`` key). Returns the result and the
    JSON file written.

    Raises:
        ConfigError, SchemaError, DataError: a bad combination of options or a bad table.
    """
    frame, spec, batch = _table(request, console)
    batches = cut(frame, spec.time_col, batch)
    if request.max_batches is not None:
        batches = batches[: request.max_batches]
    settings = get_settings()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    home = request.home or settings.home / "evals" / f"{spec.name}-{stamp}"
    plane = plane_for(home, llm=request.llm or settings.llm, policy=request.policy)
    console.print(
        f"[bold]eval[/] {spec.name}: {frame.height:,} rows in {len(batches)} batches "
        f"({batch}); features {len(spec.numeric)} numeric, {len(spec.categorical)} categorical; "
        f"first champion on {spec.initial} batch(es); approvals: {spec.approvals}; "
        f"LLM {plane.backend.name} ({plane.backend.model_name}); home {home}"
    )
    try:
        result = run_stream(plane, spec, batches, console=console)
        result.meta = _meta(request, plane, spec, batch, home)
        console.print(batch_table(result, f"{spec.name}: one control run per batch"))
        console.print(_totals_line(result))
        payload = result.to_json()
        # The loop's results are written before the baselines train: a failing baseline must
        # not lose the loop's run (it is written again with the comparison beside it).
        out = write_json(request.out or home / "eval.json", payload)
        if request.baselines:
            plot = out.with_name(f"{out.stem}_policies.png")
            payload["comparison"] = compare_baselines(
                plane, spec, batches, result, batch=batch, k=request.k, plot=plot, console=console
            )
            out = write_json(out, payload)
    finally:
        plane.close()
    console.print(f"results: {out}")
    return result, out


def compare_baselines(
    plane: ControlPlane,
    spec: StreamSpec,
    batches: list[tuple[str, pl.DataFrame]],
    result: StreamResult,
    *,
    batch: str,
    k: int,
    plot: Path,
    console: Console,
) -> dict[str, Any]:
    """Score the baselines (never, every batch, every ``k``) prequentially on the batches the
    loop ran over, beside the loop's own champion metric (``evals.policies``: the same first
    model rows, retraining window and holdout as the loop's policy, default hyper-parameters).
    Prints the table and one comparison line, writes the plot; returns the JSON block:
    per policy its totals (mean and worst metric, retrains, promotions, yield, compute) and
    per-batch rows, and the loop against retraining every batch.

    ``plane`` must still be open: the loop's compute and its champions come from it.
    """
    from evals.baselines import Stream, run_baselines
    from evals.policies import NOTES, loop_run
    from evals.policy_report import BASELINE, plot_policies, policy_table, target_check

    task = plane.model_view(spec.name).task
    stream = Stream(
        dataset=spec.name,
        batching=batch,
        target=spec.target,
        time_col=spec.time_col,
        numeric=spec.numeric,
        categorical=spec.categorical,
        batches=batches,
        family=spec.family,  # type: ignore[arg-type]
        task=task,  # type: ignore[arg-type]
        initial=spec.initial,
    )
    loop = loop_run(plane, stream, result)
    console.print(f"[bold]baselines[/] on the same {len(batches) - spec.initial} batches")
    runs = [*run_baselines(stream, k=k, console=console, policy=plane.policy), loop]
    check = target_check(runs)
    measure = metric_text.label(stream.metric)
    title = f"{spec.name}: DriftPilot beside the baselines, prequential {measure}"
    plot_policies(runs, plot, title=f"{title} ({batch})", metric=stream.metric)
    console.print(policy_table(runs, title))
    console.print(comparison_line(check), markup=False)
    console.print(f"plot: {plot}")
    return {
        "k": k,
        "task": task,
        "metric": stream.metric,
        "higher_is_better": check["higher_is_better"],
        "reference": BASELINE,
        "notes": NOTES,
        "versus_every_batch": check,
        "totals": {run.policy: run.totals() for run in runs},
        "policies": {run.policy: run.to_json() for run in runs},
        "plot": str(plot),
    }


def comparison_line(check: dict[str, Any]) -> str:
    """The loop against retraining every batch, in words: means over the batches both
    scored (in the metric's direction) and what each retrained."""
    metric = check["metric"]
    gain = check["gain"]  # Metric.gain: points, or a share of the baseline's value (RMSE)
    if gain is None:
        verdict = "no batch scored by both"
    elif gain == 0:
        verdict = "level"
    else:
        size = f"{abs(gain):.2%}" if METRICS[metric].relative else f"{abs(gain):.4f} points"
        verdict = f"{'better' if gain > 0 else 'worse'} by {size}"
    return (
        f"DriftPilot vs retraining every batch over {check['batches_compared']} batches: mean "
        f"{metric_text.label(metric)} {metric_text.value(metric, check['driftpilot_mean'])} vs "
        f"{metric_text.value(metric, check['baseline_mean'])} "
        f"({metric_text.direction(metric)}): {verdict}, with {check['driftpilot_retrains']} "
        f"retrains against {check['baseline_retrains']}."
    )


def _meta(
    request: EvalRequest, plane: ControlPlane, spec: StreamSpec, batch: str, home: Path
) -> dict[str, Any]:
    """What the eval ran on and with, for the results JSON."""
    return {
        "source": str(request.data or request.dataset),
        "batch": batch,
        "features": {"numeric": spec.numeric, "categorical": spec.categorical},
        "initial": spec.initial,
        "approvals": spec.approvals,
        "escalations": spec.escalations,
        "policy": str(plane.settings.policy_path or "shipped default"),
        "home": str(home),
        "machine": machine(),
    }


def _table(request: EvalRequest, console: Console) -> tuple[pl.DataFrame, StreamSpec, str]:
    if (request.data is None) == (request.dataset is None):
        raise ConfigError("give either --data FILE or --dataset NAME")
    if request.dataset is not None:
        return _builtin(request)
    if not request.target:
        raise ConfigError("--target is required with --data")
    assert request.data is not None
    frame, time_col, numeric, categorical, notes = prepare(
        load_table(request.data),
        target=request.target,
        time_col=request.time_col,
        order_by_row=request.order_by_row,
        numeric=request.numeric,
        categorical=request.categorical,
        positive=request.positive,
    )
    for note in notes:
        console.print(f"[dim]note:[/] {note}")
    batch = request.batch or ("5000" if request.order_by_row else "month")
    spec = _spec(request, request.name or request.data.stem, request.target, time_col)
    spec.numeric, spec.categorical = numeric, categorical
    return frame, spec, batch


def _builtin(request: EvalRequest) -> tuple[pl.DataFrame, StreamSpec, str]:
    from tools.datasets import SPECS, load_dataset

    name = request.dataset or ""
    if name not in SPECS:
        raise ConfigError(f"unknown dataset {name!r}; choose from {sorted(SPECS)}")
    if request.target or request.time_col or request.order_by_row:
        raise ConfigError("a built-in dataset brings its own --target and --time")
    data = SPECS[name]
    spec = _spec(request, request.name or name, data.target, data.time_col)
    spec.numeric = request.numeric or data.numeric
    spec.categorical = request.categorical or data.categorical
    batch = request.batch or BUILTIN_BATCH.get(name, data.batch_every)
    return load_dataset(name), spec, batch  # type: ignore[arg-type]


def _spec(request: EvalRequest, name: str, target: str, time_col: str) -> StreamSpec:
    return StreamSpec(
        name=name,
        target=target,
        time_col=time_col,
        numeric=[],
        family=request.family,
        initial=request.initial,
        approvals=request.approvals,
        escalations=request.escalations,
        approver=request.approver,
    )


def _totals_line(result: StreamResult) -> str:
    t: dict[str, Any] = result.totals()
    return (
        f"{t['batches']} runs: {t['retrains']} retrains, {t['promotions']} promotions, "
        f"{t['quarantined']} quarantined, {t['unsafe_promotions']} unsafe promotions; "
        f"LLM decisions {t['llm_decisions']} ({t['fallbacks']} fell back), tokens {t['tokens']}; "
        f"audit {'verified' if result.audit_verified else 'BROKEN'}; wall {t['wall_s']:.0f} s"
    )
