"""A trained home copied from the session's template (tests/conftest.py) is a home of its own:
its champion loads from its own artifacts and predicts, its audit verifies, no file or row
names the template, and what one copy does leaves the template and the next copy untouched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from driftpilot.core.settings import Settings, get_settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import ChampionChange, ManagedModel
from tests.conftest import TrainedHomes, jan_initial, on_postgres
from tools import registry

pytestmark = pytest.mark.integration


def test_a_copied_home_is_its_own_and_its_champion_predicts(
    trained_home: Callable[[str], Settings],
    trained_homes: TrainedHomes,
    months: dict[str, pl.DataFrame],
) -> None:
    settings = trained_home("flights")
    cp = ControlPlane(get_settings())
    try:
        assert cp.model_view("flights").champion == 1
        assert registry.current_champion("flights", settings) == 1
        model = registry.load_by_alias("flights", "champion", settings)
        scores = model.predict_scores(months["2013-02"].head(500))
        assert scores.shape == (500,) and ((scores >= 0) & (scores <= 1)).all()
        [managed] = cp.store.list_rows(ManagedModel)
        reference, holdout = managed.reference_path, managed.holdout_path
        assert reference is not None and holdout is not None
        for path in (reference, holdout):
            assert Path(path).is_relative_to(settings.home), path
        window = pl.read_parquet(reference)
        assert window.equals(jan_initial(months))
        [version] = registry.list_versions("flights", settings)
        uri = registry.mlflow_client(settings).get_model_version_download_uri("flights", 1)
        assert uri.startswith(settings.home.as_uri()), (uri, version.source)
        assert cp.verify().ok
        if not on_postgres():
            template = str(trained_homes.template("flights")).encode()
            named = [
                f for f in settings.home.rglob("*") if f.is_file() and template in f.read_bytes()
            ]
            # Only the hash-chained rows could keep it, and they hold no path (copy_into checks).
            assert named == []
    finally:
        cp.close()


def test_what_a_copy_does_stays_in_that_copy(
    trained_home: Callable[[str], Settings], trained_homes: TrainedHomes
) -> None:
    settings = trained_home("flights")
    cp = ControlPlane(get_settings())
    try:
        cp.store.record_champion("flights", 1, None, "rollback", "by-hand", "ops")
        assert len(cp.store.list_rows(ChampionChange)) == 2
    finally:
        cp.close()
    if on_postgres():
        return  # the audit lives in the test's own database: nothing is shared
    other = settings.home.parent / "other"
    trained_homes.copy_into("flights", other)
    fresh = ControlPlane(Settings(home=other))
    try:
        assert [c.action for c in fresh.store.list_rows(ChampionChange)] == ["bootstrap"]
        assert fresh.verify().ok
    finally:
        fresh.close()
