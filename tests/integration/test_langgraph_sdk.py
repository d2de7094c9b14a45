"""The official LangGraph SDK (``langgraph_sdk``'s sync client) drives DriftPilot over real
loopback HTTP: ``driftpilot serve`` in a subprocess over a temporary home with the flights
model (the server fixture of ``test_api_http``: real data, MLflow and SQLite; the policy
forces a retrain and rates every promotion high-risk, so a run that beats the champion
waits for a person).

Tests run in file order on one server: a run started and streamed through a thread pauses,
is listed as an interrupted thread, is refused to its requester and to an operator, and is
rejected through ``runs.stream(command={"resume": {"decision": "reject", ...}})``; a second
run (the ``control`` assistant, a file batch) is approved with an Agent Inbox ``accept``
through ``runs.create`` and ``runs.join``; crons map onto schedules. Assistants draw the
control graph and give its JSON schemas; a run reads back with its ``multitask_strategy``;
thread updates are refused with a 422 problem. Answers are checked against the REST API where
the two overlap."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_sync_client
from langgraph_sdk._sync.client import SyncLangGraphClient
from langgraph_sdk.errors import (
    APIStatusError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    UnprocessableEntityError,
)

from graphs.state import SLICES
from tests.integration import test_api_http as http_tests

pytestmark = pytest.mark.integration

server = http_tests.server  # one `driftpilot serve` with the flights model, for this module
Server = http_tests.Server
PROBLEM = "application/problem+json"
JULY = {"dataset": "flights:2013-07", "max_rows": 2000}


@pytest.fixture(scope="module")
def sdk(server: Server) -> Iterator[dict[str, SyncLangGraphClient]]:
    """One SDK client per key of the server (and ``None``: no key at all)."""
    clients = {
        who: get_sync_client(url=server.url, api_key=key) for who, key in server.keys.items()
    }
    clients["anonymous"] = get_sync_client(url=server.url, api_key=None)
    yield clients
    for client in clients.values():
        client.close()


def problem(error: APIStatusError, status: int, *detail: str) -> dict[str, Any]:
    """The SDK's error carries our problem+json body, with this status and detail."""
    assert error.status_code == status, error.body
    assert error.response.headers["content-type"].startswith(PROBLEM)
    body = error.body
    assert isinstance(body, dict) and body["status"] == status, body
    assert str(body["type"]).startswith("urn:driftpilot:problem:"), body
    for part in detail:
        assert part in body["detail"], body
    return body


def rest(server: Server, who: str, method: str, path: str, **kw: Any) -> httpx.Response:
    with server.client(who) as client:
        return client.request(method, path, **kw)


def no_interrupt(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k != "__interrupt__"}


# -- assistants ---------------------------------------------------------------------------------


def test_assistants_are_the_managed_models_and_the_control_graph(
    sdk: dict[str, SyncLangGraphClient],
) -> None:
    vic = sdk["vic"]  # a viewer may read
    found = vic.assistants.search()
    assert sorted(a["assistant_id"] for a in found) == ["control", "flights"]
    assert {a["graph_id"] for a in found} == {"control"}
    flights = vic.assistants.get("flights")
    assert flights["name"] == "flights" and flights["version"] == 1
    assert flights["metadata"]["champion"] == 1 and flights["metadata"]["target"]
    assert flights["config"] == {"configurable": {"model": "flights"}}
    assert flights in found
    assert vic.assistants.get("control")["graph_id"] == "control"
    assert [a["assistant_id"] for a in vic.assistants.search(name="FLIG")] == ["flights"]
    assert vic.assistants.search(graph_id="agent") == []
    assert [
        a["assistant_id"]
        for a in vic.assistants.search(metadata={"family": flights["metadata"]["family"]})
    ] == ["flights"]
    assert len(vic.assistants.search(limit=1)) == 1
    paged = vic.assistants.search(limit=1, response_format="object")
    assert paged["next"] == "1" and len(paged["assistants"]) == 1  # type: ignore[index]

    with pytest.raises(NotFoundError) as missing:
        vic.assistants.get("nope")
    problem(missing.value, 404, "nope")
    with pytest.raises(AuthenticationError) as anonymous:
        sdk["anonymous"].assistants.search()
    problem(anonymous.value, 401, "no API key")


