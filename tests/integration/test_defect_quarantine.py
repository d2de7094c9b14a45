"""The ingestion agent quarantines a batch with a pipeline defect's signature and names it: in
the run's ``ingestion.signature``, at the head of the filed reason (with the column, the
factor and the numbers) and in the audited evidence; after ``max_consecutive_quarantines``
such batches the next is put to a person, as any quarantine on values. Real flights, a real
trained home (SQLite, MLflow), the builtin LLM; and ``decide`` alone with a scripted LLM
whose own reason omits the signature."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from agents import ingestion
from agents.base import Llm
from driftpilot.core.llm import Backend
from driftpilot.core.policy import Policy
from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import BatchRecord, Decision
from tests.fakes import say, scripted
from tools.datasets import FLIGHTS
from tools.defects import DefectKind
from tools.quality import check_batch
from tools.quality_profile import profile_reference

pytestmark = pytest.mark.integration
COLUMNS = [*FLIGHTS.features, FLIGHTS.target, FLIGHTS.time_col]
SIGNATURE = "unit_change:temp x1.8+32"


def later_january(months: dict[str, pl.DataFrame], part: int) -> pl.DataFrame:
    """January rows the trained home's champion never saw (``jan_initial`` is the first 9,000
    of this shuffle), 3,000 per part, time-ordered: like the reference, a different batch."""
    jan = months["2013-01"].sample(fraction=1.0, shuffle=True, seed=7)
    return jan.slice(9000 + part * 3000, 3000).sort(FLIGHTS.time_col)


def fahrenheit_twice(frame: pl.DataFrame) -> pl.DataFrame:
    """Temperatures already in °F converted again, as if they were °C."""
    return frame.with_columns(pl.col("temp") * 1.8 + 32)


def test_a_unit_change_is_quarantined_by_its_name_and_then_escalated(
    settings: Settings,
    trained_home: Callable[[str], Settings],
    months: dict[str, pl.DataFrame],
) -> None:
    trained_home("flights")
    get_settings.cache_clear()
    cp = ControlPlane(get_settings())
    try:
        assert cp.policy.ingestion.max_consecutive_quarantines == 2
        views = [
            cp.start_run("flights", fahrenheit_twice(later_january(months, i)), f"jan-{i}")
            for i in range(3)
        ]
        first = views[0]
        assert first.outcome == "quarantined", first.summary
        done = first.summary["ingestion"]
        assert done["signature"] == SIGNATURE
        [record] = cp.store.list_rows(BatchRecord, BatchRecord.run_id == first.run_id)
        assert record.status == "quarantined"
        assert record.reason.startswith(SIGNATURE)
        assert "'temp'" in record.reason and "x1.8+32" in record.reason
        assert "median" in record.reason  # the numbers: the batch's median and the mapped one
        [decision] = cp.store.list_rows(
            Decision, Decision.run_id == first.run_id, Decision.agent == "ingestion"
        )
        audited = json.loads(decision.evidence)
        assert audited["signature"] == SIGNATURE
        assert any(i["signature"] == SIGNATURE for i in audited["verdict"]["issues"])
        assert views[1].outcome == "quarantined"
        # the third in a row is put to a person, its signature still named
        third = views[2]
        assert third.status == "waiting_approval", third.summary
        assert third.summary["ingestion"]["action"] == "escalate"
        assert third.summary["ingestion"]["signature"] == SIGNATURE
        assert third.approval_request is not None
        assert "x1.8+32" in third.approval_request["description"]
    finally:
        cp.close()
        get_settings.cache_clear()


def test_decide_leads_the_llms_reason_with_the_signature(months: dict[str, pl.DataFrame]) -> None:
    reference = profile_reference(later_january(months, 0), COLUMNS)
    batch = fahrenheit_twice(later_january(months, 1))
    verdict = check_batch(batch, reference, time_columns=[FLIGHTS.time_col])
    evidence = ingestion.IngestionEvidence(verdict=verdict)
    answer = {"action": "quarantine", "reason": "temperatures look wrong", "rationale": "odd"}
    llm = Llm(scripted(say(answer)), max_steps=2, retries=1)
    ruling = ingestion.decide(evidence, Policy(), llm)
    assert ruling.signature == SIGNATURE
    assert ruling.reason == f"{SIGNATURE}: temperatures look wrong"
    builtin = ingestion.decide(evidence, Policy(), Llm(Backend("builtin", "", None)))
    assert builtin.reason.startswith(SIGNATURE) and builtin.signature == SIGNATURE


def test_a_clean_batch_has_no_signature_to_name(months: dict[str, pl.DataFrame]) -> None:
    reference = profile_reference(later_january(months, 0), COLUMNS)
    verdict = check_batch(later_january(months, 1), reference, time_columns=[FLIGHTS.time_col])
    ruling = ingestion.decide(
        ingestion.IngestionEvidence(verdict=verdict), Policy(), Llm(Backend("builtin", "", None))
    )
    assert ruling.outcome.decision.action == "accept" and ruling.signature == ""


def test_the_prompt_names_only_the_signatures_ingestion_can_find() -> None:
    """The model's spec names no key column, so ingestion checks no key and never finds
    ``duplicate_keys``: the prompt must not teach a signature that cannot occur (whole rows
    repeated stand for it)."""
    prompt = (Path(ingestion.__file__).parents[1] / "prompts" / "ingestion.md").read_text()
    kinds = set(typing.get_args(DefectKind))
    named = set(re.findall(r"`([a-z_]+)(?::[^`]*)?`", prompt)) & kinds
    assert named == kinds - {"duplicate_keys"}
