"""Opt-in (``-m real_llm``): the control graph driven by a real local LLM.

The test starts the llama-server that ``make llm-local`` built (Qwen2.5-Coder-0.5B) on a free
loopback port and runs one control run through every agent. A 0.5B model's choices are not
asserted, only that they are valid, inside the policy's bounds, audited, and mostly its own
(grammar-constrained decisions rarely need the policy's fallback). Skipped when the local LLM
is not built."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from driftpilot.core.errors import ConfigError
from driftpilot.core.llm import LOCAL_MODEL_NAME, local_paths, local_server
from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Decision
from tests.conftest import add_flights

pytestmark = [pytest.mark.integration, pytest.mark.real_llm]

VALID = {
    "ingestion": {"accept", "quarantine"},
    "drift_analyst": {"none", "monitor", "retrain"},
    "evaluator": {"promote", "reject"},
}


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(home=tmp_path_factory.mktemp("llm-home"))
    try:
        local_paths(settings)
    except ConfigError as exc:
        pytest.skip(f"no local LLM: {exc}")
    log = tmp_path_factory.mktemp("llm-log") / "llama-server.log"
    with local_server(settings, log_path=log) as base_url:
        yield base_url


@pytest.mark.timeout(3600)  # a 0.5B model on a busy 2-core CPU: up to minutes per decision
def test_a_real_local_llm_drives_the_graph(
    llama: str, tmp_path: Path, settings: Any, months: dict[str, pl.DataFrame], monkeypatch: Any
) -> None:
    policy = tmp_path / "policy.yaml"  # retrain: always, so that every agent decides
    policy.write_text(yaml.safe_dump({"drift": {"retrain": "always"}}))
    monkeypatch.setenv("DRIFTPILOT_POLICY_PATH", str(policy))
    monkeypatch.setenv("DRIFTPILOT_LLM", f"openai:{LOCAL_MODEL_NAME}")
    monkeypatch.setenv("DRIFTPILOT_LLM_BASE_URL", llama)
    monkeypatch.setenv("DRIFTPILOT_LLM_TIMEOUT_S", "600")  # a cut answer is paid for again
    get_settings.cache_clear()
    cp = ControlPlane()
    add_flights(cp, months["2013-01"].sample(n=8000, seed=1))
    view = cp.start_run("flights", months["2013-07"].sample(n=12000, seed=2), "2013-07")
    assert view.status in {"completed", "waiting_approval"}, view
    rows = cp.store.list_rows(Decision, Decision.run_id == view.run_id)
    asked = [d for d in rows if d.backend == "openai"]
    agents = {d.agent for d in asked}
    assert agents >= {"ingestion", "drift_analyst"}
    if (view.summary.get("drift") or {}).get("action") == "retrain":  # then every agent decides
        assert agents >= {"optimizer", "retraining", "evaluator"}
    for d in asked:
        assert d.llm_model == LOCAL_MODEL_NAME and d.tokens_in > 0 and d.latency_ms > 0
        assert d.action in VALID.get(d.agent, {d.action}) and d.rationale
    own = [d for d in asked if not d.fallback]
    assert len(own) >= len(asked) - 1, [json.loads(d.flags) for d in asked if d.fallback]
    drift = next(d for d in asked if d.agent == "drift_analyst")
    cited = json.loads(drift.evidence)["cited_metrics"]
    assert cited and all(isinstance(v, float | int) for v in cited.values())
    assert cp.verify().ok
