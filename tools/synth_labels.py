"""The scenario suite's label mechanisms (split from ``tools.synth``): the teacher labellers
that draw every row's label per task (binary P(label = 1), a multiclass class, a regression
value) and the drifts that act on labels (a concept change off binary, a label shift per task).
See ``tools.synth``'s docstring for what each mechanism does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from driftpilot.core.errors import SynthError
from tools.datasets import DatasetSpec

Labeller = Callable[[pl.DataFrame], np.ndarray]  # P(label = 1) of every row


class TaskLabeller:
    """A multiclass or regression label mechanism: ``draw`` gives every row's label (a
    binary labeller is a plain function of P(label = 1))."""

    def __init__(self, draw: Callable[[pl.DataFrame, np.random.Generator], np.ndarray]) -> None:
        self.draw = draw

    def __call__(self, rows: pl.DataFrame) -> np.ndarray:
        raise SynthError("a multiclass or regression labeller draws labels; it has no P(1)")


def teacher_labeller(
    reference: pl.DataFrame,
    spec: DatasetSpec,
    *,
    sharpness: float = 2.0,
    threads: int = 1,
    seed: int = 0,
) -> Labeller:
    """A known label mechanism learnt from real rows: a LightGBM fitted on ``reference``, its
    log-odds scaled by ``sharpness`` around the base rate's (so the positive rate stays put
    and the relation is clearer than the real one).

    Raises:
        SchemaError / ModelError: as ``tools.train.train_model``.
    """
    from tools.train import TrainSpec, train_model

    teacher = train_model(
        reference,
        TrainSpec(
            target=spec.target,
            numeric=spec.numeric,
            categorical=spec.categorical,
            threads=threads,
            seed=seed,
            task=spec.task,
        ),
    )
    if spec.task == "multiclass":
        return _multiclass_labeller(teacher, sharpness)
    if spec.task == "regression":
        return _regression_labeller(teacher, reference, spec.target, sharpness)
    base = _logit(np.array([_number(reference[spec.target].mean(), 0.5)]))[0]

    def label_probability(rows: pl.DataFrame) -> np.ndarray:
        logit = base + sharpness * (_logit(teacher.predict_scores(rows)) - base)
        return np.asarray(1.0 / (1.0 + np.exp(-logit)), dtype=float)

    return label_probability


def _multiclass_labeller(teacher: Any, sharpness: float) -> TaskLabeller:
    """Draw a class from the teacher's probabilities raised to ``sharpness`` (renormalised)."""
    classes = np.asarray(teacher.classes, dtype=object)

    def draw(rows: pl.DataFrame, rng: np.random.Generator) -> np.ndarray:
        probs = np.clip(np.asarray(teacher.predict_scores(rows), dtype=float), 1e-9, 1.0)
        probs = probs**sharpness
        cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
        picks = (rng.random((rows.height, 1)) > cumulative).sum(axis=1)
        return np.asarray(classes[np.minimum(picks, len(classes) - 1)])

    return TaskLabeller(draw)


def _regression_labeller(
    teacher: Any, reference: pl.DataFrame, target: str, sharpness: float
) -> TaskLabeller:
    """The teacher's prediction stretched by ``sharpness`` around the mean, plus noise of the
    teacher's residual spread over ``sharpness`` (a clearer relation than the real one)."""
    y = reference[target].cast(pl.Float64).to_numpy()
    fitted = np.asarray(teacher.predict_scores(reference), dtype=float)
    mean, noise = float(np.mean(y)), float(np.std(y - fitted)) / sharpness

    def draw(rows: pl.DataFrame, rng: np.random.Generator) -> np.ndarray:
        predicted = np.asarray(teacher.predict_scores(rows), dtype=float)
        return mean + sharpness * (predicted - mean) + rng.normal(0.0, noise, rows.height)

    return TaskLabeller(draw)


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(clipped / (1 - clipped)), dtype=float)


def _relabel(
    rows: pl.DataFrame, target: str, labeller: Labeller, rng: np.random.Generator
) -> pl.DataFrame:
    if isinstance(labeller, TaskLabeller):
        return rows.with_columns(
            pl.Series(target, labeller.draw(rows, rng)).cast(rows[target].dtype)
        )
    drawn = rng.random(rows.height) < labeller(rows)
    return rows.with_columns(pl.Series(target, drawn).cast(rows[target].dtype))


def _number(value: object, default: float = 0.0) -> float:
    """A Polars aggregate as a float (they are typed as any scalar)."""
    return default if value is None else float(value)  # type: ignore[arg-type]


