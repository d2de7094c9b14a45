"""The import-layer contract (.importlinter, run by `make lint`) covers the whole code base and
really catches an import against the house's direction."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _config() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    return config


def _layered_modules() -> set[str]:
    layers = _config()["importlinter:contract:layers"]["layers"]
    names = set()
    for line in layers.split("\n"):
        for part in line.replace("|", ":").split(":"):
            if part.strip():
                names.add(part.strip().strip("()"))
    return names


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_package_and_driftpilot_module_has_a_layer() -> None:
    """The contract is not exhaustive by itself: a new module must be given its layer."""
    layered = _layered_modules()
    top = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    inner = {
        f"driftpilot.{p.stem if p.suffix == '.py' else p.name}"
        for p in (ROOT / "driftpilot").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }
    missing = (top - {"driftpilot"} | inner) - layered
    assert not missing, f"give these a layer in .importlinter: {sorted(missing)}"
    roots = set(_config()["importlinter"]["root_packages"].split())
    assert top - roots <= {"api", "ui"}, "add new top-level packages to root_packages"


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is a dev dependency")
def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    for name in ("driftpilot", "tools", "agents", "graphs", "evals"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    assert _lint(tmp_path).returncode == 0
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "__init__.py").write_text("import driftpilot.runs.plane\n")
    assert _lint(tmp_path).returncode == 0  # the top layer may import any layer below
    with (tmp_path / "tools" / "data.py").open("a") as f:
        f.write("\nimport driftpilot.runs.plane  # noqa\nimport api  # noqa\n")
    with (tmp_path / "driftpilot" / "core" / "errors.py").open("a") as f:
        f.write("\nimport driftpilot.core.settings  # noqa\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert "tools is not allowed to import driftpilot.runs" in out.stdout
    assert "tools is not allowed to import api" in out.stdout
    assert "driftpilot.core.errors is not allowed to import driftpilot.core.settings" in out.stdout
