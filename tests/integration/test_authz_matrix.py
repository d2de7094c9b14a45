"""The README's authorization matrix, cell by cell, over real HTTP.

The README section "Authorization matrix" is the source of truth: this module parses its
table, checks that its rows are exactly the routes of the app (``app.routes``, the ones left
out of the OpenAPI document included; only the documentation's static files, ``STATIC_MOUNTS``,
have no row), and sends one real request per (route, principal) cell to a ``driftpilot serve``
subprocess on a free loopback port, expecting the cell's status. ``—`` (no owner to differ
from) is a cell of the "another principal" column only: every route answers every role.

The home is a copy of the session's trained flights home (``trained_homes``). Before the
server starts, two runs wait for approval (a forced retrain and a high-risk promotion), one
requested by the operator ``olga``, decided by the approver ``abby``, and one by ``abby``
herself (the admin decides it; first, ``abby`` is refused it: self-approval), and olga has
pending runs that nothing executes (the server does not recover at start-up): one per
principal who may cancel, and one kept pending so that the model stays busy for ``reject``
requests. Schedules, crons, webhooks and threads are made through the API,
by ``olga``. "another principal" is ``otto``, a second operator.

Cells run in the table's order, but the routes that execute or resume runs (``LATE``) run
last: their runs take the model's lease, and a resumed approval changes what a rollback meets.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import yaml

from driftpilot.core.settings import Settings
from driftpilot.runs.plane import ControlPlane
from tests.conftest import TrainedHomes, copy_trained_home, db_env
from tests.integration.test_api_http import LIMITS, Server
from tests.integration.test_control_graph import FORCE_RETRAIN, HIGH_RISK, merge
from tools.datasets import FLIGHTS_CACHE

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "### Authorization matrix"
COLUMNS = ("no key", "viewer", "operator", "approver", "admin", "another principal")
# The principal of each column: its key's name and role (None: no key at all).
PRINCIPALS: dict[str, tuple[str, str] | None] = {
    "no key": None,
    "viewer": ("vic", "viewer"),
    "operator": ("olga", "operator"),
    "approver": ("abby", "approver"),
    "admin": ("ada", "admin"),
    "another principal": ("otto", "operator"),
}
# Mounts of the app that are not routes of the matrix: Swagger UI's and ReDoc's bundled
# files (fastapi-offline), public static assets with no key checked, like /docs itself.
STATIC_MOUNTS = {"/static-offline-docs"}
# The only column where a cell may be "not applicable" (module docstring).
OWNERLESS = "another principal"
# Routes that execute or resume runs: after every other cell (module docstring).
LATE = (
    ("POST", "/runs"),
    ("POST", "/runs/upload"),
    ("POST", "/threads/{thread_id}/runs"),
    ("POST", "/approvals/{run_id}"),
)
# Who may cancel, start a run on a placeholder thread, delete a schedule, cron or webhook:
# each of them acts on an object of its own (the first one to succeed would change it).
ACTORS = ("operator", "approver", "admin", "another principal")
SMALL = {"dataset": "flights:2013-01", "max_rows": 300}
NEVER = "0 0 1 1 *"  # a cron that does not fire while the test runs
SOURCE = {"dataset": "flights", "start": "2013-02"}
SCHEDULE = {"schedule": NEVER, "payload": {"model": "flights", "source": SOURCE}}
CRON = {"assistant_id": "flights", "schedule": NEVER, "input": {"source": SOURCE}}
Route = tuple[str, str]


@dataclass(frozen=True)
class Cell:
    """One cell of the README's table: what ``column`` gets from ``method path``."""

    method: str
    path: str
    column: str
    status: int

    @property
    def id(self) -> str:
        return f"{self.method} {self.path} [{self.column}]"


