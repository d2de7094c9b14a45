"""LangGraph threads: the ``threads`` table (one row per placeholder thread).

A LangGraph client makes a thread first (``threads.create``) and runs on it afterwards; a
control run only exists once it has a model and a batch. A row here is such a placeholder:
its metadata, who made it, and, once the first run on it was submitted, the control run it
is bound to (``run_id``, unique: a run shows under one placeholder at most) with the run's
assistant, metadata and multitask strategy. A control run without a row is a thread too,
under its own id (``driftpilot.runs.threads``).

Before migration 0007 these records were rows of the idempotency ledger (``step_effects``
steps ``langgraph.thread``, ``langgraph.thread.run`` and ``langgraph.run.thread``); the
migration moved them here, so search can filter, sort and page in SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    String,
    Text,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from driftpilot.store.engine import dumps, now
from driftpilot.store.models import Base, Run

if TYPE_CHECKING:
    from driftpilot.store.audit import AuditStore

GRAPH_ID = "control"  # the one LangGraph graph: every thread's metadata names it


class Thread(Base):
    """A placeholder thread, bound to its control run once the first run on it starts."""

    __tablename__ = "threads"
    thread_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    meta: Mapped[str] = mapped_column(Text, default="{}", doc="the client's metadata (JSON)")
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))
    run_id: Mapped[str | None] = mapped_column(String(40), nullable=True, unique=True)
    assistant_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    run_meta: Mapped[str | None] = mapped_column(
        Text, nullable=True, doc="the metadata of the run that bound it (JSON)"
    )
    multitask_strategy: Mapped[str | None] = mapped_column(String(20), nullable=True)
    bound_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


# -- queries --------------------------------------------------------------------------------------
#
# A thread is a row here, or a control run no row is bound to (its own id is the thread's).
# Search runs over the union of both in SQL: filters, sort, limit and offset are the query's.

_RUN_COLUMNS = {"run_id", "model", "batch_id", "requested_by", "outcome"}


def add(store: AuditStore, thread_id: str, metadata: dict[str, Any], created_by: str) -> Thread:
    """Insert a placeholder thread.

    Raises:
        sqlalchemy.exc.IntegrityError: ``thread_id`` exists.
    """
    row = Thread(thread_id=thread_id, meta=dumps(metadata), created_by=created_by, created_at=now())
    with store.session() as session:
        session.add(row)
    return row


def get(store: AuditStore, thread_id: str) -> Thread | None:
    with store.reading() as session:
        return session.get(Thread, thread_id)


def of_run(store: AuditStore, run_id: str) -> Thread | None:
    """The placeholder bound to run ``run_id``, if any."""
    with store.reading() as session:
        return session.scalars(select(Thread).where(Thread.run_id == run_id)).first()


def bind(
    store: AuditStore,
    thread_id: str,
    run_id: str,
    assistant_id: str,
    metadata: dict[str, Any],
    multitask_strategy: str,
    at: str,
) -> bool:
    """Bind the unbound placeholder ``thread_id`` to ``run_id``; False when it was bound
    already (first writer wins: one conditional UPDATE)."""
    with store.session() as session:
        done = session.execute(
            update(Thread)
            .where(Thread.thread_id == thread_id, Thread.run_id.is_(None))
            .values(
                run_id=run_id,
                assistant_id=assistant_id,
                run_meta=dumps(metadata),
                multitask_strategy=multitask_strategy,
                bound_at=at,
            )
        )
    return bool(getattr(done, "rowcount", 0) == 1)


@dataclass(frozen=True)
class ThreadRow:
    """One search hit: a placeholder's fields, or a bare run's (``placeholder`` False)."""

    thread_id: str
    run_id: str | None
    created_at: str
    meta: str
    created_by: str | None
    assistant_id: str | None
    run_meta: str | None
    multitask_strategy: str | None
    placeholder: bool


def search(
    store: AuditStore,
    *,
    waiting: set[str],
    ids: list[str] | None = None,
    status: str | None = None,
    metadata: dict[str, Any] | None = None,
    values: dict[str, Any] | None = None,
    sort_by: str | None = None,
    sort_order: str | None = None,
    limit: int = 10,
    offset: int = 0,
) -> list[ThreadRow]:
    """One page of threads (placeholders and bare runs), filtered, sorted (``created_at``
    newest first by default) and paged in SQL.

    ``waiting``: the runs with an open approval request (their thread is ``interrupted``).
    ``metadata`` matches the thread metadata the API shows (the client's, with ``graph_id``
    ``control``, ``assistant_id`` and ``run_id`` once bound, ``created_by``); ``values``
    the run's columns (``run_id``, ``model``, ``batch_id``, ``requested_by``, ``outcome``),
    its LangGraph ``status`` and the keys of its summary. On PostgreSQL a JSON value
    matches by containment (``@>``, as LangGraph's server does); on SQLite by equality.

    Raises:
        ValueError: a ``values`` key that cannot be matched in SQL (``steps``).
    """
    dialect = store.engine.dialect.name
    bound_runs = select(Thread.run_id).where(Thread.run_id.is_not(None))
    text_null = cast(null(), String)
    union = union_all(
        select(
            Thread.thread_id,
            Thread.run_id,
            Thread.created_at,
            Thread.meta,
            Thread.created_by,
            Thread.assistant_id,
            Thread.run_meta,
            Thread.multitask_strategy,
            literal(1).label("placeholder"),
        ),
        select(
            Run.id.label("thread_id"),
            Run.id.label("run_id"),
            Run.created_at,
            literal("{}").label("meta"),
            Run.requested_by.label("created_by"),
            text_null.label("assistant_id"),
            text_null.label("run_meta"),
            text_null.label("multitask_strategy"),
            literal(0).label("placeholder"),
        ).where(Run.id.not_in(bound_runs)),
    ).subquery("threads_and_runs")
    t = union.c
    is_waiting = Run.id.in_(sorted(waiting)) if waiting else false()
    thread_status = case(
        (t.run_id.is_(None), "idle"),
        (Run.status.in_(("pending", "running")), "busy"),
        (Run.status == "completed", "idle"),
        (and_(Run.status == "waiting_approval", is_waiting), "interrupted"),
        (Run.status == "waiting_approval", "busy"),
        else_="error",
    )
    query = select(union).select_from(union.outerjoin(Run, Run.id == t.run_id))
    if ids is not None:
        query = query.where(t.thread_id.in_(ids))
    if status is not None:
        query = query.where(thread_status == status)
    for key, value in (metadata or {}).items():
        query = query.where(_metadata_match(t, key, value, dialect))
    for key, value in (values or {}).items():
        query = query.where(_values_match(t, is_waiting, key, value, dialect))
    column = {
        "thread_id": t.thread_id,
        "status": thread_status,
        "created_at": t.created_at,
        "updated_at": func.coalesce(Run.updated_at, t.created_at),
    }[sort_by or "created_at"]
    if sort_order == "asc":
        query = query.order_by(column.asc(), t.thread_id.asc())
    else:
        query = query.order_by(column.desc(), t.thread_id.desc())
    with store.reading() as session:
        rows = session.execute(query.limit(limit).offset(offset)).all()
    return [
        ThreadRow(
            thread_id=r.thread_id,
            run_id=r.run_id,
            created_at=r.created_at,
            meta=r.meta,
            created_by=r.created_by,
            assistant_id=r.assistant_id,
            run_meta=r.run_meta,
            multitask_strategy=r.multitask_strategy,
            placeholder=bool(r.placeholder),
        )
        for r in rows
    ]


def _equals(column: Any, value: Any) -> ColumnElement[bool]:
    """A text column equal to ``value`` (never, for a value that is not text)."""
    return column == value if isinstance(value, str) else false()


def _json_match(column: Any, key: str, value: Any, dialect: str) -> ColumnElement[bool]:
    """The JSON object in text ``column`` has ``key`` set to ``value``."""
    if dialect == "postgresql":
        return cast(column, JSONB).contains({key: value})
    path = '$."' + key.replace('"', '\\"') + '"'
    found = func.json_extract(column, path)
    kind = func.json_type(column, path)
    if value is None:  # a missing key reads as null (as dict.get did)
        return found.is_(None)
    if isinstance(value, bool):
        return kind == ("true" if value else "false")
    if isinstance(value, int | float):
        return and_(kind.in_(("integer", "real")), found == value)
    if isinstance(value, str):
        return and_(kind == "text", found == value)
    return and_(kind.in_(("object", "array")), found == json.dumps(value, separators=(",", ":")))


def _has_key(column: Any, key: str, dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        return cast(column, JSONB).has_key(key)
    return func.json_type(column, '$."' + key.replace('"', '\\"') + '"').is_not(None)


def _metadata_match(t: Any, key: str, value: Any, dialect: str) -> ColumnElement[bool]:
    """The thread metadata the API shows has ``key`` = ``value`` (see ``search``)."""
    mine = _json_match(t.meta, key, value, dialect)
    if key == "graph_id":
        return true() if value == GRAPH_ID else false()
    if key == "assistant_id":
        shown = func.coalesce(t.assistant_id, Run.model)
        return or_(
            and_(t.run_id.is_not(None), _equals(shown, value)), and_(t.run_id.is_(None), mine)
        )
    if key == "run_id":
        return or_(
            and_(t.run_id.is_not(None), _equals(t.run_id, value)), and_(t.run_id.is_(None), mine)
        )
    if key == "created_by":
        return or_(mine, and_(not_(_has_key(t.meta, key, dialect)), _equals(t.created_by, value)))
    return mine


def _values_match(
    t: Any, is_waiting: ColumnElement[bool], key: str, value: Any, dialect: str
) -> ColumnElement[bool]:
    """The thread values (a bound run's; none before) have ``key`` = ``value``."""
    if key == "steps":
        raise ValueError("threads cannot be searched by values.steps")
    if key == "status":
        run_status = case(
            (Run.status.in_(("pending", "running")), Run.status),
            (and_(Run.status == "waiting_approval", is_waiting), "interrupted"),
            (Run.status == "waiting_approval", "pending"),
            (Run.status == "completed", "success"),
            else_="error",
        )
        found = _equals(run_status, value)
    elif key in _RUN_COLUMNS:
        found = _equals(getattr(Run, "id" if key == "run_id" else key), value)
    else:
        found = _json_match(Run.summary, key, value, dialect)
    return and_(t.run_id.is_not(None), found)
