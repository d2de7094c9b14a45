"""The results tables in evals/README.md are rendered from the results files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.suite import BEGIN, END, render_readme

MACHINE = {"measured_at": "2026-12-01T00:00:00Z", "cores": 2}


def test_tables_replace_only_the_marked_part(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    score = {
        "scenario": "abrupt_concept_drift",
        "onset": 3,
        "correct_rate": 0.5,
        "detection_delay": None,
        "false_alarm_monitor": 0.25,
        "false_alarm_retrain": 0.0,
        "false_alarm_quarantine": 0.0,
        "unsafe_promotions": 0,
        "approved_high_risk": 1,
        "citation_flags": 2,
        "retrains": 2,
        "retrain_yield": 0.5,
        "wall_s": 30.0,
        "llm_decisions": 12,
        "tokens": 3456,
    }
    (results / "scenarios_flights_quick.json").write_text(
        json.dumps(
            {
                "dataset": "flights",
                "tier": "quick",
                "llm": "ollama:qwen",
                "stream": {"batches": 6, "onset": 3, "batch_rows": 1000},
                "machine": MACHINE,
                "scores": [score, {**score, "scenario": "no_drift", "onset": None}],
            }
        )
    )
    # Written before issue 19 (mean_auc/min_auc, no metric): still read, as ROC AUC.
    totals = {"mean_auc": 0.68, "min_auc": 0.6, "retrains": 2, "promotions": 1, "compute_s": 99}
    totals |= {"scored": 1, "batches": 1, "training_s": 12.4}
    (results / "policies_flights.json").write_text(
        json.dumps(
            {
                "dataset": "flights",
                "batching": "month",
                "quick": True,
                "llm": "builtin",
                "batches": ["2013-01", "2013-02"],
                "machine": MACHINE,
                "totals": {"never": totals},
            }
        )
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n\n{BEGIN}\nold tables\n{END}\n\nafter\n")
    render_readme(results, readme)
    text = readme.read_text()
    assert text.startswith("# intro\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert "old tables" not in text
    assert "### Scenarios: flights (quick, LLM `ollama:qwen`)" in text
    assert (
        "| abrupt_concept_drift | none | - | - | 50% | missed | 25% | 0% | 0% | 0 | 1 | 2 | 2 "
        "| 0.50 | - | 30 | 12 | 3456 |" in text
    )
    assert "| no_drift | none | - | - | 50% | - |" in text
    assert "### Causes" not in text  # results from before issue 21 have no causes
    assert "![flights](results/policies_flights.png)" in text
    assert "| never | 0.680 | 0.600 | 1/1 | 2 | - | 1 | 99 | 12 |" in text  # no recalibrations key
    assert "Prequential ROC AUC (higher is better) on 1 batches" in text
    render_readme(results, readme)
    assert readme.read_text() == text  # idempotent


def test_a_regression_policy_table_names_rmse_and_the_target(tmp_path: Path) -> None:
    from evals.baselines import PolicyRow, PolicyRun
    from evals.policy_report import target_check

    def run(policy: str, scores: list[float], retrain: set[int]) -> PolicyRun:
        rows = [
            PolicyRow(i + 1, f"b{i + 1}", 10, 0, score, i + 1 in retrain, i + 1 in retrain)
            for i, score in enumerate(scores)
        ]
        return PolicyRun(policy, rows, 5.0, {"training_s": 2.0}, metric="rmse")

    runs = [run("every batch", [40.0, 42.0, 41.0], {1, 2, 3}), run("driftpilot", [40, 43, 42], {2})]
    (tmp_path / "policies_flights_delay.json").write_text(
        json.dumps(
            {
                "dataset": "flights_delay",
                "batching": "month",
                "quick": False,
                "llm": "builtin",
                "batches": ["2013-01", "2013-02", "2013-03", "2013-04"],
                "machine": MACHINE,
                "metric": "rmse",
                "totals": {r.policy: r.totals() for r in runs},
                "target": target_check(runs),
            }
        )
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    text = render_readme(tmp_path, readme).read_text()
    assert "Prequential RMSE (lower is better) on 3 batches" in text
    assert "| policy | mean RMSE | worst RMSE |" in text
    assert "| every batch | 41.000 | 42.000 | 3/3 | 3 | 0 | 3 | 5 | 2 |" in text  # worst = highest
    assert "| driftpilot | 41.667 | 43.000 | 3/3 | 1 | 0 | 1 | 5 | 2 |" in text
    assert "Target NOT MET" in text  # a higher mean RMSE than every batch's


def test_a_readme_without_markers_is_refused(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="markers"):
        render_readme(tmp_path, readme)


def test_the_estimate_error_cell() -> None:
    from evals.harness import estimate_text

    assert estimate_text(None) == "-"
    assert estimate_text({"batches": 0, "mean": None, "max": None}) == "-"
    assert estimate_text({"batches": 3, "mean": 0.0123, "max": 0.02}) == "0.012 / 0.020 (3)"


def test_the_causes_table_is_rendered_per_backend(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    group = {
        "scenarios": 2,
        "batches": 12,
        "cause_macro_f1": 0.5,
        "drifted_batches": 6,
        "correct_rate": 0.75,
        "unsafe_actions": 1,
        "false_retrains": 2,
        "retrains": 4,
        "promotions": 2,
        "retrain_yield": 0.5,
        "recalibrations": 1,
        "compute_s": 80.4,
        "tokens": 0,
        "fallbacks": 3,
    }
    score = {
        "scenario": "deploy_drop",
        "kind": "broken_feature",
        "variant": "note",
        "cause": "pipeline_defect",
        "true_causes": [None, "pipeline_defect", "pipeline_defect"],
        "read_causes": ["unknown", "pipeline_defect", "world_change"],
        "onset": 1,
        "correct_rate": 0.5,
        "detection_delay": 0,
        "false_alarm_monitor": 0.0,
        "false_alarm_retrain": 0.0,
        "false_alarm_quarantine": 0.0,
        "unsafe_promotions": 0,
        "citation_flags": 0,
        "retrains": 1,
        "retrain_yield": None,
        "wall_s": 20.0,
        "tokens": 0,
    }
    (results / "scenarios_flights_quick_reference.json").write_text(
        json.dumps(
            {
                "dataset": "flights",
                "tier": "quick",
                "llm": "reference",
                "stream": {"batches": 3, "onset": 1, "batch_rows": 1000},
                "machine": MACHINE,
                "variants_shared": False,
                "max_failed_retrains": 2,
                "causes": {"note decides: its note": group},
                "scores": [score],
            }
        )
    )
    builtin = {**group, "correct_rate": 0.5}
    (results / "scenarios_flights_quick.json").write_text(
        json.dumps(
            {
                "dataset": "flights",
                "tier": "quick",
                "llm": "builtin",
                "stream": {"batches": 3, "onset": 1, "batch_rows": 1000},
                "machine": MACHINE,
                "variants_shared": True,
                "causes": {"note decides: its note": builtin},
                "scores": [score],
            }
        )
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    text = render_readme(results, readme).read_text()
    assert "### Causes: flights (quick, LLM `reference`)" in text
    assert (
        "`reference` 75% correct actions, builtin 50% (+25 points; target at least +10: met)"
        in (text)
    )
    assert "builtin reads no notes" in text
    assert "| note decides: its note | 2 | 0.50 | 75% | 1 | 2 | 4 | 0.50 | 1 | 80 | 0 | 3 |" in text
    assert "| deploy_drop | note | pipeline_defect | 1/2 | 50% | 0 |" in text