def matrix(text: str) -> dict[Route, dict[str, str]]:
    """The README's authorization table: each row's cells by column name.

    Raises:
        AssertionError: no such section, a header that is not ``COLUMNS``, or a row twice.
    """
    assert HEADING in text, f"README.md has no {HEADING!r} section"
    section = text.split(HEADING, 1)[1].split("\n#", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["Method", "Path", *COLUMNS], header
    rows: dict[Route, dict[str, str]] = {}
    for line in lines[2:]:
        method, path, *cells = [c.strip() for c in line.strip("|").split("|")]
        assert (method, path) not in rows, f"{method} {path}: two rows"
        assert len(cells) == len(COLUMNS), f"{method} {path}: {len(cells)} cells"
        rows[(method, path)] = dict(zip(COLUMNS, cells, strict=True))
    return rows


def status_of(cell: str, column: str) -> int | None:
    """The status a cell documents (``404*`` is 404), None for ``—`` (not applicable).

    Raises:
        AssertionError: not a status, or ``—`` outside the ``OWNERLESS`` column.
    """
    if cell in ("—", "-"):
        assert column == OWNERLESS, f"'—' in the {column!r} column: every role gets an answer"
        return None
    found = re.fullmatch(r"([1-5]\d\d)\*?", cell)
    assert found, f"not a status: {cell!r}"
    return int(found.group(1))


def cells(text: str | None = None) -> list[Cell]:
    """Every applicable cell of ``text``'s table (default: the README's), the ``LATE``
    routes' last.

    Raises:
        AssertionError: the table is malformed (``matrix``, ``status_of``).
    """
    found = [
        Cell(method, path, column, status)
        for (method, path), row in matrix(README.read_text() if text is None else text).items()
        for column, cell in row.items()
        if (status := status_of(cell, column)) is not None
    ]
    return sorted(found, key=_phase)


def _phase(cell: Cell) -> int:
    """0 for most cells; a ``LATE`` route's cells after them, in ``LATE``'s order."""
    route = (cell.method, cell.path)
    return LATE.index(route) + 1 if route in LATE else 0


@dataclass
class World:
    """The running server and the objects the cells act on (ids by name)."""

    server: Server
    ids: dict[str, Any] = field(default_factory=dict)
    upload: bytes = b""
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, column: str) -> httpx.Client:
        """The column's client, kept open (one connection per principal, not per cell)."""
        if column not in self.clients:
            who = PRINCIPALS[column]
            self.clients[column] = self.server.client(None if who is None else who[0])
        return self.clients[column]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        # -9: the runs the LATE cells started need not finish (a stop waits for them); the
        # home is the test's own.
        self.server.kill()


def _waiting_runs(cp: ControlPlane, months: dict[str, pl.DataFrame]) -> list[str]:
    """Two runs waiting for approval, olga's then abby's: July and October drifted, so the
    forced retrain's challenger wins, and every promotion is high-risk. The samples are ones
    that do (a smaller October sample's challenger loses: the run ends without asking)."""
    made = []
    for month, seed, who in (("2013-07", 2, "olga"), ("2013-10", 4, "abby")):
        frame = months[month].sample(n=2000, seed=seed).sort("time_hour")
        view = cp.start_run("flights", frame, month, trigger="api", requested_by=who)
        assert view.status == "waiting_approval", (view.status, view.outcome, view.summary)
        made.append(view.run_id)
    return made


def _pending_runs(cp: ControlPlane, frame: pl.DataFrame, names: list[str]) -> dict[str, str]:
    """One of olga's pending runs per name, which nothing executes."""
    return {
        name: cp.submit_run(
            "flights", frame, f"pending-{i}", requested_by="olga", multitask_strategy="enqueue"
        ).run_id
        for i, name in enumerate(names)
    }


