"""Each agent's ``decide(evidence, policy, llm)`` is pure (no context, no store, no files: the
same evidence gives the same decision, and the LLM is its only way out), and it is the very
function the what-if replay calls: a replay node rebuilds the agent's evidence from what the
run recorded (its decision's evidence, its audited tool results, its checkpointed state) and
re-decides with it, so a replay of a run decides what ``decide`` decides on that evidence."""

from __future__ import annotations

import builtins
import io
import socket
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from agents import cicd, drift_analyst, evaluator, ingestion, optimizer, retraining
from agents.base import Llm
from agents.drift_reading import DriftAnalystEvidence
from driftpilot.core.llm import Backend
from driftpilot.core.policy import Policy, RiskInputs
from driftpilot.core.settings import Settings
from driftpilot.replay import REPLAY_NODES, Evidence, _sealed_context
from driftpilot.store.notes import NoteView
from tests.fakes import say, scripted
from tools.drift import ColumnDrift, DriftResult
from tools.evaluate import Comparison
from tools.quality import QualityIssue, QualityVerdict
from tools.shift import ColumnShift, ShiftResult

BUILTIN = Llm(Backend("builtin", "", None))


def _verdict(ok: bool) -> QualityVerdict:
    issues = [] if ok else [_issue("null_spike", "error", "dep_delay has 40% nulls")]
    return QualityVerdict(ok=ok, n_rows=500, content_hash="abc", issues=issues)


def _issue(check: str, severity: str, message: str) -> QualityIssue:
    values = {"check": check, "severity": severity, "column": "dep_delay", "message": message}
    return QualityIssue.model_validate(values)


def _drift_evidence() -> DriftAnalystEvidence:
    drift = DriftResult(
        n_reference=1000,
        n_current=800,
        n_columns=2,
        n_drifted=1,
        drift_share=0.5,
        dataset_drift=False,
        columns=[
            ColumnDrift(
                column="distance", method="wasserstein", score=0.3, threshold=0.1, drifted=True
            ),
            ColumnDrift(
                column="carrier", method="jensenshannon", score=0.01, threshold=0.1, drifted=False
            ),
        ],
        elapsed_s=0.1,
    )
    shift = ShiftResult(
        columns=[
            ColumnShift(
                column="distance",
                kind="numeric",
                measure="wasserstein",
                value=0.31,
                threshold=0.1,
                material=True,
                importance=0.7,
            ),
            ColumnShift(
                column="carrier",
                kind="categorical",
                measure="psi",
                value=0.02,
                threshold=0.2,
                material=False,
                importance=0.3,
            ),
        ],
        material_share=0.5,
        weighted_share=0.7,
        elapsed_s=0.1,
    )
    perf = {
        "champion_version": 1,
        "metric": "roc_auc",
        "higher_is_better": True,
        "baseline": 0.74,
        "score": 0.69,
        "score_low": 0.66,
        "score_high": 0.72,
        "metric_drop": 0.05,
        "metric_drop_low": 0.01,
    }
    history = {"recent_signals": 1, "batches_since_retrain": None, "retrains": 0, "promotions": 0}
    note = NoteView(
        id=7,
        model="flights",
        text="New carrier routes from March.",
        at=datetime(2024, 3, 1, tzinfo=UTC),
        by="ann",
        created_at=datetime(2024, 3, 2, tzinfo=UTC),
        sha256="0" * 64,
    )
    past = [{"drift": {"action": "monitor", "material": True, "drifted_columns": ["distance"]}}]
    return DriftAnalystEvidence(
        drift=drift,
        shift=shift,
        domain=None,
        performance=perf,
        history=history,
        past=past,
        run_id="run-under-test",
        notes=[note],
    )


def _comparison(ci_low: float) -> Comparison:
    return Comparison(
        metric="roc_auc",
        n_rows=400,
        champion=0.70,
        challenger=0.74,
        gain=0.04,
        ci_low=ci_low,
        ci_high=0.07,
        confidence=0.95,
        n_boot=200,
        significant=ci_low > 0,
        prediction_divergence=0.05,
    )