CONTROL_NODES = {
    "__start__",
    "ingestion",
    "escalation",
    "drift_analyst",
    "optimizer",
    "retraining",
    "recalibrate",
    "evaluator",
    "cicd",
    "approval",
    "promote",
    "report",
    "__end__",
}


def test_assistants_draw_the_control_graph_and_give_its_schemas(
    server: Server, sdk: dict[str, SyncLangGraphClient]
) -> None:
    vic = sdk["vic"]
    drawn = vic.assistants.get_graph("flights")
    assert {n["id"] for n in drawn["nodes"]} == CONTROL_NODES
    agents = [n for n in drawn["nodes"] if n["id"] not in ("__start__", "__end__")]
    assert all(n["data"] == {"name": n["id"]} for n in agents), agents  # no import paths
    edges = {(e["source"], e["target"]): e.get("conditional", False) for e in drawn["edges"]}
    assert edges[("__start__", "ingestion")] is False
    assert edges[("optimizer", "retraining")] is False  # always: no router between them
    # The routers' Literal types are the conditional edges: the paths of DESIGN.md.
    for routed in [
        ("ingestion", "drift_analyst"),
        ("ingestion", "report"),
        ("drift_analyst", "optimizer"),
        ("evaluator", "cicd"),
        ("cicd", "promote"),
        ("cicd", "approval"),
        ("approval", "promote"),
        ("approval", "report"),
    ]:
        assert edges[routed] is True, routed
    assert ("drift_analyst", "cicd") not in edges and ("report", "__end__") in edges
    assert vic.assistants.get_graph("control", xray=True) == drawn  # one graph, no subgraphs
    assert vic.assistants.get_graph("flights", xray=2) == drawn
    assert vic.assistants.get_subgraphs("control") == {}
    bad = rest(server, "vic", "GET", "/assistants/flights/graph", params={"xray": "0"})
    assert bad.status_code == 422 and "xray" in bad.json()["detail"], bad.text

    found: Any = vic.assistants.get_schemas("flights")  # JSON, checked below
    assert found == vic.assistants.get_schemas("control")
    assert found["graph_id"] == "control"
    props = {
        name: set(found[name]["properties"])
        for name in (
            "input_schema",
            "output_schema",
            "state_schema",
            "config_schema",
            "context_schema",
        )
    }
    assert props["input_schema"] == {"model", "batch"}
    assert {"run_id", "status", "outcome", "steps", *SLICES} <= props["output_schema"]
    assert {"run_id", "model", "batch", "outcome", *SLICES} <= props["state_schema"]
    assert props["config_schema"] == {"configurable"} and props["context_schema"] == {"model"}
    batch = found["input_schema"]["properties"]["batch"]
    assert {"$ref"} <= {k for option in batch["anyOf"] for k in option}, batch

    for call in (vic.assistants.get_graph, vic.assistants.get_schemas):
        with pytest.raises(NotFoundError) as missing:
            call("nope")
        problem(missing.value, 404, "nope")


# -- a thread: create, stream a run, interrupt, refusals, reject ---------------------------------


