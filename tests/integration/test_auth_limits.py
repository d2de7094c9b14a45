"""The limits on guessing credentials over real HTTP: ``driftpilot serve`` and the chat
(``chainlit run ui/app.py``, as ``driftpilot ui`` starts it), each a subprocess on a free
loopback port over a fresh home (SQLite, or PostgreSQL when the session's database variables
say so).

Clients connect from distinct loopback addresses (127.0.0.2, 127.0.0.3, ...: all of 127/8 is
this host), so the server sees them as distinct peers; no traffic leaves loopback. The
servers run with the default limits: 5 failures lock an address or a key id, 20 a chat user
name (except at an address that signed in as that user), for 60 s."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from driftpilot.core.llm import free_port
from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from driftpilot.store import AuditStore
from driftpilot.store.models import ToolCall
from driftpilot.store.users import add_user
from tests.conftest import db_env, wait_serving
from ui import launch

pytestmark = pytest.mark.integration

DRIFTPILOT = Path(sys.executable).with_name("driftpilot")
PROBLEM = "application/problem+json"
N = 5  # AuthLimitSettings.max_failures' default
NAME_N = 20  # AuthLimitSettings.name_max_failures' default
LOCKOUT_S = 60  # AuthLimitSettings.lockout_s' default


def server_env(home: Path) -> dict[str, str]:
    """This process's environment without DriftPilot's or Chainlit's variables, but for the
    database ones: the servers use the defaults, on the database the test writes to."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DRIFTPILOT_", "CHAINLIT_")) and k != "FORWARDED_ALLOW_IPS"
    }
    return {**env, **db_env(), "DRIFTPILOT_HOME": str(home)}


def start(
    argv: list[str], env: dict[str, str], log_path: Path, ready: str
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=env.get("CHAINLIT_APP_ROOT")
        )
    wait_serving(proc, ready, lambda: log_path.read_text(errors="replace")[-6000:])
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def from_address(host: str, base_url: str) -> httpx.Client:
    """A client whose connections leave from loopback address ``host``."""
    transport = httpx.HTTPTransport(local_address=host)
    return httpx.Client(base_url=base_url, transport=transport, timeout=30)


def lockouts(settings: Settings, via: str) -> list[tuple[dict[str, str], dict[str, object]]]:
    """(args, result) of every audited lockout ``via`` the API or the chat (on PostgreSQL the
    module's two servers share one database)."""
    store = AuditStore(settings.db_url)
    try:
        rows = store.list_rows(ToolCall, ToolCall.tool == "auth.lockout")
        assert store.verify().ok
    finally:
        store.engine.dispose()
    audited = [(json.loads(r.args), json.loads(r.result)) for r in rows]
    return [(args, result) for args, result in audited if args["via"] == via]


