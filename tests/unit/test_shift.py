import math

import numpy as np
import polars as pl
import pytest

from driftpilot.core.errors import DataError, SchemaError
from tools.shift import ShiftConfig, domain_classifier, effect_sizes

NUMERIC = ["a", "b", "c"]
CATEGORICAL = ["city"]
CITIES = ["paris", "lyon", "nice", "lille"]


def sample(n: int, seed: int, *, shift_a: float = 0.0) -> pl.DataFrame:
    """Rows from one generator: three independent numeric columns (a ~ N(shift_a, 1)) and a
    categorical column."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "a": rng.normal(shift_a, 1.0, n),
            "b": rng.exponential(2.0, n),
            "c": rng.integers(0, 20, n).astype(float),
            "city": rng.choice(CITIES, n, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )


def test_same_distribution_is_not_material() -> None:
    result = effect_sizes(
        sample(3000, 1), sample(3000, 2), numeric=NUMERIC, categorical=CATEGORICAL
    )
    assert [c.column for c in result.columns] and not result.material_columns()
    assert result.material_share == 0.0 and result.weighted_share == 0.0
    assert all(c.value < 0.5 * c.threshold for c in result.columns)
    assert result.skipped_columns == {}


def test_same_distribution_domain_auc_is_chance() -> None:
    check = domain_classifier(
        sample(3000, 1), sample(3000, 2), numeric=NUMERIC, categorical=CATEGORICAL, threads=1
    )
    assert 0.45 <= check.auc <= 0.6
    assert check.n_reference == 3000 and check.n_current == 3000


def test_shifted_column_is_material_and_found_by_the_domain_classifier() -> None:
    reference, current = sample(3000, 1), sample(3000, 2, shift_a=1.5)
    result = effect_sizes(reference, current, numeric=NUMERIC, categorical=CATEGORICAL)
    assert result.material_columns() == ["a"]
    assert result.columns[0].column == "a" and result.columns[0].value > 1.2  # W1 / std ~ 1.5
    assert result.material_share == pytest.approx(0.25)
    check = domain_classifier(
        reference, current, numeric=NUMERIC, categorical=CATEGORICAL, threads=1
    )
    assert check.auc > 0.8
    assert next(iter(check.top_features)) == "a"
    assert list(check.top_features.values()) == sorted(check.top_features.values(), reverse=True)


def test_domain_classifier_is_deterministic() -> None:
    reference, current = sample(2000, 1), sample(2000, 2, shift_a=0.3)
    first, second = (
        domain_classifier(reference, current, numeric=NUMERIC, categorical=CATEGORICAL, threads=2)
        for _ in range(2)
    )
    assert first.auc == second.auc and first.top_features == second.top_features


def test_weighted_share_is_the_importance_of_the_shifted_columns() -> None:
    importance = {"a": 0.1, "b": 0.5, "c": 0.2, "city": 0.2, "unused": 5.0}
    result = effect_sizes(
        sample(3000, 1),
        sample(3000, 2, shift_a=1.5),
        numeric=NUMERIC,
        categorical=CATEGORICAL,
        importance=importance,
    )
    assert result.material_columns() == ["a"]
    assert result.weighted_share == pytest.approx(0.1)
    assert sum(c.importance for c in result.columns) == pytest.approx(1.0)
    # No importance: the weighted share falls back to the material share.
    plain = effect_sizes(
        sample(3000, 1), sample(3000, 2, shift_a=1.5), numeric=NUMERIC, categorical=CATEGORICAL
    )
    assert plain.weighted_share == plain.material_share == pytest.approx(0.25)
    assert all(c.importance == 0.0 for c in plain.columns)


def test_psi_on_numeric_columns() -> None:
    cfg = ShiftConfig(numeric_measure="psi")
    same = effect_sizes(
        sample(3000, 1), sample(3000, 2), numeric=NUMERIC, categorical=[], config=cfg
    )
    assert not same.material_columns() and all(c.measure == "psi" for c in same.columns)
    moved = effect_sizes(
        sample(3000, 1), sample(3000, 2, shift_a=1.5), numeric=NUMERIC, categorical=[], config=cfg
    )
    assert moved.material_columns() == ["a"]


def test_new_category_is_material_under_psi_and_jensen_shannon() -> None:
    reference = sample(2000, 1)
    current = sample(2000, 2).with_columns(
        city=pl.when(pl.int_range(pl.len()) % 3 == 0).then(pl.lit("marseille")).otherwise("city")
    )
    psi = effect_sizes(reference, current, numeric=[], categorical=["city"])
    (column,) = psi.columns
    assert column.kind == "categorical" and column.measure == "psi" and column.material
    assert column.value > 1.0  # a third of the batch in a category the reference never had
    js = effect_sizes(
        reference,
        current,
        numeric=[],
        categorical=["city"],
        config=ShiftConfig(categorical_measure="jensenshannon"),
    )
    assert js.columns[0].measure == "jensenshannon" and js.columns[0].material
    assert 0.1 <= js.columns[0].value <= np.sqrt(np.log(2))


def test_all_null_column_is_skipped_with_the_reason() -> None:
    reference = sample(500, 1).with_columns(d=pl.lit(None, dtype=pl.Float64))
    current = sample(500, 2).with_columns(d=pl.lit(None, dtype=pl.Float64))
    result = effect_sizes(reference, current, numeric=[*NUMERIC, "d"], categorical=CATEGORICAL)
    assert "d" in result.skipped_columns and "missing" in result.skipped_columns["d"]
    assert "d" not in [c.column for c in result.columns] and len(result.columns) == 4
    # The domain classifier takes the all-null column without complaint.
    domain_classifier(reference, current, numeric=[*NUMERIC, "d"], categorical=[], threads=1)


def test_infinite_values_are_missing_and_nulls_are_handled() -> None:
    reference = sample(1000, 1)
    current = sample(1000, 2).with_columns(
        a=pl.when(pl.int_range(pl.len()) % 4 == 0).then(float("inf")).otherwise("a"),
        city=pl.when(pl.int_range(pl.len()) % 3 == 0).then(None).otherwise("city"),
    )
    result = effect_sizes(reference, current, numeric=NUMERIC, categorical=CATEGORICAL)
    assert all(np.isfinite(c.value) for c in result.columns) and not result.material_columns()
    check = domain_classifier(
        reference, current, numeric=NUMERIC, categorical=CATEGORICAL, threads=1
    )
    assert check.auc > 0.6  # the missing values themselves tell the batch apart


def test_constant_reference_column_uses_a_fallback_scale() -> None:
    reference = sample(500, 1).with_columns(k=pl.lit(2.0))
    current = sample(500, 2).with_columns(k=pl.lit(2.1))
    result = effect_sizes(reference, current, numeric=["k"], categorical=[])
    assert result.columns[0].value == pytest.approx(0.05)  # |2.1 - 2| / mean |2|
    zero = effect_sizes(
        reference.with_columns(k=pl.lit(0.0)), current, numeric=["k"], categorical=[]
    )
    assert zero.columns[0].value == pytest.approx(2.1) and zero.columns[0].material


def test_errors_for_empty_sides_and_missing_columns() -> None:
    frame = sample(100, 1)
    with pytest.raises(DataError):
        effect_sizes(frame, frame.head(0), numeric=NUMERIC, categorical=CATEGORICAL)
    with pytest.raises(DataError):
        domain_classifier(frame.head(0), frame, numeric=NUMERIC, categorical=[], threads=1)
    with pytest.raises(SchemaError):
        effect_sizes(frame, frame.drop("b"), numeric=NUMERIC, categorical=CATEGORICAL)
    with pytest.raises(SchemaError):
        domain_classifier(frame, frame, numeric=["nope"], categorical=[], threads=1)
    with pytest.raises(SchemaError):
        effect_sizes(frame, frame, numeric=[], categorical=[])
    with pytest.raises(SchemaError):
        effect_sizes(frame, frame, numeric=["city"], categorical=[])


def test_large_samples_of_one_distribution_are_not_material() -> None:
    """Effect sizes do not over-fire on large samples the way p-values do."""
    from scipy.stats import ks_2samp

    reference, current = sample(50_000, 1), sample(50_000, 2)
    cfg = ShiftConfig(max_rows=50_000)
    result = effect_sizes(reference, current, numeric=NUMERIC, categorical=CATEGORICAL, config=cfg)
    assert not result.material_columns() and result.material_share == 0.0
    assert max(c.value / c.threshold for c in result.columns) < 0.2
    # A slight shift p-values call drift at this size is not material either.
    nudged = sample(50_000, 2, shift_a=0.05)
    assert ks_2samp(reference["a"].to_numpy(), nudged["a"].to_numpy()).pvalue < 0.05
    moved = effect_sizes(reference, nudged, numeric=NUMERIC, categorical=CATEGORICAL, config=cfg)
    assert not moved.material_columns()


def test_columns_are_sorted_most_shifted_first() -> None:
    reference = sample(2000, 1)
    current = sample(2000, 2, shift_a=0.5).with_columns(b=pl.col("b") * 3)
    result = effect_sizes(reference, current, numeric=NUMERIC, categorical=CATEGORICAL)
    ratios = [c.value / c.threshold for c in result.columns]
    assert ratios == sorted(ratios, reverse=True)
    assert [c.column for c in result.columns[:2]] == ["b", "a"]


def test_a_stratified_sample_keeps_class_shares_order_and_every_class() -> None:
    from tools.shift import stratified_sample

    frame = pl.DataFrame({"y": ["a"] * 900 + ["b"] * 95 + ["c"] * 5, "i": range(1000)})
    sample = stratified_sample(frame, 100, "y", seed=3)
    counts = dict(sample["y"].value_counts().iter_rows())
    assert counts == {"a": 90, "b": 9, "c": 1}  # proportional, largest remainders
    assert sample["i"].is_sorted() and sample["i"].n_unique() == 100  # in order, no repeats
    assert stratified_sample(frame, 1000, "y").equals(frame)  # no bigger: the frame itself
    # A regression target by deciles: both tails are kept.
    values = pl.DataFrame({"y": np.random.default_rng(0).normal(size=5000)})
    tails = stratified_sample(values, 500, "y", numeric=True, seed=1)["y"]
    assert tails.len() == 500 and tails.min() < -1.5 and tails.max() > 1.5  # type: ignore[operator]


def test_the_domain_aucs_standard_error_is_stated_at_its_sample_size() -> None:
    from tools.shift import auc_standard_error

    # Hanley & McNeil at 0.5 with 5,000 rows a side: sqrt((0.25 + 2 * 4999 / 12) / 25e6).
    assert auc_standard_error(0.5, 5000, 5000) == pytest.approx(0.005774, abs=1e-6)
    assert auc_standard_error(0.9, 5000, 5000) < auc_standard_error(0.5, 5000, 5000)
    assert auc_standard_error(0.3, 500, 500) == auc_standard_error(0.7, 500, 500)
    assert auc_standard_error(0.5, 500, 500) == pytest.approx(
        auc_standard_error(0.5, 5000, 5000) * math.sqrt(10), rel=1e-3
    )