def test_a_thread_streams_its_run_to_the_interrupt_and_an_approver_rejects_it(
    server: Server, sdk: dict[str, SyncLangGraphClient]
) -> None:
    olga, abby = sdk["olga"], sdk["abby"]
    thread = olga.threads.create(metadata={"ticket": "T-1"})
    thread_id = thread["thread_id"]
    assert str(uuid.UUID(thread_id)) == thread_id
    assert (thread["status"], thread["values"]) == ("idle", {})
    assert olga.threads.get(thread_id)["metadata"]["ticket"] == "T-1"
    empty = olga.threads.get_state(thread_id)
    assert (empty["values"], empty["next"], empty["tasks"]) == ({}, [], [])
    assert olga.runs.list(thread_id) == []

    parts = list(
        olga.runs.stream(
            thread_id,
            "flights",
            input={"batch": JULY},
            stream_mode=["values", "updates"],
            metadata={"via": "sdk"},
        )
    )
    names = [p.event for p in parts]
    assert names[0] == "metadata" and names[-1] == "end", names
    run_id = parts[0].data["run_id"]
    assert parts[0].data["thread_id"] == thread_id
    updates = [p.data for p in parts if p.event == "updates"]
    agents = [next(iter(u)) for u in updates]
    assert agents[:2] == ["ingestion", "drift_analyst"] and "evaluator" in agents, agents
    assert all(
        u[a]["rationale"] and u[a]["action"]
        for u, a in zip(updates, agents, strict=True)
        if a not in ("approval", "champion", "__interrupt__")
    )
    assert [u["approval"]["kind"] for u in updates if "approval" in u] == ["request"], agents
    assert next(u["cicd"] for u in updates if "cicd" in u)["action"] == "risk:high"
    assert agents[-1] == "__interrupt__"
    snapshots = [p.data for p in parts if p.event == "values"]
    steps_seen = [len(v["steps"]) for v in snapshots]
    assert steps_seen == sorted(steps_seen) and steps_seen[0] == 1, steps_seen
    last = snapshots[-1]
    interrupt = last["__interrupt__"][0]
    assert interrupt["value"]["action_request"]["action"] == "promote"
    assert interrupt["value"]["config"]["allow_accept"] is True
    assert updates[-1]["__interrupt__"] == last["__interrupt__"]
    assert (last["run_id"], last["model"], last["status"]) == (run_id, "flights", "interrupted")
    assert last["requested_by"] == "olga" and last["cicd"]["tier"] != "low"
    assert parts[-1].data == {"run_id": run_id, "status": "interrupted"}

    # The thread shows the waiting run, under the thread's own id.
    waiting = olga.threads.get(thread_id)
    assert waiting["status"] == "interrupted"
    assert waiting["metadata"] | {"ticket": "T-1", "run_id": run_id} == waiting["metadata"]
    assert list(waiting["interrupts"].values()) == [[interrupt]]
    assert waiting["values"] == no_interrupt(last)
    state = olga.threads.get_state(thread_id)
    assert state["next"] == ["approval"] and state["interrupts"] == [interrupt]
    assert state["tasks"][0]["name"] == "approval" and state["tasks"][0]["interrupts"] == [
        interrupt
    ]
    assert state["values"] == no_interrupt(last)
    assert olga.runs.join(thread_id, run_id) == last  # it waits for a person: join returns
    listed = olga.runs.list(thread_id)
    assert [(r["run_id"], r["status"], r["metadata"]) for r in listed] == [
        (run_id, "interrupted", {"via": "sdk"})
    ]
    got = olga.runs.get(thread_id, run_id)
    assert (got["assistant_id"], got["multitask_strategy"]) == ("flights", "reject")

    # Interrupted threads are the pending approvals (the REST API agrees).
    interrupted = sdk["vic"].threads.search(status="interrupted")
    assert [t["thread_id"] for t in interrupted] == [thread_id]
    approvals = rest(server, "vic", "GET", "/approvals").json()
    assert [a["run_id"] for a in approvals] == [run_id]
    assert approvals[0]["interrupt"] == interrupt["value"]
    by_rest = rest(server, "vic", "GET", f"/runs/{run_id}").json()
    assert (by_rest["status"], by_rest["multitask_strategy"]) == ("interrupted", "reject")
    # The run's own id names the same run as a thread.
    assert olga.threads.get(run_id)["values"] == waiting["values"]

    # A thread is one control run: no second batch on it.
    with pytest.raises(ConflictError) as again:
        olga.runs.create(thread_id, "flights", input={"batch": JULY})
    problem(again.value, 409, "already holds control run")
    # Refused: an operator cannot decide, nor can the requester with an approver key.
    accept = [{"type": "accept", "args": None}]
    with pytest.raises(PermissionDeniedError) as operator:
        olga.runs.create(thread_id, "flights", command={"resume": accept})
    problem(operator.value, 403, "'olga' has the operator role", "approver")
    with pytest.raises(PermissionDeniedError) as requester:
        sdk[" OLGA "].runs.create(thread_id, "flights", command={"resume": accept})
    problem(requester.value, 403, "requested run")
    with pytest.raises(UnprocessableEntityError) as edit:
        abby.runs.create(thread_id, "flights", command={"resume": {"type": "edit", "args": {}}})
    problem(edit.value, 422, "edit")
    assert olga.threads.get(thread_id)["status"] == "interrupted"  # nothing was decided

    # The approver rejects with a plain decision, streamed: the decision, the rest, the end.
    parts = list(
        abby.runs.stream(
            thread_id,
            "flights",
            command={"resume": {"decision": "reject", "comment": "not in July"}},
            stream_mode="updates",
        )
    )
    names = [p.event for p in parts]
    assert names[0] == "metadata" and names[-1] == "end" and "values" not in names, names
    assert parts[0].data["run_id"] == run_id
    updates = [p.data for p in parts if p.event == "updates"]
    assert updates[0] == {
        "approval": {
            "kind": "decision",
            "principal": "abby",
            "decision": "reject",
            "comment": "not in July",
            "created_at": updates[0]["approval"]["created_at"],
        }
    }
    assert "ingestion" not in [next(iter(u)) for u in updates]  # only what followed the resume
    assert parts[-1].data == {"run_id": run_id, "status": "success"}
    done = olga.runs.join(thread_id, run_id)
    assert (done["status"], done["outcome"]) == ("success", "approval_rejected"), done
    assert done["approval"] == {"decision": "reject", "approver": "abby", "comment": "not in July"}
    assert "__interrupt__" not in done and done.get("promotion") is None
    finished = olga.threads.get(thread_id)
    assert (finished["status"], finished["interrupts"]) == ("idle", {})
    assert finished["values"] == done == olga.threads.get_state(thread_id)["values"]
    assert olga.runs.get(thread_id, run_id)["status"] == "success"
    assert sdk["vic"].threads.search(status="interrupted") == []
    assert [t["thread_id"] for t in sdk["vic"].threads.search(metadata={"ticket": "T-1"})] == [
        thread_id
    ]
    by_rest = rest(server, "vic", "GET", f"/runs/{run_id}").json()
    assert (by_rest["status"], by_rest["outcome"]) == ("success", "approval_rejected")
    assert sdk["vic"].assistants.get("flights")["metadata"]["champion"] == 1
    with pytest.raises(ConflictError) as twice:
        abby.runs.create(thread_id, "flights", command={"resume": accept})
    problem(twice.value, 409, "not waiting for approval")


