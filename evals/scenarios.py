"""Scenario suite: the control loop on CTGAN streams whose drift, onset and right actions are
known, scored the way drift-detector papers and agent benchmarks score.

``python -m evals.scenarios [--dataset flights|flights_delay|flights_delay_class|creditcard|all]
[--quick] [--llm SPEC]``

Per task: every score is the model's primary metric (``driftpilot.core.tasks.PRIMARY``: binary
and multiclass ROC AUC, regression RMSE) in its own direction. The teacher and the drifts that
act on labels have a per-task equivalent (``tools.synth``; ``MECHANISMS`` below says which, and
the results file records it); a scenario with no equivalent for a task would be listed in
``SKIPPED`` and written to the results with its reason, never dropped silently.

A CTGAN fitted on a real reference window (flights: January 2013; credit cards: the first
day, every fraud kept so a 2,000-row sample holds enough positives) is sampled into streams.
Labels come from a known mechanism, a teacher model fitted on the same real rows
(``tools.synth.teacher_labeller``): CTGAN's own labels keep too little of the label relation
for a concept drift to show. Each scenario injects one drift from its onset batch on; the
first champion is trained on a clean synthetic reference window, then every batch is one
control run.

The right action per batch (``expected``), from the ground truth:

====================== ============================================================
before the onset, and  ``none``
every ``no_drift``
batch
covariate_shift        ``monitor`` or ``retrain`` (inputs moved; labels drawn before)
abrupt_concept_drift   ``retrain`` until a challenger is promoted, then ``none``/``monitor``
gradual_concept_drift  as abrupt, with ``monitor`` also right while the drift ramps up
label_shift            ``monitor`` (the ranking metric holds: retraining is waste);
                       regression ``monitor`` or ``retrain`` (RMSE moves with the target)
corruption             ``quarantine``
range_shift            ``monitor`` or ``retrain``: plausible data, never ``quarantine``
small_noisy_batches    ``none`` throughout: no drift, batches of 150 rows (noise only)
late_labels            ``none`` or ``monitor`` once batches come without their labels
====================== ============================================================

Scores per scenario: correct-action rate; detection delay (batches from the onset to the
first right, non-``none`` action; ``missed`` if never); false-alarm rates on the batches with
no drift, ``monitor``, ``retrain`` and ``quarantine`` counted separately; unsafe promotions
(a promotion without a significant gain, a high tier without approval, on corrupt data, or
whose challenger is worse than the champion it replaced on the truth, in the metric's
direction: must be 0; the truth is the labelled rows of every later batch, plus one batch
sampled past the stream's end, so a promotion on the last batch is checked too), beside the
high-risk promotions the eval's approver let through (it approves every one: a person would
have looked at those); rationales citing metrics absent from the evidence; retrain yield
(promotions / retrains); wall time; LLM decisions and tokens.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from driftpilot.core.tasks import PRIMARY, Task, metric
from evals.common import machine, write_json
from evals.harness import (
    BatchRow,
    StreamResult,
    StreamSpec,
    estimate_text,
    plane_for,
    run_stream,
)
from tools.datasets import SPECS, DatasetSpec, load_dataset
from tools.drift import model_performance
from tools.synth import (
    GroundTruth,
    ScenarioSpec,
    fit_synthesizer,
    make_scenario,
    teacher_labeller,
)

RESULTS = Path(__file__).parent / "results"

# name -> how its drift is injected (onset, length and batch size come from the tier)
SCENARIOS: dict[str, dict[str, Any]] = {
    # Stream shapes rather than drifts (the keys beyond ScenarioSpec's are the suite's own):
    # batches of 150 rows, where a metric moves by sampling noise alone; and labels that
    # arrive late (batches from the onset come without the target column).
    "small_noisy_batches": {"kind": "none", "batch_rows": 150},
    "late_labels": {"kind": "none", "labels": "late"},
    "no_drift": {"kind": "none"},
    "covariate_shift": {"kind": "covariate_shift", "magnitude": 1.5},
    "abrupt_concept_drift": {"kind": "concept_drift", "magnitude": 0.9},
    "gradual_concept_drift": {"kind": "gradual_concept_drift", "magnitude": 0.9, "ramp": 3},
    "label_shift": {"kind": "label_shift", "magnitude": 2.5},
    "corruption": {"kind": "corruption", "corruption": "nan_storm"},
    "range_shift": {"kind": "range_shift", "magnitude": 1.5},
}
# How each scenario that acts on labels is made, per task (tools.synth): the results say it.
MECHANISMS: dict[Task, dict[str, str]] = {
    "binary": {
        "labels": "teacher LightGBM's P(1), log-odds sharpened x2; y ~ Bernoulli",
        "concept_drift": "labels flipped on a share of the rows where the first numeric "
        "column is above its median",
        "label_shift": "positive rate multiplied by the magnitude (rows resampled by class)",
    },
    "multiclass": {
        "labels": "teacher LightGBM's class probabilities raised to the power 2, renormalised; "
        "a class drawn from them",
        "concept_drift": "on the same share of rows a binary flip touches, the label moves one "
        "class on (cyclic permutation of the sorted classes)",
        "label_shift": "the reference's rarest class's prior multiplied by the magnitude "
        "(rows resampled by class: P(x | class) kept)",
    },
    "regression": {
        "labels": "teacher LightGBM's prediction stretched x2 around the mean, plus Gaussian "
        "noise of its residual std / 2",
        "concept_drift": "on the same share of rows a binary flip touches, the target rises by "
        "twice its reference std (a changed relation)",
        "label_shift": "rows resampled with weight magnitude ** z (z: standardised target): the "
        "target's distribution moves up, P(x | y) kept",
    },
}
# (task, scenario) -> why it is not run for that task. Empty: every scenario has an
# equivalent for every task; an entry here is printed and written to the results.
SKIPPED: dict[tuple[Task, str], str] = {}
# Scenarios where P(y | x) holds: confidence-based estimation (CBPE) should work there, and its
# error is scored (a concept drift or a prior shift breaks the calibration it relies on).
CALIBRATION_HOLDS = frozenset({"none", "covariate_shift", "range_shift"})
# (batches, onset, rows per batch, CTGAN epochs)
QUICK, FULL = (6, 3, 1000, 10), (10, 5, 2000, 20)


@dataclass
class ScenarioScore:
    """One scenario's scores (see the module docstring)."""

    scenario: str
    kind: str
    onset: int | None
    correct_rate: float
    detection_delay: int | None
    false_alarm_monitor: float | None
    false_alarm_retrain: float | None
    false_alarm_quarantine: float | None
    unsafe_promotions: int
    worse_on_truth: int  # promotions whose challenger scored worse than the champion on the truth
    approved_high_risk: int  # high-risk promotions the eval's approver let through
    citation_flags: int
    retrains: int
    promotions: int
    retrain_yield: float | None
    wall_s: float
    llm_decisions: int
    tokens: int
    actions: list[str]
    expected: list[list[str]]
    # |estimate - realised| of the model's metric (CBPE; DLE for a regression): batches,
    # mean, max (scenarios where P(y|x) holds)
    estimation: dict[str, Any] | None = None
    # every promotion checked on the truth: batch, versions, both scores, gain (> 0 better)
    promotion_checks: list[dict[str, Any]] | None = None


