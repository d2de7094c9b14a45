import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from driftpilot.core.errors import DataError, SchemaError
from tools.evaluate import _bootstrap_weights, _weighted_auc, compare_models, compare_scores


class Column:
    """A 'model' whose score is a column of the frame (keeps the test about evaluation)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def predict_scores(self, frame: pl.DataFrame) -> np.ndarray:
        return frame[self.name].to_numpy()


@pytest.fixture(scope="module")
def holdout() -> pl.DataFrame:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    signal = 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1.5, 4000))))
    return pl.DataFrame(
        {"y": y, "good": signal, "noise": rng.random(4000), "good2": signal * 0.999}
    )


def test_better_challenger_has_an_interval_above_zero(holdout: pl.DataFrame) -> None:
    c = compare_models(Column("noise"), Column("good"), holdout, "y", n_boot=400)
    assert c.gain > 0.2 and c.ci_low > 0 and c.significant
    assert c.champion == pytest.approx(roc_auc_score(holdout["y"], holdout["noise"]))


def test_equivalent_models_are_not_significant(holdout: pl.DataFrame) -> None:
    c = compare_models(Column("good"), Column("good2"), holdout, "y", n_boot=300)
    assert c.gain == pytest.approx(0, abs=1e-9) and not c.significant
    assert c.prediction_divergence < 0.01


@pytest.mark.parametrize("metric", ["log_loss", "pr_auc"])
def test_other_metrics_are_signed_so_positive_is_better(holdout: pl.DataFrame, metric: str) -> None:
    c = compare_models(Column("noise"), Column("good"), holdout, "y", metric=metric, n_boot=60)  # type: ignore[arg-type]
    assert c.gain > 0 and c.ci_low > 0


def test_weighted_auc_equals_auc_of_the_explicit_resample(holdout: pl.DataFrame) -> None:
    y, s = holdout["y"].to_numpy(), np.round(holdout["good"].to_numpy(), 2)  # ties included
    weights = _bootstrap_weights(np.random.default_rng(5), len(y), 3)
    fast = _weighted_auc(y, s, weights)
    for row, value in zip(weights, fast, strict=True):
        idx = np.repeat(np.arange(len(y)), row.astype(int))
        assert value == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)


def test_interval_narrows_with_more_rows() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (500, 8000):
        y = rng.integers(0, 2, n)
        a, b = y + rng.normal(0, 1.2, n), y + rng.normal(0, 1.0, n)
        c = compare_scores(y, a, b, n_boot=300)
        widths.append(c.ci_high - c.ci_low)
    assert widths[1] < widths[0] / 2


def test_bad_holdouts(holdout: pl.DataFrame) -> None:
    with pytest.raises(SchemaError, match="target"):
        compare_models(Column("noise"), Column("good"), holdout, "label")
    with pytest.raises(DataError, match="both classes"):
        compare_models(Column("noise"), Column("good"), holdout.filter(pl.col("y") == 1), "y")
