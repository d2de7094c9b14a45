from pathlib import Path

import pytest
from pydantic import SecretStr

from driftpilot.core.errors import DataError, DriftPilotError, IntegrityError
from driftpilot.core.settings import Settings

KEY_VARS = ("DRIFTPILOT_LLM_API_KEY", "OPENAI_API_KEY")


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
        "import sys, driftpilot.core.settings, tools.data, tools.drift, tools.registry, "
        "tools.synth, tools.tune, tools.evaluate, tools.gdelt, driftpilot.cli\n"
        "mods = ('evidently', 'mlflow', 'ctgan', 'torch', 'optuna')\n"
        "heavy = [m for m in mods if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.fixture
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_no_llm_key_by_default(tmp_path: Path, no_key_in_env: pytest.MonkeyPatch) -> None:
    assert Settings(home=tmp_path, _env_file=None).llm_api_key is None


def test_openai_api_key_is_honoured(tmp_path: Path, no_key_in_env: pytest.MonkeyPatch) -> None:
    no_key_in_env.setenv("OPENAI_API_KEY", "sk-openai-env")
    key = Settings(home=tmp_path, _env_file=None).llm_api_key
    assert key is not None and key.get_secret_value() == "sk-openai-env"


def test_the_driftpilot_key_wins_over_openai_api_key(
    tmp_path: Path, no_key_in_env: pytest.MonkeyPatch
) -> None:
    no_key_in_env.setenv("OPENAI_API_KEY", "sk-openai-env")
    no_key_in_env.setenv("DRIFTPILOT_LLM_API_KEY", "sk-driftpilot-env")
    key = Settings(home=tmp_path, _env_file=None).llm_api_key
    assert key is not None and key.get_secret_value() == "sk-driftpilot-env"


def test_the_key_is_read_from_a_dotenv_file(
    tmp_path: Path, no_key_in_env: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OPENAI_API_KEY=sk-dotenv\n")
    key = Settings(home=tmp_path, _env_file=env_file).llm_api_key
    assert key is not None and key.get_secret_value() == "sk-dotenv"


def test_the_key_is_a_secret_never_shown(tmp_path: Path, no_key_in_env: pytest.MonkeyPatch) -> None:
    secret = "sk-very-secret-4711"
    no_key_in_env.setenv("OPENAI_API_KEY", secret)
    from_env = Settings(home=tmp_path, _env_file=None)
    by_name = Settings(home=tmp_path, llm_api_key=secret, _env_file=None)
    for settings in (from_env, by_name):
        assert isinstance(settings.llm_api_key, SecretStr)
        assert settings.llm_api_key.get_secret_value() == secret
        for shown in (repr(settings), str(settings), settings.model_dump_json()):
            assert secret not in shown


def test_every_group_reads_the_environment_and_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Settings: DRIFTPILOT_API_*, _SCHEDULER_*, _QUEUE_* and _ALERTS_* are read from the
    environment and from .env alike (each group was its own BaseSettings once, and only the
    top one read .env: the others were silently ignored there)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "DRIFTPILOT_SCHEDULER_ENABLED=false\nDRIFTPILOT_QUEUE_RETRY_S=7\n"
        "DRIFTPILOT_ALERTS_MAX_BACKOFF_S=3\nDRIFTPILOT_API_MAX_BATCH_ROWS=99\n"
    )
    monkeypatch.setenv("DRIFTPILOT_API_WORKERS", "4")
    monkeypatch.setenv("DRIFTPILOT_API_BATCH_ROOTS", '["/data/in"]')
    monkeypatch.setenv("DRIFTPILOT_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    settings = Settings(home=tmp_path / "home")
    assert settings.api.workers == 4
    assert settings.api.batch_roots == [Path("/data/in")]
    assert settings.api.max_batch_rows == 99
    assert settings.scheduler.enabled is False
    assert settings.queue.retry_s == 7
    assert settings.alerts.max_backoff_s == 3.0
    assert settings.llm_base_url == "http://127.0.0.1:9/v1"  # a flat field is not split