def _prepare_home(
    root: Path, trained_homes: TrainedHomes, months: dict[str, pl.DataFrame], server: Server
) -> dict[str, Any]:
    """The trained home with keys, waiting and pending runs; the ids the cells use."""
    home = copy_trained_home(trained_homes, "flights", root / "home")
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump(merge(FORCE_RETRAIN, HIGH_RISK)))
    settings = Settings(home=home, policy_path=policy).ensure_dirs()
    cp = ControlPlane(settings)
    try:
        for who in PRINCIPALS.values():
            if who is not None:
                server.keys[who[0]] = cp.create_api_key(*who)[1]
        waiting = _waiting_runs(cp, months)
        pending = _pending_runs(cp, months["2013-02"].head(300), [*ACTORS, "keep"])
    finally:
        cp.close()
    return {"waiting": waiting, "pending": pending}


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
    trained_homes: TrainedHomes,
    months: dict[str, pl.DataFrame],
    flights_df: pl.DataFrame,
) -> Iterator[World]:
    root = tmp_path_factory.mktemp("authz")
    server = Server(home=root / "home", env={})
    ids = _prepare_home(root, trained_homes, months, server)
    settings = Settings(home=server.home)
    assert settings.cache_dir is not None
    flights_df.write_parquet(settings.cache_dir / FLIGHTS_CACHE)  # no re-parse in the server
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
    server.env = {
        **env,
        "DRIFTPILOT_HOME": str(server.home),
        "DRIFTPILOT_API_RECOVER_ON_START": "false",  # the pending runs stay pending
        "DRIFTPILOT_ALERTS_ALLOW_HOSTS": "127.0.0.1:9",  # the webhooks' loopback receiver
        **LIMITS,
        **db_env(),
    }
    server.start()
    upload = io.BytesIO()
    months["2013-01"].head(300).write_csv(upload)
    made = World(server, ids, upload.getvalue())
    try:
        _make_objects(made)
        yield made
    finally:
        made.close()


def _ok(response: httpx.Response) -> Any:
    assert response.is_success, response.text
    return response.json()


def _make_objects(world: World) -> None:
    """Olga's threads, schedules, crons and webhooks, made through the API."""
    ids = world.ids
    olga = world.client("operator")
    ids["thread"] = {a: _ok(olga.post("/threads", json={}))["thread_id"] for a in ACTORS}
    ids["schedule"] = _ok(olga.post("/schedules", json=SCHEDULE))["cron_id"]
    ids["fire"] = _ok(olga.post("/schedules", json=SCHEDULE))["cron_id"]
    ids["schedule_del"] = {
        a: _ok(olga.post("/schedules", json=SCHEDULE))["cron_id"] for a in ACTORS
    }
    ids["cron_del"] = {a: _ok(olga.post("/runs/crons", json=CRON))["cron_id"] for a in ACTORS}
    ids["hook_rotate"] = _ok(olga.post("/models/flights/webhooks", json=_hook("rotate")))[
        "webhook_id"
    ]
    ids["hook_del"] = {
        a: _ok(olga.post("/models/flights/webhooks", json=_hook(a)))["webhook_id"] for a in ACTORS
    }


def _hook(tag: str) -> dict[str, Any]:
    """A webhook to a loopback port nothing listens on (a delivery fails, nothing leaves)."""
    return {"url": f"http://127.0.0.1:9/{tag.replace(' ', '-')}", "events": ["rollback"]}


def _per_actor(world: World, key: str, column: str) -> str:
    """The object of ``key`` that ``column`` acts on; a refused column names any one."""
    objects: dict[str, str] = world.ids[key]
    return objects.get(column, objects[ACTORS[0]])


def _upload_run(world: World, column: str) -> dict[str, Any]:
    return {
        "files": {"file": ("authz.csv", world.upload, "text/csv")},
        "data": {"model": "flights", "multitask_strategy": "enqueue"},
    }


def _upload_model(world: World, column: str) -> dict[str, Any]:
    return {
        "files": {"file": ("authz.csv", world.upload, "text/csv")},
        "data": {
            "name": "flights",
            "target": "delayed",
            "time_col": "time_hour",
            "numeric": "distance",
        },
    }


def _labels(world: World, column: str) -> dict[str, Any]:
    return {"files": {"file": ("labels.csv", b"delayed\n1\n0\n", "text/csv")}}


def _empty_upload(world: World, column: str) -> dict[str, Any]:
    return {"files": {"file": ("rows.csv", b"row_id,time_hour\n", "text/csv")}}