def assert_locked(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    wait = int(response.headers["retry-after"])
    assert 1 <= wait <= LOCKOUT_S
    body: dict[str, object] = response.json()
    assert body["type"] == "urn:driftpilot:problem:too-many-attempts"
    assert body["status"] == 429 and body["retry_after"] == wait
    assert f"try again in {wait} s" in str(body["detail"])
    return body


# -- the API ----------------------------------------------------------------------------------


@dataclass
class Api:
    """A ``driftpilot serve`` subprocess; ``restart`` stops it and starts another on the same
    home and port."""

    port: int
    key: str  # olga's (operator)
    settings: Settings
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [str(DRIFTPILOT), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = start(argv, self.env, self.log, f"{self.url}/healthz")

    def restart(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        self.start()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("auth-limits-api")
    env = server_env(root / "home")
    settings = Settings(home=root / "home", db_url=env.get("DRIFTPILOT_DB_URL", "")).ensure_dirs()
    cp = ControlPlane(settings)
    key = cp.create_api_key("olga", "operator")[1]
    cp.close()
    made = Api(free_port(), key, settings, env, root / "serve.log")
    made.start()
    try:
        yield made
    finally:
        if made.proc is not None:
            stop(made.proc)


def test_unknown_keys_from_one_address_lock_it_with_a_429(api: Api) -> None:
    kid = api.key.split("_")[1]
    with from_address("127.0.0.2", api.url) as guesser, from_address("127.0.0.3", api.url) as other:
        for i in range(N):
            guess = f"dp_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}"
            answer = guesser.get("/runs", headers={"X-Api-Key": guess})
            assert answer.status_code == 401, (i, answer.text)
        assert_locked(guesser.get("/runs", headers={"X-Api-Key": "dp_000000000000_x"}))
        # Locked means refused unchecked: the right key from that address too, on the hot
        # read route (its key lookup runs on the loop) as on the others.
        assert_locked(guesser.get("/runs", headers={"X-Api-Key": api.key}))
        assert_locked(guesser.get("/audit", headers={"Authorization": f"Bearer {api.key}"}))
        # The client's own X-Forwarded-For does not make it another address.
        forged = {"X-Api-Key": api.key, "X-Forwarded-For": "203.0.113.50"}
        assert_locked(guesser.get("/runs", headers=forged))
        # The right key from another address still works, and no address was locked but one.
        assert other.get("/runs", headers={"X-Api-Key": api.key}).status_code == 200
        assert other.get("/audit", headers={"X-Api-Key": api.key}).status_code == 200
    audited = lockouts(api.settings, "api")
    assert [(args["kind"], args["name"], args["via"]) for args, _ in audited] == [
        ("address", "127.0.0.2", "api")
    ]
    [(_, result)] = audited
    assert result["seconds"] == LOCKOUT_S and result["lockout"] == 1
    assert api.key not in json.dumps(audited) and kid not in json.dumps(audited)


def test_a_key_ids_lockout_refuses_wrong_secrets_but_not_its_own(api: Api) -> None:
    """Wrong secrets naming olga's key id, spread over addresses, lock the id: from then on a
    wrong secret with that id gets 429 from anywhere, and olga's own secret still passes."""
    kid = api.key.split("_")[1]
    for i in range(N):
        with from_address(f"127.0.1.{i + 1}", api.url) as guesser:
            wrong = f"dp_{kid}_{secrets.token_urlsafe(24)}"
            assert guesser.get("/models", headers={"X-Api-Key": wrong}).status_code == 401
    with from_address("127.0.1.100", api.url) as fresh:
        assert_locked(fresh.get("/models", headers={"X-Api-Key": f"dp_{kid}_wrong"}))
        assert fresh.get("/models", headers={"X-Api-Key": api.key}).status_code == 200
    assert ("key", kid, "api") in [
        (a["kind"], a["name"], a["via"]) for a, _ in lockouts(api.settings, "api")
    ]


def test_a_lockout_outlives_a_restart(api: Api) -> None:
    """The counters are in the database: a new server process sees the address's lock."""
    api.restart()
    with from_address("127.0.0.2", api.url) as guesser:
        assert_locked(guesser.get("/runs", headers={"X-Api-Key": api.key}))


# -- the chat ---------------------------------------------------------------------------------


@dataclass
class Chat:
    url: str
    settings: Settings


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chat]:
    root = tmp_path_factory.mktemp("auth-limits-chat")
    env = server_env(root / "home")
    settings = Settings(home=root / "home", db_url=env.get("DRIFTPILOT_DB_URL", "")).ensure_dirs()
    cp = ControlPlane(settings)
    add_user(cp.store, "Pat", "viewer", "pat-password-1")
    add_user(cp.store, "Quinn", "viewer", "quinn-password-1")
    cp.close()
    env["CHAINLIT_AUTH_SECRET"] = secrets.token_urlsafe(32)
    chat_env = launch.chainlit_env(settings, env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(launch.command("127.0.0.1", port), chat_env, root / "chainlit.log", f"{url}/login")
    try:
        yield Chat(url, settings)
    finally:
        stop(proc)


def sign_in(client: httpx.Client, name: str, password: str) -> httpx.Response:
    """The sign-in page's request: a multipart form (the page sends FormData)."""
    return client.post("/login", files={"username": (None, name), "password": (None, password)})


def test_a_name_locks_only_at_its_higher_count_and_never_where_its_owner_signed_in(
    chat: Chat,
) -> None:
    """N bad passwords for pat from N addresses (what used to lock pat everywhere) leave her
    free; NAME_N lock her name for new addresses, not for one she signed in from."""
    with from_address("127.0.2.200", chat.url) as home:
        assert sign_in(home, "pat", "pat-password-1").status_code == 200
    for i in range(N):
        with from_address(f"127.0.2.{i + 1}", chat.url) as guesser:
            answer = sign_in(guesser, "pat", f"guess-{i}-{secrets.token_hex(4)}")
            assert answer.status_code == 401, (i, answer.text)
    with from_address("127.0.2.201", chat.url) as elsewhere:
        assert sign_in(elsewhere, "pat", "pat-password-1").status_code == 200
    for i in range(NAME_N):
        with from_address(f"127.0.4.{i + 1}", chat.url) as guesser:
            answer = sign_in(guesser, "pat", f"guess-{i}-{secrets.token_hex(4)}")
            assert answer.status_code == 401, (i, answer.text)
    with from_address("127.0.4.100", chat.url) as fresh:
        # Pat's own password is refused unchecked from a new address (" PAT " is pat).
        body = assert_locked(sign_in(fresh, " PAT ", "pat-password-1"))
        assert "sign-ins" in str(body["detail"])
        # Another user signs in from that very address.
        welcome = sign_in(fresh, "quinn", "quinn-password-1")
        assert welcome.status_code == 200, welcome.text
    with from_address("127.0.2.200", chat.url) as home:
        assert sign_in(home, "pat", "pat-password-1").status_code == 200
    audited = lockouts(chat.settings, "chat")
    assert [(a["kind"], a["name"], a["via"]) for a, _ in audited] == [("user", "pat", "chat")]
    assert "guess-" not in json.dumps(audited)


def test_bad_sign_ins_from_one_address_lock_it_for_every_name(chat: Chat) -> None:
    """Even from 127.0.0.1, whose X-Forwarded-For uvicorn believes by default: a header
    naming a new address at each try does not make a new address (``ui.signin_guard``)."""
    with from_address("127.0.0.1", chat.url) as guesser:
        for i in range(N):
            posed = {"X-Forwarded-For": f"203.0.113.{i + 1}"}
            answer = guesser.post(
                "/login",
                files={"username": (None, f"user{i}"), "password": (None, "not-a-password")},
                headers=posed,
            )
            assert answer.status_code == 401, (i, answer.text)
        assert_locked(sign_in(guesser, "quinn", "quinn-password-1"))
    with from_address("127.0.3.2", chat.url) as other:
        assert sign_in(other, "quinn", "quinn-password-1").status_code == 200
