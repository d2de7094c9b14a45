"""docker-compose.yml against the code, since no Docker engine runs here.

Every service's command is parsed by the real command line it names (the Typer app of
``driftpilot``, the click app of ``mlflow``), so an unknown command or option, or a bad value,
fails here as it would in the container. Ports, healthcheck URLs (real routes of the API, the
chat and MLflow), service URLs in the environment, build context, Dockerfile and its stages,
named volumes, ``depends_on`` conditions and every ``DRIFTPILOT_*`` variable (a field of one of
the settings classes, with a value it accepts) are checked; ``.env.example`` must list exactly
the variables the compose file interpolates. A broken copy shows each check can fail.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import typer.main
import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings
from typer.core import TyperGroup

from api.app import create_app
from driftpilot import cli
from driftpilot.core.settings import ApiSettings, Settings
from driftpilot.runs.plane import ControlPlane

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
SERVICES = {"api", "worker", "ui", "mlflow", "postgres", "ollama"}
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR; $$ is a literal $.
_VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_]\w*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_]\w*))"
)
_URL = re.compile(r"https?://(?P<host>[\w.-]+):(?P<port>\d+)(?P<path>/[\w./-]*)?")
_DB_HOST = re.compile(r"@(?P<host>[\w.-]+):(?P<port>\d+)/")


# -- what the code offers ---------------------------------------------------------------------


@dataclass
class Code:
    """The real interfaces the compose file must match."""

    # program name (argv[0]) -> its root command (Typer's or click's)
    programs: dict[str, Any]
    # (program, subcommand path) -> GET routes of the HTTP server that command starts
    routes: dict[tuple[str, str], set[str]]
    settings: list[type[BaseSettings]]


# The one settings class a DriftPilot process reads: DRIFTPILOT_, and its groups'
# DRIFTPILOT_API_, DRIFTPILOT_SCHEDULER_, DRIFTPILOT_QUEUE_, DRIFTPILOT_ALERTS_.
SETTINGS: list[type[BaseSettings]] = [Settings]


def api_routes(tmp_path: Path) -> set[str]:
    """GET paths of the FastAPI app ``driftpilot serve`` runs (as its OpenAPI document lists
    them: the app includes its routers lazily)."""
    plane = ControlPlane(Settings(home=tmp_path / "home").ensure_dirs())
    try:
        paths = create_app(plane, ApiSettings(workers=1)).openapi()["paths"]
        return {path for path, operations in paths.items() if "get" in operations}
    finally:
        plane.close()


def source_routes(module: str, pattern: str) -> set[str]:
    """Route paths declared in an installed module's source, read without importing it
    (importing Chainlit's server loads its config from, and writes into, the working
    directory)."""
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    assert spec is not None and spec.submodule_search_locations, f"{top} is not installed"
    path = Path(next(iter(spec.submodule_search_locations)), *rest.split(".")).with_suffix(".py")
    return set(re.findall(pattern, path.read_text()))


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory) -> Code:
    from mlflow.cli import cli as mlflow_cli  # 2-3 s: only here

    return Code(
        programs={"driftpilot": typer.main.get_command(cli.app), "mlflow": mlflow_cli},
        routes={
            ("driftpilot", "serve"): api_routes(tmp_path_factory.mktemp("api")),
            ("driftpilot", "ui"): source_routes("chainlit.server", r'@router\.get\("([^"]+)"\)'),
            ("mlflow", "server"): source_routes(
                "mlflow.server.__init__", r'_add_static_prefix\("([^"]+)"\)'
            ),
        },
        settings=SETTINGS,
    )


# -- parsing a command line the way its program does ---------------------------------------------


@dataclass
class Parsed:
    path: str  # "serve", "model add"
    params: dict[str, Any]


def parse_command(root: Any, argv: list[str]) -> Parsed:
    """Parse ``argv`` (without the program) with the program's own parser, down to the leaf
    command, without running anything. Raises the parser's UsageError on a bad line."""
    command, name, args, ctx = root, "prog", list(argv), None
    path: list[str] = []
    while True:
        ctx = command.context_class(command, info_name=name, parent=ctx)
        with ctx.scope(cleanup=False):
            if isinstance(command, TyperGroup):
                # The app's group guards its parsing (one error line, exit code): parse
                # unguarded so the error itself reaches the check.
                TyperGroup.parse_args(command, ctx, args)
            else:
                command.parse_args(ctx, args)
        if not hasattr(command, "resolve_command"):
            return Parsed(" ".join(path), dict(ctx.params))
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            raise ValueError("no subcommand given")
        name, command, args = command.resolve_command(ctx, rest)
        path.append(str(name))