def _decision(world: World, column: str) -> dict[str, Any]:
    return {"json": {"command": {"resume": {"decision": "reject", "comment": "authz matrix"}}}}


RUN = {"model": "flights", "input": {"batch": SMALL}, "multitask_strategy": "enqueue"}
LG_RUN = {"assistant_id": "flights", "input": {"batch": SMALL}}
# A minimal valid body per route (a function of the world and the column when it must be).
BODIES: dict[Route, dict[str, Any] | Callable[[World, str], dict[str, Any]]] = {
    ("POST", "/runs"): {"json": RUN},
    ("POST", "/runs/upload"): _upload_run,
    ("POST", "/runs/{run_id}/cancel"): {"json": {"reason": "authz matrix"}},
    ("POST", "/approvals/{run_id}"): _decision,
    ("POST", "/models"): {"json": {"name": "flights", "input": {"batch": SMALL}}},
    ("POST", "/models/upload"): _upload_model,
    ("POST", "/models/adopt"): {
        "json": {
            "name": "flights",
            "model_uri": "models:/flights/1",
            "input": {"batch": SMALL},
            "target": "delayed",
        }
    },
    ("POST", "/models/{name}/rollback"): {"json": {"reason": "authz matrix"}},
    ("POST", "/models/{name}/batches/{batch_id}/labels"): _labels,
    ("POST", "/models/{name}/notes"): {"json": {"text": "authz matrix"}},
    ("POST", "/models/{name}/inferences"): {"json": []},
    ("POST", "/models/{name}/inferences/upload"): _empty_upload,
    ("POST", "/models/{name}/inferences/labels"): {"json": []},
    ("PUT", "/models/{name}/window"): {"json": {"rows": 1000}},
    ("POST", "/models/{name}/webhooks"): lambda w, c: {"json": _hook(f"new-{c}")},
    ("POST", "/schedules"): {"json": SCHEDULE},
    ("PATCH", "/schedules/{cron_id}"): {"json": {"metadata": {"touched": True}}},
    ("POST", "/assistants/search"): {"json": {}},
    ("POST", "/threads"): {"json": {}},
    ("POST", "/threads/search"): {"json": {}},
    ("PATCH", "/threads/{thread_id}"): {"json": {"metadata": {"a": 1}}},
    ("POST", "/threads/{thread_id}/state"): {"json": {"values": {}}},
    ("POST", "/threads/{thread_id}/runs"): {"json": {**LG_RUN, "multitask_strategy": "enqueue"}},
    ("POST", "/threads/{thread_id}/runs/stream"): {"json": LG_RUN},
    ("POST", "/threads/{thread_id}/runs/wait"): {"json": LG_RUN},
    ("POST", "/runs/stream"): {"json": LG_RUN},
    ("POST", "/runs/wait"): {"json": LG_RUN},
    ("POST", "/runs/crons"): {"json": CRON},
    ("POST", "/runs/crons/search"): {"json": {}},
    ("GET", "/models/{name}/champion-at"): {"params": {"time": "2026-01-01T00:00:00Z"}},
}


def path_values(world: World, cell: Cell) -> dict[str, str]:
    """Real values of the cell's path parameters (module docstring)."""
    ids = world.ids
    read = ids["waiting"][0]  # olga's run waiting for approval: a thread too
    values = {
        "run_id": read,
        "thread_id": read,
        "name": "flights",
        "assistant_id": "flights",
        "cron_id": ids["schedule"],
        "job_id": "never-ran",
        "batch_id": "never-accepted",
    }
    route = (cell.method, cell.path)
    if route == ("POST", "/runs/{run_id}/cancel"):
        values["run_id"] = ids["pending"].get(cell.column, ids["pending"]["keep"])
    elif route == ("GET", "/runs/{run_id}/report"):
        values["run_id"] = ids["pending"]["keep"]
    elif route == ("POST", "/approvals/{run_id}"):
        values["run_id"] = ids["waiting"][1] if cell.column == "admin" else read
    elif route == ("POST", "/threads/{thread_id}/runs"):
        values["thread_id"] = _per_actor(world, "thread", cell.column)
    elif route == ("POST", "/schedules/{cron_id}/run"):
        values["cron_id"] = ids["fire"]
    elif route == ("DELETE", "/schedules/{cron_id}"):
        values["cron_id"] = _per_actor(world, "schedule_del", cell.column)
    elif route == ("DELETE", "/runs/crons/{cron_id}"):
        values["cron_id"] = _per_actor(world, "cron_del", cell.column)
    elif route == ("DELETE", "/models/{name}/webhooks/{webhook_id}"):
        values["webhook_id"] = _per_actor(world, "hook_del", cell.column)
    elif route == ("POST", "/models/{name}/webhooks/{webhook_id}/secret"):
        values["webhook_id"] = ids["hook_rotate"]
    return values


