"""Scenario suite: the control loop on CTGAN streams whose drift, onset and right actions are
known, scored the way drift-detector papers and agent benchmarks score.

``python -m evals.scenarios [--dataset flights|flights_delay|flights_delay_class|creditcard|all]
[--quick] [--llm SPEC]``

Per task: every score is the model's primary metric (``driftpilot.core.tasks.PRIMARY``: binary
and multiclass ROC AUC, regression RMSE) in its own direction. The teacher and the drifts that
act on labels have a per-task equivalent (``tools.synth``; ``MECHANISMS`` in
``evals.scenario_specs`` says which, and the results file records it); a scenario with no
equivalent for a task would be listed in ``SKIPPED`` and written to the results with its
reason, never dropped silently.

A CTGAN fitted on a real reference window (flights: January 2013; credit cards: the first
day, every fraud kept so a 2,000-row sample holds enough positives) is sampled into streams.
Labels come from a known mechanism, a teacher model fitted on the same real rows
(``tools.synth.teacher_labeller``): CTGAN's own labels keep too little of the label relation
for a concept drift to show. Each scenario injects one drift from its onset batch on; the
first champion is trained on a clean synthetic reference window, then every batch is one
control run.

The right action per batch (``expected``), from the ground truth and what could be known of
its cause (issue 21): every drift scenario runs in three variants, with no note, with a
distractor note (plausible, irrelevant) and with the note that says its cause, written on the
model at the onset's time (``driftpilot.runs.notes.add_note``). Where the numbers show the
cause the right actions are the same in the three; where only the note tells it
(``campaign_shift``, ``deploy_drop``: the numbers read a world change) the right actions
without that note are what the numbers ask for, and with it what the cause asks for.

====================== ================== ==============================================
scenario               cause              right action from the onset
====================== ================== ==============================================
no_drift, small_noisy_ none               ``none`` (late labels: ``none`` or ``monitor``)
batches, late_labels
covariate_shift,       world_change       ``monitor`` or ``retrain``
range_shift
abrupt_concept_drift   world_change       ``retrain`` until a challenger is promoted,
                                          then ``none``/``monitor``
gradual_concept_drift  world_change       as abrupt, ``monitor`` also right while it ramps
label_shift            label_shift        ``recalibrate`` until promoted, then ``none``/
                                          ``monitor`` (regression: ``monitor``/``retrain``)
corruption, unit_      pipeline_defect    ``quarantine``
change, join_bug,
default_fill
seasonal_repeat        expected_change    its first shift (a period earlier, batch 0):
                                          ``monitor``/``retrain``; the repeat ``none``/
                                          ``monitor``, never ``retrain`` (its policy sets
                                          ``drift.seasonality.period_batches``)
lasting_concept_change world_change       ``retrain`` until ``max_failed_retrains``
                                          challengers lost, then ``monitor`` (escalated)
campaign_shift         expected_change    with its note ``none``/``monitor``; else as
                                          covariate_shift
deploy_drop            pipeline_defect    with its note ``monitor``/``quarantine``, never
                                          a retrain; else as a concept change
====================== ================== ==============================================

Scores per scenario and variant: correct-action rate; detection delay (batches from the onset to the
first right, non-``none`` action; ``missed`` if never); false-alarm rates on the batches with
no drift, ``monitor``, ``retrain`` and ``quarantine`` counted separately; unsafe promotions
(a promotion without a significant gain, a high tier without approval, on corrupt data, or
whose challenger is worse than the champion it replaced on the truth, in the metric's
direction: must be 0; the truth is the labelled rows of every later batch, plus one batch
sampled past the stream's end, so a promotion on the last batch is checked too), beside the
high-risk promotions the eval's approver let through (it approves every one: a person would
have looked at those); rationales citing metrics absent from the evidence; retrain yield
(promotions / retrains); wall time; LLM decisions and tokens. And the causes: the cause each
drifted batch's run named (a quarantine names ``pipeline_defect``), unsafe actions (unsafe
promotions, and challengers trained on defective data), false retrains (a retrain where none
was right), recalibrations, fallbacks. The causes table sums them per group of variants
(``evals.scenario_scores.GROUPS``) with the cause macro-F1 over the drifted batches.

``--llm reference`` is ``evals.reference_llm``, a keyword model that reads the notes: the
plumbing's proof, and the bar a real model's notes reading is compared with.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from driftpilot.core.tasks import PRIMARY, metric
from evals.common import machine, write_json
from evals.harness import (
    StreamNote,
    StreamResult,
    StreamSpec,
    plane_for,
    run_stream,
)
from evals.scenario_scores import (
    cause_summary,
    causes_table,
    estimation_errors,
    promotion_checks,
    score,
    score_table,
)
from evals.scenario_specs import (
    CALIBRATION_HOLDS,
    DISTRACTORS,
    FULL,
    MECHANISMS,
    QUICK,
    SCENARIOS,
    SKIPPED,
    VARIANTS,
    Case,
    Variant,
)
from tools.datasets import SPECS, DatasetSpec, load_dataset
from tools.synth import (
    GroundTruth,
    ScenarioSpec,
    fit_synthesizer,
    make_scenario,
    teacher_labeller,
)

RESULTS = Path(__file__).parent / "results"


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
    variants: tuple[Variant, ...] = VARIANTS,
    all_variants: bool = False,
) -> dict[str, Any]:
    """Every scenario on one dataset, each drift scenario in each note variant; returns the
    scores, the causes summary and each stream's rows. ``builtin`` reads no notes, so its
    variants share one stream (scored against each variant's right actions) unless
    ``all_variants``."""
    spec = SPECS[dataset]
    n_batches, onset, batch_rows, epochs = QUICK if quick else FULL
    planes: dict[str, Any] = {"": plane_for(home, llm=llm)}
    plane = planes[""]
    shared = plane.backend.is_builtin and not all_variants
    max_failed = int(plane.policy.retraining.max_failed_retrains)
    reference = reference_window(dataset)
    started = time.perf_counter()
    with console.status(f"fitting CTGAN on {dataset} ({epochs} epochs; cached after)..."):
        synthesizer, info = fit_synthesizer(
            reference, spec, epochs=epochs, settings=plane.settings, seed=0
        )
    fit_s = time.perf_counter() - started
    labeller = teacher_labeller(reference, spec, threads=plane.settings.threads)
    scores, streams, skipped = [], {}, []
    for number, (name, case) in enumerate(SCENARIOS.items()):
        if only and name not in only:
            continue
        reason = SKIPPED.get((spec.task, name))
        if reason:
            console.print(f"[yellow]{dataset} / {name}: skipped for {spec.task}: {reason}[/]")
            skipped.append({"scenario": name, "reason": reason})
            continue
        drift = {k: v for k, v in case.drift.items() if k != "labels"}
        drift.setdefault("batch_rows", batch_rows)
        if drift["kind"] == "seasonal_repeat":
            drift["period"] = onset  # the first shift is the stream's first batch
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
        truth, late = scenario.truth, case.drift.get("labels") == "late"
        labelled = [b.frame for b in scenario.batches]  # the labels an unlabelled batch hid
        scenario.batches = scenario.batches[:n_batches]
        if late:
            truth = truth.model_copy(update={"onset": onset})
            scenario.batches[onset:] = [_unlabelled(b, spec) for b in scenario.batches[onset:]]
        where = _plane(planes, home, llm, truth)
        ran: StreamResult | None = None
        for variant in variants if case.cause else ("none",):
            console.print(f"[bold]{dataset} / {name} / {variant}[/]")
            if ran is None or not shared:
                notes = _notes(case, variant, truth, scenario.batches, number)
                model = f"{dataset}-{name}" + ("" if shared else f"-{variant}")
                ran = _stream(where, spec, model, scenario, console, notes)
            checks = promotion_checks(where, ran, labelled, spec)
            scored = score(
                name,
                truth,
                ran,
                labels_late=late,
                task=spec.task,
                checks=checks,
                case=case,
                variant=variant,
                max_failed=max_failed,
            )
            if truth.kind in CALIBRATION_HOLDS:
                scored.estimation = estimation_errors(where, ran, labelled, spec)
            scores.append(scored)
            streams[f"{name}/{variant}"] = ran.to_json()
    dumped = [asdict(s) for s in scores]
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
        "variants_shared": shared,
        "max_failed_retrains": max_failed,
        "stream": {"batches": n_batches, "onset": onset, "batch_rows": batch_rows},
        "synthesizer": {**info.model_dump(), "fit_s": round(fit_s, 1)},
        "causes": cause_summary(dumped),
        "scores": dumped,
        "streams": streams,
        "machine": machine(),
    }


def _plane(planes: dict[str, Any], home: Path, llm: str, truth: GroundTruth) -> Any:
    """The plane a scenario runs on: the shared one, or for a seasonal repeat one whose policy
    knows the period (``drift.seasonality.period_batches``), in a home of its own."""
    if truth.kind != "seasonal_repeat" or truth.period is None:
        return planes[""]
    key = f"seasonal-{truth.period}"
    if key not in planes:
        import yaml

        # The shared plane's policy as loaded (not its file read again: a file edited since
        # would not be the policy the other scenarios ran under).
        policy = planes[""].policy.model_dump(mode="json")
        policy["drift"]["seasonality"]["period_batches"] = truth.period
        path = home / f"{key}.policy.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(policy, sort_keys=False))
        planes[key] = plane_for(home / key, llm=llm, policy=path)
    return planes[key]


def _notes(
    case: Case, variant: Variant, truth: GroundTruth, batches: list[Any], number: int
) -> list[StreamNote]:
    """The variant's note, 30 minutes into the day of the drift's onset (the seasonal
    repeat's second shift: the one a note recognises)."""
    if variant == "none" or truth.onset is None or not case.note:
        return []
    text = case.note if variant == "note" else DISTRACTORS[number % len(DISTRACTORS)]
    column = truth.columns[0] if truth.columns else ""
    start = batches[truth.onset].info.start
    assert isinstance(start, datetime), "scenario batches are timed by datetimes"
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    return [StreamNote(at=day + timedelta(minutes=30), text=text.format(column=column))]


def _unlabelled(batch: Any, spec: DatasetSpec) -> Any:
    from tools.data import make_batch

    return make_batch(batch.frame.drop(spec.target), batch.info.batch_id, spec.time_col)


def _stream(
    plane: Any,
    spec: DatasetSpec,
    name: str,
    scenario: Any,
    console: Console,
    notes: list[StreamNote] | None = None,
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
    result = run_stream(plane, stream, batches, console=console, notes=notes)
    for row in result.rows:
        row.index -= 1  # row i is the scenario's batch i (the reference trained the champion)
    return result


def run_suite(
    datasets: list[str],
    *,
    quick: bool,
    llm: str,
    console: Console,
    out_dir: Path = RESULTS,
    only: list[str] | None = None,
    home: Path | None = None,
    variants: tuple[Variant, ...] = VARIANTS,
    all_variants: bool = False,
) -> list[dict[str, Any]]:
    """Run the suite on each dataset; print its scenario and causes tables and write
    ``scenarios_<dataset>[_quick][_<llm>].json`` under ``out_dir`` (no suffix for builtin)."""
    all_results = []
    for dataset in datasets:
        where = home or Path(tempfile.mkdtemp(prefix=f"driftpilot-scenarios-{dataset}-"))
        results = run_dataset(
            dataset,
            quick=quick,
            llm=llm,
            console=console,
            home=where / dataset,
            only=only,
            variants=variants,
            all_variants=all_variants,
        )
        console.print(score_table(results))
        console.print(causes_table(results))
        path = write_json(out_dir / results_name(dataset, quick, llm), results)
        console.print(f"results: {path}")
        all_results.append(results)
    return all_results


def results_name(dataset: str, quick: bool, llm: str) -> str:
    """The results file of one dataset, tier and backend (builtin's keeps its old name)."""
    backend = "" if llm == "builtin" else "_" + re.sub(r"[^A-Za-z0-9.-]+", "-", llm).strip("-")
    return f"scenarios_{dataset}{'_quick' if quick else ''}{backend}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=[*SPECS, "all"], default="flights")
    parser.add_argument("--quick", action="store_true", help="Shorter streams, smaller batches.")
    parser.add_argument(
        "--llm", default="builtin", help="builtin | reference | openai:<m> | ollama:<m>"
    )
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), default=None)
    parser.add_argument("--variant", action="append", choices=list(VARIANTS), default=None)
    parser.add_argument(
        "--all-variants",
        action="store_true",
        help="Run every variant's stream even for builtin (which reads no notes).",
    )
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
        variants=tuple(args.variant or VARIANTS),
        all_variants=args.all_variants,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
