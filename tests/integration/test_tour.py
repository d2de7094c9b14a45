"""The tool tour end to end (real Evidently, Optuna, MLflow) and the CLI around it."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from driftpilot import tour
from driftpilot.cli import app
from driftpilot.core.settings import Settings
from driftpilot.tour import run_tool_tour
from tools.datasets import FLIGHTS_CACHE

pytestmark = pytest.mark.integration


@pytest.fixture
def cached(settings: Settings, flights_df: pl.DataFrame) -> Settings:
    """The test's home with the session's flights table in its cache (what ``flights()``
    reads): the session fixture parsed the CSV once, the tests here need not parse it again."""
    assert settings.cache_dir is not None
    flights_df.write_parquet(settings.cache_dir / FLIGHTS_CACHE)
    return settings


def test_tool_tour_tells_the_flights_story_and_is_idempotent(
    cached: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = cached
    console = Console(record=True, width=160)
    first = run_tool_tour(console, trials=3)
    months = {row["month"]: row for row in first["months"]}
    assert list(months) == [f"2013-{m:02d}" for m in range(2, 13)]
    assert {"temp", "dewp"} <= set(months["2013-07"]["weather_drifted"])
    assert months["2013-07"]["drift_share"] > months["2013-02"]["drift_share"]
    assert 0.65 < months["2013-03"]["auc"] < 0.8
    assert all(row["quality"] == "ok" for row in first["months"])
    assert settings.reports_dir is not None
    assert len(list(settings.reports_dir.glob("drift_2013-01_vs_*.html"))) == 11
    text = console.export_text()
    assert "identical predictions" in text and "mlflow ui --backend-store-uri" in text
    # The second pass is idempotent through the registry keys and the Optuna study; the
    # month table (eleven Evidently reports, ~30 s) only reads, so it reuses the first pass's
    # rows for the same months instead of computing them again.
    computed = first["months"]

    def same_months(_console: Any, _settings: Any, months: Any, _champion: Any) -> Any:
        assert list(months)[1:] == [row["month"] for row in computed]
        return computed

    monkeypatch.setattr(tour, "_months_vs_january", same_months)
    console = Console(record=True, width=160)
    again = run_tool_tour(console, trials=3)
    assert (again["champion"], again["challenger"]) == (first["champion"], first["challenger"])
    assert "(0 run now)" in console.export_text()  # the study resumed: no trial ran again


def test_cli_lists_batches_and_rejects_unknown_datasets(cached: Settings) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["data", "flights"], terminal_width=160)
    assert listed.exit_code == 0, listed.output
    assert "2013-12" in listed.output and "327,346 rows" in listed.output
    unknown = runner.invoke(app, ["data", "iris"])
    assert unknown.exit_code == 2 and "unknown dataset" in unknown.output


def test_cli_help_names_the_commands() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0 and "demo" in result.output and "data" in result.output
