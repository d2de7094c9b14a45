"""``driftpilot eval`` on tables a user brings: a CSV with string times and a text label, a
Parquet file ordered by its rows, each approval mode; the eval keeps to a home of its own."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from driftpilot.cli import app
from driftpilot.core.settings import Settings
from evals.byo import compare_baselines
from evals.harness import StreamSpec, cut, infer_features, plane_for, run_stream
from tests.integration.test_control_graph import FORCE_RETRAIN, HIGH_RISK, merge

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def quarter(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """2,000 real flights from each of January, February and March 2013, as a user exports
    them: times as text, the label as words, no 'month' column."""
    frames = [months[m].sample(n=2000, seed=3) for m in ("2013-01", "2013-02", "2013-03")]
    return (
        pl.concat(frames)
        .drop("month", "arr_delay", "delay_class")
        .with_columns(
            pl.col("time_hour").dt.strftime("%Y-%m-%d %H:%M:%S"),
            pl.when(pl.col("delayed") == 1)
            .then(pl.lit("late"))
            .otherwise(pl.lit("on time"))
            .alias("delayed"),
        )
    )


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), terminal_width=200)


def test_eval_on_a_csv(settings: Settings, tmp_path: Path, quarter: pl.DataFrame) -> None:
    data = tmp_path / "flights.csv"
    quarter.write_csv(data)
    home, out = tmp_path / "eval-home", tmp_path / "out.json"
    args = ["eval", "--data", str(data), "--target", "delayed", "--positive", "late"]
    result = invoke(*args, "--time", "time_hour", "--home", str(home), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "'on time' -> 0, 'late' -> 1" in result.output
    assert "2013-02" in result.output and "2013-03" in result.output
    assert "audit verified" in result.output
    report = json.loads(out.read_text())
    assert [r["batch_id"] for r in report["rows"]] == ["2013-02", "2013-03"]
    assert report["llm"] == "builtin" and report["audit_verified"] is True
    first = report["rows"][0]
    assert first["action"] in ("none", "monitor", "retrain") and 0.5 < first["champion_metric"] < 1
    assert set(report["meta"]["features"]["categorical"]) == {"carrier", "origin", "dest"}
    # The eval's models live in its own home, not in the user's.
    assert (home / "driftpilot.db").exists() and not (settings.home / "driftpilot.db").exists()
    # The baselines, scored on the same batches beside the loop.
    comparison = report["comparison"]
    assert comparison["metric"] == "roc_auc" and comparison["higher_is_better"] is True
    totals = comparison["totals"]
    assert list(totals) == ["never", "every batch", "every 3", "driftpilot"]
    assert [totals[p]["retrains"] for p in ("never", "every batch", "every 3")] == [0, 2, 0]
    assert totals["every batch"]["yield"] == 1.0 and totals["never"]["yield"] is None
    loop = totals["driftpilot"]
    assert loop["retrains"] == sum(r["retrained"] for r in report["rows"])
    assert loop["promotions"] == sum(r["promoted"] is not None for r in report["rows"])
    assert loop["compute_s"] > 0 and "yield" in loop
    for policy in comparison["policies"].values():
        assert [r["batch_id"] for r in policy["rows"]] == ["2013-02", "2013-03"]
        assert all(0.5 < r["score"] < 1 for r in policy["rows"])
    # The loop's column is its champion's own metric; never's is the first model's, unchanged.
    loop_scores = [r["score"] for r in comparison["policies"]["driftpilot"]["rows"]]
    assert loop_scores == [r["champion_metric"] for r in report["rows"]]
    assert (
        "every batch" in result.output and "DriftPilot vs retraining every batch" in result.output
    )
    plot = Path(comparison["plot"])
    assert plot.parent == out.parent and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_by_row_order_with_rejected_and_waiting_approvals(
    settings: Settings, tmp_path: Path, quarter: pl.DataFrame
) -> None:
    data = tmp_path / "flights.parquet"
    quarter.drop("time_hour").write_parquet(data)
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(merge(FORCE_RETRAIN, HIGH_RISK)))
    common = ["eval", "--data", str(data), "--target", "delayed", "--positive", "late"]
    common += ["--order-by", "row", "--batch", "2000", "--policy", str(policy), "--no-baselines"]
    for mode, outcome in (("reject", "approval_rejected"), ("wait", "waiting_approval")):
        out = tmp_path / f"{mode}.json"
        result = invoke(
            *common, "--approvals", mode, "--max-batches", "2",
            "--home", str(tmp_path / mode), "--out", str(out),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text())
        rows = report["rows"]
        assert "comparison" not in report and "DriftPilot vs retraining" not in result.output
        assert len(rows) == 1 and rows[0]["batch_id"] == "rows-000002000"
        assert rows[0]["action"] == "retrain" and rows[0]["risk_tier"] == "high"
        assert rows[0]["outcome"] == outcome and rows[0]["promoted"] is None


@pytest.mark.parametrize(
    "target,task,metric",
    [("delay_class", "multiclass", "roc_auc"), ("arr_delay", "regression", "rmse")],
)
def test_eval_on_a_multiclass_and_a_regression_target(
    settings: Settings,
    tmp_path: Path,
    months: dict[str, pl.DataFrame],
    target: str,
    task: str,
    metric: str,
) -> None:
    """Four delay classes (text) and a delay in minutes go through ``driftpilot eval`` as
    they are: the task is inferred from the target, and the champion is measured in that
    task's metric (macro ROC AUC; RMSE in minutes). The multiclass one with its baselines."""
    frame = pl.concat(
        [months[m].drop_nulls(target).sample(n=800, seed=7) for m in ("2013-01", "2013-02")]
    ).drop("month", "delayed", *({"delay_class", "arr_delay"} - {target}))
    data, out = tmp_path / f"{task}.parquet", tmp_path / f"{task}.json"
    frame.write_parquet(data)
    args = ["eval", "--data", str(data), "--target", target, "--time", "time_hour"]
    args += ["--home", str(tmp_path / "home"), "--out", str(out), "--k", "1"]
    result = invoke(*args, *(["--no-baselines"] if task == "regression" else []))
    assert result.exit_code == 0, result.output
    assert f"a {task} model" in result.output and "-> 0" not in result.output  # not mapped
    report = json.loads(out.read_text())
    assert report["metric"] == metric and report["higher_is_better"] == (task == "multiclass")
    (row,) = report["rows"]
    assert row["batch_id"] == "2013-02" and row["champion_metric"] is not None
    if task == "multiclass":
        assert 0.5 < row["champion_metric"] < 1
        comparison = report["comparison"]
        assert comparison["task"] == "multiclass" and comparison["metric"] == "roc_auc"
        assert comparison["totals"]["every batch"]["retrains"] == 1
    else:
        assert row["champion_metric"] > 5  # minutes of delay, not a ROC AUC
        assert "comparison" not in report


