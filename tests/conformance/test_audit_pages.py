"""Audit pages on every backend: each query shape pages by keyset, so walking the pages while
rows are appended returns every row that existed when the walk began and every appended row
that sorts after the cursor, each once, in chain order (table by table, by id)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from driftpilot.store import AuditStore
from driftpilot.store.audit import promotion_action
from driftpilot.store.engine import now
from driftpilot.store.models import CHAINED, Run
from driftpilot.store.queries import _audit_statement, _Shape

TABLES = [m.__tablename__ for m in CHAINED]
AGENTS = ("ingestion", "drift_analyst", "evaluator")
Key = tuple[int, int]  # (table's place in the chain, id): the order pages walk in


def key(row: dict[str, Any]) -> Key:
    return TABLES.index(row["table"]), int(row["id"])


def add_run(store: AuditStore, run_id: str, model: str) -> None:
    stamp = now()
    store.add(
        Run(
            id=run_id,
            model=model,
            batch_id="b",
            trigger="test",
            requested_by="alice",
            status="success",
            outcome=None,
            summary="{}",
            created_at=stamp,
            updated_at=stamp,
        )
    )


class Writer:
    """Appends rows to every chained table, cycling through runs and agents."""

    def __init__(self, store: AuditStore, runs: list[str]) -> None:
        self.store, self.runs = store, runs
        self.turn = itertools.count()

    def append(self) -> None:
        """One decision and one tool call; every third turn also an approval pair (the
        first four such turns: one per run), and a champion change of ``m`` with a mutation
        by run ``rb-m`` (a rollback: a run of ``m`` only its champion history names)."""
        i = next(self.turn)
        run = self.runs[i % len(self.runs)]
        agent = AGENTS[i % len(AGENTS)]
        self.store.record_decision(run, agent, "watch", f"why {i}", {"i": i}, backend="b")
        self.store.record_tool_call(
            run, agent, "drift.detect", {"i": i}, [i], ok=True, latency_ms=1
        )
        if i % 3 == 0 and i < 12:  # turns 0, 3, 6, 9: four runs, one approval each
            action = promotion_action("m", i + 2, i + 1)
            self.store.request_approval(run, "alice", {"i": i}, action)
            self.store.decide_approval(run, "bob", "approve")
        if i % 3 == 0:
            self.store.record_champion("m", i + 2, i + 1, "rollback", "rb-m", "bob")
            self.store.record_mutation("rb-m", f"s{i}", "set_alias", "intent", {"i": i})


@dataclass(frozen=True)
class Shape:
    name: str
    query: dict[str, Any]
    matches: Callable[[dict[str, Any]], bool]


def shapes(since: str) -> list[Shape]:
    """Every filter the API offers, alone and combined; ``m`` has runs r1, r2, rb-m (named by
    its champion history) and its bootstrap."""
    of_m = {"r1", "r2", "rb-m", "bootstrap-m"}
    return [
        Shape("all", {}, lambda r: True),
        Shape("run", {"run_ids": {"r1"}}, lambda r: r["run_id"] == "r1"),
        Shape("runs", {"run_ids": {"r1", "r3"}}, lambda r: r["run_id"] in {"r1", "r3"}),
        Shape(
            "model",
            {"model": "m", "extra_run_id": "bootstrap-m"},
            lambda r: r["run_id"] in of_m,
        ),
        Shape("table", {"table": "tool_calls"}, lambda r: r["table"] == "tool_calls"),
        Shape("agent", {"agent": "evaluator"}, lambda r: r.get("agent") == "evaluator"),
        Shape(
            "table_agent",
            {"table": "decisions", "agent": "evaluator"},
            lambda r: r["table"] == "decisions" and r["agent"] == "evaluator",
        ),
        Shape(
            "run_agent",
            {"run_ids": {"r2"}, "agent": "drift_analyst"},
            lambda r: r["run_id"] == "r2" and r.get("agent") == "drift_analyst",
        ),
        Shape("since", {"since": since}, lambda r: r["created_at"] >= since),
        Shape("until", {"until": since}, lambda r: r["created_at"] < since),
    ]


def everything(store: AuditStore) -> list[dict[str, Any]]:
    rows, more = store.query_audit(limit=100_000)
    assert not more
    return rows


@pytest.mark.parametrize("shape_name", [s.name for s in shapes("")])
def test_pages_of_every_shape_miss_nothing_and_repeat_nothing_while_rows_are_appended(
    store: AuditStore, shape_name: str
) -> None:
    for run_id, model in (("r1", "m"), ("r2", "m"), ("r3", "n")):
        add_run(store, run_id, model)
    writer = Writer(store, ["r1", "r2", "r3", "bootstrap-m"])
    for _ in range(9):
        writer.append()
    since = everything(store)[8]["created_at"]  # the ninth decision's time
    shape = next(s for s in shapes(since) if s.name == shape_name)
    before = [r for r in everything(store) if shape.matches(r)]
    assert before, shape.name  # the shape selects something to page through

    seen: list[dict[str, Any]] = []
    owed: set[Key] = {key(r) for r in before}  # must appear: existed at the start
    after: tuple[str, int] | None = None
    for _ in range(200):
        page, more = store.query_audit(**shape.query, after=after, limit=3)
        assert len(page) <= 3
        seen += page
        if not more:
            break
        assert page, shape.name
        after = (page[-1]["table"], page[-1]["id"])
        known = {key(r) for r in everything(store)}
        writer.append()  # appended between two pages, as another process would
        # An appended row that sorts after the cursor is owed to the walk; one before it
        # (in a table already walked) is not.
        owed |= {
            k
            for k in {key(r) for r in everything(store) if shape.matches(r)} - known
            if k > key(page[-1])
        }
    else:
        pytest.fail(f"{shape.name}: the pages never ended")

    keys = [key(r) for r in seen]
    assert keys == sorted(keys), shape.name  # chain order
    assert len(set(keys)) == len(keys), shape.name  # no row twice
    assert owed <= set(keys), (shape.name, sorted(owed - set(keys)))  # no gap
    assert all(shape.matches(r) for r in seen), shape.name  # nothing the filter excludes


def test_a_page_is_rows_as_stored_with_their_table(store: AuditStore) -> None:
    writer = Writer(store, ["r1"])
    writer.append()
    page, more = store.query_audit(table="decisions", limit=1)
    assert not more and len(page) == 1
    row = page[0]
    decision = store.list_rows(CHAINED[0])[0]
    assert row["table"] == "decisions"
    assert {k: row[k] for k in ("id", "run_id", "agent", "hash", "created_at")} == {
        "id": decision.id,
        "run_id": decision.run_id,
        "agent": decision.agent,
        "hash": decision.hash,
        "created_at": decision.created_at,
    }


def test_a_model_without_runs_pages_only_its_bootstrap_and_champion_history(
    store: AuditStore,
) -> None:
    store.record_decision("bootstrap-z", "bootstrap", "promote", "first", {}, backend="b")
    store.record_decision("other", "evaluator", "watch", "not z's", {}, backend="b")
    store.record_champion("z", 1, None, "bootstrap", "bootstrap-z", "alice")
    page, more = store.query_audit(model="z", extra_run_id="bootstrap-z", limit=10)
    assert not more
    assert [(r["table"], r["run_id"]) for r in page] == [
        ("decisions", "bootstrap-z"),
        ("champion_history", "bootstrap-z"),
    ]
    assert store.query_audit(run_ids=set(), limit=10) == ([], False)


def plan(store: AuditStore, statement: Any, params: dict[str, Any]) -> list[str]:
    """The database's plan of ``statement``: on PostgreSQL with sequential scans and sorts
    priced out, so a plan that still has one has no index to do without it."""
    state = statement.compile(store.engine).construct_expanded_state(params)
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            args = tuple(state.parameters[name] for name in state.positiontup or ())
            found = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {state.statement}", args)
            return [str(row[-1]) for row in found]
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql("SET enable_sort = off")
        found = conn.exec_driver_sql(f"EXPLAIN {state.statement}", state.parameters)
        return [str(row[0]) for row in found]


@pytest.mark.parametrize(
    "shape",
    [
        _Shape("", False, False, False, False),
        _Shape("one", False, False, False, False),
        _Shape("many", False, False, False, False),
        _Shape("", False, True, False, False),
        _Shape("one", False, True, False, False),
        _Shape("", False, False, True, True),
        _Shape("", True, False, False, False),
    ],
    ids=lambda s: "-".join(str(v) for v in s if v) or "all",
)
def test_every_page_shape_reads_an_index_in_page_order(store: AuditStore, shape: _Shape) -> None:
    params = {
        "after": 5,
        "run_id": "r1",
        "run_ids": ["r1", "r2"],
        "model": "m",
        "extra": "bootstrap-m",
        "agent": "evaluator",
        "since": "2026-01-01",
        "until": "2027-01-01",
        "limit": 50,
    }
    for chained in CHAINED:
        name = chained.__tablename__
        if shape.agent and not hasattr(chained, "agent"):
            continue
        lines = plan(store, _audit_statement(name, True, shape), params)
        text = "\n".join(lines)
        assert not any(line.startswith(f"SCAN {name}") for line in lines), text  # SQLite
        assert "Seq Scan" not in text, text  # PostgreSQL
        # Rows of several runs (a model's) are gathered from each run's range, then sorted:
        # the cost of those runs' rows, never of the trail.
        if shape.runs != "many" and not shape.model:
            assert "TEMP B-TREE FOR ORDER BY" not in text, text
            assert "Sort" not in text, text
