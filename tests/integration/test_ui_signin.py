"""The chat's sign-in page in a real browser: ``chainlit run ui/app.py --headless`` (as
``driftpilot ui`` starts it, through ``ui/launch.py``) on a free loopback port over a fresh home
with one API key and one password user, opened in Debian's Chromium through Playwright.

The page must say what to type: DriftPilot's name and logo, the fields "Name" and "API key or
password" (Chainlit's stock page asks for an "Email address"), and a hint that an API key is
the password. A wrong key must be refused in words, never as "Unauthorized: credentialssignin".
The words come from ``ui/translations/en-US.json``, which ``ui/launch.py`` lays over Chainlit's
own file; ``language = "en-US"`` in ``ui/chainlit.toml`` makes every browser get them, which
the test checks with a German browser too. Screenshots go to ``tests.browser.shots_dir()``."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
from playwright import sync_api

from driftpilot.core.llm import free_port
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.users import add_user
from tests.browser import CHROMIUM, chromium, shots_dir
from tests.conftest import wait_serving
from ui import launch

pytestmark = pytest.mark.integration

WAIT_MS = 60_000
REPO = Path(__file__).resolve().parents[2]
OURS = json.loads((REPO / "ui" / "translations" / "en-US.json").read_text(encoding="utf-8"))
LOGIN = OURS["auth"]["login"]
HINT_START = "Sign in with an API key (dp_…) as the password and any name"
REFUSED = "That name and key or password did not match"
# Keys of ours that Chainlit's en-US.json lacks on purpose: the hint (read by
# ui/public/driftpilot.js), and the error codes the login form looks up in lower case
# (auth.login.errors.<code>, then <code>.lower(): "credentialssignin", and "unauthorized" for
# the HTTP status text of a refused password sign-in).
ADDED = {
    "auth.login.hint",
    "auth.login.errors.credentialssignin",
    "auth.login.errors.unauthorized",
    "auth.login.errors.too many requests",
}

if shutil.which(CHROMIUM) is None:  # .ci/run installs it; say so loudly anywhere else
    pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)


def leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The translation's strings by dotted key."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out |= leaves(value, f"{path}.") if isinstance(value, dict) else {path: value}
    return out


def test_our_words_override_existing_chainlit_keys(tmp_path: Path) -> None:
    """A key Chainlit renames in an upgrade would silently bring back its stock words: every
    key of ours but the deliberate additions must exist in Chainlit's file, and the installed
    file keeps Chainlit's other strings (the page draws a missing one as an empty placeholder)."""
    stock = json.loads(launch.stock_translation("en-US.json").read_text(encoding="utf-8"))
    ours, theirs = leaves(OURS), leaves(stock)
    assert set(ours) - set(theirs) == ADDED
    [written] = launch.install_translations(tmp_path)
    installed = leaves(json.loads(written.read_text(encoding="utf-8")))
    assert installed == theirs | ours
    assert installed["auth.login.form.email.label"] == "Name"
    assert installed["chat.input.placeholder"] == theirs["chat.input.placeholder"]


