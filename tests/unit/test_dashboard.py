"""The Grafana dashboard (api/dashboards/driftpilot.json) reads only metrics the API exports.

The exported names come from scraping the real ``/metrics`` of the app (a real ControlPlane on
a temporary home, a viewer API key), never from a list written here. Each family's type gives
the series names Prometheus stores: a counter ``x`` is ``x_total``, a histogram ``x`` is
``x_bucket``, ``x_sum`` and ``x_count`` (and bare ``x`` is none of them). Every identifier of
every PromQL expression is either a PromQL function, keyword or such a series name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from driftpilot.core.settings import ApiSettings, Settings
from driftpilot.runs.plane import ControlPlane

DASHBOARD = Path(__file__).resolve().parents[2] / "api" / "dashboards" / "driftpilot.json"
# What the dashboard is for (the issue): each of these families is read by some panel.
TOPICS = {
    "driftpilot_drift_share",
    "driftpilot_runs",
    "driftpilot_pending_approvals",
    "driftpilot_run_duration_seconds",
    "driftpilot_llm_fallbacks",
}
# PromQL's functions and aggregation operators (a misspelt one is a problem too).
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "delta",
    "deriv", "exp", "floor", "group", "histogram_quantile", "idelta", "increase", "irate",
    "label_replace", "label_values", "last_over_time", "ln", "max", "max_over_time", "min",
    "min_over_time", "quantile", "quantile_over_time", "rate", "resets", "round", "scalar",
    "sort", "sort_desc", "stddev", "sum", "sum_over_time", "time", "timestamp", "topk", "vector",
}  # fmt: skip
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset"}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_IDENT = re.compile(r"(?<![\w$.])([A-Za-z_:][\w:]*)(\s*\()?")


def exported_series(metrics_text: str) -> set[str]:
    """The series names a Prometheus scrape of ``metrics_text`` stores."""
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names |= {sample.name for sample in family.samples}
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r}", str(target.get("expr", ""))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable.get("query")
            query = query.get("query", "") if isinstance(query, dict) else query
            yield f"variable ${variable['name']}", str(query)


def identifiers(expr: str) -> tuple[set[str], set[str]]:
    """(functions called, other identifiers) of a PromQL expression: strings, label matchers,
    ranges and ``by (...)``-style label lists are left out."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\blabel_values\s*\(\s*([\w:]+)\s*,[^)]*\)", r"label_values(\1)", text)
    called: set[str] = set()
    named: set[str] = set()
    for name, paren in _IDENT.findall(text):
        (called if paren else named).add(name)
    return called, named - KEYWORDS


def dashboard_problems(dashboard: dict[str, Any], exported: set[str]) -> list[str]:
    """Every expression that reads something the API does not export (empty: all good)."""
    problems = []
    read: set[str] = set()
    for where, expr in expressions(dashboard):
        called, named = identifiers(expr)
        problems += [f"{where}: {f}() is not a PromQL function" for f in called - FUNCTIONS]
        problems += [f"{where}: {m} is not exported by /metrics" for m in sorted(named - exported)]
        if not named:
            problems.append(f"{where}: {expr!r} reads no metric")
        read |= named
    for topic in sorted(TOPICS):
        if not any(name == topic or name.startswith(f"{topic}_") for name in read):
            problems.append(f"no panel reads {topic}")
    return problems


@pytest.fixture(scope="module")
def metrics_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real scrape of the API's /metrics."""
    home = tmp_path_factory.mktemp("dash") / "home"
    plane = ControlPlane(Settings(home=home).ensure_dirs())
    try:
        _, key = plane.create_api_key("grafana", "viewer")
        with TestClient(create_app(plane, ApiSettings(workers=1))) as client:
            response = client.get("/metrics", headers={"X-Api-Key": key})
        assert response.status_code == 200, response.text
        return response.text
    finally:
        plane.close()


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def test_every_panel_reads_exported_metrics(metrics_text: str) -> None:
    exported = exported_series(metrics_text)
    assert {"driftpilot_llm_fallbacks_total", "driftpilot_run_duration_seconds_bucket"} <= exported
    assert "driftpilot_run_duration_seconds" not in exported  # a histogram has no bare series
    dashboard = load()
    assert len(dashboard["panels"]) >= 5
    assert dashboard_problems(dashboard, exported) == []


def test_a_broken_dashboard_is_caught(metrics_text: str) -> None:
    exported = exported_series(metrics_text)
    text = DASHBOARD.read_text()
    for old, new in [
        ("driftpilot_drift_share{", "driftpilot_drift_shares{"),
        ("driftpilot_llm_fallbacks_total[", "driftpilot_llm_fallbacks["),
        ("driftpilot_run_duration_seconds_bucket[", "driftpilot_run_duration_seconds["),
        ("histogram_quantile(0.95", "histgram_quantile(0.95"),
        ("label_values(driftpilot_drift_share,", "label_values(driftpilot_drift_ratio,"),
    ]:
        assert old in text, f"{old!r} is no longer in the dashboard: update this test"
        text = text.replace(old, new, 1)
    problems = dashboard_problems(json.loads(text), exported)
    for expected in [
        "panel 'Drift share per model': driftpilot_drift_shares is not exported",
        "panel 'LLM fallbacks per agent': driftpilot_llm_fallbacks is not exported",
        "panel 'Run duration': driftpilot_run_duration_seconds is not exported",
        "panel 'Run duration': histgram_quantile() is not a PromQL function",
        "variable $model: driftpilot_drift_ratio is not exported",
    ]:
        assert any(p.startswith(expected) for p in problems), (expected, problems)


def test_identifiers_skip_labels_strings_and_ranges() -> None:
    called, named = identifiers(
        'sum by (le, model) (rate(x_bucket{model=~"$model", job="a b"}[$__rate_interval])) '
        "/ on (model) group_left y offset 5m"
    )
    assert called == {"sum", "rate"} and named == {"x_bucket", "y"}