# -- the control assistant, a file batch, an approval ------------------------------------------


def test_the_control_assistant_runs_a_file_batch_and_an_agent_inbox_accept_promotes(
    server: Server, sdk: dict[str, SyncLangGraphClient], months: Any
) -> None:
    olga, abby = sdk["olga"], sdk["abby"]
    inbox = server.home / "inbox"
    inbox.mkdir(exist_ok=True)
    months["2013-07"].sample(n=2000, seed=7).sort("time_hour").write_parquet(inbox / "jul.parquet")
    thread_id = olga.threads.create()["thread_id"]

    # Refused before anything runs: each leaves the thread without a run.
    refusals: list[tuple[dict[str, Any], type[APIStatusError], int, str]] = [
        (
            {"assistant_id": "control", "input": {"batch": {"path": "jul.parquet"}}},
            UnprocessableEntityError,
            422,
            "needs the model",
        ),
        (
            {
                "assistant_id": "flights",
                "input": {"model": "other", "batch": {"path": "jul.parquet"}},
            },
            UnprocessableEntityError,
            422,
            "different models",
        ),
        (
            {
                "assistant_id": "control",
                "input": {"model": "nope", "batch": {"path": "jul.parquet"}},
            },
            NotFoundError,
            404,
            "nope",
        ),
        (
            {
                "assistant_id": "control",
                "input": {"model": "flights", "batch": {"path": "../x.parquet"}},
            },
            UnprocessableEntityError,
            422,
            "batch path",
        ),
        (
            {"assistant_id": "flights", "input": {"batch": {"dataset": "flights:1999-01"}}},
            NotFoundError,
            404,
            "1999-01",
        ),
        (
            {"assistant_id": "flights", "input": {"batch": JULY}, "multitask_strategy": "rollback"},
            UnprocessableEntityError,
            422,
            "rollback",
        ),
        (
            {
                "assistant_id": "flights",
                "input": {"batch": JULY},
                "webhook": "http://127.0.0.1:9/x",
            },
            UnprocessableEntityError,
            422,
            "webhook",
        ),
    ]
    for kwargs, error, status, detail in refusals:
        with pytest.raises(error) as refused:
            olga.runs.create(thread_id, **kwargs)
        problem(refused.value, status, detail)
    with pytest.raises(PermissionDeniedError) as viewer:
        sdk["vic"].runs.create(thread_id, "flights", input={"batch": JULY})
    problem(viewer.value, 403, "viewer role")
    with pytest.raises(NotFoundError) as unknown:
        olga.runs.create(str(uuid.uuid4()), "flights", input={"batch": JULY})
    problem(unknown.value, 404, "no thread")
    assert olga.threads.get(thread_id)["status"] == "idle" and olga.runs.list(thread_id) == []
    assert rest(server, "vic", "GET", "/runs", params={"status": "pending"}).json()["items"] == []

    created = olga.runs.create(
        thread_id, "control", input={"model": "flights", "batch": {"path": "jul.parquet"}}
    )
    run_id = created["run_id"]
    assert (created["thread_id"], created["assistant_id"]) == (thread_id, "control")
    assert created["status"] in ("pending", "running")
    busy = sdk["vic"].threads.search(status="busy")  # training takes seconds: still working
    assert [(t["thread_id"], t["status"]) for t in busy] == [(thread_id, "busy")]
    values = olga.runs.join(thread_id, run_id)
    assert values["batch_id"] == "jul" and values["model"] == "flights"
    # The policy forces a retrain and rates promotions high: the run waits, or its challenger
    # lost (then there is nothing to approve and the thread is idle).
    if values["status"] == "success":
        assert values["outcome"] == "challenger_rejected", values
        pytest.fail(f"the July challenger lost; pick a batch that waits: {values['evaluation']}")
    assert values["status"] == "interrupted" and values["__interrupt__"]

    # The approver accepts (Agent Inbox HumanResponse); join waits for the resumed run.
    accept = [{"type": "accept", "args": None}]
    resumed = abby.runs.create(thread_id, "control", command={"resume": accept})
    assert (resumed["run_id"], resumed["thread_id"]) == (run_id, thread_id)
    assert resumed["status"] in ("pending", "running", "success"), resumed
    done = abby.runs.join(thread_id, run_id)
    assert (done["status"], done["outcome"]) == ("success", "promoted"), done
    assert "__interrupt__" not in done
    assert done["approval"] == {"decision": "approve", "approver": "abby", "comment": ""}
    promoted = done["promotion"]
    assert (promoted["previous"], promoted["approved_by"]) == (1, "abby"), promoted
    assert ("cicd", "promote") in [(s["agent"], s["action"]) for s in done["steps"]]
    finished = olga.threads.get(thread_id)
    assert (finished["status"], finished["values"]) == ("idle", done)
    assert rest(server, "vic", "GET", f"/runs/{run_id}").json()["outcome"] == "promoted"
    champion = sdk["vic"].assistants.get("flights")["metadata"]["champion"]
    # v2 is the first test's challenger: registered when it went to an approver, who
    # rejected it (a challenger the evaluator rejects is never registered).
    assert champion == promoted["version"] == 3