def command_problems(service: str, argv: list[str], code: Code) -> tuple[list[str], Parsed | None]:
    program = code.programs.get(argv[0]) if argv else None
    if program is None:
        return [f"{service}: command {argv[:1]} is not a program of the image"], None
    try:
        return [], parse_command(program, argv[1:])
    except Exception as exc:  # the parsers' UsageError/BadParameter (typer's or click's)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return [f"{service}: `{' '.join(argv)}` does not parse: {message}"], None


# -- interpolation, as docker compose does it -----------------------------------------------------


def interpolated(node: Any) -> Iterator[str]:
    """Every string value of the loaded compose file (compose interpolates values only)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from interpolated(value)
    elif isinstance(node, list):
        for value in node:
            yield from interpolated(value)


def variables(text: str) -> set[str]:
    return {m["braced"] or m["bare"] for m in _VAR.finditer(text.replace("$$", ""))}


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """``node`` with ``${...}`` replaced from ``env`` (``$$`` becomes ``$``)."""
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if not isinstance(node, str):
        return node

    def one(m: re.Match[str]) -> str:
        name, op, arg = m["braced"] or m["bare"], m["op"] or "", m["arg"] or ""
        value = env.get(name)
        empty = value is None or (op.startswith(":") and value == "")
        if op.endswith("-") and empty:
            return arg
        if op.endswith("?") and empty:
            raise ValueError(f"${name} is required: {arg}")
        if op.endswith("+"):
            return "" if empty else arg
        return value or ""

    parts = node.split("$$")
    return "$".join(_VAR.sub(one, part) for part in parts)


def read_env_file(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if k.strip() and not k.lstrip().startswith("#")}


# -- the checks -----------------------------------------------------------------------------------


def compose_problems(compose_text: str, env_text: str, root: Path, code: Code) -> list[str]:
    """Everything in the compose file that does not match the code (empty: all good)."""
    raw = yaml.safe_load(compose_text)
    env = read_env_file(env_text)
    used = set().union(*(variables(s) for s in interpolated(raw)))
    problems = [f"{v} is interpolated but not in .env.example" for v in sorted(used - set(env))]
    problems += [f"{v} is in .env.example but not used" for v in sorted(set(env) - used)]
    try:
        doc = interpolate(raw, env)
    except ValueError as exc:
        return [*problems, f"interpolation with .env.example fails: {exc}"]
    services: dict[str, dict[str, Any]] = doc.get("services", {})
    problems += [f"service {s} is missing" for s in sorted(SERVICES - set(services))]
    listening: dict[str, set[int]] = {}
    commands: dict[str, tuple[str, Parsed]] = {}
    for name, service in services.items():
        problems += build_problems(name, service, root)
        ports = {int(p) for p in service.get("expose", [])}
        command = service.get("command")
        if command is not None:
            argv = command.split() if isinstance(command, str) else [str(a) for a in command]
            found, parsed = command_problems(name, argv, code)
            problems += found
            if parsed is not None:
                commands[name] = (argv[0], parsed)
                if "port" in parsed.params:
                    ports.add(int(parsed.params["port"]))
        listening[name] = ports
    for name, service in services.items():
        problems += port_problems(name, service, listening[name])
        problems += health_problems(name, service, listening[name], commands.get(name), code)
        problems += dependency_problems(name, service, services)
        problems += volume_problems(name, service, doc.get("volumes") or {})
        problems += environment_problems(name, service, code.settings, listening)
    return problems


def build_problems(name: str, service: dict[str, Any], root: Path) -> list[str]:
    build = service.get("build")
    if build is None:
        return [] if service.get("image") else [f"{name}: neither build nor image"]
    build = {"context": build} if isinstance(build, str) else build
    context = root / build.get("context", ".")
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    if not context.is_dir():
        return [f"{name}: build context {context} is not a directory"]
    if not dockerfile.is_file():
        return [f"{name}: Dockerfile {dockerfile} does not exist"]
    stages = re.findall(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", dockerfile.read_text())
    target = build.get("target")
    if target is not None and target not in stages:
        return [f"{name}: build target {target!r} is not a stage of {dockerfile.name} {stages}"]
    return []


def port_problems(name: str, service: dict[str, Any], listening: set[int]) -> list[str]:
    problems = []
    for spec in service.get("ports", []):
        container = int(str(spec).rsplit(":", 1)[-1].split("/")[0])
        if container not in listening:
            problems.append(f"{name}: publishes {container}, but listens on {sorted(listening)}")
    return problems


def health_problems(
    name: str,
    service: dict[str, Any],
    listening: set[int],
    command: tuple[str, Parsed] | None,
    code: Code,
) -> list[str]:
    test = (service.get("healthcheck") or {}).get("test")
    if not test:
        return [f"{name}: no healthcheck"]
    line = test if isinstance(test, str) else " ".join(map(str, test))
    routes = code.routes.get((command[0], command[1].path)) if command else None
    urls = list(_URL.finditer(line))
    if routes is not None and not urls:
        return [f"{name}: its healthcheck asks no URL of its HTTP server"]
    problems = []
    for url in urls:
        if int(url["port"]) not in listening:
            problems.append(f"{name}: healthcheck port {url['port']} is not one it listens on")
        if routes is not None and (url["path"] or "/") not in routes:
            problems.append(f"{name}: healthcheck path {url['path']} is not a route it serves")
    return problems


def dependency_problems(
    name: str, service: dict[str, Any], services: dict[str, dict[str, Any]]
) -> list[str]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):
        return [f"{name}: depends_on without conditions: {depends}"]
    problems = []
    for other, how in depends.items():
        if other not in services:
            problems.append(f"{name}: depends on unknown service {other}")
        elif (how or {}).get("condition") != "service_healthy":
            problems.append(f"{name}: depends on {other} without condition service_healthy")
        elif not (services[other].get("healthcheck") or {}).get("test"):
            problems.append(f"{name}: waits for {other} to be healthy; it has no healthcheck")
    return problems


def volume_problems(name: str, service: dict[str, Any], declared: dict[str, Any]) -> list[str]:
    problems = []
    for spec in service.get("volumes", []):
        source = spec.get("source", "") if isinstance(spec, dict) else str(spec).split(":")[0]
        if source not in declared:
            problems.append(f"{name}: volume {source!r} is not a declared named volume")
    return problems


def environment_problems(
    name: str,
    service: dict[str, Any],
    classes: list[type[BaseSettings]],
    listening: dict[str, set[int]],
) -> list[str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    env = {k: "" if v is None else str(v) for k, v in env.items()}
    problems = []
    for key in sorted(k for k in env if k.startswith("DRIFTPILOT_")):
        if not any(accepts(cls, key) for cls in classes):
            problems.append(f"{name}: {key} is not a field of any settings class")
    problems += settings_value_problems(name, env, classes)
    for key, value in env.items():
        for m in [*_URL.finditer(value), *_DB_HOST.finditer(value)]:
            host, port = m["host"], int(m["port"])
            if host in listening and port not in listening[host]:
                problems.append(
                    f"{name}: {key} names {host}:{port}; {host} listens on "
                    f"{sorted(listening[host])}"
                )
            elif host not in listening and host not in ("127.0.0.1", "localhost"):
                problems.append(f"{name}: {key} names {host}, which is no service")
    return problems


def env_names(cls: type[BaseSettings]) -> set[str]:
    """The environment variables a settings class reads (prefix + field, or its aliases)."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    names = set()
    for field_name, info in cls.model_fields.items():
        group = info.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):  # a nested group
            names |= {f"{prefix}{field_name}_{sub}".upper() for sub in group.model_fields}
            continue
        alias = info.validation_alias
        choices = getattr(alias, "choices", None) or ([alias] if isinstance(alias, str) else [])
        names |= {str(c).upper() for c in choices} or {f"{prefix}{field_name.upper()}"}
        if cls.model_config.get("validate_by_name") or not choices:
            names.add(f"{prefix}{field_name.upper()}")
    return names


