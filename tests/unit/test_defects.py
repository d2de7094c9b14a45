"""Pipeline defect signatures (tools.defects through tools.quality.check_batch): each fires on
its defect and names it; none fires on a clean real batch, a covariate shift of 1.5 std or a
range shift of 1.5 ranges (plausible data: never quarantined)."""

from __future__ import annotations

import itertools
from pathlib import Path

import polars as pl
import pytest

from tools.datasets import CREDITCARD, FLIGHTS
from tools.defect_rules import UNIT_FACTORS, DefectThresholds
from tools.defects import QUANTILES, distance, unit_change
from tools.quality import QualityVerdict, check_batch
from tools.quality_profile import ReferenceProfile, profile_reference

COLUMNS = [*FLIGHTS.features, FLIGHTS.target, FLIGHTS.time_col]
KW = {"time_columns": [FLIGHTS.time_col], "label_columns": [FLIGHTS.target]}


@pytest.fixture(scope="module")
def halves(months: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """January in two random halves: a reference and a clean batch from the same weeks."""
    jan = months["2013-01"].select(COLUMNS).sample(fraction=1.0, shuffle=True, seed=3)
    middle = jan.height // 2
    return jan.head(middle).sort(FLIGHTS.time_col), jan.tail(middle).sort(FLIGHTS.time_col)


@pytest.fixture(scope="module")
def reference(halves: tuple[pl.DataFrame, pl.DataFrame]) -> ReferenceProfile:
    return profile_reference(halves[0], COLUMNS)


@pytest.fixture(scope="module")
def batch(halves: tuple[pl.DataFrame, pl.DataFrame]) -> pl.DataFrame:
    return halves[1]


def signatures(verdict: QualityVerdict) -> list[str]:
    return [i.signature for i in verdict.errors if i.signature]


def test_a_clean_batch_has_no_signature(batch: pl.DataFrame, reference: ReferenceProfile) -> None:
    verdict = check_batch(batch, reference, **KW)  # type: ignore[arg-type]
    assert verdict.ok, verdict.reason()
    assert verdict.signature() == ""


@pytest.mark.parametrize(
    ("column", "label"),
    [
        ("temp", "x1.8+32"),
        ("temp", "(x-32)/1.8"),
        ("pressure", "x1000"),
        ("humid", "x0.01"),
        ("distance", "x0.001"),
        ("distance", "x100"),
    ],
)
def test_a_unit_change_is_named_with_its_factor(
    batch: pl.DataFrame, reference: ReferenceProfile, column: str, label: str
) -> None:
    factor = next(f for f in UNIT_FACTORS if f.label == label)
    rescaled = batch.with_columns(pl.col(column) * factor.scale + factor.offset)
    verdict = check_batch(rescaled, reference, **KW)  # type: ignore[arg-type]
    assert not verdict.ok
    assert signatures(verdict) == [f"unit_change:{column} {label}"]
    [issue] = [i for i in verdict.errors if i.check == "unit_change"]
    assert issue.column == column and label in issue.message and "median" in issue.message


def test_an_integer_column_rounded_after_its_change_is_named_too(
    batch: pl.DataFrame, reference: ReferenceProfile
) -> None:
    rescaled = batch.with_columns((pl.col("distance") * 100).cast(pl.Int64))
    assert signatures(check_batch(rescaled, reference, **KW)) == ["unit_change:distance x100"]  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["covariate_shift", "range_shift"])
def test_shifts_are_no_defect(
    halves: tuple[pl.DataFrame, pl.DataFrame],
    batch: pl.DataFrame,
    reference: ReferenceProfile,
    kind: str,
) -> None:
    """evals' covariate_shift (+1.5 reference std) and range_shift (+1.5 reference ranges), on
    every numeric column in turn: plausible data, accepted with warnings at most."""
    ref = halves[0]
    for column in FLIGHTS.numeric:
        values = ref[column].cast(pl.Float64)
        step = (
            1.5 * float(values.std())  # type: ignore[arg-type]
            if kind == "covariate_shift"
            else 1.5 * (float(values.max()) - float(values.min()))  # type: ignore[arg-type]
        )
        moved = batch.with_columns((pl.col(column).cast(pl.Float64) + step).alias(column))
        verdict = check_batch(moved, reference, **KW)  # type: ignore[arg-type]
        assert verdict.ok, (column, verdict.reason())