# -- runs.wait, stateless runs, if_not_exists ------------------------------------------------------


def test_wait_on_a_new_thread_a_stateless_run_and_if_not_exists(
    server: Server, sdk: dict[str, SyncLangGraphClient]
) -> None:
    olga = sdk["olga"]
    created: list[Any] = []
    # Batches the model has seen already: ingestion quarantines them (a quick, sure outcome).
    done = olga.runs.wait(
        None, "flights", input={"batch": {"path": "jul.parquet"}}, on_run_created=created.append
    )
    assert (done["status"], done["outcome"]) == ("success", "quarantined"), done
    assert done["ingestion"]["action"] == "quarantine"
    assert created and created[0]["run_id"] == done["run_id"]
    stateless = olga.threads.get(created[0]["thread_id"])
    assert (stateless["status"], stateless["values"]) == ("idle", done)

    named = str(uuid.uuid4())
    # runs.wait raises httpx's own HTTPStatusError (the SDK's typed errors are for the rest).
    with pytest.raises(httpx.HTTPStatusError) as no_thread:
        olga.runs.wait(named, "flights", input={"batch": JULY})
    assert no_thread.value.response.status_code == 404
    assert "no thread" in no_thread.value.response.json()["detail"]
    with pytest.raises(httpx.HTTPStatusError) as bad_batch:  # and a bad batch makes no thread
        olga.runs.wait(
            named,
            "flights",
            input={"batch": {"dataset": "flights:1999-01"}},
            if_not_exists="create",
        )
    assert bad_batch.value.response.status_code == 404
    assert "1999-01" in bad_batch.value.response.json()["detail"]
    with pytest.raises(NotFoundError):
        olga.threads.get(named)
    again = olga.runs.wait(
        named,
        "flights",
        input={"batch": JULY},
        if_not_exists="create",
        multitask_strategy="enqueue",
    )
    assert again["outcome"] == "quarantined" and again["batch_id"] == "2013-07"
    assert olga.threads.get(named)["values"] == again
    # The strategy reads back as it was asked for, here and in the REST API.
    assert olga.runs.get(named, again["run_id"])["multitask_strategy"] == "enqueue"
    assert [r["multitask_strategy"] for r in olga.runs.list(named)] == ["enqueue"]
    by_rest = rest(server, "vic", "GET", f"/runs/{again['run_id']}").json()
    assert by_rest["multitask_strategy"] == "enqueue"
    listed = rest(server, "vic", "GET", "/runs", params={"limit": 200}).json()["items"]
    strategies = {r["run_id"]: r["multitask_strategy"] for r in listed}
    assert strategies[again["run_id"]] == "enqueue"
    assert strategies[created[0]["run_id"]] == "reject"  # the default, recorded as such
    posted = rest(
        server,
        "olga",
        "POST",
        "/runs",
        json={"model": "flights", "input": {"batch": JULY}, "multitask_strategy": "enqueue"},
    ).json()
    assert posted["multitask_strategy"] == "enqueue", posted
    assert olga.runs.join(posted["run_id"], posted["run_id"])["outcome"] == "quarantined"
    read = rest(server, "vic", "GET", f"/runs/{posted['run_id']}").json()
    assert (read["status"], read["multitask_strategy"]) == ("success", "enqueue"), read
    own = olga.runs.get(posted["run_id"], posted["run_id"])  # its own id is its thread
    assert own["multitask_strategy"] == "enqueue"
    parts = list(olga.runs.stream(None, "control", input={"model": "flights", "batch": JULY}))
    assert parts[0].event == "metadata" and parts[-1].event == "end"
    assert parts[-2].event == "values" and parts[-2].data["outcome"] == "quarantined"


