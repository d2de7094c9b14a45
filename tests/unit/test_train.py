import numpy as np
import polars as pl
import pytest

from driftpilot.core.errors import ModelError, SchemaError
from tools.datasets import FLIGHTS
from tools.drift import model_performance
from tools.train import TrainSpec, train_model


def spec(family: str = "lightgbm", **kw: object) -> TrainSpec:
    return TrainSpec(
        family=family,
        target=FLIGHTS.target,
        numeric=FLIGHTS.numeric,  # type: ignore[arg-type]
        categorical=FLIGHTS.categorical,
        time_col=FLIGHTS.time_col,
        **kw,
    )


@pytest.fixture(scope="module")
def jan_feb(months: dict[str, pl.DataFrame]) -> pl.DataFrame:
    return pl.concat([months["2013-01"], months["2013-02"]])


@pytest.mark.parametrize("family", ["lightgbm", "catboost"])
def test_trained_on_jan_feb_scores_sane_auc_on_march(
    family: str, jan_feb: pl.DataFrame, months: dict[str, pl.DataFrame]
) -> None:
    model = train_model(jan_feb, spec(family, max_rounds=300))
    assert model.report is not None
    assert model.report.n_train + model.report.n_valid == jan_feb.height
    assert 0 < model.report.best_iteration <= 300
    march = model_performance(model, months["2013-03"], FLIGHTS.target)
    assert 0.65 < march.get("roc_auc") < 0.85  # type: ignore[operator]  # real signal, no leakage
    assert abs(sum(model.report.feature_importance.values()) - 1) < 1e-3


def test_validation_is_the_latest_rows(jan_feb: pl.DataFrame) -> None:
    from tools.train import split_train_valid

    train, valid = split_train_valid(jan_feb, spec())
    assert train["time_hour"].max() <= valid["time_hour"].min()  # type: ignore[operator]


def test_unseen_categories_and_nulls_are_scored(jan_sample: pl.DataFrame) -> None:
    model = train_model(jan_sample, spec(max_rounds=50))
    odd = jan_sample.head(5).with_columns(
        pl.lit("ZZ").alias("carrier"), pl.lit(None, pl.Float64).alias("temp")
    )
    scores = model.predict_scores(odd)
    assert scores.shape == (5,) and np.all((scores > 0) & (scores < 1))
    with pytest.raises(SchemaError, match="missing"):
        model.predict_scores(odd.drop("dest"))


def test_seeded_training_is_reproducible(jan_sample: pl.DataFrame) -> None:
    a = train_model(jan_sample, spec(max_rounds=40)).predict_scores(jan_sample.head(50))
    b = train_model(jan_sample, spec(max_rounds=40)).predict_scores(jan_sample.head(50))
    assert np.array_equal(a, b)


def test_iteration_hook_can_stop_training(jan_sample: pl.DataFrame) -> None:
    seen: list[int] = []

    def hook(step: int, loss: float) -> bool:
        seen.append(step)
        return step < 20

    model = train_model(
        jan_sample,
        spec(max_rounds=200, early_stopping_rounds=200),
        on_iteration=hook,
        report_every=10,
    )
    assert seen == [10, 20]
    assert model.report is not None and model.report.best_iteration <= 21


def test_bad_training_inputs(jan_sample: pl.DataFrame) -> None:
    with pytest.raises(SchemaError, match="lacks columns"):
        train_model(jan_sample.drop("temp"), spec())
    with pytest.raises(SchemaError, match="must be 0/1"):
        train_model(jan_sample.with_columns(pl.col("delayed") * 3), spec())
    with pytest.raises(ModelError, match="too few rows"):
        train_model(jan_sample.head(10), spec())
    with pytest.raises(ModelError, match="single class"):
        train_model(jan_sample.with_columns(pl.lit(0, pl.Int8).alias("delayed")), spec())


@pytest.mark.parametrize("family", ["lightgbm", "catboost"])
def test_a_class_only_in_the_latest_rows_keeps_every_column_in_order(
    family: str, jan_sample: pl.DataFrame
) -> None:
    rows = jan_sample.sort(FLIGHTS.time_col)
    late = pl.int_range(pl.len()) >= int(rows.height * 0.9)  # the validation split's rows only
    frame = rows.with_columns(
        pl.when(late & (pl.col("hour") > 17))
        .then(pl.lit("night"))
        .otherwise(pl.when(pl.col("hour") < 12).then(pl.lit("am")).otherwise(pl.lit("pm")))
        .alias("band")
    )
    model = train_model(
        frame,
        spec(family, max_rounds=20).model_copy(
            update={
                "task": "multiclass",
                "target": "band",
                "numeric": ["sched_dep_time", "distance"],
            }
        ),
    )
    assert model.classes == ["am", "night", "pm"]
    scores = model.predict_scores(frame.head(100))
    assert scores.shape == (100, 3) and np.allclose(scores.sum(axis=1), 1)
    am = frame.head(100)["band"].to_numpy() == "am"
    assert scores[am, 0].mean() > scores[~am, 0].mean()  # column 0 is 'am', not a shifted one


@pytest.mark.parametrize("categories", [["a", "b", "c"], []])
def test_the_frozen_categorical_codes_as_pandas_would(categories: list[str]) -> None:
    import pandas as pd

    from tools.train import _frozen_categorical

    values = pl.Series("c", ["b", None, "a", "new", "c", "b"], dtype=pl.String)
    fast = _frozen_categorical(values, categories)
    plain = pd.Categorical(values.to_list(), categories=categories)
    assert fast.dtype == plain.dtype and fast.codes.tolist() == plain.codes.tolist()
