"""Every CLI command's error path, as a user meets it. Each ends with exactly one ``error:``
line, the documented exit code (1 our error, 2 bad usage, 3 a bug) and no traceback. Every
case fails before any heavy work.

The cases call the app in-process (typer's CliRunner, stderr apart: the console script is
this same ``app``, so each case meets the same guard without paying a Python start and the
imports, ~1 s of CPU each); the bug test runs the installed ``driftpilot`` in a subprocess,
as a user does."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from driftpilot.cli import app
from driftpilot.core.settings import get_settings

pytestmark = pytest.mark.integration

DRIFTPILOT = Path(sys.executable).with_name("driftpilot")

FROM_FILE = "model add m --data {{tmp}}/{file} --target y --time-col t --numeric a"
# (command, command line, exit code, part of the error line). {tmp} is the test's directory.
CASES = [
    ("model add", "model add m --dataset nope --initial x", 2, "unknown dataset 'nope'"),
    ("model add", "model add m --dataset flights", 2, "give --initial"),
    ("model add", FROM_FILE.format(file="gone.csv"), 1, "no such file"),
    ("model add", FROM_FILE.format(file="notes.txt"), 1, "unsupported file type"),
    (
        "model adopt",
        "model adopt m --model-uri runs:/x/model --reference {tmp}/gone.csv --target y",
        2,
        "is not a file",
    ),
    ("model list", "model list", 1, "invalid policy file"),
    ("model window", "model window m --rows 5", 2, "greater than or equal to 10"),
    ("model window", "model window m --off --rows 100", 2, "--off takes no"),
    ("model window", "model window nope --rows 100", 1, "no model 'nope'"),
    ("model windows", "model windows nope", 1, "no model 'nope'"),
    ("run", "run flights --from-dataset nope:X", 2, "unknown dataset 'nope'"),
    ("run", "run flights --from-dataset flights", 2, "--from-dataset NAME:BATCH_ID"),
    ("run", "run nope --from-dataset flights:2013-03", 1, "no model 'nope'"),
    ("run", "run nope --batch {tmp}/gone.csv", 1, "no model 'nope'"),
    ("runs", "runs --limit many", 2, "Invalid value for '--limit'"),
    ("approve", "approve abc123", 2, "Missing option '--as'"),
    ("approve", "approve abc123 --as bob", 1, "no run match 'abc123'"),
    ("reject", "reject abc123 --as bob", 1, "no run match 'abc123'"),
    # The read-only commands read the audit alone: a broken policy does not stop them.
    ("approvals", "approvals --json all", 2, "unexpected extra argument(s) (all)"),
    ("audit", "audit --export xml", 2, "unknown export format 'xml'"),
    ("audit", "audit --run abc123", 1, "no run match 'abc123'"),
    ("audit", "audit --run ''", 2, "give a run id or a unique prefix"),
    ("approve", "approve ' ' --as bob", 2, "give a run id or a unique prefix"),
    ("replay", "replay ''", 2, "give a run id or a unique prefix"),
    ("report", "report abc123", 1, "no run match 'abc123'"),
    ("report", "report ''", 2, "give a run id or a unique prefix"),
    ("audit", "audit --run abc123 --json", 1, "no run match 'abc123'"),
    ("audit", "audit --run abc123 --export jsonl", 1, "no run match 'abc123'"),
    ("rollback", "rollback nope --as bob --reason why", 1, "no model 'nope'"),
    ("rollback", "rollback nope --as bob", 2, "Missing option '--reason'"),
    ("rollback", "rollback nope --as bob --reason ' '", 2, "give a reason"),
    ("labels", "labels flights 2013-02", 2, "Missing option '--file'"),
    ("labels", "labels nope 2013-02 --file {tmp}/gone.csv", 1, "no model 'nope'"),
    ("note", "note nope 'a deploy' --as ann", 1, "no model 'nope'"),
    ("note", "note flights 'a deploy'", 2, "Missing option '--as'"),
    ("notes", "notes nope", 1, "no model 'nope'"),
    ("rollback", "rollback nope --as 'bob\u200b' --reason why", 1, "invisible or control"),
    ("recover", "recover", 1, "invalid policy file"),
    ("audit checkpoint", "audit checkpoint --export all", 2, "unexpected extra argument(s) (all)"),
    ("replay", "replay", 2, "give a RUN_ID, or --model NAME"),
    ("replay", "replay abc123 --policy {tmp}/gone.yaml", 1, "invalid policy file"),
    ("replay", "replay abc123 --llm nope:x", 1, "unknown LLM provider 'nope'"),
    ("replay", "replay abc123", 1, "no run match 'abc123'"),
    ("eval", "eval --data {tmp}/gone.csv --target y --time t", 1, "no such file"),
    ("eval", "eval --data {tmp}/notes.txt --target y --time t", 1, "unsupported file type"),
    ("eval", "eval --dataset nope", 1, "unknown dataset 'nope'"),
    ("eval", "eval --dataset flights --order-by time", 2, "only 'row' is understood"),
    ("eval", "eval --dataset flights --approvals maybe", 2, "approve, reject or wait"),
    ("demo", "demo --dataset nope", 2, "unknown dataset 'nope'"),
    ("tour", "tour --trials 0", 2, "Invalid value for '--trials'"),
    ("data", "data nope", 2, "unknown dataset 'nope'"),
    ("serve", "serve --host 0.0.0.0 --port 8799", 1, "refusing to listen on 0.0.0.0"),
    ("serve", "serve --port 0", 2, "Invalid value for '--port'"),
    ("keys create", "keys create --name ann --role god", 2, "unknown role 'god'"),
    ("keys create", "keys create --name 'ann\u200b' --role admin", 1, "invisible or control"),
    ("keys list", "keys list", 1, "invalid policy file"),
    ("keys revoke", "keys revoke nope", 1, "'nope'"),
    ("users add", "users add ann --role god", 2, "unknown role 'god'"),
    ("users add", "users add 'ann\u200b' --role admin", 1, "invisible or control"),
    ("users list", "users list", 1, "invalid policy file"),
    ("ui", "ui --port 0", 2, "Invalid value for '--port'"),
    ("worker", "worker --concurrency 0", 2, "Invalid value for '--concurrency'"),
    ("llm serve", "llm serve --port 0", 2, "Invalid value for '--port'"),
    ("llm serve", "llm serve --model {tmp}/gone.gguf", 1, "run `make llm-local`"),
    ("llm exec", "llm exec", 2, "Missing argument 'command'"),
    ("ui", "ui --host ' '", 2, "give an address"),
    ("backup", "backup {tmp}", 1, "is not an empty folder"),
    ("restore", "restore {tmp}/gone", 1, "restore needs a key it can trust"),
    ("restore", "restore {tmp}/gone --trust-backup", 1, "is not a DriftPilot backup"),
    ("webhooks add", "webhooks add flights ftp://x/h --by ann", 2, "must be http:// or https://"),
    ("webhooks add", "webhooks add nope https://example.com/h --by ann", 1, "no model 'nope'"),
    ("webhooks list", "webhooks list nope", 1, "no model 'nope'"),
    ("webhooks remove", "webhooks remove nope abc --by ann", 1, "no model 'nope'"),
    ("webhooks rotate-secret", "webhooks rotate-secret nope abc --by ann", 1, "no model 'nope'"),
    ("driftpilot", "nope", 2, "No such command 'nope'"),
    ("driftpilot", "--log-level LOUD runs", 2, "'LOUD' is not one of DEBUG"),
]
BAD_POLICY = {
    "model list",
    "recover",
    "keys list",
    "users list",
}  # commands without arguments fail on a broken config


def driftpilot(line: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DRIFTPILOT_POLICY_PATH"}
    environ.update({"DRIFTPILOT_HOME": str(tmp_path / "home"), **env})
    argv = shlex.split(line.format(tmp=tmp_path))
    return subprocess.run(
        [str(DRIFTPILOT), *argv], capture_output=True, text=True, env=environ, timeout=120
    )


def in_process(
    line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str
) -> subprocess.CompletedProcess[str]:
    """``driftpilot line`` run by the app in this process, with the environment ``driftpilot``
    gets above; an exception that escaped the app's guard is a failure here (a subprocess
    would have printed its traceback)."""
    monkeypatch.delenv("DRIFTPILOT_POLICY_PATH", raising=False)
    for name, value in {"DRIFTPILOT_HOME": str(tmp_path / "home"), **env}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    argv = shlex.split(line.format(tmp=tmp_path))
    try:
        result = CliRunner().invoke(app, argv, catch_exceptions=True)
    finally:
        get_settings.cache_clear()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}") from result.exception
    return subprocess.CompletedProcess(argv, result.exit_code, result.stdout, result.stderr)


def assert_one_error_line(done: subprocess.CompletedProcess[str], code: int, part: str) -> None:
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert part in errors[0], output
    assert done.returncode == code, output


@pytest.mark.parametrize(("command", "line", "code", "part"), CASES)
def test_error_path(
    command: str, line: str, code: int, part: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.txt").write_text("not a table\n")
    env = {}
    if command in BAD_POLICY:
        policy = tmp_path / "policy.yaml"
        policy.write_text("drift: [unclosed\n")
        env["DRIFTPILOT_POLICY_PATH"] = str(policy)
    assert_one_error_line(in_process(line, tmp_path, monkeypatch, **env), code, part)


def command_names(group: Any, prefix: str = "") -> set[str]:
    """'run', 'model add', ...: every command a user can type, nested groups included."""
    names: set[str] = set()
    for name, command in group.commands.items():
        if getattr(command, "commands", None):
            names |= command_names(command, f"{prefix}{name} ")
        else:
            names.add(f"{prefix}{name}")
    return names


def test_every_command_has_an_error_case() -> None:
    missing = command_names(typer.main.get_command(app)) - {case[0] for case in CASES}
    assert not missing, f"give these commands a case in CASES: {sorted(missing)}"


def test_a_bug_is_one_line_with_a_hint_and_the_traceback_on_request(tmp_path: Path) -> None:
    # A home that is a file: creating its folders fails with an OSError, not one of ours.
    home = tmp_path / "home-file"
    home.write_text("")
    done = driftpilot("runs", tmp_path, DRIFTPILOT_HOME=str(home))
    assert_one_error_line(done, 3, "internal error: FileExistsError")
    assert "--log-level DEBUG" in done.stderr
    debug = driftpilot("--log-level DEBUG runs", tmp_path, DRIFTPILOT_HOME=str(home))
    assert debug.returncode == 3 and "Traceback" in debug.stderr
