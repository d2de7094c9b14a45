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
(``GROUPS``) with the cause macro-F1 over the drifted batches.

``--llm reference`` is ``evals.reference_llm``, a keyword model that reads the notes: the
plumbing's proof, and the bar a real model's notes reading is compared with.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from driftpilot.core.causes import Cause
from driftpilot.core.tasks import PRIMARY, Task, metric
from evals.common import machine, write_json
from evals.harness import (
    BatchRow,
    StreamNote,
    StreamResult,
    StreamSpec,
    plane_for,
    run_stream,
)
from tools.datasets import SPECS, DatasetSpec, load_dataset
from tools.drift import model_performance
from tools.synth import (
    DEFECTS,
    GroundTruth,
    ScenarioSpec,
    fit_synthesizer,
    make_scenario,
    teacher_labeller,
)

RESULTS = Path(__file__).parent / "results"

# Distractor notes: plausible, about the same days, and irrelevant to the data.
DISTRACTORS = (
    "Quarterly all-hands at 15:00; the dashboards are read-only for an hour.",
    "Alice is on call this week instead of Bob.",
    "Renamed the alert channel to #ml-ops.",
    "Finance closed the quarter today.",
    "Office network maintenance on Saturday night.",
)
Variant = Literal["none", "distractor", "note"]  # no note, a distractor, the note of the cause
VARIANTS: tuple[Variant, ...] = ("none", "distractor", "note")


@dataclass(frozen=True)
class Case:
    """A scenario: how its drift is injected (``ScenarioSpec`` fields, plus the suite's own
    ``batch_rows`` and ``labels``), its true cause from the onset (None: nothing to find), the
    note that says the cause (``{column}``: the drift's first column) and, when only that note
    can tell the cause, the cause the numbers alone read (``numbers``)."""

    drift: dict[str, Any]
    cause: Cause | None = None
    note: str | None = None
    numbers: Cause | None = None

    @property
    def note_decides(self) -> bool:
        return self.numbers is not None


