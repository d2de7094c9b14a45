"""evals/bench_big.py's pure parts: the batch's 20 columns and the target verdict."""

from __future__ import annotations

from evals import bench_big
from tools.datasets import FLIGHTS


def test_the_big_batch_has_twenty_columns_the_model_knows_but_two() -> None:
    columns = bench_big.batch_columns()
    assert len(columns) == len(set(columns)) == 20
    assert set(columns) - set(bench_big.DERIVED) == {
        *FLIGHTS.features,
        FLIGHTS.target,
        FLIGHTS.time_col,
    }


def test_verdict_judges_each_target_and_says_when_unmeasured() -> None:
    assert bench_big.verdict({"wall_s": 60.0, "peak_rss_gb": 4.2}) == {
        "time_met": True,
        "rss_met": False,
    }
    assert bench_big.verdict({"wall_s": 61.0, "peak_rss_gb": None}) == {
        "time_met": False,
        "rss_met": None,
    }
