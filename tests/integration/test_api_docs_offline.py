"""The API's documentation pages work without internet: ``driftpilot serve`` in a subprocess
on a free loopback port (the ``Server`` of ``test_api_http``, over an empty home), opened in
Debian's Chromium (headless, no sandbox) through Playwright, with every request that leaves
loopback aborted. ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) must still draw the API's
operations and tags from their bundled scripts, and nothing may have tried to leave (ReDoc's
one outside link, its logo, is held back by the pages' Content-Security-Policy)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright import sync_api

from tests.browser import CHROMIUM, chromium
from tests.integration.test_api_http import Server

pytestmark = pytest.mark.integration

WAIT_MS = 60_000
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
ASSETS = "/static-offline-docs/"

if shutil.which(CHROMIUM) is None:  # .ci/run installs it; say so loudly anywhere else
    pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The API over an empty home: the docs need no model and no key."""
    root = tmp_path_factory.mktemp("api-docs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
    srv = Server(home=root / "home", env={**env, "DRIFTPILOT_HOME": str(root / "home")})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@dataclass
class Traffic:
    """What a page asked for: loopback URLs with their status, and what was refused."""

    served: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)


def offline_page(browser: Any) -> tuple[Any, Traffic]:
    """A page in a new context whose requests beyond loopback are aborted (and noted)."""
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    traffic = Traffic()

    def route(r: Any) -> None:
        if urlsplit(r.request.url).hostname in LOOPBACK or r.request.url.startswith("data:"):
            r.continue_()
        else:
            traffic.refused.append(r.request.url)
            r.abort("internetdisconnected")

    page.route("**/*", route)
    page.on("response", lambda resp: traffic.served.__setitem__(resp.url, resp.status))
    return page, traffic


def shown(page: Any, locator: Any, what: str) -> None:
    """Some element of ``locator`` becomes visible (others may sit in collapsed menus)."""
    try:
        locator.filter(visible=True).first.wait_for(state="visible", timeout=WAIT_MS)
    except sync_api.Error as exc:
        body = page.inner_text("body")[-3000:]
        raise AssertionError(f"not shown: {what} ({exc})\n--- page ---\n{body}") from None


def assets_used(server: Server, traffic: Traffic, *names: str) -> None:
    """Each bundled asset was fetched from this server and served."""
    for name in names:
        url = f"{server.url}{ASSETS}{name}"
        assert traffic.served.get(url) == 200, (url, traffic.served)


def test_swagger_ui_shows_the_operations_offline(server: Server, browser: Any) -> None:
    page, traffic = offline_page(browser)
    page.goto(f"{server.url}/docs")
    shown(page, page.locator(".opblock-tag", has_text="langgraph"), "the langgraph tag")
    shown(page, page.locator(".opblock-tag", has_text="runs"), "the runs tag")
    paths = page.locator(".opblock-summary-path")
    shown(page, paths.filter(has_text="/runs/{run_id}/cancel"), "POST /runs/{run_id}/cancel")
    shown(page, paths.filter(has_text="/assistants/{assistant_id}/graph"), "get_graph")
    listed = {p.strip() for p in paths.all_inner_texts()}
    assert {"/runs", "/approvals", "/threads/{thread_id}/state"} <= listed, listed
    assert page.title() == "DriftPilot - Swagger UI"
    assets_used(server, traffic, "swagger-ui-bundle.js", "swagger-ui.css")
    assert traffic.served.get(f"{server.url}/openapi.json") == 200
    assert traffic.refused == []
    page.context.close()


def test_redoc_shows_the_operations_offline(server: Server, browser: Any) -> None:
    page, traffic = offline_page(browser)
    answer = page.goto(f"{server.url}/redoc")
    # ReDoc's bundle points its sidebar logo at cdn.redoc.ly: the page's policy keeps it in.
    assert "img-src 'self' data:" in answer.headers["content-security-policy"]
    menu = page.locator("[role=menuitem], .menu-content label")
    shown(page, menu.filter(has_text="langgraph"), "the langgraph tag in the menu")
    shown(page, page.locator("h2", has_text="Create Run"), "the operation 'Create Run'")
    shown(page, page.get_by_text("/runs/{run_id}/cancel"), "the path /runs/{run_id}/cancel")
    assert page.title() == "DriftPilot - ReDoc"
    assets_used(server, traffic, "redoc.standalone.js")
    assert traffic.served.get(f"{server.url}/openapi.json") == 200
    assert traffic.refused == []
    page.context.close()