# -- threads: ids, search, errors ----------------------------------------------------------------


def test_thread_ids_search_and_problems(sdk: dict[str, SyncLangGraphClient]) -> None:
    olga, vic = sdk["olga"], sdk["vic"]
    mine = str(uuid.uuid4())
    assert olga.threads.create(thread_id=mine, metadata={"k": 1})["thread_id"] == mine
    with pytest.raises(ConflictError) as exists:
        olga.threads.create(thread_id=mine)
    problem(exists.value, 409, "already exists")
    same = olga.threads.create(thread_id=mine, if_exists="do_nothing")
    assert (same["thread_id"], same["metadata"]["k"]) == (mine, 1)
    with pytest.raises(UnprocessableEntityError) as bad_id:
        olga.threads.create(thread_id="not-a-uuid")
    problem(bad_id.value, 422, "UUID")
    with pytest.raises(PermissionDeniedError):
        vic.threads.create()
    with pytest.raises(NotFoundError) as missing:
        vic.threads.get(str(uuid.uuid4()))
    problem(missing.value, 404, "no thread")
    with pytest.raises(NotFoundError):
        vic.threads.get_state("nope")

    # Only the agents write a run's state: updates are refused, as a problem, not a 405.
    with pytest.raises(UnprocessableEntityError) as update_state:
        olga.threads.update_state(mine, {"outcome": "promoted"}, as_node="approval")
    body = problem(update_state.value, 422, "update_state", "command={'resume'")
    assert body["type"] == "urn:driftpilot:problem:unsupported-option"
    with pytest.raises(UnprocessableEntityError) as update:
        olga.threads.update(mine, metadata={"k": 2})
    problem(update.value, 422, "threads.update")
    assert olga.threads.get(mine)["metadata"]["k"] == 1  # nothing changed
    with pytest.raises(NotFoundError):
        olga.threads.update_state(str(uuid.uuid4()), {"outcome": "promoted"})
    with pytest.raises(PermissionDeniedError):
        vic.threads.update_state(mine, {"outcome": "promoted"})

    everything = vic.threads.search(limit=100)
    ids = [t["thread_id"] for t in everything]
    assert mine in ids and len(ids) == len(set(ids))
    created = [t["created_at"] for t in everything]
    assert created == sorted(created, reverse=True)
    idle = vic.threads.search(status="idle", limit=100)
    assert mine in [t["thread_id"] for t in idle]
    assert all(t["status"] == "idle" for t in idle)
    assert [t["thread_id"] for t in vic.threads.search(ids=[mine])] == [mine]
    assert [t["thread_id"] for t in vic.threads.search(metadata={"k": 1})] == [mine]
    promoted = vic.threads.search(values={"outcome": "promoted"}, limit=100)
    assert [t["values"]["outcome"] for t in promoted] == ["promoted"]
    assert len(vic.threads.search(limit=2, offset=1)) == 2