def test_a_null_burst_below_the_storm_is_named(
    batch: pl.DataFrame, reference: ReferenceProfile
) -> None:
    """18 % nulls where January had 0.2 %: under the storm's 20-point rise, still a burst."""
    burst = batch.with_columns(
        pl.when(pl.int_range(pl.len()) % 100 < 18)
        .then(None)
        .otherwise(pl.col("temp"))
        .alias("temp")
    )
    verdict = check_batch(burst, reference, **KW)  # type: ignore[arg-type]
    assert signatures(verdict) == ["null_burst:temp"]
    [issue] = verdict.errors
    assert issue.check == "null_spike" and "burst of nulls" in issue.message
    # the same share in a column mostly null in the reference (wind gusts) is the season
    gusts = batch.with_columns(
        pl.when(pl.int_range(pl.len()) % 100 < 30)
        .then(None)
        .otherwise(pl.col("wind_gust"))
        .alias("wind_gust")
    )
    assert check_batch(gusts, reference, **KW).ok  # type: ignore[arg-type]


def test_a_burst_of_one_default_value_is_named(
    batch: pl.DataFrame, reference: ReferenceProfile
) -> None:
    zeros = batch.with_columns(
        pl.when(pl.int_range(pl.len()) % 10 < 4)
        .then(0)
        .otherwise(pl.col("distance"))
        .alias("distance")
    )
    verdict = check_batch(zeros, reference, **KW)  # type: ignore[arg-type]
    assert signatures(verdict) == ["default_burst:distance=0"]
    assert "40% of column 'distance' holds the one value 0" in verdict.reason()
    blanks = batch.with_columns(
        pl.when(pl.int_range(pl.len()) % 10 < 3)
        .then(pl.lit(""))
        .otherwise(pl.col("carrier"))
        .alias("carrier")
    )
    assert signatures(check_batch(blanks, reference, **KW)) == ["default_burst:carrier=''"]  # type: ignore[arg-type]
    # a value the numbers pile up on though no list names it (nulls filled with the mean)
    mean = float(batch["pressure"].mean())  # type: ignore[arg-type]
    filled = batch.with_columns(pl.col("pressure").fill_null(mean))
    spiked = filled.with_columns(
        pl.when(pl.int_range(pl.len()) % 10 < 4)
        .then(mean)
        .otherwise(pl.col("pressure"))
        .alias("pressure")
    )
    assert signatures(check_batch(spiked, reference, **KW)) == [  # type: ignore[arg-type]
        f"default_burst:pressure={mean:g}"
    ]


def test_a_common_value_piling_up_is_a_quiet_batch(
    batch: pl.DataFrame, reference: ReferenceProfile
) -> None:
    """A day's batch holds one weekday (14 % of January); on a calm day half the wind is 0
    (5 % of January): no defect. A shifted pile (rain in 7 % of hours, all of it moved) is a
    shift: the pile is no larger than the reference's."""
    day = batch.with_columns(pl.lit(3, dtype=batch["weekday"].dtype).alias("weekday"))
    calm = batch.with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0)
        .then(0.0)
        .otherwise("wind_speed")
        .alias("wind_speed")
    )
    rain = batch.with_columns(pl.col("precip") + 0.3)
    for quiet in (day, calm, rain):
        verdict = check_batch(quiet, reference, **KW)  # type: ignore[arg-type]
        assert verdict.signature() == "", verdict.reason()


def test_duplicated_rows_and_keys_are_named(
    batch: pl.DataFrame, reference: ReferenceProfile
) -> None:
    copies = batch.sample(fraction=0.3, seed=2)
    joined = pl.concat([batch, copies])
    verdict = check_batch(joined, reference, **KW)  # type: ignore[arg-type]
    assert signatures(verdict) == ["duplicate_rows"]
    [issue] = verdict.errors
    assert issue.value == pytest.approx(0.3 / 1.3, abs=0.01)
    # copies stamped with a time of their own (the load's) repeat their rows all the same
    stamped = copies.with_columns(pl.col(FLIGHTS.time_col) + pl.duration(minutes=7))
    verdict = check_batch(pl.concat([batch, stamped]), reference, **KW)  # type: ignore[arg-type]
    assert signatures(verdict) == ["duplicate_rows"]
    keyed = batch.with_row_index("id")
    assert check_batch(keyed, reference, key_columns=["id"], **KW).ok  # type: ignore[arg-type]
    twice = pl.concat([keyed, keyed.head(200).with_columns(pl.col("temp") + 1)])
    verdict = check_batch(twice, reference, key_columns=["id"], **KW)  # type: ignore[arg-type]
    assert signatures(verdict) == ["duplicate_keys:id"]


