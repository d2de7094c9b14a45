"""Service endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from api.deps import Executor, Plane, Viewer
from api.problems import Problem
from api.schemas import STATUS, Health
from driftpilot.runs.plane import MetricsSnapshot

router = APIRouter(tags=["service"])
BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers (no dependency is checked)."""
    return Health()


@router.get("/readyz", response_model=Health, responses={503: {"description": "Not ready"}})
def readyz(cp: Plane) -> Health:
    """The audit database answers a query."""
    try:
        cp.list_api_keys()
    except Exception as exc:
        raise Problem(503, f"the audit database is not reachable: {type(exc).__name__}") from exc
    return Health()


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
def metrics(cp: Plane, ex: Executor, _: Viewer) -> Response:
    """Prometheus text format: runs by status and outcome, run durations, latest drift share
    per model, pending approvals, LLM fallbacks per agent, runs in this process's executor."""
    registry = CollectorRegistry()
    registry.register(_Snapshot(cp.metrics(), ex.busy()))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _Snapshot(Collector):
    """A one-shot collector over a façade metrics snapshot."""

    def __init__(self, snap: MetricsSnapshot, executing: int) -> None:
        self.snap, self.executing = snap, executing

    def collect(self) -> list[Metric]:
        snap = self.snap
        runs = GaugeMetricFamily(
            "driftpilot_runs", "Runs by status and outcome.", labels=["status", "outcome"]
        )
        for label, count in sorted(snap.runs.items()):
            status, _, outcome = label.partition(":")
            runs.add_metric([STATUS.get(status, status), outcome], count)
        drift = GaugeMetricFamily(
            "driftpilot_drift_share",
            "Latest drift share per model (champion importance on shifted columns).",
            labels=["model"],
        )
        for model, share in sorted(snap.drift_share.items()):
            drift.add_metric([model], share)
        pending = GaugeMetricFamily(
            "driftpilot_pending_approvals",
            "Runs waiting for a person.",
            value=snap.pending_approvals,
        )
        fallbacks = CounterMetricFamily(
            "driftpilot_llm_fallbacks",
            "Agent decisions the policy made after the LLM failed.",
            labels=["agent"],
        )
        for agent, count in sorted(snap.llm_fallbacks.items()):
            fallbacks.add_metric([agent], count)
        executing = GaugeMetricFamily(
            "driftpilot_executor_runs",
            "Runs queued or executing in this process.",
            value=self.executing,
        )
        return [runs, _histogram(snap.run_seconds), drift, pending, fallbacks, executing]


def _histogram(seconds: list[float]) -> HistogramMetricFamily:
    cumulative = [(str(b), float(sum(1 for s in seconds if s <= b))) for b in BUCKETS]
    cumulative.append(("+Inf", float(len(seconds))))
    return HistogramMetricFamily(
        "driftpilot_run_duration_seconds",
        "Duration of finished runs, creation to end (waiting for a person included).",
        buckets=cumulative,
        sum_value=sum(seconds),
    )
