"""Start the chat: ``driftpilot ui`` runs ``chainlit run ui/app.py`` headless.

Chainlit writes its files (``.chainlit/``, ``chainlit.md``, ``.files/``) into its app root:
that is ``<home>/ui``, never the repository. The config there is rewritten from
``ui/chainlit.toml`` at every start. Sessions are signed with ``CHAINLIT_AUTH_SECRET``: taken
from the environment if set, else from ``<home>/ui/auth-secret`` (created once, mode 0600), so
a restart keeps people signed in.
"""

from __future__ import annotations

import os
import secrets
import sys
from importlib.metadata import version
from pathlib import Path

from driftpilot.settings import Settings

HERE = Path(__file__).resolve().parent
APP = HERE / "app.py"
WELCOME = """# DriftPilot

Sign in with an API key (`driftpilot keys create`) as the password, or as a user made with
`driftpilot users add`. Then type `/help`.
"""


def app_root(settings: Settings) -> Path:
    """Chainlit's working folder under the home, with its config written afresh."""
    root = settings.home / "ui"
    (root / ".chainlit").mkdir(parents=True, exist_ok=True)
    template = (HERE / "chainlit.toml").read_text()
    config = template.replace("@CHAINLIT_VERSION@", version("chainlit"))
    (root / ".chainlit" / "config.toml").write_text(config)
    (root / "chainlit.md").write_text(WELCOME)
    return root


def auth_secret(settings: Settings) -> str:
    """The secret that signs chat sessions: the environment's, or one kept under the home."""
    if os.environ.get("CHAINLIT_AUTH_SECRET"):
        return os.environ["CHAINLIT_AUTH_SECRET"]
    path = settings.home / "ui" / "auth-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def chainlit_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the chainlit process: app root, auth secret, no telemetry."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "CHAINLIT_APP_ROOT": str(app_root(settings)),
            "CHAINLIT_AUTH_SECRET": auth_secret(settings),
            "DRIFTPILOT_HOME": str(settings.home),
            "LITERAL_API_KEY": "",
        }
    )
    return env


def command(host: str, port: int) -> list[str]:
    """The chainlit command line (the interpreter's own chainlit)."""
    chainlit = Path(sys.executable).with_name("chainlit")
    return [str(chainlit), "run", str(APP), "--headless", "--host", host, "--port", str(port)]


def run(settings: Settings, host: str, port: int) -> None:
    """Become chainlit (exec): signals reach it directly, and it leaves no orphan behind."""
    env = chainlit_env(settings)
    argv = command(host, port)
    os.chdir(env["CHAINLIT_APP_ROOT"])
    os.execve(argv[0], argv, env)