def test_eval_errors_are_one_line(settings: Settings, tmp_path: Path) -> None:
    missing = invoke("eval", "--data", str(tmp_path / "nope.csv"), "--target", "y", "--time", "t")
    assert missing.exit_code == 1 and "nope.csv" in missing.output
    assert "Traceback" not in missing.output
    both = invoke("eval", "--dataset", "flights", "--data", str(tmp_path / "x.csv"))
    assert both.exit_code == 1 and "either --data FILE or --dataset NAME" in both.output
    bad = invoke("eval", "--dataset", "flights", "--batch", "fortnight")
    assert bad.exit_code == 1 and "--batch must be" in bad.output


def test_eval_with_a_scripted_llm_counts_its_decisions_and_fallbacks(
    settings: Settings, tmp_path: Path, quarter: pl.DataFrame
) -> None:
    """A model that never answers in JSON: every agent decision is asked of it, falls back to
    the policy's, and the eval counts both (and the audit says so)."""
    data = tmp_path / "flights.parquet"
    quarter.drop("time_hour").write_parquet(data)
    script = tmp_path / "script.json"
    script.write_text(json.dumps(["I would rather not answer in JSON."]))
    out = tmp_path / "scripted.json"
    result = invoke(
        "eval", "--data", str(data), "--target", "delayed", "--positive", "late",
        "--order-by", "row", "--batch", "2000", "--max-batches", "2",
        "--llm", f"scripted:{script}", "--home", str(tmp_path / "h"), "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["backend"] == "scripted"
    (row,) = report["rows"]
    assert row["llm_decisions"] >= 2 and row["fallbacks"] == row["llm_decisions"]
    assert report["totals"]["llm_decisions"] == row["llm_decisions"]
    bad = invoke(
        "eval", "--data", str(data), "--target", "delayed", "--order-by", "row",
        "--llm", f"scripted:{tmp_path / 'none.json'}", "--home", str(tmp_path / "h2"),
    )  # fmt: skip
    assert bad.exit_code == 1 and "cannot read the LLM script" in bad.output


def test_the_baselines_follow_a_regression_models_metric_and_direction(
    settings: Settings, tmp_path: Path, months: dict[str, pl.DataFrame]
) -> None:
    """The comparison is in the model's own metric: RMSE, lower is better, for a delay in
    minutes; the worst batch is the highest RMSE. (Run through the harness, to read what the
    baselines print.)"""
    frame = pl.concat(
        [months[m].drop_nulls("arr_delay").sample(n=1500, seed=5) for m in ("2013-01", "2013-02")]
    ).drop("month", "delayed", "delay_class")
    numeric, categorical, _ = infer_features(frame, ["arr_delay", "time_hour"], None, None)
    spec = StreamSpec(
        name="delay", target="arr_delay", time_col="time_hour", numeric=numeric,
        categorical=categorical,
    )  # fmt: skip
    batches = cut(frame, "time_hour", "month")
    printed = io.StringIO()
    screen = Console(file=printed, width=200)
    plane = plane_for(tmp_path / "home")
    try:
        result = run_stream(plane, spec, batches)
        comparison = compare_baselines(
            plane, spec, batches, result, batch="month", k=1, plot=tmp_path / "p.png",
            console=screen,
        )  # fmt: skip
    finally:
        plane.close()
    assert comparison["task"] == "regression" and comparison["metric"] == "rmse"
    assert comparison["higher_is_better"] is False
    totals = comparison["totals"]
    assert [totals[p]["retrains"] for p in ("never", "every batch", "every 1")] == [0, 1, 1]
    for name, policy in comparison["policies"].items():
        scores = [r["score"] for r in policy["rows"]]
        assert len(scores) == 1 and scores[0] > 5, name  # minutes of delay, not a ROC AUC
        assert totals[name]["worst_score"] == round(max(scores), 4)
    assert totals["driftpilot"]["mean_score"] == round(result.rows[0].champion_metric or 0, 4)
    assert "mean RMSE" in printed.getvalue() and "(lower is better)" in printed.getvalue()