def _risk_inputs() -> RiskInputs:
    return RiskInputs(
        has_champion=True,
        champion_family="lightgbm",
        challenger_family="catboost",  # a family change: high risk under the shipped rules
        gain=0.04,
        ci_low=0.01,
        ci_high=0.07,
        divergence=0.05,
        window_quality_warnings=0,
    )


# One case per agent: its module, its replay node, the evidence gather would have produced,
# and the run's record of it (what the replay reads back).
def _cases() -> list[tuple[Any, str, BaseModel, dict[str, Any]]]:
    ing = ingestion.IngestionEvidence(verdict=_verdict(ok=False))
    drift = _drift_evidence()
    drift_shown = drift_analyst.decide(drift, Policy(), BUILTIN).shown
    opt = optimizer.OptimizerEvidence(
        champion_family="lightgbm",
        drift={
            "weighted_share": 0.7,
            "severity": "medium",
            "metric": "roc_auc",
            "metric_drop": 0.05,
            "score": 0.69,
        },
        rejected_attempts=[{"family": "lightgbm", "n_trials": 8}],
    )
    ret = retraining.RetrainingEvidence(
        rejected_windows=[4],
        available_batches=6,
        drift="medium",
        optimizer={"family": "lightgbm", "best_value": 0.73},
        material=True,
    )
    ev = evaluator.EvaluatorEvidence(comparison=_comparison(0.01), champion_version=1)
    cd = cicd.CicdEvidence(version=3, inputs=_risk_inputs(), summary="Promote flights v3.")
    return [
        (
            ingestion,
            "ingestion",
            ing,
            {
                "shown": {"ingestion": ing.shown()},
                "final": {"ingestion": {"action": "quarantine", "reason": "r", "path": "p"}},
            },
        ),
        (
            drift_analyst,
            "drift_analyst",
            drift,
            {
                "shown": {
                    "drift_analyst": {
                        **drift_shown,
                        **drift_analyst.replay_record(drift),
                        "report": None,
                    }
                },
                "tool_results": {
                    "drift.data_drift": drift.drift.model_dump(mode="json"),
                    "shift.effect_sizes": drift.shift.model_dump(mode="json"),
                },
                "final": {"drift": {"action": "retrain", "material": True}},
            },
        ),
        (
            optimizer,
            "optimizer",
            opt,
            {
                "shown": {"optimizer": {**opt.shown(), "plan": {}, "best_value": 0.73}},
                "final": {"optimizer": {"family": "lightgbm", "n_trials": 16}},
            },
        ),
        (
            retraining,
            "retraining",
            ret,
            {
                "shown": {"retraining": {**ret.shown(), "window": 2}},
                "final": {"retraining": {"window": 2}},
                "state": {"drift": {"material": True}},
            },
        ),
        (
            evaluator,
            "evaluator",
            ev,
            {
                "shown": {"evaluator": ev.shown()},
                "final": {"evaluation": {"action": "promote", "champion_version": 1}},
            },
        ),
        (
            cicd,
            "cicd",
            cd,
            {
                "tool_args": {"policy.assess_risk": cd.inputs.model_dump()},
                "final": {"cicd": {"tier": "high", "summary": cd.summary, "version": 3}},
                "state": {"evaluation": {}, "retraining": {}, "model": "flights"},
            },
        ),
    ]


CASES = _cases()
IDS = [name for _, name, _, _ in CASES]


def _decision(ruling: Any) -> dict[str, Any]:
    """What a ruling decided: the decision and whether the policy took over."""
    return {**ruling.outcome.decision.model_dump(), "fallback": ruling.outcome.fallback}