def send(world: World, cell: Cell) -> httpx.Response:
    """The cell's request, as its column's principal."""
    url = cell.path.format(**path_values(world, cell))
    body = BODIES.get((cell.method, cell.path), {})
    kwargs = body(world, cell.column) if callable(body) else body
    return world.client(cell.column).request(cell.method, url, **kwargs)


CELLS = cells()


def app_routes(app: Any) -> tuple[set[Route], set[Route]]:
    """Every (method, path) ``app`` serves, and those of them in its OpenAPI document.

    HEAD is left out where GET is there (Starlette answers HEAD with the GET route).

    Raises:
        AssertionError: a mount other than ``STATIC_MOUNTS``, or a kind of route (a
            websocket) the matrix has no column for.
    """
    from fastapi.routing import APIRoute, iter_route_contexts
    from starlette.routing import Mount
    from starlette.routing import Route as StarletteRoute

    served: set[Route] = set()
    documented: set[Route] = set()
    # An included router is one entry of app.routes (FastAPI 0.165): its routes, with their
    # prefix, come from iter_route_contexts, which the OpenAPI document is made from too.
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, Mount):
            assert context.path in STATIC_MOUNTS, f"a mount the matrix cannot see: {context.path}"
            continue
        assert isinstance(route, APIRoute | StarletteRoute), f"not an HTTP route: {route!r}"
        methods = set(context.methods or ())
        if "GET" in methods:
            methods.discard("HEAD")
        found = {(method, str(context.path)) for method in methods}
        served |= found
        if context.include_in_schema:
            documented |= found
    return served, documented