def expected(
    truth: GroundTruth,
    index: int,
    promoted_since_onset: bool,
    *,
    labels_late: bool = False,
    task: Task = "binary",
) -> set[str]:
    """The right actions for batch ``index`` of a stream with this ground truth (and, with
    ``labels_late``, no target column from the onset on: accept it and watch, never
    quarantine a batch for its missing labels). A regression's label shift moves its RMSE
    (the target's distribution moved), so a retrain is right there as well as monitoring."""
    if truth.onset is not None and index >= truth.onset and labels_late:
        return {"none", "monitor"}
    if truth.onset is None or index < truth.onset:
        return {"none"}
    if truth.kind == "corruption":
        return {"quarantine"}
    if truth.kind == "label_shift":
        return {"monitor", "retrain"} if task == "regression" else {"monitor"}
    if truth.kind in ("covariate_shift", "range_shift"):
        return {"monitor", "retrain"}
    ramping = truth.kind == "gradual_concept_drift" and index < truth.onset + (truth.ramp or 1) - 1
    if promoted_since_onset:
        return {"none", "monitor", "retrain"} if ramping else {"none", "monitor"}
    return {"monitor", "retrain"} if ramping else {"retrain"}


def score(
    name: str,
    truth: GroundTruth,
    result: StreamResult,
    *,
    labels_late: bool = False,
    task: Task = "binary",
    checks: list[dict[str, Any]] | None = None,
) -> ScenarioScore:
    """Score a stream's rows (row ``i`` is scenario batch ``i``) against its ground truth;
    ``checks`` are its promotions scored on the truth (``promotion_checks``)."""
    rows = result.rows
    # A promotion fixes the drift only once the drift is at full size (a gradual drift goes
    # on growing after a challenger promoted mid-ramp).
    full_from = None if truth.onset is None else truth.onset + (truth.ramp or 1) - 1
    wanted, promoted = [], False
    for i, row in enumerate(rows):
        wanted.append(expected(truth, i, promoted, labels_late=labels_late, task=task))
        promoted = promoted or (
            row.promoted is not None and full_from is not None and i >= full_from
        )
    right = [r.action in w for r, w in zip(rows, wanted, strict=True)]
    clean = [r for i, r in enumerate(rows) if truth.onset is None or i < truth.onset]
    corrupt = truth.kind == "corruption" and truth.onset is not None
    worse = {c["batch"] for c in checks or [] if c["worse"]}
    unsafe = sum(
        r.promoted is not None and (r.unsafe or (corrupt and i >= (truth.onset or 0)) or i in worse)
        for i, r in enumerate(rows)
    )
    totals = result.totals()
    return ScenarioScore(
        scenario=name,
        kind=truth.kind,
        onset=truth.onset,
        correct_rate=round(sum(right) / len(rows), 3),
        detection_delay=_delay(truth, rows, right),
        false_alarm_monitor=_rate(clean, "monitor"),
        false_alarm_retrain=_rate(clean, "retrain"),
        false_alarm_quarantine=_rate(clean, "quarantine"),
        unsafe_promotions=unsafe,
        worse_on_truth=len(worse),
        approved_high_risk=sum(r.promoted is not None and r.risk_tier == "high" for r in rows),
        citation_flags=totals["citation_flags"],
        retrains=result.retrains,
        promotions=result.promotions,
        retrain_yield=round(result.promotions / result.retrains, 3) if result.retrains else None,
        wall_s=round(result.wall_s, 1),
        llm_decisions=totals["llm_decisions"],
        tokens=totals["tokens"],
        actions=[r.action for r in rows],
        expected=[sorted(w) for w in wanted],
        promotion_checks=checks,
    )


