"""The chat in a real browser: ``chainlit run ui/app.py --headless`` on a free loopback port
over a prepared home (the flights model, real data, real MLflow and SQLite), driven by
Playwright with Debian's Chromium (headless, no sandbox, no background networking).

The policy forces a retrain and calls every promotion high-risk, so a run started from the chat
(after its proposal card is confirmed) pauses for a person. The operator who asked for it is
refused when pressing Approve; an approver, signed in with their own key in another browser
context, approves it with a comment and sees the new champion. A question about a rollback and
a request for one leave the champion where it is until the approver presses Confirm (and gives
a reason); the waiting request compared with the old champion is then marked stale. The façade
confirms what the browser showed: the run is in the same runs table and audit as the API's,
under the signed-in principals. Screenshots of the cards go to ``tests.browser.shots_dir()``
(``DRIFTPILOT_SCREENSHOTS=evals/results/screenshots`` refreshes the committed ones)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import yaml
from playwright import sync_api

from driftpilot.core.llm import free_port
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store.models import Run, Schedule
from driftpilot.store.users import add_user
from tests.browser import CHROMIUM, chromium, shots_dir
from tests.conftest import add_flights, wait_serving
from tests.integration.test_control_graph import FORCE_RETRAIN, HIGH_RISK, merge
from tools.datasets import FLIGHTS_CACHE
from ui import launch

pytestmark = pytest.mark.integration

AGENTS = ["ingestion", "drift_analyst", "optimizer", "retraining", "evaluator", "cicd"]
WAIT_MS = 60_000
RUN_MS = 240_000

if shutil.which(CHROMIUM) is None:  # .ci/run installs it; say so loudly anywhere else
    pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium", pytrace=False)


@dataclass
class ChatServer:
    root: Path
    settings: Settings
    keys: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        path = self.root / "chainlit.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def start(self, env: dict[str, str]) -> None:
        self.port = free_port()
        chat_env = launch.chainlit_env(self.settings, env)
        log = (self.root / "chainlit.log").open("wb")
        self.proc = subprocess.Popen(
            launch.command("127.0.0.1", self.port),
            env=chat_env,
            cwd=chat_env["CHAINLIT_APP_ROOT"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_serving(self.proc, f"{self.url}/login", self.log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def chat(
    tmp_path_factory: pytest.TempPathFactory, flights_df: pl.DataFrame, months: Any
) -> Iterator[ChatServer]:
    root = tmp_path_factory.mktemp("ui-browser")
    home = root / "home"
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump(merge(FORCE_RETRAIN, HIGH_RISK)))
    settings = Settings(home=home, policy_path=policy).ensure_dirs()
    assert settings.cache_dir is not None
    flights_df.write_parquet(settings.cache_dir / FLIGHTS_CACHE)  # no re-parse in chainlit
    cp = ControlPlane(settings)
    add_flights(cp, months["2013-01"].sample(n=4000, seed=1).sort("time_hour"), principal="alice")
    server = ChatServer(root=root, settings=settings)
    server.keys["olga"] = cp.create_api_key("olga", "operator")[1]
    server.keys["abby"] = cp.create_api_key("abby", "approver")[1]
    add_user(cp.store, "Pat", "viewer", "pat-password-1")
    cp.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTPILOT_", "CHAINLIT_"))}
    env |= {
        "DRIFTPILOT_POLICY_PATH": str(policy),
        "CHAINLIT_AUTH_SECRET": secrets.token_urlsafe(32),
    }
    server.start(env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(chat: ChatServer) -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def sign_in(browser: Any, chat: ChatServer, username: str, password: str) -> Any:
    """A new browser context (its own cookies) signed in; waits for the welcome."""
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    calls: list[str] = []  # the action calls the page made, for failure messages
    page.on(
        "response",
        lambda r: calls.append(f"{r.status} {r.url}") if "/project/action" in r.url else None,
    )
    page.calls = calls
    page.goto(chat.url)
    page.wait_for_url("**/login", timeout=WAIT_MS)
    page.locator("#email").fill(username)
    page.locator("#password").fill(password)
    page.locator("button[type=submit]").click()
    return page


def idle(page: Any) -> None:
    """Wait until the session runs no task (Enter does not send while the stop button shows)."""
    try:
        page.locator("#stop-button").wait_for(state="hidden", timeout=RUN_MS)
    except sync_api.Error as exc:
        raise AssertionError(f"the chat stayed busy: {exc}\n{page_text(page)}") from None


def page_text(page: Any) -> str:
    shot = Path(os.environ.get("TMPDIR", "/tmp")) / f"ui-failure-{time.time_ns()}.png"
    page.screenshot(path=str(shot), full_page=True)
    calls = getattr(page, "calls", [])
    return (
        f"--- action calls: {calls}\n--- page (screenshot {shot}) ---\n"
        + page.inner_text("body")[-4000:]
    )


def press(page: Any, label: str) -> None:
    """Press the last button with this label, once the session is idle and the charts above
    it are drawn (a chart drawn late moves the buttons)."""
    idle(page)
    for chart in page.locator(".js-plotly-plot").all():
        chart.wait_for(state="visible", timeout=WAIT_MS)
    page.wait_for_timeout(500)
    button = page.get_by_role("button", name=label).last
    button.scroll_into_view_if_needed()
    button.click()


def say(page: Any, text: str, *, wait_idle: bool = True) -> None:
    """Type a message and send it (an answer to the chat's own question does not wait for
    the session to be idle: the asking task runs until it is answered)."""
    if wait_idle:
        idle(page)
    page.locator("#chat-input").click()
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def visible(page: Any, text: str, timeout: int = WAIT_MS) -> Any:
    found = page.get_by_text(text).last
    try:
        found.wait_for(state="visible", timeout=timeout)
    except sync_api.Error as exc:
        raise AssertionError(f"not shown: {text!r} ({exc})\n{page_text(page)}") from None
    return found


def test_a_run_from_the_chat_is_refused_to_its_requester_and_approved_by_an_approver(
    chat: ChatServer, browser: Any, tmp_path: Path
) -> None:
    started = time.monotonic()
    # A wrong password is refused at the door.
    stranger = sign_in(browser, chat, "olga", "dp_not-a-key")
    visible(stranger, "did not match")
    assert stranger.url.endswith("/login")
    stranger.context.close()

    # The operator signs in with her key (any user name: the key names the principal).
    olga = sign_in(browser, chat, "whoever", chat.keys["olga"])
    visible(olga, "Signed in as olga (operator")
    say(olga, "/run flights flights:2013-07 2000")
    visible(olga, "Proposal — Start a control run of flights on batch flights:2013-07")
    visible(olga, "a seeded sample of 2,000 of its")
    press(olga, "Confirm")
    visible(olga, "Started run")
    for agent in AGENTS:  # one step per agent, with its decision
        visible(olga, f"{agent}: ", timeout=RUN_MS)
    visible(olga, "Waiting for approval", timeout=RUN_MS)
    visible(olga, "requested by olga")
    visible(olga, "Drift per feature, batch 2013-07")
    visible(olga, "evidently-flights-2013-07")

    cp = ControlPlane(chat.settings)
    try:
        [waiting] = cp.pending_approvals()
        assert waiting.requested_by == "olga" and waiting.batch_id == "2013-07"
        run_id = waiting.run_id

        # The requester presses Approve: refused, and nothing is recorded.
        press(olga, "Approve")
        visible(olga, "Refused: you (olga) requested run")
        assert len(cp.store.approval_rows(run_id)) == 1
        assert cp.get_run(run_id).status == "waiting_approval"

        # A password user with the viewer role (the name under the identity rule) may look,
        # not act.
        pat = sign_in(browser, chat, " PAT ", "pat-password-1")
        visible(pat, "Signed in as pat (viewer, by password)")
        say(pat, "/run flights flights:2013-08")
        visible(pat, "'pat' has the viewer role; to start a run you need the operator role")
        assert not pat.get_by_role("button", name="Confirm").count()
        pat.context.close()

        # The approver, in another browser context, asks what is pending and approves it.
        abby = sign_in(browser, chat, "abby", chat.keys["abby"])
        visible(abby, "Signed in as abby (approver")
        visible(abby, "1 promotion(s) wait for a person")
        say(abby, "what is pending?")
        visible(abby, f"run {run_id[:12]} of flights")
        press(abby, "Approve")
        visible(abby, "Your comment on this approval")
        say(abby, "checked the drift report", wait_idle=False)
        visible(abby, "New champion of flights: v2 (approved by abby)", timeout=RUN_MS)
        visible(abby, "flights: champion metric by batch time")
        shot = tmp_path / "chat-approved.png"
        abby.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")

        # Her audit view of the run, in the chat.
        say(abby, f"show the audit of run {run_id[:12]}")
        visible(abby, f"Audit of run {run_id}")
        visible(abby, "Approval decision: abby approve")
        visible(abby, "v1 → v2 (promote by abby)")

        # The façade agrees with what the browser showed.
        done = cp.get_run(run_id)
        assert done.status == "completed" and done.outcome == "promoted", done.summary
        assert done.summary["approval"] == {
            "decision": "approve",
            "approver": "abby",
            "comment": "checked the drift report",
        }
        assert cp.model_view("flights").champion == 2
        last = cp.champion_history("flights")[-1]
        assert (last["version"], last["actor"], last["run_id"]) == (2, "abby", run_id)
        [listed] = cp.list_runs("flights", requested_by="OLGA")
        assert listed.run_id == run_id
        assert cp.store.get(Run, run_id).trigger == "chat"
        assert cp.verify().ok

        # Data is shown as text: the agents' actions keep what follows their colon.
        visible(abby, "tune:lightgbm")
        visible(abby, "risk:high")

        # The operator's second run waits too, compared with v2.
        say(olga, "/run flights flights:2013-08 2000")
        press(olga, "Confirm")
        visible(olga, "of flights on batch 2013-08, requested by olga", timeout=RUN_MS)
        august = next(v for v in cp.pending_approvals() if v.batch_id == "2013-08")

        # The health card.
        say(abby, "how is flights doing?")
        visible(abby, "Health of flights")
        visible(abby, "Waiting for a person: 1")
        idle(abby)
        abby.screenshot(path=str(shots_dir() / "chat-health-card.png"), full_page=True)

        # A question about a rollback, and a request for one: nothing moves until Confirm.
        say(abby, "how do I roll back flights?")
        visible(abby, "Nothing was changed: this was a question.")
        visible(abby, "would move the champion from v2 to v1")
        assert cp.model_view("flights").champion == 2
        say(olga, "roll back flights")
        visible(olga, "to roll back a champion you need the approver role")
        say(abby, "roll back flights")
        visible(abby, "Proposal — Roll back flights: the champion moves from v2 to v1")
        idle(abby)
        abby.screenshot(path=str(shots_dir() / "chat-rollback-proposal.png"), full_page=True)
        assert cp.model_view("flights").champion == 2
        press(abby, "Confirm")
        visible(abby, "Why? The reason goes into the audit")
        assert cp.model_view("flights").champion == 2
        say(abby, "the July model misroutes evening flights", wait_idle=False)
        visible(abby, "flights: champion v2 → v1 (by abby, confirmed")
        idle(abby)
        assert cp.model_view("flights").champion == 1
        last = cp.champion_history("flights")[-1]
        assert (last["action"], last["version"], last["actor"]) == ("rollback", 1, "abby")
        rows, _ = cp.audit_rows(run_id=last["run_id"], table="decisions")
        assert rows[0]["action"] == "confirm:rollback"

        # August's request compared its challenger with v2: stale now, before anyone decides.
        say(abby, "what is pending?")
        visible(abby, "Stale: this request compared the challenger with v2")
        visible(abby, "Evaluate against the current champion")
        idle(abby)
        abby.screenshot(path=str(shots_dir() / "chat-stale-approval.png"), full_page=True)
        assert cp.get_run(august.run_id).status == "waiting_approval"

        # Plain phrases: why, a schedule (confirmed), all under her name.
        say(abby, "why did you retrain in July?")
        visible(abby, "drift_analyst → retrain:")
        say(abby, "schedule flights every hour")
        visible(abby, "Proposal — Schedule control runs of flights at 0 * * * * (UTC)")
        assert not cp.store.list_rows(Schedule)
        press(abby, "Confirm")
        visible(abby, "Scheduled flights 0 * * * * (UTC)")
        say(abby, "show schedules")
        visible(abby, '{"dataset": "flights"')
        [made] = cp.store.list_rows(Schedule)
        assert (made.model, made.schedule, made.created_by) == ("flights", "0 * * * *", "abby")
        assert cp.verify().ok
    finally:
        cp.close()
    elapsed = time.monotonic() - started
    print(f"browser test body: {elapsed:.1f} s")
    assert elapsed < 400, f"the browser test took {elapsed:.0f} s"


def test_driftpilot_ui_serves_the_chat_from_the_home(tmp_path: Path) -> None:
    """``driftpilot ui`` becomes chainlit on the asked loopback port, with its files under the
    home (nothing in the working directory), and stops on SIGTERM."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTPILOT_", "CHAINLIT_"))}
    env["DRIFTPILOT_HOME"] = str(home)
    port = free_port()
    driftpilot = Path(launch.command("127.0.0.1", port)[0]).with_name("driftpilot")
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(driftpilot), "ui", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_serving(proc, f"http://127.0.0.1:{port}/login", log.read_text)
            settings = httpx.get(f"http://127.0.0.1:{port}/auth/config", timeout=5).json()
            assert settings["requireLogin"] is True and settings["passwordAuth"] is True
        finally:
            proc.terminate()
            assert proc.wait(timeout=30) is not None
    output = log.read_text()
    assert "nobody can sign in yet" in output and f"http://127.0.0.1:{port}" in output
    assert os.listdir(cwd) == []
    assert (home / "ui" / ".chainlit" / "config.toml").is_file()
    assert (home / "ui" / "auth-secret").stat().st_mode & 0o077 == 0