# name -> its case (onset, length and batch size come from the tier)
SCENARIOS: dict[str, Case] = {
    # Stream shapes rather than drifts (the keys beyond ScenarioSpec's are the suite's own):
    # batches of 150 rows, where a metric moves by sampling noise alone; and labels that
    # arrive late (batches from the onset come without the target column).
    "small_noisy_batches": Case({"kind": "none", "batch_rows": 150}),
    "late_labels": Case({"kind": "none", "labels": "late"}),
    "no_drift": Case({"kind": "none"}),
    "covariate_shift": Case(
        {"kind": "covariate_shift", "magnitude": 1.5},
        "world_change",
        "New customer segment since today: a partner airline's passengers book through us.",
    ),
    "abrupt_concept_drift": Case(
        {"kind": "concept_drift", "magnitude": 0.9},
        "world_change",
        "Supplier changed: the new ground-handling company decides which flights wait.",
    ),
    "gradual_concept_drift": Case(
        {"kind": "gradual_concept_drift", "magnitude": 0.9, "ramp": 3},
        "world_change",
        "New rules for slot allocation roll out over the coming days.",
    ),
    "label_shift": Case(
        {"kind": "label_shift", "magnitude": 2.5},
        "label_shift",
        "Storm season: the share of delayed flights is up, the same kinds of flights as usual.",
    ),
    "corruption": Case(
        {"kind": "corruption", "corruption": "nan_storm"},
        "pipeline_defect",
        "ETL job 7 failed half-way overnight; its rows were loaded anyway.",
    ),
    "range_shift": Case(
        {"kind": "range_shift", "magnitude": 1.5},
        "world_change",
        "New fleet of long-haul aircraft in service from today.",
    ),
    "unit_change": Case(
        {"kind": "unit_change"},
        "pipeline_defect",
        "ETL release 4.2 switched {column} to Fahrenheit.",
    ),
    "join_bug": Case(
        {"kind": "join_bug", "magnitude": 0.3},
        "pipeline_defect",
        "Warehouse migration: the bookings join was rewritten today.",
    ),
    "default_fill": Case(
        {"kind": "default_fill", "magnitude": 0.4},
        "pipeline_defect",
        "Ingest service v2 deployed: a missing {column} is now written as 0.",
    ),
    "seasonal_repeat": Case(
        {"kind": "seasonal_repeat", "magnitude": 2.5},
        "expected_change",
        "Spring campaign, same as last year.",
    ),
    "lasting_concept_change": Case(
        {"kind": "lasting_concept_change", "magnitude": 0.9},
        "world_change",
        "Supplier changed, new customer segment: the old delay patterns no longer hold.",
    ),
    # Only the note tells these causes: the numbers read a world change.
    "campaign_shift": Case(
        {"kind": "covariate_shift", "magnitude": 2.5},
        "expected_change",
        "Spring campaign started today, same as last year: cheap fares on long routes.",
        numbers="world_change",
    ),
    "deploy_drop": Case(
        {"kind": "broken_feature"},
        "pipeline_defect",
        "Deployed feature service v3.1 at 00:30 with a new encoder for {column}.",
        numbers="world_change",
    ),
}
# The cause the numbers read for each kind of drift (a case's own ``numbers`` overrides it).
KIND_CAUSE: dict[str, Cause] = {
    "covariate_shift": "world_change",
    "range_shift": "world_change",
    "concept_drift": "world_change",
    "gradual_concept_drift": "world_change",
    "lasting_concept_change": "world_change",
    "broken_feature": "world_change",
    "label_shift": "label_shift",
    "seasonal_repeat": "expected_change",
    **dict.fromkeys(DEFECTS, "pipeline_defect"),
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
    """One scenario's scores in one note variant (see the module docstring)."""

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
    # Issue 21: the note variant, the true cause, and what the run read.
    variant: str = "none"
    cause: str | None = None  # the case's true cause from the onset
    note_decides: bool = False  # only the note tells the cause (the numbers read another)
    true_causes: list[str | None] | None = None  # per batch: None where nothing drifted
    read_causes: list[str] | None = None  # per batch: the cause the run named
    cited_notes: int = 0  # batches whose verdict cited a note
    unsafe_actions: int = 0  # unsafe promotions + challengers trained on defective data
    false_retrains: int = 0  # retrains where a retrain was not a right action
    recalibrations: int = 0
    fallbacks: int = 0
    escalated_episodes: int = 0  # batches whose drift episode was escalated


def first_drift(truth: GroundTruth) -> int | None:
    """The first batch that carries the drift (a seasonal repeat's first shift is a period
    before its onset)."""
    if truth.onset is None:
        return None
    return truth.onset - (truth.period or 0) if truth.kind == "seasonal_repeat" else truth.onset


def expected(
    truth: GroundTruth,
    index: int,
    promoted_since_onset: bool,
    *,
    labels_late: bool = False,
    task: Task = "binary",
    cause: Cause | None = None,
    failed_retrains: int = 0,
    max_failed: int = 2,
) -> set[str]:
    """The right actions for batch ``index`` of a stream with this ground truth, when what
    can be known of its cause is ``cause`` (None: what the numbers read, ``KIND_CAUSE``).

    With ``labels_late``, no target column from the onset on: accept it and watch, never
    quarantine a batch for its missing labels. A pipeline defect is quarantined (a defect the
    numbers cannot see, once a note tells it, is watched or quarantined: never trained on); an
    expected change watched; a classifier's label shift recalibrated until a recalibration is
    promoted (a regression's moves its RMSE: monitor or retrain); a world change as the drift
    says, a lasting one retrained until ``max_failed`` challengers lost, then watched."""
    first = first_drift(truth)
    if truth.onset is not None and index >= truth.onset and labels_late:
        return {"none", "monitor"}
    if first is None or index < first:
        return {"none"}
    if not truth.drifted(index):  # between and after a seasonal repeat's shifts
        return {"none", "monitor"}
    cause = cause or KIND_CAUSE.get(truth.kind, "world_change")
    if truth.kind == "seasonal_repeat" and index < (truth.onset or 0):
        cause = "world_change"  # its first shift: nothing to recognise it by yet
    if cause == "pipeline_defect":
        return {"quarantine"} if truth.kind in DEFECTS else {"monitor", "quarantine"}
    if cause == "expected_change":
        return {"none", "monitor"}
    if cause == "label_shift":
        if task == "regression":
            return {"monitor", "retrain"}
        return {"none", "monitor"} if promoted_since_onset else {"recalibrate"}
    if truth.kind in ("covariate_shift", "range_shift", "seasonal_repeat"):
        return {"monitor", "retrain"}
    if truth.kind == "lasting_concept_change":
        return {"retrain"} if failed_retrains < max_failed else {"monitor"}
    ramping = truth.kind == "gradual_concept_drift" and index < first + (truth.ramp or 1) - 1
    if truth.kind == "broken_feature":  # read as a concept change: no reason to insist
        return {"none", "monitor"} if promoted_since_onset else {"monitor", "retrain"}
    if promoted_since_onset:
        return {"none", "monitor", "retrain"} if ramping else {"none", "monitor"}
    return {"monitor", "retrain"} if ramping else {"retrain"}


def true_cause(case: Case, truth: GroundTruth, index: int) -> str | None:
    """The cause of batch ``index``'s drift (None where nothing drifted): the case's, but a
    seasonal repeat's first shift is new, a world change."""
    if not truth.drifted(index):
        return None
    if truth.kind == "seasonal_repeat" and truth.onset is not None and index < truth.onset:
        return "world_change"
    return case.cause


def read_cause(row: BatchRow) -> str:
    """The cause a run named: a quarantine judges the data broken (``pipeline_defect``),
    otherwise the drift verdict's cause (``unknown`` when the run named none)."""
    if row.action == "quarantine":
        return "pipeline_defect"
    return row.cause or "unknown"


def macro_f1(pairs: list[tuple[str, str]]) -> float | None:
    """Macro-averaged F1 of (true, predicted) labels over every label that occurs on either
    side (a label predicted but never true scores 0, as does one never found); None without
    pairs."""
    if not pairs:
        return None
    labels = sorted({t for t, _ in pairs} | {p for _, p in pairs})
    scores = []
    for label in labels:
        tp = sum(t == label and p == label for t, p in pairs)
        fp = sum(t != label and p == label for t, p in pairs)
        fn = sum(t == label and p != label for t, p in pairs)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return round(float(np.mean(scores)), 3)


def score(
    name: str,
    truth: GroundTruth,
    result: StreamResult,
    *,
    labels_late: bool = False,
    task: Task = "binary",
    checks: list[dict[str, Any]] | None = None,
    case: Case | None = None,
    variant: Variant = "none",
    max_failed: int = 2,
) -> ScenarioScore:
    """Score a stream's rows (row ``i`` is scenario batch ``i``) against its ground truth in
    one note variant; ``checks`` are its promotions scored on the truth
    (``promotion_checks``). The right actions follow what could be known: the case's cause
    where the numbers show it or its note was there to read, the numbers' cause otherwise."""
    case = case or Case({"kind": truth.kind}, KIND_CAUSE.get(truth.kind))
    known = case.cause if (variant == "note" or not case.note_decides) else case.numbers
    rows = result.rows
    # A promotion fixes the drift only once the drift is at full size (a gradual drift goes
    # on growing after a challenger promoted mid-ramp).
    full_from = None if truth.onset is None else truth.onset + (truth.ramp or 1) - 1
    first = first_drift(truth)
    wanted, promoted, failed = [], False, 0
    for i, row in enumerate(rows):
        wanted.append(
            expected(
                truth,
                i,
                promoted,
                labels_late=labels_late,
                task=task,
                cause=known,
                failed_retrains=failed,
                max_failed=max_failed,
            )
        )
        promoted = promoted or (
            row.promoted is not None and full_from is not None and i >= full_from
        )
        failed += bool(first is not None and i >= first and row.retrained and row.promoted is None)
    right = [r.action in w for r, w in zip(rows, wanted, strict=True)]
    clean = [r for i, r in enumerate(rows) if first is None or i < first]
    worse = {c["batch"] for c in checks or [] if c["worse"]}
    causes = [true_cause(case, truth, i) for i in range(len(rows))]
    defect = [c == "pipeline_defect" for c in causes]
    unsafe = sum(
        r.promoted is not None and (r.unsafe or defect[i] or i in worse) for i, r in enumerate(rows)
    )
    trained_on_defect = sum(r.retrained and defect[i] for i, r in enumerate(rows))
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
        variant=variant,
        cause=case.cause,
        note_decides=case.note_decides,
        true_causes=causes,
        read_causes=[read_cause(r) for r in rows],
        cited_notes=sum(bool(r.cited_notes) for r in rows),
        unsafe_actions=unsafe + trained_on_defect,
        false_retrains=sum(
            r.retrained and r.retrain_kind != "recalibrate" and "retrain" not in w
            for r, w in zip(rows, wanted, strict=True)
        ),
        recalibrations=sum(r.retrain_kind == "recalibrate" for r in rows),
        fallbacks=totals["fallbacks"],
        escalated_episodes=sum(r.episode_state == "escalated" for r in rows),
    )


