"""``driftpilot eval``: the control loop over a labelled table a user brings (or a built-in
dataset), in a home of its own, ending with a per-batch table and a JSON file.

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

from driftpilot.core.errors import ConfigError
from driftpilot.core.settings import get_settings
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


def run_eval(request: EvalRequest, console: Console) -> tuple[StreamResult, Path]:
    """Run the eval a request describes; print the notes, the per-batch table and the totals.
    Returns the result and the JSON file written.

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
    result = run_stream(plane, spec, batches, console=console)
    result.meta = {
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
    console.print(batch_table(result, f"{spec.name}: one control run per batch"))
    console.print(_totals_line(result))
    out = write_json(request.out or home / "eval.json", result.to_json())
    console.print(f"results: {out}")
    return result, out


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
