"""The champion-metric chart by batch time: where each run's batch sits (the time its ingestion
recorded, else the date its id names, else when the run was created), repeated batches as
separate points, and no line going back in time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl

from agents.ingestion import time_range
from driftpilot.runs.plane import RunView
from ui import charts


def view(
    run: str,
    batch: str,
    score: float | None,
    *,
    created: str = "2026-12-01T10:00:00+00:00",
    start: Any = None,
    challenger: float | None = None,
    metric: str = "roc_auc",
) -> RunView:
    ingestion = {"action": "accept", "time_range": {"start": start, "end": start}} if start else {}
    drift = {"champion_version": 1, "metric": metric} | (
        {"score": score} if score is not None else {}
    )
    return RunView(
        run_id=run,
        model="flights",
        batch_id=batch,
        status="completed",
        outcome="promoted" if challenger else "no_retrain:none",
        requested_by="ann",
        created_at=created,
        summary={
            "ingestion": ingestion,
            "drift": drift,
            "evaluation": {"challenger": challenger, "metric": metric} if challenger else None,
        },
    )


def xs(figure: Any) -> list[Any]:
    return list(figure.data[0].x)


def test_repeated_and_late_batches_are_points_at_their_time_and_lines_go_forward() -> None:
    # In the order the runs happened: March, a late February, March again (run twice).
    views = [
        view("r1", "2013-03", 0.70, start="2013-03-01T05:00:00-05:00"),
        view("r2", "2013-02", 0.72, start="2013-02-01T05:00:00-05:00", challenger=0.74),
        view("r3", "2013-03", 0.69, start="2013-03-01T05:00:00-05:00"),
    ]
    points = charts.history_points(views)
    assert [(p["batch"], p["run_id"]) for p in points] == [
        ("2013-02", "r2"),
        ("2013-03", "r1"),
        ("2013-03", "r3"),
    ]
    figure = charts.history_figure(
        "flights", views, [{"run_id": "r2", "action": "promote", "version": 2}]
    )
    x = xs(figure)
    assert x == sorted(x) and len(x) == 3  # both March runs are points; no step back in time
    assert x[0] == datetime(2013, 2, 1, 5, 0)  # the batch's wall-clock time, not the run's
    assert list(figure.data[0].y) == [0.72, 0.70, 0.69]
    assert figure.layout.xaxis.type == "date"
    assert [(a.text, a.x) for a in figure.layout.annotations] == [("promote v2", x[0])]
    assert list(figure.data[1].x) == [x[0]] and list(figure.data[1].y) == [0.74]


def test_without_a_recorded_time_the_id_or_the_run_time_places_the_batch() -> None:
    views = [
        view("late", "2013-07", 0.66, created="2026-12-03T00:00:00+00:00"),
        view("file", "inbox-drop", 0.68, created="2026-12-02T08:30:00+00:00"),
        view("day", "2013-06-15", 0.71, created="2026-12-01T00:00:00+00:00"),
        view("quarantined", "2013-05", None),  # no score: no point
    ]
    at = {p["run_id"]: p["at"] for p in charts.history_points(views)}
    assert at == {
        "day": datetime(2013, 6, 15),
        "late": datetime(2013, 7, 1),
        "file": datetime(2026, 12, 2, 8, 30),
    }
    assert charts.batch_time(view("odd", "2013-13", 0.5)) == datetime(2026, 12, 1, 10, 0)


def test_numeric_batch_times_get_a_seconds_axis_unless_mixed_with_dates() -> None:
    seconds = [
        view("b", "day-00002", 0.90, start=86_400.0),
        view("a", "day-00001", 0.91, start=10.0),
    ]
    figure = charts.history_figure("fraud", seconds, [])
    assert xs(figure) == [10.0, 86_400.0] and figure.layout.xaxis.type == "linear"
    mixed = [*seconds, view("c", "2013-01", 0.8, start="2013-01-01T00:00:00")]
    at = [p["at"] for p in charts.history_points(mixed)]
    assert all(isinstance(a, datetime) for a in at) and at == sorted(at)


def test_ingestion_records_the_batch_time_range_the_chart_reads() -> None:
    zoned = pl.DataFrame(
        {"t": [datetime(2013, 2, 3, tzinfo=UTC), datetime(2013, 2, 1, 5, tzinfo=UTC)], "x": [1, 2]}
    )
    assert time_range(zoned, "t") == {
        "start": "2013-02-01T05:00:00+00:00",
        "end": "2013-02-03T00:00:00+00:00",
    }
    assert time_range(pl.DataFrame({"t": [7.5, 3]}), "t") == {"start": 3.0, "end": 7.5}
    assert time_range(zoned, "missing") is None
    assert time_range(pl.DataFrame({"t": ["not", "a time"]}), "t") is None
    assert time_range(pl.DataFrame({"t": [None, None]}, schema={"t": pl.Datetime}), "t") is None
    recorded = view("r", "batch-x", 0.7, start=time_range(zoned, "t")["start"])  # type: ignore[index]
    assert charts.batch_time(recorded) == datetime(2013, 2, 1, 5, 0)


def test_the_axis_names_the_models_metric_and_its_direction() -> None:
    """A regression's RMSE is plotted as it is (a worse batch goes up) under an axis that
    says so; a run recorded before models had a task (its score under ``roc_auc``) is read
    as the ROC AUC it was, and a metric other than the latest run's stays off the axis."""
    rmse = [
        view("a", "2013-02", 38.2, metric="rmse", start="2013-02-01T00:00:00"),
        view("b", "2013-03", 41.5, metric="rmse", start="2013-03-01T00:00:00", challenger=39.0),
    ]
    figure = charts.history_figure("delays", rmse, [])
    assert figure.layout.yaxis.title.text == "RMSE (lower is better)"
    assert list(figure.data[0].y) == [38.2, 41.5] and list(figure.data[1].y) == [39.0]
    assert figure.data[0].name == "champion RMSE on the batch"
    old = view("o", "2013-01", None, start="2013-01-01T00:00:00")
    old.summary["drift"] = {"champion_version": 1, "roc_auc": 0.7, "roc_auc_low": 0.68}
    assert charts.history_points([old])[0]["metric"] == "roc_auc"
    mixed = charts.history_figure("delays", [old, *rmse], [])
    assert list(mixed.data[0].y) == [38.2, 41.5]  # the old ROC AUC is not on the RMSE axis
    auc = charts.history_figure("flights", [old], [])
    assert auc.layout.yaxis.title.text == "ROC AUC (higher is better)"
