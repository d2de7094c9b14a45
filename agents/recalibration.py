"""Recalibration: the drift analyst read a label shift (a class's prevalence moved, the inputs
given the class did not), so the champion's ranking still holds and only its probabilities
carry the old prevalence. Fit a calibration map of the champion (``tools.calibrate``) on the
earliest ``FIT_SHARE`` of the batch's labelled rows, hold the latest rest out, and log
champion + map as a challenger of the same model, the way a retrain logs its own: the
evaluator and CI/CD then treat it like any challenger (it is judged on log loss, since a
monotone map leaves the ROC AUC where it was).

The split is the retrain's turned round: a retrain learns thousands of numbers and keeps 70 %
of the batch to learn them, a map fits one per class (and a temperature), while what it gains
per row is small and concentrated on the rows of the class whose share moved. On the quick
flights_delay_class label shift (a 7 % class at 2.5 times its share) a prior map gains 0.020
log loss on fresh rows whether it was fitted on 700, 500 or 300 rows of a 1,000-row batch, but
the 95 % interval on the rows left proves it in 28 % of batches with 300 held out, 57 % with
700: the retrain's split rejected maps that were better.

Idempotent per run step like the retraining node: the slice is recorded as the step's effect
and returned as is on a replay, and the MLflow run is logged under the key
``<run id>:recalibrate``. Regression is not offered (no probabilities to calibrate): the
node refuses it with a PolicyViolation. An adopted or label-only champion cannot carry a map
here (its pyfunc is the owner's): the slice says so as a failed challenger and the run ends
``challenger_failed``, the champion untouched."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
from langgraph.runtime import Runtime

from agents.base import Outcome
from agents.context import RunContext
from driftpilot.core.errors import DataError, PolicyViolation
from tools import registry
from tools.calibrate import (
    MIN_ROWS_PER_PARAMETER,
    CalibratedModel,
    CalibrationFit,
    calibrate_model,
    uncalibrated,
)
from tools.data import write_parquet_atomic
from tools.metrics import encode_labels, value

NAME = "recalibrate"
FIT_SHARE = 0.3  # of the batch's labelled rows, the earliest: the rest judge the map (see above)


def node(state: dict[str, Any], runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Fit, log and audit the calibrated champion once per run; its slice is the retraining
    slice (``kind`` "recalibrate"), which the evaluator and CI/CD read.

    Raises:
        PolicyViolation: a regression model, or no champion to recalibrate.
    """
    ctx = runtime.context
    done = ctx.store.effect(state["run_id"], NAME)
    if done is not None:
        return {"retraining": done}
    run_id, model = state["run_id"], state["model"]
    task = ctx.spec(model).task
    if task == "regression":
        raise PolicyViolation(
            f"{model} is a regression model: recalibrate is offered for classifiers only "
            "(a number has no probabilities to calibrate); retrain it instead"
        )
    champ = ctx.champion(model)
    if champ is None:
        raise PolicyViolation(f"{model} has no champion to recalibrate")
    base = uncalibrated(champ[0])
    family = str(base.family)
    if family.startswith("adopted:") or getattr(base, "label_only", False):
        result = _unsupported(family, champ[1])
    else:
        result = _fit_and_log(ctx, state, champ[0], champ[1])
    action = f"calibrate:{result['method']}" if not result.get("failed") else "calibrate_failed"
    ctx.record(
        run_id,
        NAME,
        Outcome(None, "none", ""),
        action,
        _rationale(result),
        {**result, "task": task},
    )
    ctx.store.record_effect(run_id, NAME, result)
    return {"retraining": result}