def accepts(cls: type[BaseSettings], key: str) -> bool:
    return key.upper() in env_names(cls)


def settings_value_problems(
    name: str, env: dict[str, str], classes: list[type[BaseSettings]]
) -> list[str]:
    """Load every settings class from the service's environment alone: a value it would
    reject at start (a bad bool, a number out of range) is a problem here."""
    problems = []
    with mock.patch.dict(os.environ, env, clear=True):
        for cls in classes:
            try:
                cls(_env_file=None)
            except ValidationError as exc:
                problems.append(f"{name}: {cls.__name__} rejects its environment: {exc}")
    return problems


# -- tests ----------------------------------------------------------------------------------------


def test_compose_matches_the_code(code: Code) -> None:
    problems = compose_problems(COMPOSE.read_text(), ENV_EXAMPLE.read_text(), ROOT, code)
    assert problems == []


def test_every_service_has_its_command_and_healthcheck(code: Code) -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    assert {"driftpilot", "serve"} <= set(services["api"]["command"])
    assert {"driftpilot", "worker"} <= set(services["worker"]["command"])
    assert {"driftpilot", "ui"} <= set(services["ui"]["command"])
    assert services["mlflow"]["command"][:2] == ["mlflow", "server"]
    assert "postgresql" in " ".join(services["mlflow"]["command"])  # a database backend
    assert set(doc["volumes"]) >= {"postgres-data", "mlflow-artifacts", "driftpilot-home"}