@pytest.mark.parametrize(("agent", "node", "evidence", "record"), CASES, ids=IDS)
def test_decide_is_pure(
    agent: Any,
    node: str,
    evidence: BaseModel,
    record: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No context reaches decide: the evidence, the policy and the LLM are all it has, and
    the same three give the same decision (a fresh copy of the evidence too)."""
    policy = Policy()

    def no_io(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"decide did I/O: {args}")

    with monkeypatch.context() as sealed:  # no file opened, no connection made
        sealed.setattr(builtins, "open", no_io)
        sealed.setattr(io, "open", no_io)
        sealed.setattr(socket.socket, "connect", no_io)
        first = agent.decide(evidence, policy, BUILTIN)
    again = agent.decide(evidence.model_copy(deep=True), policy, BUILTIN)
    assert _decision(first) == _decision(again)
    assert not first.outcome.fallback and first.outcome.tokens_in == 0


@pytest.mark.parametrize(("agent", "node", "evidence", "record"), CASES, ids=IDS)
def test_the_llm_is_the_only_way_out(
    agent: Any, node: str, evidence: BaseModel, record: dict[str, Any]
) -> None:
    """A chat model that answers nonsense: decide asks it (and only it), then falls back to
    the policy's own decision, flagged, as it did before the split."""
    backend = scripted(say({"nonsense": True}), say({"nonsense": True}), say({"nonsense": True}))
    ruled = agent.decide(evidence, Policy(), Llm(backend, max_steps=1, retries=1))
    assert ruled.outcome.fallback and ruled.outcome.error
    assert backend.chat_model is not None and backend.chat_model.seen  # the LLM was asked
    policy_only = agent.decide(evidence, Policy(), BUILTIN)
    assert ruled.outcome.decision == policy_only.outcome.decision


@pytest.mark.parametrize(("agent", "node", "evidence", "record"), CASES, ids=IDS)
def test_the_replay_calls_decide_on_the_recorded_evidence(
    agent: Any,
    node: str,
    evidence: BaseModel,
    record: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The replay node rebuilds the evidence from the record, hands it to the agent's own
    decide, and writes what decide decided into its slice."""
    policy = Policy()
    calls: list[BaseModel] = []
    real = agent.decide

    def spy(ev: BaseModel, pol: Policy, llm: Llm) -> Any:
        calls.append(ev)
        return real(ev, pol, llm)

    monkeypatch.setattr(agent, "decide", spy)
    recorded = Evidence(
        run=SimpleNamespace(id="run-under-test"),  # type: ignore[arg-type]
        fork_id="fork",
        fork_values={},
        final=record["final"],
        shown=record.get("shown", {}),
        tool_results=record.get("tool_results", {}),
        tool_args=record.get("tool_args", {}),
    )
    ctx = _sealed_context(Settings(home=tmp_path), policy, BUILTIN.backend)
    update = REPLAY_NODES[node](record.get("state", {}), ctx, recorded)
    assert len(calls) == 1
    rebuilt = calls[0]
    assert rebuilt.model_dump() == evidence.model_dump()  # the record holds all decide needs
    ruling = real(evidence, policy, BUILTIN)
    replayed = next(iter(update.values()))
    expected = {
        "ingestion": lambda r: {"action": r.outcome.decision.action},
        "drift_analyst": lambda r: {
            "action": r.outcome.decision.action,
            "severity": r.outcome.decision.severity,
        },
        "optimizer": lambda r: {
            "family": r.outcome.decision.family,
            "n_trials": r.outcome.decision.n_trials,
        },
        "retraining": lambda r: {"window": r.outcome.decision.window},
        "evaluator": lambda r: {"action": r.outcome.decision.action},
        "cicd": lambda r: {"tier": r.tier, "reasons": r.risk.reasons},
    }[node](ruling)
    assert {k: replayed[k] for k in expected} == expected
    assert replayed["replay"]["rationale"] == ruling.outcome.decision.rationale


def test_after_a_rejection_the_replay_plans_as_the_agent_did() -> None:
    """The replay used to plan from the policy's default alone; with the agent's decide it
    follows the recorded rejections (a wider search after one rejected challenger)."""
    _, _, evidence, _ = CASES[IDS.index("optimizer")]
    plan = optimizer.decide(evidence, Policy(), BUILTIN).outcome.decision  # type: ignore[arg-type]
    assert plan.n_trials == 16 and "rejected" in plan.rationale


def test_a_regression_drop_decides_in_rmse_and_cites_its_score() -> None:
    """An RMSE that rose 8 % (a relative drop of 0.08, surely worse) is a severe drop: the
    policy retrains and the rationale says the RMSE rose, with the score cited."""
    evidence = _drift_evidence()
    perf = {
        "champion_version": 1,
        "metric": "rmse",
        "higher_is_better": False,
        "baseline": 40.0,
        "score": 43.2,
        "score_low": 42.0,
        "score_high": 44.5,
        "metric_drop": 0.08,
        "metric_drop_low": 0.03,
    }
    evidence = evidence.model_copy(update={"performance": perf})
    ruling = drift_analyst.decide(evidence, Policy(), BUILTIN)
    verdict = ruling.outcome.decision
    assert ruling.bounds.significant_drop and ruling.bounds.default == "retrain"
    assert verdict.action == "retrain" and verdict.cited_metrics["score"] == 43.2
    assert "RMSE rose 8.00% above its baseline (worse)" in verdict.rationale
    assert "(RMSE, lower is better)" in verdict.rationale
    assert ruling.flags == []


def test_moved_predictions_are_watched_and_cited() -> None:
    """No column moved enough, the champion's predictions did: the fallback monitors, cites
    the prediction shift and names it in its rationale, and the LLM may cite it too."""
    evidence = _drift_evidence()
    columns = [c.model_copy(update={"material": False}) for c in evidence.shift.columns]
    shift = evidence.shift.model_copy(
        update={"columns": columns, "material_share": 0.0, "weighted_share": 0.0}
    )
    perf = {
        **evidence.performance,
        "score": 0.74,
        "metric_drop": 0.0,
        "metric_drop_low": -0.03,
        "prediction_shift": 0.4512,
        "prediction_p_value": 2e-40,
    }
    evidence = evidence.model_copy(update={"shift": shift, "performance": perf})
    ruling = drift_analyst.decide(evidence, Policy(), BUILTIN)
    verdict = ruling.outcome.decision
    assert ruling.bounds.predictions_moved and verdict.action == "monitor"
    assert verdict.cited_metrics["prediction_shift"] == 0.4512
    assert "prediction_shift=0.4512 (the champion's predictions against its holdout" in (
        verdict.rationale
    )
    assert ruling.flags == []  # the citation check passes its own fallback
    quiet = {**perf, "prediction_shift": 0.12}
    calm = drift_analyst.decide(
        evidence.model_copy(update={"performance": quiet}), Policy(), BUILTIN
    )
    assert "prediction_shift" not in calm.outcome.decision.cited_metrics


@pytest.mark.parametrize(
    ("ci_low", "too_small", "default"),
    [(0.01, None, "promote"), (-0.01, None, "reject"), (0.01, "45 labelled rows < 100", "reject")],
)
def test_the_evaluator_is_shown_the_policys_default_beside_what_it_allows(
    ci_low: float, too_small: str | None, default: str
) -> None:
    """The real-LLM year's 0.5B evaluator rejected 4 challengers of 4 whose gain's interval lay
    above zero (its rationale: "The evidence does not provide any reason not to reject"): the
    bounds now say which choice is the policy's, also where a reject is forced whatever the
    interval (a holdout too small to judge on)."""
    backend = scripted(say({"action": default, "rationale": "gain 0.04, interval above zero"}))
    ev = evaluator.EvaluatorEvidence(
        comparison=_comparison(ci_low), champion_version=1, holdout_too_small=too_small
    )
    ruling = evaluator.decide(ev, Policy(), Llm(backend))
    assert ruling.outcome.decision.action == default and not ruling.outcome.fallback
    system = str(backend.chat_model.seen[0][0].content)  # type: ignore[attr-defined]
    assert f'"default": "{default}"' in system
    assert "answer it" in system and "unless the evidence gives you a reason" not in system
