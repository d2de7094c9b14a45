"""Drift analyst: compare the batch with the model's reference window; none, monitor or retrain.

The rationale must cite metric names and values that exist in the tool output; every cited
metric is checked and a mismatch is flagged in the audit record.

The LLM sees schema column names, method names and numbers only: the report path (it holds the
batch id, a file stem) goes to the audit record, not to the LLM. A batch too small for any drift
test is watched (``monitor``), never called drift-free.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, Field

from agents.base import AgentTool
from agents.context import RunContext
from driftpilot.errors import LLMError
from driftpilot.policy import DriftAction, DriftBounds, Severity
from tools.drift import DriftResult, data_drift, model_performance, prediction_drift

NAME = "drift_analyst"


class DriftVerdict(BaseModel):
    """The analyst's verdict on one batch."""

    action: Literal["none", "monitor", "retrain"] = Field(description="What to do about the model.")
    severity: Severity = Field(description="How serious the drift is: none, low, medium, high.")
    cited_metrics: dict[str, float] = Field(
        description="Metric names and values from the evidence that support the verdict, e.g. "
        "{'drift_share': 0.62, 'temp': 4.47, 'metric_drop': 0.04}."
    )
    rationale: str = Field(description="Why, naming every cited metric with its value.")


def _metrics(drift: DriftResult, perf: dict[str, Any]) -> dict[str, float]:
    """Every citable number: drift share, each column's score, performance figures."""
    values = {"drift_share": drift.drift_share, "n_drifted": float(drift.n_drifted)}
    values.update({c.column: c.score for c in drift.columns})
    values.update(
        {k: v for k, v in perf.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    )
    return values


def citation_flags(decision: DriftVerdict, known: dict[str, float]) -> list[str]:
    """Cited metrics that do not exist, carry another value, or are missing from the text."""
    flags = []
    if not decision.cited_metrics:
        flags.append("citation: no metric cited")
    for name, value in decision.cited_metrics.items():
        if name not in known:
            flags.append(f"citation mismatch: {name} is not in the tool output")
        elif not _close(value, known[name]):
            flags.append(f"citation mismatch: {name}={value:g} but the tool says {known[name]:.4g}")
        elif not re.search(rf"\b{re.escape(name)}\b", decision.rationale):
            flags.append(f"citation: {name} cited but not named in the rationale")
    return flags


def _close(cited: float, actual: float) -> bool:
    return abs(cited - actual) <= max(0.01 * abs(actual), 0.006)  # cited values are rounded


def node(state: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    run_id, model = state["run_id"], state["model"]
    spec = ctx.spec(model)
    frame = pl.read_parquet(state["ingestion"]["path"])
    reference = ctx.reference(model)
    assert ctx.settings.reports_dir is not None
    report = ctx.settings.reports_dir / model / f"{state['batch']['batch_id']}-{run_id[:8]}.html"
    drift = ctx.call(
        run_id,
        NAME,
        "drift.data_drift",
        lambda: data_drift(
            reference, frame, numeric=spec.numeric, categorical=spec.categorical, report_path=report
        ),
        {"reference_rows": reference.height, "batch_rows": frame.height},
    )
    perf = _performance(ctx, run_id, model, spec.target, frame, reference)
    bounds = ctx.policy.drift_bounds(
        drift.drift_share, perf.get("metric_drop"), perf.get("prediction_drifted", False)
    )
    known = _metrics(drift, perf)
    action = _policy_action(drift, bounds)
    fallback = DriftVerdict(
        action=action,
        severity=bounds.severity,
        cited_metrics=_cite(drift, perf),
        rationale=_template(drift, perf, bounds, action),
    )

    def check(d: DriftVerdict) -> None:
        if d.action not in bounds.allowed:
            raise LLMError(f"action {d.action!r} outside the policy bounds {bounds.allowed}")

    evidence = {
        "drift_share": drift.drift_share,
        "dataset_drift": drift.dataset_drift,
        "n_tested": drift.n_columns,
        "columns": [c.model_dump() for c in drift.columns[:8]],
        "skipped_columns": drift.skipped_columns,
        "performance": perf,
        "signals": bounds.signals,
    }
    outcome = ctx.decide(
        NAME,
        DriftVerdict,
        evidence,
        bounds.model_dump(),
        fallback,
        check=check,
        tools=_tools(drift),
    )
    verdict = outcome.decision
    ctx.record(
        run_id,
        NAME,
        outcome,
        verdict.action,
        verdict.rationale,
        {**evidence, "report": drift.report_path, "cited_metrics": verdict.cited_metrics},
        citation_flags(verdict, known),
    )
    return {
        "drift": {
            "action": verdict.action,
            "severity": verdict.severity,
            "drift_share": drift.drift_share,
            "drifted_columns": drift.drifted_columns(),
            "skipped_columns": drift.skipped_columns,
            "report": drift.report_path,
            **perf,
        }
    }


def _performance(
    ctx: RunContext,
    run_id: str,
    model: str,
    target: str,
    frame: pl.DataFrame,
    reference: pl.DataFrame,
) -> dict[str, Any]:
    champ = ctx.champion(model)
    if champ is None:
        return {"champion_version": None}
    scorer, version = champ
    baseline = ctx.model(model).baseline
    out: dict[str, Any] = {"champion_version": version, "baseline": baseline}
    if target in frame.columns and frame[target].drop_nulls().n_unique() == 2:
        perf = ctx.call(
            run_id,
            NAME,
            "drift.model_performance",
            lambda: model_performance(scorer, frame, target),
            {"champion_version": version},
        )
        out.update({"roc_auc": perf.roc_auc, "pr_auc": perf.pr_auc, "log_loss": perf.log_loss})
        if baseline is not None and perf.roc_auc is not None:
            out["metric_drop"] = round(baseline - perf.roc_auc, 4)
    else:
        moved = ctx.call(
            run_id,
            NAME,
            "drift.prediction_drift",
            lambda: prediction_drift(scorer.predict_proba(reference), scorer.predict_proba(frame)),
            {"champion_version": version},
        )
        if moved is not None:  # None: too few rows to test the scores
            out.update({"prediction_drift_score": moved.score, "prediction_drifted": moved.drifted})
    return out


def _tools(drift: DriftResult) -> list[AgentTool]:
    def get_column_drift(column: str) -> dict[str, Any]:
        """Drift test of one column: method, score, threshold, drifted."""
        found = next((c for c in drift.columns if c.column == column), None)
        return found.model_dump() if found else {"error": f"no column {column!r}"}

    def list_drifted_columns() -> list[str]:
        """Names of the columns whose drift test fired, most drifted first."""
        return drift.drifted_columns()

    return [
        AgentTool("get_column_drift", get_column_drift),
        AgentTool("list_drifted_columns", list_drifted_columns),
    ]


def _cite(drift: DriftResult, perf: dict[str, Any]) -> dict[str, float]:
    cited = {"drift_share": drift.drift_share}
    if drift.columns and drift.columns[0].drifted:
        cited[drift.columns[0].column] = round(drift.columns[0].score, 4)
    for key in ("roc_auc", "metric_drop"):
        if perf.get(key) is not None:
            cited[key] = round(perf[key], 4)
    return cited


def _policy_action(drift: DriftResult, bounds: DriftBounds) -> DriftAction:
    """The policy's choice, except that a batch with no testable column is watched: 'none'
    would report an absence of drift that nobody measured."""
    if drift.n_columns == 0 and "monitor" in bounds.allowed:
        return "monitor"
    return bounds.default


def _template(
    drift: DriftResult, perf: dict[str, Any], bounds: DriftBounds, action: DriftAction
) -> str:
    parts = [
        f"drift_share={drift.drift_share:.4f} ({drift.n_drifted}/{drift.n_columns} columns drifted)"
    ]
    if drift.skipped_columns:
        parts.append(f"{len(drift.skipped_columns)} columns not tested (too few values)")
    if drift.n_columns == 0:
        parts.append(f"no drift test possible on {drift.n_current} rows: watch the next batch")
    if drift.columns and drift.columns[0].drifted:
        top = drift.columns[0]
        parts.append(
            f"most drifted {top.column}={top.score:.4f} ({top.method}, threshold {top.threshold})"
        )
    if perf.get("roc_auc") is not None:
        parts.append(f"champion roc_auc={perf['roc_auc']:.4f}")
    if perf.get("metric_drop") is not None:
        parts.append(f"metric_drop={perf['metric_drop']:.4f} vs baseline {perf['baseline']:.4f}")
    signals = "; ".join(bounds.signals) or "no signal"
    policy = f"Policy: {action} (severity {bounds.severity})"
    return f"{'; '.join(parts)}. Signals: {signals}. {policy}."