@dataclass
class Chat:
    url: str
    key: str  # olga's API key (operator)
    home: Path


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chat]:
    root = tmp_path_factory.mktemp("ui-signin")
    settings = Settings(home=root / "home").ensure_dirs()
    cp = ControlPlane(settings)
    key = cp.create_api_key("olga", "operator")[1]
    add_user(cp.store, "Pat", "viewer", "pat-password-1")
    cp.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTPILOT_", "CHAINLIT_"))}
    env["CHAINLIT_AUTH_SECRET"] = secrets.token_urlsafe(32)
    chat_env = launch.chainlit_env(settings, env)
    port = free_port()
    log_path = root / "chainlit.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            launch.command("127.0.0.1", port),
            env=chat_env,
            cwd=chat_env["CHAINLIT_APP_ROOT"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(proc, f"{url}/login", lambda: log_path.read_text(errors="replace")[-6000:])
        yield Chat(url=url, key=key, home=settings.home)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(chat: Chat) -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def login_page(browser: Any, chat: Chat, locale: str) -> Any:
    """A fresh context (no cookies) in the browser language ``locale``, on the sign-in page
    with its hint drawn. The viewport is wide enough for Chainlit's side image."""
    context = browser.new_context(locale=locale, viewport={"width": 1300, "height": 800})
    page = context.new_page()
    page.goto(chat.url)
    page.wait_for_url("**/login", timeout=WAIT_MS)
    shown(page, HINT_START)
    return page


def shown(page: Any, text: str, exact: bool = False) -> Any:
    found = page.get_by_text(text, exact=exact).last
    try:
        found.wait_for(state="visible", timeout=WAIT_MS)
    except sync_api.Error as exc:
        raise AssertionError(f"not shown: {text!r} ({exc})\n{page.inner_text('body')}") from None
    return found


def submit(page: Any, name: str, password: str) -> None:
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("API key or password", exact=True).fill(password)
    page.get_by_role("button", name=LOGIN["form"]["actions"]["signin"]).click()


def image_loaded(page: Any, selector: str) -> str:
    """The ``src`` of the image at ``selector``, once the browser has decoded it."""
    image = page.locator(selector).first
    image.wait_for(state="visible", timeout=WAIT_MS)
    page.wait_for_function(
        "(el) => el.complete && el.naturalWidth > 0", arg=image.element_handle(), timeout=WAIT_MS
    )
    return str(image.get_attribute("src"))


def test_signin_page_says_what_to_type(browser: Any, chat: Chat) -> None:
    page = login_page(browser, chat, "en-US")
    assert page.title() == "DriftPilot"
    shown(page, "Sign in to DriftPilot", exact=True)
    shown(page, "Name", exact=True)
    shown(page, "API key or password", exact=True)
    hint = shown(page, HINT_START)
    assert hint.inner_text() == (
        "Sign in with an API key (dp_…) as the password and any name, or a password user made "
        "with driftpilot users add."
    )
    assert hint.locator("code").inner_text() == "driftpilot users add"
    text = page.inner_text("body")
    assert "email" not in text.lower(), text
    assert page.get_by_placeholder("me@example.com").count() == 0
    # The logo at the top is DriftPilot's (ui/public/logo_<theme>.svg), not Chainlit's.
    logo = image_loaded(page, "img[src*='/logo?theme=']")
    [theme] = parse_qs(urlsplit(logo).query)["theme"]
    served = page.request.get(urljoin(chat.url, logo)).text()
    assert served == (REPO / "ui" / "public" / f"logo_{theme}.svg").read_text()
    assert image_loaded(page, "img[alt=Image]") == "/public/login.svg"
    page.screenshot(path=str(shots_dir() / "signin.png"))
    page.context.close()


def test_wrong_key_is_refused_in_words(browser: Any, chat: Chat) -> None:
    page = login_page(browser, chat, "en-US")
    with page.expect_response("**/login") as refused:
        submit(page, "olga", "dp_" + secrets.token_urlsafe(24))
    assert refused.value.status == 401
    shown(page, REFUSED)
    # Chainlit also raises a toast with the raw error: it is in the page, and hidden there
    # (ui/public/driftpilot.css), so the reason is said once, in words.
    toast = page.locator("[data-sonner-toast]")
    toast.first.wait_for(state="attached", timeout=WAIT_MS)
    assert "credentialssignin" in toast.first.inner_html().lower()
    assert not toast.first.is_visible()
    text = page.inner_text("body")
    assert not re.search("credentialssignin|unauthorized", text, re.IGNORECASE), text
    assert page.url.endswith("/login")
    page.screenshot(path=str(shots_dir() / "signin-error.png"))
    page.context.close()


def test_every_browser_language_gets_the_driftpilot_words(browser: Any, chat: Chat) -> None:
    """A German browser would get Chainlit's stock German page ("E-Mail-Adresse") but for
    ``language = "en-US"`` in ui/chainlit.toml."""
    page = login_page(browser, chat, "de-DE")
    assert page.evaluate("navigator.language") == "de-DE"
    shown(page, "Sign in to DriftPilot", exact=True)
    shown(page, "API key or password", exact=True)
    text = page.inner_text("body")
    assert "mail" not in text.lower(), text
    page.context.close()


@pytest.mark.parametrize("who", ["olga", "Pat"])
def test_right_key_or_password_signs_in(browser: Any, chat: Chat, who: str) -> None:
    """An API key as the password with any name (the key names its principal), or a password
    user's name and password."""
    page = login_page(browser, chat, "en-US")
    if who == "olga":
        submit(page, "anyone", chat.key)
        shown(page, "Signed in as olga (operator, by api-key)")
    else:
        submit(page, "Pat", "pat-password-1")
        shown(page, "Signed in as Pat (viewer, by password)")
    assert REFUSED not in page.inner_text("body")
    page.context.close()