def test_routes_are_listed_from_the_app_hidden_ones_included() -> None:
    """A route left out of the OpenAPI document (``include_in_schema=False``) is one of the
    app's routes all the same, so it needs a row."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/hidden", include_in_schema=False)
    def hidden() -> dict[str, str]:
        return {}

    @app.post("/shown")
    def shown() -> dict[str, str]:
        return {}

    served, documented = app_routes(app)
    assert ("GET", "/hidden") in served and ("GET", "/hidden") not in documented
    assert ("POST", "/shown") in documented and ("GET", "/docs") in served
    app.mount("/elsewhere", FastAPI())
    with pytest.raises(AssertionError, match="a mount the matrix cannot see: /elsewhere"):
        app_routes(app)


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ("| GET | /x | — | — | — | — | — | — |", "no key"),
        ("| GET | /x | 401 | 200 | — | 200 | 200 | — |", "operator"),
        ("| GET | /x | 401 | 200 | 200 | 200 | - | — |", "admin"),
    ],
)
def test_a_dash_is_a_cell_of_the_another_principal_column_only(row: str, column: str) -> None:
    """An all-``—`` row, or ``—`` where a role gets an answer, is not a vacuous pass."""
    header = "| Method | Path | " + " | ".join(COLUMNS) + " |\n|" + "---|" * 8 + "\n"
    ok = "| GET | /y | 401 | 200 | 200 | 200 | 200 | — |\n"
    assert len(cells(f"{HEADING}\n\n{header}{ok}")) == 5
    with pytest.raises(AssertionError, match=f"'—' in the '{column}' column"):
        cells(f"{HEADING}\n\n{header}{ok}{row}\n")


def test_an_approver_cannot_decide_a_run_they_requested(world: World) -> None:
    """abby, an approver, is refused the approval of her own waiting run (403
    ``self-approval``), whatever her decision, and the run still waits. (Every approval cell
    of the table decides someone else's run; its "another principal" is an operator, refused
    by role.) Before ``test_cell``: the admin's LATE cell decides this run."""
    run_id = world.ids["waiting"][1]
    run = _ok(world.client("viewer").get(f"/runs/{run_id}"))
    assert (run["requested_by"], run["status"]) == ("abby", "interrupted"), run
    for decision in ("approve", "reject"):
        resume = {"decision": decision, "comment": "my own run"}
        refused = world.client("approver").post(
            f"/approvals/{run_id}", json={"command": {"resume": resume}}
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["type"].endswith("self-approval"), refused.json()
    assert _ok(world.client("viewer").get(f"/runs/{run_id}"))["status"] == "interrupted"


def test_every_served_route_has_a_row_and_every_row_a_route(
    world: World, settings: Settings
) -> None:
    from api.app import create_app
    from driftpilot.core.settings import ApiSettings

    cp = ControlPlane(settings)
    try:
        served, documented = app_routes(create_app(cp, ApiSettings(recover_on_start=False)))
    finally:
        cp.close()
    # The app built here is the one the server serves: the same documented routes.
    document = _ok(world.client("viewer").get("/openapi.json"))
    published = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    assert published == documented, sorted(published ^ documented)
    rows = set(matrix(README.read_text()))
    assert not served - rows, f"routes without a row in README.md: {sorted(served - rows)}"
    assert not rows - served, f"README.md rows of no route: {sorted(rows - served)}"


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_cell(world: World, cell: Cell) -> None:
    response = send(world, cell)
    assert response.status_code == cell.status, (cell.id, response.text[:500])
    if cell.status in (401, 403):
        assert response.headers["content-type"].startswith("application/problem+json")


def test_an_unknown_key_is_a_401(world: World) -> None:
    with world.server.client(**{"X-Api-Key": "dp_unknown_secret"}) as client:
        assert client.get("/runs").status_code == 401


# The LangGraph routes that start or resume a run check the role in the handler, after the
# body is validated (the body says which role: input, operator; command.resume, approver).


def refusals() -> list[Any]:
    """Cells of routes taking a body whose documented answer is a refusal (401, 403)."""
    found = []
    for cell in CELLS:
        if cell.method not in ("POST", "PATCH") or cell.status not in (401, 403):
            continue
        found.append(pytest.param(cell, id=cell.id))
    return found


@pytest.mark.parametrize("cell", refusals())
def test_a_refusal_comes_before_the_body_is_validated(world: World, cell: Cell) -> None:
    """An invalid body (a JSON list where an object or a form is expected) sent by someone
    who may not call the route gets the cell's 401 or 403, never a 422."""
    url = cell.path.format(**path_values(world, cell))
    response = world.client(cell.column).request(cell.method, url, json=[1])
    assert response.status_code == cell.status, (cell.id, response.text[:300])


@pytest.mark.parametrize(
    ("column", "status"), [("no key", 401), ("viewer", 403), ("operator", 422)]
)
def test_a_body_that_is_not_json_is_refused_by_key_first(
    world: World, column: str, status: int
) -> None:
    """FastAPI decodes a JSON body before any dependency: the 422 handler asks for the key
    first, so only a caller who may use the route learns how it parses."""
    response = world.client(column).post(
        "/runs", content=b"{", headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text


def test_the_refused_cancel_left_the_other_operators_run_pending(world: World) -> None:
    """Otto's cancel of olga's run was refused, naming why, and changed nothing."""
    run_id = world.ids["pending"]["another principal"]
    refused = world.client("another principal").post(f"/runs/{run_id}/cancel")
    assert refused.status_code == 403 and refused.json()["type"].endswith("not-your-run")
    assert world.client("viewer").get(f"/runs/{run_id}").json()["status"] == "pending"
