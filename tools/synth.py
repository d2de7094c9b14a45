"""Synthetic scenario tools: CTGAN-generated batch streams with a known drift.

A CTGAN is fitted on a reference window of a real dataset (cached per dataset and sample)
and sampled into a stream of batches. From a chosen onset batch on, a drift of a known kind
is injected — this ground truth (kind, onset, columns) is what evals score detection
against:

- ``none``: no drift;
- ``covariate_shift``: chosen numeric columns shifted by ``magnitude`` reference std-devs
  (with a ``labeller``, the labels are drawn after the shift: P(y | x) holds);
- ``concept_drift``: P(label | x) changes at once — labels flip for rows where a column is
  high;
- ``gradual_concept_drift``: the same flip, its share ramping up over ``ramp`` batches;
- ``label_shift``: the positive rate is multiplied by ``magnitude`` (P(x | label) kept);
- ``corruption``: a schema break, a NaN storm, or out-of-range values;
- ``range_shift``: chosen numeric columns move beyond the reference range (by ``magnitude``
  reference ranges), each row keeping its label: a sensor recalibrated, a price in new units.
  Plausible data, not corrupt.

Pipeline defects (issue 21), each on labelled rows that keep their labels (the world did not
move, the data did):

- ``unit_change``: one numeric column converted x1.8 + 32 (°C read as °F) from the onset;
- ``join_bug``: a share (``magnitude``) of the batch's rows duplicated, as a fan-out join does;
- ``default_fill``: a share (``magnitude``) of one column's values replaced by 0, a burst of
  the default an ingest writes for a missing value;
- ``broken_feature``: the chosen columns' values shuffled across rows (a deploy broke their
  encoding): their distribution is unchanged, their relation to the label is gone. The numbers
  read a concept change; only a note about the deploy says it is a defect.

And two shapes of change:

- ``seasonal_repeat``: the same covariate shift (``magnitude`` std-devs) on the batches
  ``onset - period`` and ``onset`` only (``period`` batches apart): a campaign that came back;
- ``lasting_concept_change``: from the onset the label is shuffled across a share
  (``magnitude``) of the rows: the relation the features carried is gone and no retrain on the
  batch can learn it back (a challenger loses, batch after batch).

Per task (``spec.task``): binary labels are drawn as below; a multiclass teacher's class
probabilities are sharpened (raised to ``sharpness``, renormalised) and a class drawn from them;
a regression teacher's prediction is stretched by ``sharpness`` around the target mean, plus
Gaussian noise of the teacher's residual spread over ``sharpness``. The drifts that act on labels
have a per-task equivalent: a concept drift moves a multiclass label one class on (a cyclic
permutation of the class order) or shifts a regression target by twice its reference std, on
the same rows a binary flip would touch; a label shift multiplies the rarest class's prior
(multiclass) or tilts the target's distribution towards high values by reweighting rows by
``magnitude ** z`` (regression, z = the standardised target): P(x | y) kept, P(y) moved.

Labels: CTGAN's own labels carry little of the real label relation after a short fit (a
champion trained on them scores an AUC near 0.5, so no concept drift could show). A scenario
can instead draw labels from a known mechanism, ``teacher_labeller``: a model fitted on the
real rows, its log-odds sharpened around the base rate, and y ~ Bernoulli(p(x)). Drift is
injected on top of those labels.

Sampled numeric values are clipped to the reference range (CTGAN can leave it) and integer
columns are rounded. torch and CTGAN are imported lazily; torch runs on one thread.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from driftpilot.core.errors import SchemaError, SynthError
from driftpilot.core.settings import Settings, get_settings
from tools.data import make_batch
from tools.datasets import DatasetSpec
from tools.synth_labels import (
    Labeller,
    _change_relation,
    _number,
    _relabel,
    _relabel_prevalence,
    _shift_class_prior,
    _tilt_target,
)

# Re-exported: evals.scenarios and the unit tests import these from here.
from tools.synth_labels import TaskLabeller as TaskLabeller
from tools.synth_labels import teacher_labeller as teacher_labeller

ScenarioKind = Literal[
    "none",
    "covariate_shift",
    "concept_drift",
    "gradual_concept_drift",
    "label_shift",
    "corruption",
    "range_shift",
    "unit_change",
    "join_bug",
    "default_fill",
    "broken_feature",
    "seasonal_repeat",
    "lasting_concept_change",
]
# The defects whose batch should be quarantined (``broken_feature`` reads as a concept change).
DEFECTS = frozenset({"corruption", "unit_change", "join_bug", "default_fill"})
UNIT_FACTOR, UNIT_OFFSET = 1.8, 32.0  # degrees Celsius read as Fahrenheit
LABEL_SHIFT_POOL = 4  # batches' worth of rows a label-shifted batch is drawn from
Corruption = Literal["schema_break", "nan_storm", "out_of_range"]


class SynthesizerInfo(BaseModel):
    """A fitted (or cached) CTGAN synthesizer."""

    dataset: str
    path: str = Field(description="Pickle of the fitted synthesizer.")
    n_rows: int = Field(description="Reference rows it was fitted on.")
    epochs: int
    cached: bool = Field(description="True when loaded from cache instead of fitted.")


class ScenarioSpec(BaseModel):
    """Shape of a synthetic stream and the drift to inject."""

    kind: ScenarioKind = Field("none", description="Which drift to inject.")
    n_batches: int = Field(12, ge=2, description="Batches in the stream.")
    batch_rows: int = Field(2000, ge=10, description="Rows per batch.")
    reference_rows: int | None = Field(
        None, ge=10, description="Rows of the reference window (None: twice a batch)."
    )
    onset: int = Field(6, ge=1, description="Index of the first drifted batch (0-based).")
    columns: list[str] = Field(default_factory=list, description="Columns the drift acts on.")
    magnitude: float = Field(
        1.0,
        description="Shift in std-devs (covariate) or ranges (range_shift) / flip share / "
        "prevalence factor.",
    )
    ramp: int = Field(4, ge=1, description="Batches a gradual drift takes to reach full size.")
    corruption: Corruption = Field("nan_storm", description="Corruption type for 'corruption'.")
    period: int = Field(3, ge=1, description="Batches between a seasonal shift and its repeat.")
    start: datetime = Field(datetime(2030, 1, 1), description="Time of the first batch.")
    seed: int = Field(0, description="Sampling seed.")


class GroundTruth(BaseModel):
    """What was injected where: the answer key for drift detection."""

    kind: ScenarioKind
    onset: int | None = Field(description="First drifted batch index; None for 'none'.")
    columns: list[str]
    magnitude: float
    corruption: Corruption | None
    ramp: int | None = Field(None, description="Ramp length in batches (gradual drift only).")
    period: int | None = Field(None, description="seasonal_repeat: batches between the shifts.")

    def drifted(self, index: int) -> bool:
        """Whether batch ``index`` carries the injected drift (a seasonal repeat's shift is on
        its two batches only)."""
        if self.onset is None:
            return False
        if self.kind == "seasonal_repeat":
            return index in (self.onset - (self.period or 0), self.onset)
        return index >= self.onset


class Scenario(BaseModel):
    """A synthetic stream of batches with its ground truth."""

    model_config = {"arbitrary_types_allowed": True}

    truth: GroundTruth
    reference: Any = Field(description="A clean synthetic reference window (tools.data.Batch).")
    batches: list[Any] = Field(description="tools.data.Batch objects in time order.")


def fit_synthesizer(
    reference: pl.DataFrame,
    spec: DatasetSpec,
    *,
    epochs: int = 10,
    max_rows: int = 2000,
    settings: Settings | None = None,
    seed: int = 0,
) -> tuple[Any, SynthesizerInfo]:
    """Fit CTGAN on (a sample of) the reference window; reuse the cached fit if present.

    Only the features and the target are modelled. Nulls are imputed for fitting (CTGAN
    rejects them) and re-inserted at the reference null rate when sampling.
    """
    settings = settings or get_settings()
    columns = [*spec.features, spec.target]
    missing = [c for c in columns if c not in reference.columns]
    if missing:
        raise SchemaError(f"reference lacks columns {missing}")
    sample = reference.select(columns)
    if sample.height > max_rows:
        sample = sample.sample(n=max_rows, seed=seed)
    assert settings.cache_dir is not None
    key = hashlib.sha256(
        f"{epochs}:{seed}:".encode() + sample.write_ipc(None).getvalue()
    ).hexdigest()
    path = settings.cache_dir / "synth" / f"{spec.name}-{key[:16]}.pkl"
    info = SynthesizerInfo(
        dataset=spec.name, path=str(path), n_rows=sample.height, epochs=epochs, cached=path.exists()
    )
    import torch
    from ctgan import CTGAN

    torch.set_num_threads(1)  # more threads on 2 cores made CTGAN 4-10x slower
    if path.exists():
        return CTGAN.load(str(path)), info
    model = CTGAN(epochs=epochs, enable_gpu=False, verbose=False)
    model.set_random_state(seed)
    try:
        model.fit(
            _impute(sample, spec).to_pandas(),
            # A regression target is continuous: one-hot coding its values would be wrong.
            discrete_columns=[*spec.categorical, *([spec.target] * (spec.task != "regression"))],
        )
    except Exception as exc:  # CTGAN/RDT raise ValueError/TypeError on odd inputs
        raise SynthError(f"CTGAN could not fit {spec.name}: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    model.save(str(tmp))
    tmp.replace(path)
    return model, info


def _impute(frame: pl.DataFrame, spec: DatasetSpec) -> pl.DataFrame:
    return frame.with_columns(
        *[pl.col(c).fill_nan(None).fill_null(pl.col(c).median()) for c in spec.numeric],
        *[pl.col(c).fill_null("__missing__") for c in spec.categorical],
    )


def make_scenario(
    synthesizer: Any,
    reference: pl.DataFrame,
    spec: DatasetSpec,
    scenario: ScenarioSpec,
    labeller: Labeller | None = None,
) -> Scenario:
    """Sample a stream of batches and inject the scenario's drift from its onset on.

    Args:
        synthesizer: a fitted CTGAN (from ``fit_synthesizer``).
        reference: the real reference window (gives ranges, null rates, std-devs).
        spec: the dataset's columns.
        scenario: kind, onset, columns, magnitude, stream length.
        labeller: draw every row's label from this mechanism (``teacher_labeller``) instead
            of keeping CTGAN's.

    Returns:
        Scenario with a clean synthetic reference window (compare against it, not the real
        data: a short CTGAN fit is not indistinguishable from the real rows), the batches
        (time column ``spec.time_col``, one day per batch) and the ground truth.
    """
    if scenario.kind != "none" and scenario.onset >= scenario.n_batches:
        raise SynthError(f"onset {scenario.onset} is past the last batch {scenario.n_batches - 1}")
    if scenario.kind == "seasonal_repeat" and scenario.onset < scenario.period:
        raise SynthError(
            f"a seasonal repeat at batch {scenario.onset} needs its first shift {scenario.period} "
            "batches earlier, inside the stream"
        )
    columns = scenario.columns or _default_columns(scenario.kind, spec, reference)
    unknown = [c for c in columns if c not in reference.columns]
    if unknown:
        raise SchemaError(f"scenario columns {unknown} are not in the data")
    rng = np.random.default_rng(scenario.seed)
    n_reference = scenario.reference_rows or 2 * scenario.batch_rows
    ref_rows = _sample_clean(synthesizer, reference, spec, n_reference, rng, scenario.seed - 1)
    if labeller is not None:
        ref_rows = _relabel(ref_rows, spec.target, labeller, rng)
    ref_start = scenario.start - timedelta(days=1)
    ref_times = [
        ref_start + timedelta(seconds=int(s))
        for s in np.sort(rng.integers(0, 86_400, ref_rows.height))
    ]
    ref_batch = make_batch(
        ref_rows.with_columns(pl.Series(spec.time_col, ref_times, dtype=pl.Datetime("us"))),
        "reference",
        spec.time_col,
    )
    truth = GroundTruth(
        kind=scenario.kind,
        onset=None if scenario.kind == "none" else scenario.onset,
        columns=columns if scenario.kind != "none" else [],
        magnitude=scenario.magnitude,
        corruption=scenario.corruption if scenario.kind == "corruption" else None,
        ramp=scenario.ramp if scenario.kind == "gradual_concept_drift" else None,
        period=scenario.period if scenario.kind == "seasonal_repeat" else None,
    )
    batches = []
    for index in range(scenario.n_batches):
        drifted = truth.drifted(index)
        # A label shift picks its batch by class from a pool of LABEL_SHIFT_POOL batches' rows,
        # without replacement: resampling one batch's rows repeated each rare row about
        # magnitude times, and the copies on both sides of the holdout split let a quick
        # retrain "win" by memorising them.
        pool = LABEL_SHIFT_POOL if drifted and scenario.kind == "label_shift" else 1
        rows = _sample_clean(
            synthesizer, reference, spec, pool * scenario.batch_rows, rng, scenario.seed + index
        )
        # A covariate shift moves P(x) and keeps P(y | x): its labels are drawn after the
        # move. Every other drift acts on labelled rows (a flip, a prevalence, a recalibrated
        # sensor or a broken pipeline whose rows keep their labels).
        label_after = drifted and scenario.kind in ("covariate_shift", "seasonal_repeat")
        if labeller is not None and not label_after:
            rows = _relabel(rows, spec.target, labeller, rng)
        if drifted:
            share = min(1.0, (index - scenario.onset + 1) / scenario.ramp)
            rows = _inject(rows, reference, spec, scenario, columns, rng, share)
        if labeller is not None and label_after:
            rows = _relabel(rows, spec.target, labeller, rng)
        day = scenario.start + timedelta(days=index)
        times = [
            day + timedelta(seconds=int(s)) for s in np.sort(rng.integers(0, 86_400, rows.height))
        ]
        rows = rows.with_columns(pl.Series(spec.time_col, times, dtype=pl.Datetime("us")))
        batches.append(make_batch(rows, f"{day:%Y-%m-%d}", spec.time_col))
    return Scenario(truth=truth, reference=ref_batch, batches=batches)


def _default_columns(
    kind: ScenarioKind, spec: DatasetSpec, reference: pl.DataFrame | None = None
) -> list[str]:
    if kind in ("covariate_shift", "corruption", "range_shift", "seasonal_repeat"):
        return spec.numeric[:2]
    if kind in ("broken_feature", "concept_drift", "gradual_concept_drift"):
        return spec.numeric[:1]
    if kind == "unit_change":
        # A temperature if the data has one (what a unit change most often hits).
        return [next((c for c in spec.numeric if c.startswith("temp")), spec.numeric[0])]
    if kind == "default_fill":
        return [_rarely_zero(spec, reference)]
    return []


def _rarely_zero(spec: DatasetSpec, reference: pl.DataFrame | None) -> str:
    """The first numeric column with under 1 % zeros in ``reference``: a burst of zeros in a
    column that is often 0 anyway would be no defect."""
    for column in spec.numeric:
        if reference is None:
            return column
        values = reference[column].drop_nulls()
        if values.len() and (values == 0).sum() / values.len() < 0.01:
            return column
    raise SynthError(f"no numeric column of {spec.name} is rarely 0: no default fill to show")


def _sample_clean(
    synthesizer: Any,
    reference: pl.DataFrame,
    spec: DatasetSpec,
    n: int,
    rng: np.random.Generator,
    seed: int,
) -> pl.DataFrame:
    synthesizer.set_random_state(seed % (2**32))
    raw = pl.from_pandas(synthesizer.sample(n))
    out = []
    for col in spec.numeric:
        ref = reference[col]
        lo, hi = ref.min(), ref.max()
        values = raw[col].cast(pl.Float64).clip(lo, hi)  # type: ignore[arg-type]
        if ref.dtype.is_integer():
            values = values.round()
        null_rate = ref.null_count() / max(ref.len(), 1)
        mask = rng.random(n) < null_rate
        out.append(pl.when(pl.Series(mask)).then(None).otherwise(values).cast(ref.dtype).alias(col))
    for col in spec.categorical:
        out.append(pl.col(col).cast(pl.String).replace("__missing__", None).alias(col))
    out.append(pl.col(spec.target).cast(reference[spec.target].dtype).alias(spec.target))
    return raw.select(out)


def _inject(
    rows: pl.DataFrame,
    reference: pl.DataFrame,
    spec: DatasetSpec,
    scenario: ScenarioSpec,
    columns: list[str],
    rng: np.random.Generator,
    share: float = 1.0,
) -> pl.DataFrame:
    """Inject the scenario's drift; ``share`` (0-1] scales a gradual drift's flip share."""
    kind, magnitude = scenario.kind, scenario.magnitude
    if kind in ("unit_change", "join_bug", "default_fill", "broken_feature"):
        return _pipeline_defect(rows, kind, columns, magnitude, rng)
    if kind == "lasting_concept_change":
        return _shuffle(rows, [spec.target], min(abs(magnitude), 1.0), rng)
    if kind in ("covariate_shift", "seasonal_repeat"):
        return rows.with_columns(
            (pl.col(c) + magnitude * _number(reference[c].std(), 1.0)).cast(rows[c].dtype)
            for c in columns
        )
    if kind == "range_shift":
        return rows.with_columns(
            (pl.col(c).cast(pl.Float64) + magnitude * _range(reference[c])).cast(rows[c].dtype)
            for c in columns
        )
    if kind in ("concept_drift", "gradual_concept_drift"):
        size = min(abs(magnitude), 1.0) * (share if kind == "gradual_concept_drift" else 1.0)
        high = rows[columns[0]] > float(reference[columns[0]].median() or 0.0)  # type: ignore[arg-type]
        flip = pl.Series(rng.random(rows.height) < size) & high.fill_null(False)
        if spec.task != "binary":
            return _change_relation(rows, reference, spec, flip)
        target = pl.col(spec.target)
        flipped = pl.when(flip).then(1 - target).otherwise(target)
        return rows.with_columns(flipped.cast(rows[spec.target].dtype).alias(spec.target))
    n = scenario.batch_rows if kind == "label_shift" else rows.height
    if kind == "label_shift" and spec.task == "multiclass":
        return _shift_class_prior(rows, reference, spec.target, magnitude, rng, n)
    if kind == "label_shift" and spec.task == "regression":
        return _tilt_target(rows, reference, spec.target, magnitude, rng, n)
    if kind == "label_shift":
        return _relabel_prevalence(rows, spec.target, magnitude, rng, n)
    return _corrupt(rows, scenario.corruption, columns, rng)


def _range(column: pl.Series) -> float:
    """The reference range of a column (1.0 for a constant or empty one)."""
    spread = _number(column.max(), 0.0) - _number(column.min(), 0.0)
    return spread if spread > 0 else 1.0


def _corrupt(
    rows: pl.DataFrame, corruption: Corruption, columns: list[str], rng: np.random.Generator
) -> pl.DataFrame:
    if corruption == "schema_break":
        return rows.drop(columns[0]).with_columns(pl.lit("?").alias(f"{columns[0]}_renamed"))
    if corruption == "nan_storm":
        mask = pl.Series(rng.random(rows.height) < 0.6)
        return rows.with_columns(
            pl.when(mask).then(None).otherwise(pl.col(c)).alias(c) for c in columns
        )
    return rows.with_columns(
        (pl.col(c).cast(pl.Float64) * 1000 + 1e6).cast(rows[c].dtype) for c in columns
    )


def _pipeline_defect(
    rows: pl.DataFrame,
    kind: ScenarioKind,
    columns: list[str],
    share: float,
    rng: np.random.Generator,
) -> pl.DataFrame:
    """A defect a pipeline puts in the rows (see the module docstring); ``share`` is the
    share of rows duplicated (join_bug) or zero-filled (default_fill)."""
    share = min(abs(share), 1.0)
    if kind == "unit_change":
        converted = pl.col(columns[0]).cast(pl.Float64) * UNIT_FACTOR + UNIT_OFFSET
        if rows[columns[0]].dtype.is_integer():
            converted = converted.round()
        return rows.with_columns(converted.cast(rows[columns[0]].dtype).alias(columns[0]))
    if kind == "join_bug":
        picks = rng.choice(rows.height, size=round(rows.height * share), replace=False)
        return pl.concat([rows, rows[picks]]).sample(
            fraction=1.0, shuffle=True, seed=int(rng.integers(1 << 31))
        )
    if kind == "default_fill":
        burst = pl.Series(rng.random(rows.height) < share)
        zero = pl.lit(0).cast(rows[columns[0]].dtype)
        return rows.with_columns(
            pl.when(burst).then(zero).otherwise(pl.col(columns[0])).alias(columns[0])
        )
    return _shuffle(rows, columns, 1.0, rng)


def _shuffle(
    rows: pl.DataFrame, columns: list[str], share: float, rng: np.random.Generator
) -> pl.DataFrame:
    """``columns``' values permuted among a random ``share`` of the rows: each column keeps
    its distribution and loses its relation to the rest of its row."""
    chosen = np.flatnonzero(rng.random(rows.height) < share)
    order = np.arange(rows.height)
    order[chosen] = rng.permutation(chosen)
    return rows.with_columns(rows[c][order].alias(c) for c in columns)
