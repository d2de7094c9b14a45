"""Calibration of the "material drift" measures on the real flights stream (offline).

On flights by month Evidently flags about half the columns every month against January.
This eval puts the measures of ``tools.shift`` next to it, month by month, so that the policy
thresholds for material drift can be picked from data:

- ``drift_share``: Evidently's share of drifted columns (``tools.drift.data_drift``, default
  configuration, as the drift analyst runs it);
- ``material_share`` / ``weighted_share``: effect sizes (normed Wasserstein for numeric, PSI
  for categorical columns) and the share of the champion's importance on material columns;
- ``domain_auc`` and its top features: out-of-fold AUC of a classifier telling the two
  samples apart;
- ``champion_auc``: ROC AUC of a LightGBM champion trained on January, on the month (the
  outcome a drift alarm should anticipate); ``auc_drop`` = its January validation AUC minus it.

Each month Feb..Dec is compared with January (the champion's reference) and with the previous
month. A control compares two disjoint random halves of January (must read as no shift).
``fires`` counts, per candidate threshold, the months (of 11, vs January) on which a rule
would fire; ``sweep`` does the same for the weighted share under stricter per-column
Wasserstein thresholds. Prints tables and writes ``evals/results/shift_calibration.json``.

What it showed (2 cores, seed 0): above 1,000 rows Evidently already uses normed Wasserstein
and Jensen-Shannon at 0.1, so ``material_share`` at the default thresholds tracks its drift
share (0.44-0.62): the over-firing is not a p-value artefact but a real, seasonal weather
shift the champion shrugs off. Weather is hourly, so the domain AUC is ~1.0 every month;
without the weather columns it is 0.49-0.65 vs January and under 0.6 vs the previous month.
The January halves read 0 / 0 / 0.49.

    python -m evals.shift_calibration [--threads 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from driftpilot.core.settings import get_settings
from evals.common import machine, write_json
from evals.harness import cut
from tools.datasets import FLIGHTS, WEATHER, load_dataset
from tools.drift import data_drift, model_performance
from tools.shift import ShiftConfig, domain_classifier, effect_sizes
from tools.train import TrainedModel, TrainSpec, train_model

RESULTS = Path(__file__).parent / "results" / "shift_calibration.json"
WEIGHTED_THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5]
MATERIAL_THRESHOLDS = [0.1, 0.2, 0.3, 0.4, 0.5]
DOMAIN_THRESHOLDS = [0.6, 0.7, 0.8, 0.9, 0.95]
COLUMN_THRESHOLDS = [0.1, 0.25, 0.5, 1.0, 2.0]  # normed Wasserstein (categorical PSI stays 0.2)
EVIDENTLY_THRESHOLDS = [0.3, 0.5]


def compare(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    *,
    importance: dict[str, float],
    threads: int,
    seed: int,
) -> dict[str, Any]:
    """Every measure of one (reference, current) pair."""
    numeric, categorical = list(FLIGHTS.numeric), list(FLIGHTS.categorical)
    started = time.perf_counter()
    drift = data_drift(reference, current, numeric=numeric, categorical=categorical, seed=seed)
    evidently_s = time.perf_counter() - started
    shift = effect_sizes(
        reference,
        current,
        numeric=numeric,
        categorical=categorical,
        importance=importance,
        config=ShiftConfig(),
        seed=seed,
    )
    domain = domain_classifier(
        reference, current, numeric=numeric, categorical=categorical, threads=threads, seed=seed
    )
    # Weather is hourly: its values fingerprint the month, so a classifier always separates
    # months on it. Without it, the check asks whether the schedule mix itself moved.
    no_weather = domain_classifier(
        reference,
        current,
        numeric=[c for c in numeric if c not in WEATHER],
        categorical=categorical,
        threads=threads,
        seed=seed,
    )
    return {
        "n_reference": reference.height,
        "n_current": current.height,
        "drift_share": drift.drift_share,
        "drifted_columns": drift.drifted_columns(),
        "material_share": shift.material_share,
        "weighted_share": shift.weighted_share,
        "material_columns": {c.column: round(c.value, 3) for c in shift.columns if c.material},
        "largest_effects": {c.column: round(c.value, 3) for c in shift.columns[:5]},
        "effects": {c.column: round(c.value, 4) for c in shift.columns},
        "domain_auc": domain.auc,
        "domain_top_features": domain.top_features,
        "domain_auc_no_weather": no_weather.auc,
        "domain_top_no_weather": no_weather.top_features,
        "seconds": {
            "evidently": round(evidently_s, 3),
            "effect_sizes": shift.elapsed_s,
            "domain_classifier": domain.elapsed_s,
        },
    }


def champion_auc(model: TrainedModel, frame: pl.DataFrame) -> float | None:
    if frame[FLIGHTS.target].drop_nulls().n_unique() < 2:
        return None
    return model_performance(model, frame, FLIGHTS.target).get("roc_auc")


def fires(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Months (of the rows) on which each candidate rule would fire."""
    return {
        "weighted_share>=": {
            str(t): sum(r["weighted_share"] >= t for r in rows) for t in WEIGHTED_THRESHOLDS
        },
        "material_share>=": {
            str(t): sum(r["material_share"] >= t for r in rows) for t in MATERIAL_THRESHOLDS
        },
        "domain_auc>=": {
            str(t): sum(r["domain_auc"] >= t for r in rows) for t in DOMAIN_THRESHOLDS
        },
        "domain_auc_no_weather>=": {
            str(t): sum(r["domain_auc_no_weather"] >= t for r in rows) for t in DOMAIN_THRESHOLDS
        },
        "evidently_drift_share>=": {
            str(t): sum(r["drift_share"] >= t for r in rows) for t in EVIDENTLY_THRESHOLDS
        },
    }


