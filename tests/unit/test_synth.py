from typing import Any

import polars as pl
import pytest

from driftpilot.core.errors import SchemaError, SynthError
from driftpilot.core.settings import Settings
from tools.datasets import FLIGHTS
from tools.quality import check_batch
from tools.quality_profile import profile_reference
from tools.synth import ScenarioSpec, fit_synthesizer, make_scenario


@pytest.fixture(scope="module")
def fitted(jan_sample: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from joblib import parallel_config

    settings = Settings(home=tmp_path_factory.mktemp("synth-home")).ensure_dirs()
    with parallel_config(backend="threading"):
        synth, info = fit_synthesizer(
            jan_sample, FLIGHTS, epochs=2, max_rows=600, settings=settings
        )
    return synth, info, settings


def test_fit_is_cached_per_dataset_and_sample(fitted: Any, jan_sample: pl.DataFrame) -> None:
    _, info, settings = fitted
    assert not info.cached and info.n_rows == 600
    _, again = fit_synthesizer(jan_sample, FLIGHTS, epochs=2, max_rows=600, settings=settings)
    assert again.cached and again.path == info.path


def test_no_drift_stream_stays_in_range(fitted: Any, jan_sample: pl.DataFrame) -> None:
    synth = fitted[0]
    scenario = make_scenario(
        synth, jan_sample, FLIGHTS, ScenarioSpec(kind="none", n_batches=3, batch_rows=300)
    )
    assert scenario.truth.kind == "none" and scenario.truth.onset is None
    assert len(scenario.batches) == 3 and scenario.reference.info.n_rows == 600
    for batch in scenario.batches:
        frame = batch.frame
        assert frame.height == 300
        for col in ("temp", "pressure", "sched_dep_time"):
            assert frame[col].min() >= jan_sample[col].min()  # type: ignore[operator]
            assert frame[col].max() <= jan_sample[col].max()  # type: ignore[operator]
        assert frame.schema["hour"] == jan_sample.schema["hour"]
    times = [b.info.start for b in scenario.batches]
    assert times == sorted(times)


def test_reference_rows_size_the_champions_window(fitted: Any, jan_sample: pl.DataFrame) -> None:
    # The scenario suite trains its champion on the reference: its size is the tier's, not
    # twice a batch (evals.learning_curve says why).
    spec = ScenarioSpec(kind="none", n_batches=2, batch_rows=100, reference_rows=700)
    scenario = make_scenario(fitted[0], jan_sample, FLIGHTS, spec)
    assert scenario.reference.frame.height == 700
    assert [b.frame.height for b in scenario.batches] == [100, 100]


def test_covariate_shift_moves_only_chosen_columns_after_onset(
    fitted: Any, jan_sample: pl.DataFrame
) -> None:
    synth = fitted[0]
    spec = ScenarioSpec(
        kind="covariate_shift",
        n_batches=4,
        onset=2,
        batch_rows=400,
        columns=["temp"],
        magnitude=2.0,
    )
    scenario = make_scenario(synth, jan_sample, FLIGHTS, spec)
    assert scenario.truth.onset == 2 and scenario.truth.columns == ["temp"]
    std = jan_sample["temp"].std()
    means = [b.frame["temp"].mean() for b in scenario.batches]
    assert means[2] - means[1] > std and means[3] - means[0] > std  # type: ignore[operator]
    pressure = [b.frame["pressure"].mean() for b in scenario.batches]
    assert abs(pressure[3] - pressure[0]) < jan_sample["pressure"].std()  # type: ignore[operator]


def test_label_shift_changes_prevalence(fitted: Any, jan_sample: pl.DataFrame) -> None:
    spec = ScenarioSpec(kind="label_shift", n_batches=3, onset=1, batch_rows=500, magnitude=2.5)
    scenario = make_scenario(fitted[0], jan_sample, FLIGHTS, spec)
    before, after = (b.frame["delayed"].mean() for b in scenario.batches[:2])
    assert after > 1.8 * before  # type: ignore[operator]


def test_concept_drift_flips_labels_where_the_column_is_high(
    fitted: Any, jan_sample: pl.DataFrame
) -> None:
    spec = ScenarioSpec(
        kind="concept_drift", n_batches=2, onset=1, batch_rows=600, columns=["temp"], magnitude=1.0
    )
    base = make_scenario(fitted[0], jan_sample, FLIGHTS, spec.model_copy(update={"kind": "none"}))
    drifted = make_scenario(fitted[0], jan_sample, FLIGHTS, spec)
    median = jan_sample["temp"].median()
    before = base.batches[1].frame.filter(pl.col("temp") > median)["delayed"].mean()
    after = drifted.batches[1].frame.filter(pl.col("temp") > median)["delayed"].mean()
    assert after == pytest.approx(1 - before, abs=1e-9)  # type: ignore[operator]


def test_gradual_concept_drift_ramps_its_flip_share(fitted: Any, jan_sample: pl.DataFrame) -> None:
    spec = ScenarioSpec(
        kind="gradual_concept_drift",
        n_batches=5,
        onset=1,
        ramp=4,
        batch_rows=1500,
        columns=["temp"],
        magnitude=1.0,
    )
    base = make_scenario(fitted[0], jan_sample, FLIGHTS, spec.model_copy(update={"kind": "none"}))
    drifted = make_scenario(fitted[0], jan_sample, FLIGHTS, spec)
    median = jan_sample["temp"].median()
    # Both streams sample the same rows (the synthesizer is seeded per batch); the drift only
    # flips labels of rows above the median, each with the ramp's share s: read s back as the
    # share of those rows whose label differs from the undrifted stream's.
    shares = []
    for clean, moved in zip(base.batches, drifted.batches, strict=True):
        pair = pl.DataFrame(
            {
                "temp": clean.frame["temp"],
                "moved": moved.frame["temp"],
                "y": clean.frame["delayed"],
                "y_moved": moved.frame["delayed"],
            }
        ).filter((pl.col("temp") > median) & (pl.col("moved") > median))
        assert pair.height > 300, pair.height
        shares.append((pair["y"] != pair["y_moved"]).mean())
    for got, want in zip(shares, (0.0, 0.25, 0.5, 0.75, 1.0), strict=True):
        assert got == pytest.approx(want, abs=0.08), shares
    assert drifted.truth.ramp == 4 and drifted.truth.kind == "gradual_concept_drift"


def test_range_shift_leaves_the_reference_range_and_keeps_labels(
    fitted: Any, jan_sample: pl.DataFrame
) -> None:
    spec = ScenarioSpec(
        kind="range_shift", n_batches=2, onset=1, batch_rows=400, columns=["temp"], magnitude=1.5
    )
    base = make_scenario(fitted[0], jan_sample, FLIGHTS, spec.model_copy(update={"kind": "none"}))
    moved = make_scenario(fitted[0], jan_sample, FLIGHTS, spec)
    top = jan_sample["temp"].max()
    assert moved.batches[0].frame["temp"].max() <= top  # type: ignore[operator]
    assert moved.batches[1].frame["temp"].min() > top  # type: ignore[operator]
    assert moved.batches[1].frame["delayed"].equals(base.batches[1].frame["delayed"])
    assert moved.batches[1].frame["pressure"].equals(base.batches[1].frame["pressure"])
    assert moved.truth.columns == ["temp"] and moved.truth.ramp is None


@pytest.mark.parametrize(
    "corruption,check",
    [
        ("nan_storm", "null_spike"),
        ("schema_break", "missing_column"),
        # Beyond the reference range is only a shift; beyond a declared hard limit (humidity
        # is a percentage) it is impossible.
        ("out_of_range", "hard_limit"),
    ],
)
def test_corruptions_fail_quality_from_onset(
    fitted: Any, jan_sample: pl.DataFrame, corruption: str, check: str
) -> None:
    spec = ScenarioSpec(
        kind="corruption",
        corruption=corruption,
        n_batches=3,
        onset=2,  # type: ignore[arg-type]
        batch_rows=300,
        columns=["humid"],
    )
    scenario = make_scenario(fitted[0], jan_sample, FLIGHTS, spec)
    profile = profile_reference(scenario.reference.frame)
    limits = {"humid": (0.0, 100.0)}
    verdicts = [check_batch(b.frame, profile, hard_limits=limits) for b in scenario.batches]
    assert [v.ok for v in verdicts] == [True, True, False]
    assert check in {i.check for i in verdicts[2].errors}
    assert scenario.truth.corruption == corruption


def test_bad_scenarios(fitted: Any, jan_sample: pl.DataFrame) -> None:
    with pytest.raises(SynthError, match="onset"):
        make_scenario(
            fitted[0], jan_sample, FLIGHTS, ScenarioSpec(kind="label_shift", n_batches=3, onset=3)
        )
    with pytest.raises(SchemaError, match="not in the data"):
        make_scenario(
            fitted[0], jan_sample, FLIGHTS, ScenarioSpec(kind="covariate_shift", columns=["nope"])
        )


def test_a_labeller_draws_covariate_shift_labels_after_the_shift(
    fitted: Any, jan_sample: pl.DataFrame
) -> None:
    """P(y | x) holds under covariate shift: labels follow the moved inputs. Under a concept
    drift they are drawn first, and the drift acts on them."""
    median = float(jan_sample["temp"].median())  # type: ignore[arg-type]

    def hot(rows: pl.DataFrame) -> Any:
        return (rows["temp"] > median).cast(pl.Float64).to_numpy()

    spec = ScenarioSpec(
        kind="covariate_shift",
        n_batches=2,
        onset=1,
        batch_rows=400,
        columns=["temp"],
        magnitude=2.0,
    )
    shifted = make_scenario(fitted[0], jan_sample, FLIGHTS, spec, hot)
    for batch in shifted.batches:
        frame = batch.frame.filter(pl.col("temp").is_not_null())
        assert frame["delayed"].equals((frame["temp"] > median).cast(frame["delayed"].dtype))
    flipped = make_scenario(
        fitted[0], jan_sample, FLIGHTS, spec.model_copy(update={"kind": "concept_drift"}), hot
    )
    frame = flipped.batches[1].frame.filter(pl.col("temp") > median)
    assert frame["delayed"].mean() < 0.5  # the flip acted on the drawn labels  # type: ignore[operator]
