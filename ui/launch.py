"""Start the chat: ``driftpilot ui`` runs ``chainlit run ui/app.py`` headless.

Chainlit writes its files (``.chainlit/``, ``chainlit.md``, ``.files/``) into its app root:
that is ``<home>/ui``, never the repository. The config there is rewritten from
``ui/chainlit.toml`` at every start, and so are the sign-in page's words (``ui/translations/``,
laid over Chainlit's own translation files) and the files it serves from ``public/`` (the
DriftPilot logo, sign-in image, CSS and JS, from ``ui/public/``). Sessions are signed with
``CHAINLIT_AUTH_SECRET``: taken from the environment if set, else from
``<home>/ui/auth-secret`` (created once, mode 0600), so a restart keeps people signed in.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from importlib.metadata import distribution, version
from pathlib import Path
from typing import Any

from driftpilot.core.settings import Settings

HERE = Path(__file__).resolve().parent
APP = HERE / "app.py"
TRANSLATIONS = HERE / "translations"
PUBLIC = HERE / "public"
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
    install_translations(root / ".chainlit" / "translations")
    # Chainlit serves <root>/public/ at /public/ and picks logo_light.*, logo_dark.* and
    # favicon.* there by name.
    shutil.copytree(PUBLIC, root / "public", dirs_exist_ok=True)
    return root


def stock_translation(name: str) -> Path:
    """Chainlit's own translation file ``name`` (found without importing chainlit, whose import
    has side effects in the working directory)."""
    return Path(str(distribution("chainlit").locate_file(f"chainlit/translations/{name}")))


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on it key by key (nested objects merged, not replaced)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def install_translations(folder: Path) -> list[Path]:
    """Write each ``ui/translations/<lang>.json`` over Chainlit's file of that language.

    Ours hold only the words DriftPilot changes (the sign-in page); the rest must stay
    Chainlit's, since the page draws a missing key as an empty placeholder. Chainlit copies its
    stock files into this folder only when they are missing, so ours, written at every start,
    are the ones it serves."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for ours in sorted(TRANSLATIONS.glob("*.json")):
        stock = stock_translation(ours.name)
        if not stock.is_file():  # ours alone would leave most of the page without words
            raise FileNotFoundError(f"chainlit {version('chainlit')} has no {stock}")
        words = merged(
            json.loads(stock.read_text(encoding="utf-8")),
            json.loads(ours.read_text(encoding="utf-8")),
        )
        target = folder / ours.name
        target.write_text(json.dumps(words, indent=4, ensure_ascii=False), encoding="utf-8")
        written.append(target)
    return written


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