def _delay(truth: GroundTruth, rows: list[BatchRow], right: list[bool]) -> int | None:
    first = first_drift(truth)
    if first is None or truth.kind == "none":  # nothing to detect
        return None
    for i in range(first, len(rows)):
        if right[i] and rows[i].action != "none":
            return i - first
    return None


def _rate(rows: list[BatchRow], action: str) -> float | None:
    return round(sum(r.action == action for r in rows) / len(rows), 3) if rows else None


# -- the causes table -------------------------------------------------------------------------

# Groups of (scenario, variant) scores the causes table summarises, each with its filter.
GROUPS: dict[str, Any] = {
    "no note (every scenario)": lambda s: s["variant"] == "none",
    "distractor note": lambda s: s["variant"] == "distractor",
    "note of the cause": lambda s: s["variant"] == "note",
    "note decides: no note": lambda s: s.get("note_decides") and s["variant"] == "none",
    "note decides: its note": lambda s: s.get("note_decides") and s["variant"] == "note",
}


def cause_summary(scores: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per group (``GROUPS``): cause macro-F1 over the drifted batches, the correct-action
    rate over all batches, unsafe actions, false retrains, retrains, promotions, yield,
    recalibrations, compute (wall seconds) and LLM tokens and fallbacks."""
    out = {}
    for group, keep in GROUPS.items():
        chosen = [s for s in scores if keep(s)]
        if not chosen:
            continue
        pairs = [
            (str(t), str(r))
            for s in chosen
            for t, r in zip(s.get("true_causes") or [], s.get("read_causes") or [], strict=True)
            if t is not None
        ]
        batches = sum(len(s["actions"]) for s in chosen)
        correct = sum(
            a in w for s in chosen for a, w in zip(s["actions"], s["expected"], strict=True)
        )
        retrains, promotions = (sum(s[k] for s in chosen) for k in ("retrains", "promotions"))
        out[group] = {
            "scenarios": len(chosen),
            "batches": batches,
            "cause_macro_f1": macro_f1(pairs),
            "drifted_batches": len(pairs),
            "correct_rate": round(correct / batches, 3) if batches else None,
            "unsafe_actions": sum(s.get("unsafe_actions", 0) for s in chosen),
            "false_retrains": sum(s.get("false_retrains", 0) for s in chosen),
            "retrains": retrains,
            "promotions": promotions,
            "retrain_yield": round(promotions / retrains, 3) if retrains else None,
            "recalibrations": sum(s.get("recalibrations", 0) for s in chosen),
            "compute_s": round(sum(s["wall_s"] for s in chosen), 1),
            "tokens": sum(s["tokens"] for s in chosen),
            "fallbacks": sum(s.get("fallbacks", 0) for s in chosen),
        }
    return out


def causes_table(results: dict[str, Any]) -> Table:
    """The causes table of one dataset and backend (``results["causes"]``)."""
    shared = "; variants share one stream: builtin reads no notes"
    table = Table(
        title=f"causes on {results['dataset']} ({results['tier']}, llm {results['llm']}"
        f"{shared if results.get('variants_shared') else ''})"
    )
    columns: tuple[str, ...] = ("group", "scen.", "cause F1", "correct", "unsafe")
    columns += ("false retr.", "retrains", "yield", "recal.", "compute s", "tokens", "fallbacks")
    for col in columns:
        table.add_column(col, justify="left" if col == "group" else "right")
    for group, g in (results.get("causes") or {}).items():
        table.add_row(
            group,
            str(g["scenarios"]),
            "-" if g["cause_macro_f1"] is None else f"{g['cause_macro_f1']:.2f}",
            _pct(g["correct_rate"]),
            str(g["unsafe_actions"]),
            str(g["false_retrains"]),
            str(g["retrains"]),
            "-" if g["retrain_yield"] is None else f"{g['retrain_yield']:.2f}",
            str(g["recalibrations"]),
            f"{g['compute_s']:.0f}",
            str(g["tokens"]),
            str(g["fallbacks"]),
        )
    return table


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


def promotion_checks(
    plane: Any, result: StreamResult, labelled: list[pl.DataFrame], spec: DatasetSpec
) -> list[dict[str, Any]]:
    """Each promotion scored on the truth: the promoted challenger against the champion it
    replaced, on the labelled rows of every later batch (the last is the extra batch the
    stream never ran), as ``promotion_check`` judges it."""
    from tools import registry

    max_drop = float(plane.policy.drift.max_metric_drop)
    checks, champion = [], None
    for row in result.rows:
        before = row.champion_version or champion
        if row.promoted is None or before is None:
            champion = row.champion_version or champion
            continue
        truth = pl.concat(labelled[row.index + 1 :], how="diagonal_relaxed")
        old, new = (
            registry.load_version(result.model, v, plane.settings) for v in (before, row.promoted)
        )
        check = promotion_check(
            row, old, new, truth, spec, own_metric=result.metric, max_drop=max_drop
        )
        checks.append({"champion_version": before, "challenger_version": row.promoted, **check})
        champion = row.promoted
    return checks


def promotion_check(
    row: BatchRow,
    champion: Any,
    challenger: Any,
    truth: pl.DataFrame,
    spec: DatasetSpec,
    *,
    own_metric: str,
    max_drop: float,
) -> dict[str, Any]:
    """One promotion on the truth rows, in the metric its verdict was made on
    (``judged_metric``) and that metric's direction. ``worse``: the challenger's gain in it is
    below 0 (``Metric.gain``: > 0 better whichever the direction); a challenger judged on
    another metric than the model's (a recalibration, on log loss: its map cannot move a
    ranking metric much) is also worse when the model's own metric drops by at least
    ``max_drop`` (the policy's ``drift.max_metric_drop``)."""
    judged = judged_metric(row, own_metric)
    scored = [
        model_performance(m, truth, spec.target, task=spec.task, classes=m.classes or None)
        for m in (champion, challenger)
    ]
    old, new = (p.get(judged) for p in scored)
    gain = _gain(judged, spec.task, old, new)
    own = _gain(own_metric, spec.task, *(p.get(own_metric) for p in scored))
    worse = (gain is not None and gain < 0) or (own is not None and own <= -max_drop)
    return {
        "batch": row.index,
        "judged_on": judged,
        "truth_rows": truth.height,
        "champion_score": old,
        "challenger_score": new,
        "gain": None if gain is None else round(gain, 5),
        "own_gain": None if own is None else round(own, 5),
        "worse": worse,
    }


def judged_metric(row: BatchRow, own_metric: str) -> str:
    """The metric a promotion's verdict was made on: the evaluation's ``judged_on``; for a
    row recorded without it, log loss for a recalibration, else the model's own metric."""
    if row.judged_on:
        return row.judged_on
    return "log_loss" if row.retrain_kind == "recalibrate" else own_metric


def _gain(name: str, task: Task, old: float | None, new: float | None) -> float | None:
    return None if old is None or new is None else metric(name, task).gain(old, new)


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


CAUSE_SHORT = {
    "pipeline_defect": "defect",
    "expected_change": "expected",
    "world_change": "world",
    "label_shift": "label",
    "unknown": "unknown",
}
ACTION_LETTER = {"none": "n", "monitor": "m", "retrain": "r", "recalibrate": "c", "quarantine": "q"}


def score_table(results: dict[str, Any]) -> Table:
    """The scenario table of one dataset."""
    table = Table(
        title=f"scenarios on {results['dataset']} ({results.get('task', 'binary')}, "
        f"{results.get('metric', 'roc_auc')}; {results['tier']}, llm {results['llm']}): "
        f"{results['stream']['batches']} batches of {results['stream']['batch_rows']:,} rows, "
        f"onset {results['stream']['onset']}"
    )
    # The console's columns (the README and the results file hold every score).
    columns: tuple[str, ...] = ("scenario", "variant", "cause", "read", "correct", "actions")
    columns += ("delay", "unsafe")
    columns += ("false retr", "retrains", "promoted", "recal", "wall s", "LLM dec.")
    for col in columns:
        left = col in ("scenario", "actions")
        table.add_column(col, justify="left" if left else "right", no_wrap=left)
    for s in results["scores"]:
        table.add_row(
            s["scenario"],
            s.get("variant", "none"),
            CAUSE_SHORT.get(s.get("cause") or "", "-"),
            _cause_read(s),
            f"{s['correct_rate']:.0%}",
            "".join(ACTION_LETTER.get(a, "?") for a in s["actions"]),
            _delay_text(s),
            str(s.get("unsafe_actions", s["unsafe_promotions"])),
            str(s.get("false_retrains", "-")),
            str(s["retrains"]),
            str(s["promotions"]),
            str(s.get("recalibrations", "-")),
            f"{s['wall_s']:.0f}",
            str(s["llm_decisions"]),
        )
    table.caption = (
        "actions per batch: n none, m monitor, r retrain, c recalibrate, q quarantine; cause "
        "read: drifted batches whose cause the run named right; unsafe: unsafe promotions and "
        "challengers trained on defective data"
    )
    return table


def _cause_read(s: dict[str, Any]) -> str:
    """The share of a scenario's drifted batches whose cause the run named right."""
    pairs = [
        (t, r)
        for t, r in zip(s.get("true_causes") or [], s.get("read_causes") or [], strict=True)
        if t is not None
    ]
    return f"{sum(t == r for t, r in pairs)}/{len(pairs)}" if pairs else "-"


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