def sweep(rows: list[dict[str, Any]], importance: dict[str, float]) -> dict[str, dict[str, int]]:
    """Months on which ``weighted_share >= s`` fires when a numeric column is material at a
    normed Wasserstein of ``t`` (categorical columns: PSI >= 0.2), for every (t, s) of the
    grids: ``{"wasserstein>=t": {"s": months}}``. Recomputed from the stored per-column effects
    and the champion's importance (renormalised over the measured columns)."""
    out: dict[str, dict[str, int]] = {}
    for t in COLUMN_THRESHOLDS:
        shares = []
        for r in rows:
            effects: dict[str, float] = r["effects"]
            total = sum(importance.get(c, 0.0) for c in effects) or 1.0
            material = [
                c for c, v in effects.items() if v >= (0.2 if c in FLIGHTS.categorical else t)
            ]
            shares.append(sum(importance.get(c, 0.0) for c in material) / total)
        out[f"wasserstein>={t}"] = {
            str(s): sum(share >= s for share in shares) for s in WEIGHTED_THRESHOLDS
        }
    return out


def table(title: str, rows: list[dict[str, Any]]) -> Table:
    out = Table(title=title)
    for name in (
        "month",
        "champ AUC",
        "drop",
        "Evidently",
        "material",
        "weighted",
        "domain AUC",
        "no weather",
        "domain top",
        "material columns",
    ):
        out.add_column(name)
    for r in rows:
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(r["domain_top_features"].items())[:2])
        material = r["material_columns"]
        named = ", ".join(list(material)[:3]) + (
            f" +{len(material) - 3}" if len(material) > 3 else ""
        )
        out.add_row(
            r["month"],
            _fmt(r.get("champion_auc")),
            _fmt(r.get("auc_drop")),
            f"{r['drift_share']:.2f}",
            f"{r['material_share']:.2f}",
            f"{r['weighted_share']:.2f}",
            f"{r['domain_auc']:.3f}",
            f"{r['domain_auc_no_weather']:.3f}",
            top,
            named or "-",
        )
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--domain-threads",
        type=int,
        default=1,
        help="LightGBM threads of the domain classifier (1 is steadier on a busy machine)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    console = Console(width=160)
    started = time.perf_counter()

    frame = load_dataset("flights", get_settings())
    months = cut(frame, FLIGHTS.time_col, "month")
    (jan_id, january), rest = months[0], months[1:]
    spec = TrainSpec(
        family="lightgbm",
        target=FLIGHTS.target,
        numeric=list(FLIGHTS.numeric),
        categorical=list(FLIGHTS.categorical),
        time_col=FLIGHTS.time_col,
        threads=args.threads,
    )
    champion = train_model(january, spec)
    assert champion.report is not None
    importance = champion.report.feature_importance
    valid_auc = champion.report.valid.get("roc_auc")
    console.print(
        f"champion trained on {jan_id} ({january.height} rows): validation AUC {_fmt(valid_auc)}"
    )

    shuffled = january.sample(fraction=1.0, shuffle=True, seed=args.seed)
    half = shuffled.height // 2
    control = compare(
        shuffled.head(half),
        shuffled.tail(shuffled.height - half),
        importance=importance,
        threads=args.domain_threads,
        seed=args.seed,
    )
    control["month"] = f"{jan_id} halves"

    vs_january: list[dict[str, Any]] = []
    vs_previous: list[dict[str, Any]] = []
    previous = january
    for batch_id, batch in rest:
        auc = champion_auc(champion, batch)
        drop = None if auc is None or valid_auc is None else round(valid_auc - auc, 4)
        for rows, reference in ((vs_january, january), (vs_previous, previous)):
            row = {"month": batch_id, "champion_auc": auc, "auc_drop": drop}
            row.update(
                compare(
                    reference,
                    batch,
                    importance=importance,
                    threads=args.domain_threads,
                    seed=args.seed,
                )
            )
            rows.append(row)
        console.print(
            f"{batch_id}: Evidently {vs_january[-1]['drift_share']:.2f}, weighted "
            f"{vs_january[-1]['weighted_share']:.2f}, domain AUC {vs_january[-1]['domain_auc']}"
        )
        previous = batch

    console.print(table("control: two random halves of January", [control]))
    console.print(table("each month vs January (the champion's reference)", vs_january))
    console.print(table("each month vs the previous month", vs_previous))
    payload: dict[str, Any] = {
        "dataset": "flights",
        "batching": "month",
        "champion": {
            "trained_on": jan_id,
            "rows": january.height,
            "validation_auc": valid_auc,
            "feature_importance": {k: round(v, 4) for k, v in importance.items()},
        },
        "config": {
            "effect_sizes": ShiftConfig().model_dump(),
            "domain_classifier": {"max_rows": 5000, "folds": 3, "n_estimators": 60},
            "train_threads": args.threads,
            "domain_threads": args.domain_threads,
            "seed": args.seed,
        },
        "control": control,
        "vs_january": vs_january,
        "vs_previous": vs_previous,
        "fires_vs_january": fires(vs_january),
        "fires_vs_previous": fires(vs_previous),
        "sweep_vs_january": sweep(vs_january, importance),
        "sweep_vs_previous": sweep(vs_previous, importance),
        "elapsed_s": round(time.perf_counter() - started, 1),
        "machine": machine(),
    }
    write_json(args.out, payload)
    console.print(f"fires (months of {len(vs_january)}, vs January): {payload['fires_vs_january']}")
    console.print(f"weighted-share sweep (vs January): {payload['sweep_vs_january']}")
    console.print(f"wrote {args.out} in {payload['elapsed_s']} s")
    return payload


if __name__ == "__main__":
    main()
