"""Issue 21's scenario injections (tools.synth): each pipeline defect is really in the rows it
returns, the seasonal repeat shifts exactly its two batches, and a lasting concept change takes
the label's relation to the features away while keeping its prevalence."""

from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest

from driftpilot.core.errors import SynthError
from tools.datasets import FLIGHTS
from tools.synth import GroundTruth, ScenarioSpec, _inject, make_scenario


class _Resampler:
    """A stand-in synthesizer: real rows resampled (the injections, not CTGAN, are tested)."""

    def __init__(self, rows: pl.DataFrame) -> None:
        self.rows, self.seed = rows.select([*FLIGHTS.features, FLIGHTS.target]), 0

    def set_random_state(self, seed: int) -> None:
        self.seed = seed

    def sample(self, n: int) -> pd.DataFrame:
        return self.rows.sample(n=n, seed=self.seed, with_replacement=True).to_pandas()


@pytest.fixture(scope="module")
def rows(jan_sample: pl.DataFrame) -> pl.DataFrame:
    return jan_sample.head(1000)


def _inject_kind(rows: pl.DataFrame, kind: Any, columns: list[str], magnitude: float) -> Any:
    spec = ScenarioSpec(kind=kind, n_batches=2, onset=1, magnitude=magnitude, columns=columns)
    return _inject(rows, rows, FLIGHTS, spec, columns, np.random.default_rng(0))


def test_unit_change_converts_the_column_and_nothing_else(rows: pl.DataFrame) -> None:
    out = _inject_kind(rows, "unit_change", ["temp"], 1.0)
    before, after = rows["temp"].cast(pl.Float64), out["temp"].cast(pl.Float64)
    assert np.allclose(after.to_numpy(), before.to_numpy() * 1.8 + 32, atol=0.51, equal_nan=True)
    assert out.drop("temp").equals(rows.drop("temp"))


def test_join_bug_duplicates_the_given_share_of_rows(rows: pl.DataFrame) -> None:
    out = _inject_kind(rows, "join_bug", [], 0.3)
    assert out.height == 1300
    assert out.is_duplicated().sum() >= 600  # 300 copies and their 300 originals
    assert out.unique().height == rows.unique().height  # nothing new, only copies


def test_default_fill_writes_a_burst_of_zeros_in_one_column(rows: pl.DataFrame) -> None:
    assert (rows["distance"] == 0).sum() == 0
    out = _inject_kind(rows, "default_fill", ["distance"], 0.4)
    zeros = (out["distance"] == 0).mean()
    assert 0.35 < zeros < 0.45
    assert out.drop("distance").equals(rows.drop("distance"))


def test_default_fill_picks_a_column_that_is_rarely_zero(
    rows: pl.DataFrame, jan_sample: pl.DataFrame
) -> None:
    spec = ScenarioSpec(kind="default_fill", n_batches=3, onset=1, batch_rows=300, magnitude=0.4)
    scenario = make_scenario(_Resampler(rows), jan_sample, FLIGHTS, spec)
    (column,) = scenario.truth.columns
    assert (jan_sample[column] == 0).mean() < 0.01  # type: ignore[operator]
    zeros = [(b.frame[column] == 0).mean() for b in scenario.batches]
    assert zeros[0] < 0.01 and zeros[1] > 0.3 and zeros[2] > 0.3


def test_broken_feature_keeps_the_distribution_and_breaks_the_rows(rows: pl.DataFrame) -> None:
    out = _inject_kind(rows, "broken_feature", ["sched_dep_time"], 1.0)
    assert sorted(out["sched_dep_time"].to_list()) == sorted(rows["sched_dep_time"].to_list())
    same = (out["sched_dep_time"] == rows["sched_dep_time"]).mean()
    assert same < 0.1
    # hour and sched_dep_time agreed row by row; after the break they do not.
    agree = (out["sched_dep_time"] // 100 == out["hour"]).mean()
    assert agree < 0.3


def test_lasting_concept_change_keeps_prevalence_and_loses_the_relation(
    rows: pl.DataFrame,
) -> None:
    out = _inject_kind(rows, "lasting_concept_change", [], 0.9)
    assert out["delayed"].sum() == rows["delayed"].sum()
    kept = (out["delayed"] == rows["delayed"]).mean()
    # 10 % kept, and among the shuffled rows a label matches by chance at about
    # p^2 + (1-p)^2 of the time.
    rate = float(rows["delayed"].mean())  # type: ignore[arg-type]
    chance = rate**2 + (1 - rate) ** 2
    assert kept < 0.1 + 0.9 * chance + 0.05
    assert out.drop("delayed").equals(rows.drop("delayed"))


def test_seasonal_repeat_shifts_only_its_two_batches(
    rows: pl.DataFrame, jan_sample: pl.DataFrame
) -> None:
    spec = ScenarioSpec(
        kind="seasonal_repeat",
        n_batches=6,
        onset=4,
        period=3,
        batch_rows=400,
        columns=["temp"],
        magnitude=2.0,
    )
    scenario = make_scenario(_Resampler(rows), jan_sample, FLIGHTS, spec)
    truth = scenario.truth
    assert truth.period == 3 and [truth.drifted(i) for i in range(6)] == [
        False,
        True,
        False,
        False,
        True,
        False,
    ]
    std = float(jan_sample["temp"].std())  # type: ignore[arg-type]
    means = [float(b.frame["temp"].mean()) for b in scenario.batches]
    quiet = np.mean([means[i] for i in (0, 2, 3, 5)])
    assert means[1] - quiet > std and means[4] - quiet > std
    assert abs(means[1] - means[4]) < 0.3 * std  # the same shift, again


def test_a_seasonal_repeat_needs_its_first_shift_in_the_stream(
    rows: pl.DataFrame, jan_sample: pl.DataFrame
) -> None:
    spec = ScenarioSpec(kind="seasonal_repeat", n_batches=4, onset=2, period=3, batch_rows=100)
    with pytest.raises(SynthError, match="needs its first shift"):
        make_scenario(_Resampler(rows), jan_sample, FLIGHTS, spec)


def test_drifted_batches_of_a_plain_drift_start_at_the_onset() -> None:
    truth = GroundTruth(kind="join_bug", onset=2, columns=[], magnitude=0.3, corruption=None)
    assert [truth.drifted(i) for i in range(4)] == [False, False, True, True]
    none = GroundTruth(kind="none", onset=None, columns=[], magnitude=0.0, corruption=None)
    assert not any(none.drifted(i) for i in range(4))


class _Distinct(_Resampler):
    """Real rows drawn without replacement: every row of a sample is distinct."""

    def sample(self, n: int) -> pd.DataFrame:
        return self.rows.sample(n=n, seed=self.seed).to_pandas()


def test_a_label_shift_batch_repeats_no_row(rows: pl.DataFrame, jan_sample: pl.DataFrame) -> None:
    spec = ScenarioSpec(kind="label_shift", n_batches=3, onset=1, batch_rows=300, magnitude=2.5)
    scenario = make_scenario(_Distinct(jan_sample), jan_sample, FLIGHTS, spec)
    before, *after = (b.frame for b in scenario.batches)
    for batch in after:
        assert batch.height == 300
        # Copies of a row on both sides of the holdout split were a quick retrain's free win.
        assert batch.drop(FLIGHTS.time_col).is_duplicated().sum() == 0
        assert batch["delayed"].mean() > 1.8 * before["delayed"].mean()