# -- crons ----------------------------------------------------------------------------------------


def test_crons_are_schedules(server: Server, sdk: dict[str, SyncLangGraphClient]) -> None:
    olga, vic = sdk["olga"], sdk["vic"]
    source = {"dataset": "flights", "start": "2013-11", "max_rows": 500}
    made = olga.crons.create(
        "flights",
        schedule="30 6 * * 1-5",
        timezone="Europe/Paris",
        input={"source": source},
        metadata={"by": "sdk"},
        multitask_strategy="enqueue",
    )
    cron_id = made["cron_id"]
    assert (made["assistant_id"], made["schedule"], made["timezone"]) == (
        "flights",
        "30 6 * * 1-5",
        "Europe/Paris",
    )
    assert made["enabled"] is True and made["next_run_date"] and made["user_id"] == "olga"
    assert made["payload"]["input"] == {"model": "flights", "source": {**source, "seed": 0}}
    schedule = rest(server, "vic", "GET", f"/schedules/{cron_id}").json()
    assert schedule["next_run_date"] == made["next_run_date"]
    assert schedule["multitask_strategy"] == "enqueue" and schedule["metadata"] == {"by": "sdk"}
    via_control = olga.crons.create(
        "control", schedule="0 0 1 * *", input={"model": "flights", "source": source}
    )

    found = vic.crons.search(assistant_id="flights")
    assert {c["cron_id"] for c in found} == {cron_id, via_control["cron_id"]}
    assert [c["cron_id"] for c in vic.crons.search(metadata={"by": "sdk"})] == [cron_id]
    assert vic.crons.search(thread_id=str(uuid.uuid4())) == []

    for kwargs, status, detail in [
        ({"schedule": "61 * * * *", "input": {"source": source}}, 422, "invalid cron"),
        (
            {"schedule": "* * * * *", "timezone": "Mars/Olympus", "input": {"source": source}},
            422,
            "time zone",
        ),
        ({"schedule": "* * * * *", "input": {"source": {"glob": "../*.csv"}}}, 422, "glob"),
        (
            {"schedule": "* * * * *", "input": {"source": source}, "webhook": "http://x/y"},
            422,
            "webhook",
        ),
    ]:
        with pytest.raises(APIStatusError) as refused:
            olga.crons.create("flights", **kwargs)
        problem(refused.value, status, detail)
    with pytest.raises(NotFoundError):
        olga.crons.create("nope", schedule="* * * * *", input={"source": source})
    with pytest.raises(PermissionDeniedError):
        vic.crons.create("flights", schedule="* * * * *", input={"source": source})

    olga.crons.delete(cron_id)
    olga.crons.delete(via_control["cron_id"])
    assert vic.crons.search() == []
    assert rest(server, "vic", "GET", f"/schedules/{cron_id}").status_code == 404
    with pytest.raises(NotFoundError):
        olga.crons.delete(cron_id)