def test_a_spread_column_gone_constant_is_named(
    batch: pl.DataFrame, reference: ReferenceProfile
) -> None:
    stuck = batch.with_columns(pl.lit(41.0).alias("temp"))
    verdict = check_batch(stuck, reference, **KW)  # type: ignore[arg-type]
    assert signatures(verdict) == ["gone_constant:temp"]
    [issue] = verdict.errors
    assert issue.check == "constant_column" and "gone constant" in issue.message
    # a column of few values stuck at a common one warns, as before
    quiet = batch.with_columns(pl.lit(10.0).alias("visib"))
    verdict = check_batch(quiet, reference, **KW)  # type: ignore[arg-type]
    assert verdict.ok and ("constant_column", "warning") in {
        (i.check, i.severity) for i in verdict.issues
    }


def test_a_scan_names_the_same_signatures(
    tmp_path: Path, batch: pl.DataFrame, reference: ReferenceProfile
) -> None:
    broken = pl.concat([batch, batch.head(2000)]).with_columns(
        pl.col("temp") * 1.8 + 32,
        pl.when(pl.int_range(pl.len()) % 10 < 4)
        .then(0)
        .otherwise(pl.col("distance"))
        .alias("distance"),
    )
    path = tmp_path / "b.parquet"
    broken.write_parquet(path, row_group_size=1000)
    streamed = check_batch(pl.scan_parquet(path), reference, **KW)  # type: ignore[arg-type]
    assert streamed == check_batch(broken, reference, **KW)  # type: ignore[arg-type]
    assert set(signatures(streamed)) == {
        "unit_change:temp x1.8+32",
        "default_burst:distance=0",
        "duplicate_rows",
    }


def test_the_distance_reads_shares_of_rows() -> None:
    same = [float(i) for i in range(len(QUANTILES))]
    assert distance(same, same) == 0.0
    assert distance(same, [v + 100 for v in same]) == pytest.approx(0.5)
    limits = DefectThresholds()
    assert unit_change("x", same, same, 1000, limits) is None
    assert unit_change("x", [v * 1000 for v in same], same, 10, limits) is None  # few rows


def _no_signature_between(batches: list[pl.DataFrame], columns: list[str], spec: object) -> int:
    """Each batch checked against the one before it as reference (profiled along its time
    column, as ingestion does): the checks made."""
    flagged = []
    for before, after in itertools.pairwise(batches):
        verdict = check_batch(
            after,
            profile_reference(before, columns, time_column=spec.time_col),  # type: ignore[attr-defined]
            time_columns=[spec.time_col],  # type: ignore[attr-defined]
            label_columns=[spec.target],  # type: ignore[attr-defined]
        )
        if verdict.signature():
            flagged.append(verdict.signature())
    assert flagged == []
    return len(batches) - 1


def test_no_clean_real_month_is_flagged(months: dict[str, pl.DataFrame]) -> None:
    """Every flights month against the month before (calendar months and equal-size batches);
    the all-pairs sweep with credit cards is the full_data test below."""
    calendar = [frame.select(COLUMNS) for _, frame in sorted(months.items())]
    rows = pl.concat(calendar)
    size = rows.height // 12
    equal = [rows.slice(i * size, size) for i in range(12)]
    assert _no_signature_between(calendar, COLUMNS, FLIGHTS) == 11
    assert _no_signature_between(equal, COLUMNS, FLIGHTS) == 11