def test_dockerfile_installs_the_pinned_set_as_a_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    # The hashed lock, with torch's CPU index in reach (test_supply_chain checks the hashes).
    assert re.search(
        r'--require-hashes --no-build-isolation --extra-index-url "\$\{TORCH_INDEX_URL\}"'
        r"\s*\\\s*-r requirements\.lock",
        text,
    )
    assert re.search(r"pip install --no-deps --no-build-isolation -e \.", text)
    stages = re.split(r"(?m)^FROM ", text)[1:]
    assert [s.split()[2] for s in stages] == ["builder", "runtime"]
    users = re.findall(r"(?m)^USER (\S+)", stages[-1])
    assert users and users[-1] not in ("root", "0")


BREAKAGES: list[tuple[str, str, str]] = [
    # (text in the compose file, its broken replacement, the problem it must cause)
    (
        '"worker", "--concurrency"',
        '"worker", "--concurency"',
        "worker: `driftpilot --log-level INFO worker --concurency 1` does not parse: No such "
        "option",
    ),
    (
        "DRIFTPILOT_MLFLOW_TRACKING_URI:",
        "DRIFTPILOT_MLFLOW_TRACKNG_URI:",
        "DRIFTPILOT_MLFLOW_TRACKNG_URI is not a field of any settings class",
    ),
    (
        'DRIFTPILOT_SCHEDULER_ENABLED: "true"',
        'DRIFTPILOT_SCHEDULER_ENABLED: "maybe"',
        "api: Settings rejects its environment",
    ),
    ("/readyz'", "/ready'", "api: healthcheck path /ready is not a route it serves"),
    ("8001/health'", "8001/healthz'", "ui: healthcheck path /healthz is not a route it serves"),
    ("target: runtime", "target: runtim", "build target 'runtim' is not a stage"),
    ("http://mlflow:5000", "http://mlflow:5001", "names mlflow:5001; mlflow listens on [5000]"),
    (
        '"${PUBLISH_ADDRESS:-127.0.0.1}:${UI_PORT:-8001}:8001"',
        '"${PUBLISH_ADDRESS:-127.0.0.1}:${UI_PORT:-8001}:8002"',
        "ui: publishes 8002, but listens on [8001]",
    ),
    ("${LOG_LEVEL:-INFO}", "${LOGLEVEL:-INFO}", "LOGLEVEL is interpolated but not in .env.example"),
    (
        "condition: service_healthy",
        "condition: service_started",
        "without condition service_healthy",
    ),
    (
        "- mlflow-artifacts:/data/mlartifacts",
        "- ./artifacts:/data/mlartifacts",
        "mlflow: volume './artifacts' is not a declared named volume",
    ),
]


def test_a_broken_copy_is_caught_with_its_reason(code: Code, tmp_path: Path) -> None:
    text = COMPOSE.read_text()
    for old, new, _ in BREAKAGES:
        assert old in text, f"the breakage {old!r} no longer applies: update BREAKAGES"
        text = text.replace(old, new, 1)
    problems = compose_problems(text, ENV_EXAMPLE.read_text(), ROOT, code)
    for _, _, expected in BREAKAGES:
        assert any(expected in p for p in problems), (expected, problems)
    # A program that does not know the command (each checked alone: a line that does not
    # parse leaves its service's ports and routes unchecked).
    for old, new, expected in [
        ('"ui", "--host"', '"chat", "--host"', "No such command 'chat'"),
        ("      - --workers\n", "      - --wrokers\n", "No such option"),
        ("      - mlflow\n      - server", "      - mlfow\n      - server", "['mlfow'] is not a"),
        ('["driftpilot", "--log-level"', '["driftpilot", "--log-levle"', "No such option"),
    ]:
        broken = COMPOSE.read_text().replace(old, new, 1)
        assert broken != COMPOSE.read_text(), old
        found = compose_problems(broken, ENV_EXAMPLE.read_text(), ROOT, code)
        assert any(expected in p for p in found), (expected, found)
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim AS base\n")
    moved = compose_problems(COMPOSE.read_text(), ENV_EXAMPLE.read_text(), tmp_path, code)
    assert any("build target 'runtime' is not a stage" in p for p in moved), moved
    stale = ENV_EXAMPLE.read_text() + "\nUNUSED_KNOB=1\n"
    assert "UNUSED_KNOB is in .env.example but not used" in compose_problems(
        COMPOSE.read_text(), stale, ROOT, code
    )


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$HOME $SET", env) == (
        "x d  d $HOME x"
    )
    with pytest.raises(ValueError, match="UNSET is required: say so"):
        interpolate("${UNSET:?say so}", env)
    assert variables("${A:-x} $B $$C ${D}") == {"A", "B", "D"}
