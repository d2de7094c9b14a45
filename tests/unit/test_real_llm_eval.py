"""evals.real_llm's comparison of the LLM's year with builtin's."""

from __future__ import annotations

from evals.real_llm import compare


def month(batch: str, action: str, outcome: str, auc: float | None) -> dict[str, object]:
    promoted = 2 if outcome == "promoted" else None
    return {
        "batch": batch,
        "action": action,
        "outcome": outcome,
        "champion_auc": auc,
        "promoted": promoted,
    }


def test_a_batch_scored_in_one_year_only_is_left_out_of_the_paired_auc() -> None:
    llm = [
        month("02", "retrain", "promoted", 0.60),
        month("03", "quarantine", "quarantined", None),
        month("04", "monitor", "no_retrain:monitor", 0.70),
    ]
    builtin = [
        month("02", "retrain", "promoted", 0.60),
        month("03", "none", "no_retrain:none", 0.50),  # a hard month the LLM never scored
        month("04", "none", "no_retrain:none", 0.80),
    ]
    result = compare(llm, builtin)
    assert [d["batch"] for d in result["differ"]] == ["03", "04"]
    assert result["prequential_auc"] == {"llm": 0.65, "builtin": 0.6333}  # flatters the LLM
    assert result["prequential_auc_both_scored"] == {"batches": 2, "llm": 0.65, "builtin": 0.7}
    assert result["retrains"] == {"llm": 1, "builtin": 1}
    assert result["promotions"] == {"llm": 1, "builtin": 1}


def test_the_demos_rows_name_their_score_and_metric() -> None:
    """The demo's rows say ``champion_score`` and ``metric`` since models have a task: the
    comparison reads them (it once read only ``champion_auc`` and compared 0 batches)."""

    def row(batch: str, action: str, score: float | None) -> dict[str, object]:
        outcome = f"no_retrain:{action}"
        return {"batch": batch, "action": action, "outcome": outcome, "metric": "roc_auc"} | {
            "champion_score": score,
            "promoted": None,
        }

    llm = [row("02", "monitor", 0.62), row("03", "none", 0.70)]
    builtin = [row("02", "none", 0.62), row("03", "none", 0.68)]
    result = compare(llm, builtin)
    assert result["prequential_auc_both_scored"] == {"batches": 2, "llm": 0.66, "builtin": 0.65}
    assert result["differ"][0]["llm_champion_auc"] == 0.62
    # Another metric's score is no ROC AUC.
    rmse = [{**row("02", "none", 40.0), "metric": "rmse"}]
    assert compare(rmse, rmse)["prequential_auc"] == {"llm": None, "builtin": None}