@pytest.mark.full_data
def test_no_clean_real_batch_is_flagged_against_any_reference(
    months: dict[str, pl.DataFrame], settings: object
) -> None:
    """All pairs: each flights month against every other month, each credit-card 4-hour
    batch against every other (132 checks each)."""
    from tools.datasets import creditcard

    calendar = [frame.select(COLUMNS) for _, frame in sorted(months.items())]
    cards = creditcard()
    columns = [*CREDITCARD.features, CREDITCARD.target, CREDITCARD.time_col]
    four_hours = [cards.filter(pl.col("Time") // 14400 == k).select(columns) for k in range(12)]
    for batches, cols, spec in ((calendar, COLUMNS, FLIGHTS), (four_hours, columns, CREDITCARD)):
        for i, ref in enumerate(batches):
            others = [ref, *[b for j, b in enumerate(batches) if j != i]]
            profile = profile_reference(ref, cols, time_column=spec.time_col)
            for other in others[1:]:
                verdict = check_batch(
                    other, profile, time_columns=[spec.time_col], label_columns=[spec.target]
                )
                assert verdict.signature() == "", (i, verdict.reason())


def test_a_pile_at_the_reference_bound_is_no_fill(
    batch: pl.DataFrame, reference: ReferenceProfile
) -> None:
    """Air saturated on a foggy day: a quarter of the hours at 100 % humidity, the reference's
    largest value (0.6 % of January): a bound reached, not a default written."""
    top = float(batch["humid"].max())  # type: ignore[arg-type]
    fog = batch.with_columns(
        pl.when(pl.int_range(pl.len()) % 4 == 0).then(top).otherwise(pl.col("humid")).alias("humid")
    )
    verdict = check_batch(fog, reference, **KW)  # type: ignore[arg-type]
    assert verdict.signature() == "", verdict.reason()


def _clock_frame(days: int, seed: int, start_day: int = 1) -> pl.DataFrame:
    """A row every 10 seconds over ``days`` days: its hour of the day, day of the month and a
    noise column ``x``."""
    import datetime as dt

    import numpy as np

    first = dt.datetime(2024, 1, start_day)
    times = pl.datetime_range(
        first, first + dt.timedelta(days=days), "10s", eager=True, closed="left"
    )
    noise = np.random.default_rng(seed).normal(size=times.len())
    return pl.DataFrame({"t": times, "x": noise}).with_columns(
        hour=pl.col("t").dt.hour(), day=pl.col("t").dt.day()
    )


def test_a_calendar_column_constant_over_its_own_span_is_no_defect() -> None:
    """An hour-of-day (24 values, none common) holds one value through an hourly batch, a day
    of the month through a daily one: so did the reference over such spans. A column that
    changed every 10 seconds in the reference, stuck through the batch, still is a defect."""
    reference = _clock_frame(24, seed=0)
    profile = profile_reference(reference, time_column="t")
    spans = {c.name: c.shape.steady_span for c in profile.columns if c.shape}
    assert spans == {"t": None, "x": 10.0, "hour": 3600.0, "day": 86400.0}
    later = _clock_frame(3, seed=1, start_day=25)
    day = later.filter(pl.col("day") == 26)
    hour = day.filter(pl.col("hour") == 13)
    for batch in (hour, day):
        verdict = check_batch(batch, profile, time_columns=["t"])
        assert verdict.ok, verdict.reason()
        stuck = batch.with_columns(pl.lit(41.0).alias("x"))
        verdict = check_batch(stuck, profile, time_columns=["t"])
        assert "gone_constant:x" in signatures(verdict)
        assert not any("hour" in s or "day" in s for s in signatures(verdict))
    # read without the time, the rows' spread alone decides: both calendar columns flagged
    untimed = profile_reference(reference)
    assert signatures(check_batch(hour, untimed, time_columns=["t"])) == [
        "gone_constant:hour",
        "gone_constant:day",
    ]


def test_a_new_year_or_version_is_no_default_burst() -> None:
    """A column of few values taking a value beyond the reference's (the next year) is a shift,
    however many rows hold it; a pile strictly inside the range stays a fill (the mean test
    above)."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = 5000
    reference = pl.DataFrame({"year": rng.integers(2017, 2022, rows), "x": rng.normal(size=rows)})
    batch = pl.DataFrame(
        {
            "year": np.where(rng.random(rows) < 0.98, 2022, 2021),
            "x": rng.normal(size=rows),
        }
    )
    verdict = check_batch(batch, profile_reference(reference))
    assert verdict.ok, verdict.reason()
    assert "out_of_range" in {i.check for i in verdict.warnings}


def _discrete(rows: int, seed: int) -> pl.DataFrame:
    """Five columns of 10 values each: 100,000 rows possible, so i.i.d. rows repeat more the
    more there are (2,000: about 1 %; 20,000: 9 %; 100,000: 37 %)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return pl.DataFrame({c: rng.integers(0, 10, rows) for c in "abcde"})


def test_duplicates_are_compared_at_the_batchs_row_count() -> None:
    """Clean batches 10 and 50 times the reference's size repeat their rows as the reference's
    rows would at that size: no join. A join at the reference's size is still named."""
    profile = profile_reference(_discrete(2000, seed=0))
    assert profile.duplicate_share is not None and profile.duplicate_share < 0.02
    for rows in (20_000, 100_000):
        batch = _discrete(rows, seed=rows)
        assert 1 - batch.unique().height / rows > 0.05  # the old rule's rise
        verdict = check_batch(batch, profile)
        assert verdict.ok, (rows, verdict.reason())
    batch = _discrete(2000, seed=1)
    joined = pl.concat([batch, batch.sample(fraction=0.3, seed=2)])
    assert signatures(check_batch(joined, profile)) == ["duplicate_rows"]
