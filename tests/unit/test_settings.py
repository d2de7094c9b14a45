from pathlib import Path

import pytest

from driftpilot.errors import DataError, DriftPilotError, IntegrityError
from driftpilot.settings import Settings


def test_locations_derive_from_home(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "h")
    assert s.reports_dir == tmp_path / "h" / "reports"
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'h' / 'mlflow.db'}"
    assert s.optuna_storage.endswith("optuna.db")
    assert s.db_url.endswith("driftpilot.db")


def test_environment_overrides_each_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTPILOT_HOME", str(tmp_path))
    monkeypatch.setenv("DRIFTPILOT_MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv("DRIFTPILOT_THREADS", "2")
    s = Settings()
    assert s.home == tmp_path.resolve()
    assert s.mlflow_tracking_uri == "http://mlflow.internal:5000"
    assert s.mlflow_registry_uri == "http://mlflow.internal:5000"
    assert s.threads == 2


def test_ensure_dirs_creates_stores(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "new").ensure_dirs()
    assert s.cache_dir is not None and s.cache_dir.is_dir()
    assert s.reports_dir is not None and s.reports_dir.is_dir()


def test_errors_share_one_root() -> None:
    assert issubclass(IntegrityError, DataError)
    assert issubclass(DataError, DriftPilotError)


def test_importing_the_kernel_and_tools_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, driftpilot.settings, tools.data, tools.drift, tools.registry, tools.synth, "
        "tools.tune, tools.evaluate, tools.gdelt, driftpilot.cli\n"
        "mods = ('evidently', 'mlflow', 'ctgan', 'torch', 'optuna')\n"
        "heavy = [m for m in mods if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