def _change_relation(
    rows: pl.DataFrame, reference: pl.DataFrame, spec: DatasetSpec, chosen: pl.Series
) -> pl.DataFrame:
    """The non-binary concept drift on the ``chosen`` rows: a multiclass label moves one class
    on (cyclically, in sorted class order); a regression target rises by twice its reference
    std."""
    target = spec.target
    if spec.task == "multiclass":
        classes = sorted(str(c) for c in reference[target].drop_nulls().unique().to_list())
        following = dict(zip(classes, classes[1:] + classes[:1], strict=True))
        moved = pl.col(target).cast(pl.String).replace_strict(following, default=None)
        changed = pl.when(chosen).then(moved).otherwise(pl.col(target).cast(pl.String))
        return rows.with_columns(changed.cast(rows[target].dtype).alias(target))
    step = 2.0 * _number(reference[target].std(), 1.0)
    changed = pl.when(chosen).then(pl.col(target) + step).otherwise(pl.col(target))
    return rows.with_columns(changed.cast(rows[target].dtype).alias(target))


def _shift_class_prior(
    rows: pl.DataFrame,
    reference: pl.DataFrame,
    target: str,
    factor: float,
    rng: np.random.Generator,
    n: int | None = None,
) -> pl.DataFrame:
    """``n`` rows (default: as many as ``rows``) drawn by class so the reference's rarest
    class has ``factor`` times its share in ``rows`` (the other classes keep their relative
    shares): P(x | class) kept. Rows are drawn without replacement where the pool holds
    enough of a class."""
    n = n or rows.height
    # Both in a fixed order: a group_by's is not, and the draws below follow it (the stream
    # of a run must be the stream of the next).
    counts = reference[target].value_counts().sort(["count", target], descending=[True, False])
    rarest = counts[target][-1]
    groups = {key[0]: part for key, part in rows.group_by(target, maintain_order=True)}
    if rarest not in groups:
        raise SynthError(f"cannot shift the class prior: no {rarest!r} rows in the sample")
    share = min(groups[rarest].height / rows.height * factor, 0.999)
    n_rare = round(n * share)
    rest = pl.concat([p for k, p in groups.items() if k != rarest])
    parts = [_draw(groups[rarest], n_rare, rng), _draw(rest, n - n_rare, rng)]
    return pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=int(rng.integers(1 << 31)))


def _draw(rows: pl.DataFrame, n: int, rng: np.random.Generator) -> pl.DataFrame:
    """``n`` of ``rows``, without replacement when there are enough (a copy of a row on both
    sides of a holdout split would be memorised, not learnt)."""
    return rows[rng.choice(rows.height, size=n, replace=n > rows.height)]


def _tilt_target(
    rows: pl.DataFrame,
    reference: pl.DataFrame,
    target: str,
    factor: float,
    rng: np.random.Generator,
    n: int | None = None,
) -> pl.DataFrame:
    """``n`` rows (default: as many as ``rows``) drawn with weights ``factor ** z`` (z: the
    target standardised on the reference, clipped to ±3): the target's distribution moves up,
    P(x | y) kept. Without replacement when the pool is at least twice ``n``."""
    n = n or rows.height
    mean = _number(reference[target].mean())
    std = _number(reference[target].std(), 1.0) or 1.0
    z = np.clip((rows[target].cast(pl.Float64).fill_null(mean).to_numpy() - mean) / std, -3, 3)
    weights = np.power(factor, z)
    replace = rows.height < 2 * n
    picks = rng.choice(rows.height, size=n, replace=replace, p=weights / weights.sum())
    return rows[picks]


def _relabel_prevalence(
    rows: pl.DataFrame, target: str, factor: float, rng: np.random.Generator, n: int | None = None
) -> pl.DataFrame:
    """``n`` rows (default: as many as ``rows``) whose positive rate is ``factor`` times the
    pool's, drawn by class (without replacement where the pool holds enough)."""
    n = n or rows.height
    pos, neg = rows.filter(pl.col(target) == 1), rows.filter(pl.col(target) == 0)
    if pos.height == 0:
        raise SynthError("cannot shift prevalence: the sample holds no positive rows")
    rate = min(max(pos.height / rows.height * factor, 0.001), 0.999)
    n_pos = round(n * rate)
    return pl.concat([_draw(pos, n_pos, rng), _draw(neg, n - n_pos, rng)]).sample(
        fraction=1.0, shuffle=True, seed=int(rng.integers(1 << 31))
    )