def _delay(truth: GroundTruth, rows: list[BatchRow], right: list[bool]) -> int | None:
    if truth.onset is None or truth.kind == "none":  # nothing to detect
        return None
    for i in range(truth.onset, len(rows)):
        if right[i] and rows[i].action != "none":
            return i - truth.onset
    return None


def _rate(rows: list[BatchRow], action: str) -> float | None:
    return round(sum(r.action == action for r in rows) / len(rows), 3) if rows else None


# -- running ----------------------------------------------------------------------------------


def reference_window(dataset: str) -> pl.DataFrame:
    """The real rows the synthesizer learns from: flights of January 2013 (each flights task);
    for credit cards the first day, with every fraud kept (0.17 % of rows: a plain sample
    would hold a handful)."""
    spec = SPECS[dataset]
    frame = load_dataset(dataset)  # type: ignore[arg-type]
    if dataset.startswith("flights"):
        return frame.filter(pl.col(spec.time_col).dt.month() == 1)
    day = frame.filter(pl.col(spec.time_col) < 86_400)
    fraud = day.filter(pl.col(spec.target) == 1)
    normal = day.filter(pl.col(spec.target) == 0).sample(n=2000 - fraud.height, seed=0)
    return pl.concat([fraud, normal])


def run_dataset(
    dataset: str,
    *,
    quick: bool,
    llm: str,
    console: Console,
    home: Path,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Every scenario on one dataset; returns the scores and each stream's rows."""
    spec = SPECS[dataset]
    n_batches, onset, batch_rows, epochs = QUICK if quick else FULL
    plane = plane_for(home, llm=llm)
    reference = reference_window(dataset)
    started = time.perf_counter()
    with console.status(f"fitting CTGAN on {dataset} ({epochs} epochs; cached after)..."):
        synthesizer, info = fit_synthesizer(
            reference, spec, epochs=epochs, settings=plane.settings, seed=0
        )
    fit_s = time.perf_counter() - started
    labeller = teacher_labeller(reference, spec, threads=plane.settings.threads)
    scores, streams, skipped = [], {}, []
    for number, (name, definition) in enumerate(SCENARIOS.items()):
        if only and name not in only:
            continue
        reason = SKIPPED.get((spec.task, name))
        if reason:
            console.print(f"[yellow]{dataset} / {name}: skipped for {spec.task}: {reason}[/]")
            skipped.append({"scenario": name, "reason": reason})
            continue
        console.print(f"[bold]{dataset} / {name}[/]")
        drift = {k: v for k, v in definition.items() if k != "labels"}
        drift.setdefault("batch_rows", batch_rows)
        scenario = make_scenario(
            synthesizer,
            reference,
            spec,
            # Each scenario its own sample: the no-drift batches of the suite are not one
            # stream counted nine times. One batch more than the stream: never run, it is the
            # truth a promotion on the last batch is checked on.
            ScenarioSpec(n_batches=n_batches + 1, onset=onset, seed=1000 * (number + 1), **drift),
            labeller,
        )
        truth, late = scenario.truth, definition.get("labels") == "late"
        labelled = [b.frame for b in scenario.batches]  # the labels an unlabelled batch hid
        scenario.batches = scenario.batches[:n_batches]
        if late:
            truth = truth.model_copy(update={"onset": onset})
            scenario.batches[onset:] = [_unlabelled(b, spec) for b in scenario.batches[onset:]]
        result = _stream(plane, spec, f"{dataset}-{name}", scenario, console)
        checks = promotion_checks(plane, result, labelled, spec)
        scored = score(name, truth, result, labels_late=late, task=spec.task, checks=checks)
        if truth.kind in CALIBRATION_HOLDS:
            scored.estimation = estimation_errors(plane, result, labelled, spec)
        scores.append(scored)
        streams[name] = result.to_json()
    return {
        "dataset": dataset,
        "task": spec.task,
        "metric": PRIMARY[spec.task],
        "higher_is_better": metric(PRIMARY[spec.task], spec.task).higher_is_better,
        "mechanisms": MECHANISMS[spec.task],
        "skipped": skipped,
        "tier": "quick" if quick else "full",
        "llm": llm,
        "backend": plane.backend.name,
        "stream": {"batches": n_batches, "onset": onset, "batch_rows": batch_rows},
        "synthesizer": {**info.model_dump(), "fit_s": round(fit_s, 1)},
        "scores": [asdict(s) for s in scores],
        "streams": streams,
        "machine": machine(),
    }


def promotion_checks(
    plane: Any, result: StreamResult, labelled: list[pl.DataFrame], spec: DatasetSpec
) -> list[dict[str, Any]]:
    """Each promotion scored on the truth: the promoted challenger against the champion it
    replaced, in the model's metric and direction, on the labelled rows of every later batch
    (the last is the extra batch the stream never ran). ``worse``: the challenger's gain is
    below 0 (``Metric.gain``: > 0 better whichever the direction)."""
    from tools import registry

    measure = metric(result.metric, spec.task)
    checks, champion = [], None
    for row in result.rows:
        before = row.champion_version or champion
        if row.promoted is None or before is None:
            champion = row.champion_version or champion
            continue
        truth = pl.concat(labelled[row.index + 1 :], how="diagonal_relaxed")
        scores = []
        for version in (before, row.promoted):
            model = registry.load_version(result.model, version, plane.settings)
            performance = model_performance(
                model, truth, spec.target, task=spec.task, classes=model.classes or None
            )
            scores.append(performance.get(result.metric))
        old, new = scores
        gain = None if old is None or new is None else measure.gain(old, new)
        checks.append(
            {
                "batch": row.index,
                "champion_version": before,
                "challenger_version": row.promoted,
                "truth_rows": truth.height,
                "champion_score": scores[0],
                "challenger_score": scores[1],
                "gain": None if gain is None else round(gain, 5),
                "worse": gain is not None and gain < 0,
            }
        )
        champion = row.promoted
    return checks


def estimation_errors(
    plane: Any, result: StreamResult, labelled: list[pl.DataFrame], spec: DatasetSpec
) -> dict[str, Any]:
    """|estimate - realised| of the champion's metric (the model's own: ``result.metric``) on
    every batch it was estimated on. Labelled batches carry both; for a batch that came
    without labels the realised score is computed here from the labels the scenario hid (by
    the champion version that scored it)."""
    from tools import registry

    errors = []
    for row in result.rows:
        if row.estimated_metric is None or row.champion_version is None:
            continue
        realised = row.champion_metric
        if realised is None:
            champion = registry.load_version(result.model, row.champion_version, plane.settings)
            scored = model_performance(
                champion,
                labelled[row.index],
                spec.target,
                task=spec.task,
                classes=champion.classes or None,
            )
            realised = scored.get(result.metric)
        if realised is not None:
            errors.append(abs(row.estimated_metric - realised))
    if not errors:
        return {"batches": 0, "mean": None, "max": None}
    return {
        "batches": len(errors),
        "mean": round(float(np.mean(errors)), 4),
        "max": round(float(np.max(errors)), 4),
    }


def _unlabelled(batch: Any, spec: DatasetSpec) -> Any:
    from tools.data import make_batch

    return make_batch(batch.frame.drop(spec.target), batch.info.batch_id, spec.time_col)


def _stream(
    plane: Any, spec: DatasetSpec, name: str, scenario: Any, console: Console
) -> StreamResult:
    batches = [("reference", scenario.reference.frame)]
    batches += [(b.info.batch_id, b.frame) for b in scenario.batches]
    stream = StreamSpec(
        name=name,
        target=spec.target,
        time_col=spec.time_col,
        numeric=spec.numeric,
        categorical=spec.categorical,
        task=spec.task,
    )
    result = run_stream(plane, stream, batches, console=console)
    for row in result.rows:
        row.index -= 1  # row i is the scenario's batch i (the reference trained the champion)
    return result


def score_table(results: dict[str, Any]) -> Table:
    """The scenario table of one dataset."""
    table = Table(
        title=f"scenarios on {results['dataset']} ({results.get('task', 'binary')}, "
        f"{results.get('metric', 'roc_auc')}; {results['tier']}, llm {results['llm']}): "
        f"{results['stream']['batches']} batches of {results['stream']['batch_rows']:,} rows, "
        f"onset {results['stream']['onset']}"
    )
    columns = (
        "scenario",
        "correct",
        "delay",
        "FA mon",
        "FA retr",
        "FA quar",
        "unsafe",
        "worse",
        "promoted",
        "high risk ok'd",
        "cite flags",
        "retrains",
        "yield",
        "est. err",
        "wall s",
        "LLM dec.",
        "tokens",
    )
    for col in columns:
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for s in results["scores"]:
        table.add_row(
            s["scenario"],
            f"{s['correct_rate']:.0%}",
            _delay_text(s),
            _pct(s["false_alarm_monitor"]),
            _pct(s["false_alarm_retrain"]),
            _pct(s["false_alarm_quarantine"]),
            str(s["unsafe_promotions"]),
            str(s.get("worse_on_truth", "-")),
            str(s["promotions"]),
            str(s["approved_high_risk"]),
            str(s["citation_flags"]),
            str(s["retrains"]),
            "-" if s["retrain_yield"] is None else f"{s['retrain_yield']:.2f}",
            estimate_text(s.get("estimation")),
            f"{s['wall_s']:.0f}",
            str(s["llm_decisions"]),
            str(s["tokens"]),
        )
    return table


def _delay_text(s: dict[str, Any]) -> str:
    if s["onset"] is None or s["kind"] == "none":
        return "-"
    return "missed" if s["detection_delay"] is None else str(s["detection_delay"])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def run_suite(
    datasets: list[str],
    *,
    quick: bool,
    llm: str,
    console: Console,
    out_dir: Path = RESULTS,
    only: list[str] | None = None,
    home: Path | None = None,
) -> list[dict[str, Any]]:
    """Run the suite on each dataset; print its table and write ``scenarios_<dataset>[_quick]
    .json`` under ``out_dir``."""
    all_results = []
    for dataset in datasets:
        where = home or Path(tempfile.mkdtemp(prefix=f"driftpilot-scenarios-{dataset}-"))
        results = run_dataset(
            dataset, quick=quick, llm=llm, console=console, home=where / dataset, only=only
        )
        console.print(score_table(results))
        suffix = "_quick" if quick else ""
        path = write_json(out_dir / f"scenarios_{dataset}{suffix}.json", results)
        console.print(f"results: {path}")
        all_results.append(results)
    return all_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=[*SPECS, "all"], default="flights")
    parser.add_argument("--quick", action="store_true", help="Shorter streams, smaller batches.")
    parser.add_argument("--llm", default="builtin", help="builtin | openai:<m> | ollama:<m>")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    datasets = list(SPECS) if args.dataset == "all" else [args.dataset]
    run_suite(
        datasets,
        quick=args.quick,
        llm=args.llm,
        console=Console(width=max(Console().width, 150)),
        out_dir=args.out_dir,
        only=args.scenario,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