def _fit_and_log(
    ctx: RunContext, state: dict[str, Any], champion: Any, version: int
) -> dict[str, Any]:
    """Fit the map on the earliest rows of the current batch (``calibration_split``), write
    the batch as the reference and the latest rows as the holdout, log the calibrated model."""
    run_id, model = state["run_id"], state["model"]
    spec = ctx.spec(model)
    batch, rows, holdout = calibration_split(ctx, model, state["ingestion"]["path"])
    try:
        calibrated, fit = ctx.call(
            run_id,
            NAME,
            "calibrate.calibrate_model",
            lambda: calibrate_model(champion, rows, spec.target),
            {"rows": rows.height, "champion_version": version},
            lambda r: r[1].model_dump(),
        )
    except DataError as exc:  # too few labelled rows, or one class: no map, the run ends
        return _failed("unfit", str(exc), str(uncalibrated(champion).family), rows.height)
    folder = ctx.model_dir(model)
    window_path, holdout_path = (
        folder / f"window-{run_id}.parquet",
        folder / f"holdout-{run_id}.parquet",
    )
    # The batch becomes the reference if the map is promoted: its rows carry the new
    # prevalence, so the next batch is not read as the same label shift again (all of them:
    # the fit rows alone would be a reference too small to measure drift against).
    write_parquet_atomic(batch, window_path)  # a full disk leaves no torn reference
    write_parquet_atomic(holdout, holdout_path)
    request = registry.RegisterRequest(
        name=model,
        key=f"{run_id}:{NAME}",
        params={
            "kind": NAME,
            "run_id": run_id,
            "base_version": version,
            "calibration": fit.calibrator.method,
        },
        metrics={"calibration_log_loss_before": fit.log_loss_before},
        tags={"driftpilot.run_id": run_id, "driftpilot.kind": NAME},
        artifacts=[state["drift"]["report"]] if state["drift"].get("report") else [],
    )
    logged = ctx.mutate(
        run_id,
        NAME,
        f"{NAME}:log_model",
        "registry.log_model",
        lambda: registry.log_model(calibrated, request, ctx.settings),
        {"name": model, "key": request.key},
        lambda m: m.model_dump(mode="json"),
        fault="after_log",
    )
    metric = ctx.metric(model).name
    return {
        "kind": NAME,
        "mlflow_run_id": logged.run_id,
        "model_uri": logged.model_uri,
        "model_id": logged.model_id,
        "family": calibrated.family,  # the champion's: a map is no change of family
        "base_version": version,
        "window": 1,
        "rows": rows.height,
        "window_path": str(window_path),
        "holdout_path": str(holdout_path),
        "valid_metric": metric,
        "valid_score": _fitted_score(calibrated, fit, rows, spec.target, metric),
        "window_quality_warnings": _warnings(ctx, model),
        "method": fit.calibrator.method,
        "calibration": _calibration_numbers(fit),
    }


def calibration_split(
    ctx: RunContext, model: str, current_path: str
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The current batch's labelled rows (the schema's columns) by time, the earliest
    ``FIT_SHARE`` of them to fit the map on (at least the ``MIN_ROWS_PER_PARAMETER`` rows a map
    needs, when the batch has more) and the latest rest, every column, as the holdout."""
    spec = ctx.spec(model)
    labelled = pl.read_parquet(current_path).filter(pl.col(spec.target).is_not_null())
    labelled = labelled.sort(spec.time_col)
    wanted = max(MIN_ROWS_PER_PARAMETER, int(labelled.height * FIT_SHARE))
    n_fit = max(0, min(wanted, labelled.height - 1))  # one row at least is held out
    columns = [*spec.features, spec.target, spec.time_col]
    fit = labelled.head(n_fit)[columns]
    return labelled[columns], fit, labelled.tail(labelled.height - n_fit)


def _fitted_score(
    calibrated: CalibratedModel, fit: CalibrationFit, rows: Any, target: str, metric: str
) -> float | None:
    """The calibrated champion's score, in the model's metric, on the rows the map was
    fitted on: the recalibration's validation score (the evaluator compares the holdout's
    with it)."""
    labelled = rows.filter(rows[target].is_not_null())
    y = encode_labels(labelled[target], calibrated.task, calibrated.classes or None)
    keep = y >= 0
    scores = calibrated.predict_scores(labelled)
    return value(metric, calibrated.task, y[keep], scores[keep])


def _calibration_numbers(fit: CalibrationFit) -> dict[str, Any]:
    weights = fit.calibrator.prior_weights()
    return {
        "rows": fit.rows,
        "log_loss_before": round(fit.log_loss_before, 6),
        "log_loss_after": round(fit.log_loss_after, 6),
        "prevalence": fit.prevalence,
        "prior_weights": [round(w, 4) for w in weights] if weights is not None else None,
        "slope": round(fit.calibrator.slope, 6),
    }


def _warnings(ctx: RunContext, model: str) -> int:
    """Risky quality warnings of the calibration rows' batch (the risk rules count them)."""
    batches = ctx.accepted_batches(model)[-1:]
    return sum(len(json.loads(r.reason or "[]")) for r in batches)


def _unsupported(family: str, version: int) -> dict[str, Any]:
    why = (
        f"the champion v{version} ({family}) is an owner's model that scores through its "
        "own MLflow flavour (or gives labels only): no calibration map is fitted on it"
    )
    return _failed("unsupported", why, family, 0)


def _failed(reason: str, error: str, family: str, rows: int) -> dict[str, Any]:
    """The slice of a recalibration that gave no challenger: the graph ends the run as
    ``challenger_failed`` on it (like a failed trainer); the champion is not touched."""
    return {
        "kind": NAME,
        "failed": True,
        "reason": reason,
        "error": error,
        "family": family,
        "method": "none",
        "window": 1,
        "rows": rows,
    }


def _rationale(result: dict[str, Any]) -> str:
    if result.get("failed"):
        return f"Not recalibrated: {result['error']}."
    numbers = result["calibration"]
    return (
        f"Label shift: the champion v{result['base_version']}'s scores recalibrated "
        f"({result['method']}) on {numbers['rows']:,} labelled rows of this batch before the "
        f"holdout; log loss there {numbers['log_loss_before']:.4f} -> "
        f"{numbers['log_loss_after']:.4f}. The evaluator judges it on the holdout."
    )
