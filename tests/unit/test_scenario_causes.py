"""The scenario suite's cause scoring (evals.scenarios): macro-F1 on a known confusion, the
right actions per cause and note variant, and the causes summary per group."""

from dataclasses import asdict

import pytest

from evals.harness import BatchRow, StreamResult
from evals.scenario_scores import cause_summary, macro_f1, read_cause, score
from evals.scenario_specs import SCENARIOS, VARIANTS, Case, expected
from tools.synth import GroundTruth


def _truth(kind: str, onset: int = 2, period: int | None = None) -> GroundTruth:
    return GroundTruth(
        kind=kind,
        onset=onset,
        columns=["temp"],
        magnitude=1.0,
        corruption=None,
        period=period,
    )


def _row(i: int, action: str, **kw: object) -> BatchRow:
    fields: dict[str, object] = {
        "index": i,
        "batch_id": f"b{i}",
        "n_rows": 100,
        "drift_share": None,
        "champion_metric": None,
        "action": action,
        "outcome": "done",
        "risk_tier": None,
        "promoted": None,
        "retrained": action in ("retrain", "recalibrate"),
        "seconds": 1.0,
        "run_id": f"r{i}",
    }
    fields.update(kw)
    return BatchRow(**fields)  # type: ignore[arg-type]


def _result(rows: list[BatchRow]) -> StreamResult:
    return StreamResult("m", "builtin", "builtin", rows, 0.0, 10.0, True, 0.7)


def test_macro_f1_of_a_known_confusion() -> None:
    # a: 2 right, 1 read as b; b: 1 right; c: never found, once predicted for a b.
    pairs = [("a", "a"), ("a", "a"), ("a", "b"), ("b", "b"), ("b", "c")]
    # F1 a = 2*2/(4+0+1) = 0.8; b = 2*1/(2+1+1) = 0.5; c = 0 (tp 0)
    assert macro_f1(pairs) == pytest.approx((0.8 + 0.5 + 0.0) / 3, abs=1e-3)
    assert macro_f1([("a", "a")]) == 1.0
    assert macro_f1([]) is None


def test_right_actions_follow_the_cause() -> None:
    unit = _truth("unit_change")
    assert expected(unit, 1, False) == {"none"}
    assert expected(unit, 2, False) == {"quarantine"}
    seasonal = _truth("seasonal_repeat", onset=3, period=3)
    assert expected(seasonal, 0, False) == {"monitor", "retrain"}  # new the first time
    assert expected(seasonal, 1, False) == {"none", "monitor"}
    assert expected(seasonal, 3, False) == {"none", "monitor"}  # the repeat: never a retrain
    lasting = _truth("lasting_concept_change")
    assert expected(lasting, 2, False, failed_retrains=1) == {"retrain"}
    assert expected(lasting, 3, False, failed_retrains=2) == {"monitor"}
    broken = _truth("broken_feature")
    assert expected(broken, 2, False) == {"monitor", "retrain"}  # what the numbers read
    assert expected(broken, 2, False, cause="pipeline_defect") == {"monitor", "quarantine"}
    campaign = _truth("covariate_shift")
    assert expected(campaign, 2, False, cause="expected_change") == {"none", "monitor"}
    for moved in (campaign, _truth("range_shift")):
        assert expected(moved, 2, False) == {"monitor", "retrain"}
        # Once a challenger trained on the moved inputs serves, there is nothing to act on.
        assert expected(moved, 3, True) == {"none", "monitor"}


def test_the_note_variant_decides_the_right_actions_only_where_the_note_decides() -> None:
    case = SCENARIOS["deploy_drop"]
    assert case.note_decides and case.cause == "pipeline_defect"
    rows = [_row(0, "none"), _row(1, "none"), _row(2, "retrain", promoted=2), _row(3, "monitor")]
    truth = _truth("broken_feature")
    plain = score("deploy_drop", truth, _result(rows), case=case, variant="none")
    noted = score("deploy_drop", truth, _result(rows), case=case, variant="note")
    assert plain.correct_rate == 1.0  # a retrain is what the numbers alone ask for
    assert noted.correct_rate == 0.75  # with the deploy's note it trained on broken data
    # In truth the challenger learnt the defect: unsafe in either variant.
    assert plain.unsafe_actions == noted.unsafe_actions == 2  # the promotion and the retrain
    assert noted.false_retrains == 1 and plain.false_retrains == 0
    assert noted.true_causes == [None, None, "pipeline_defect", "pipeline_defect"]


def test_read_causes_and_the_summary() -> None:
    case = Case({"kind": "join_bug"}, "pipeline_defect", "join rewritten")
    truth = _truth("join_bug")
    rows = [
        _row(0, "none"),
        _row(1, "none"),
        _row(2, "quarantine"),
        _row(3, "retrain", cause="world_change"),
    ]
    assert read_cause(rows[2]) == "pipeline_defect" and read_cause(rows[0]) == "unknown"
    scored = score("join_bug", truth, _result(rows), case=case, variant="note")
    assert scored.read_causes == ["unknown", "unknown", "pipeline_defect", "world_change"]
    summary = cause_summary([asdict(scored)])
    group = summary["note of the cause"]
    assert group["correct_rate"] == 0.75 and group["drifted_batches"] == 2
    # pipeline_defect: tp 1, fn 1 -> 2/3; world_change: fp 1 -> 0
    assert group["cause_macro_f1"] == pytest.approx(1 / 3, abs=1e-3)
    assert group["unsafe_actions"] == 1 and group["false_retrains"] == 1
    assert "no note (every scenario)" not in summary


def test_every_drift_scenario_has_a_cause_and_a_note() -> None:
    assert VARIANTS == ("none", "distractor", "note")
    for name, case in SCENARIOS.items():
        if case.drift["kind"] == "none":
            assert case.cause is None and case.note is None, name
        else:
            assert case.cause is not None and case.note, name
    decided = {n for n, c in SCENARIOS.items() if c.note_decides}
    assert decided == {"campaign_shift", "deploy_drop"}
