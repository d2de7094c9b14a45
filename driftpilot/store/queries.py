"""Rows of the audit database: the generic add/get/update/list, runs, models and batches, and
the read queries (runs and audit rows paged in SQL, champion history)."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import String, and_, bindparam, cast, func, or_, select, union, update

from driftpilot.core.errors import ConfigError, NotFound
from driftpilot.store.engine import Database, T, dumps, now
from driftpilot.store.models import (
    CHAINED,
    BatchRecord,
    ChampionChange,
    ManagedModel,
    Run,
    ToolCall,
)


class Queries(Database):
    """Rows in general (add, get, update, list) and the read queries over them."""

    def add(self, row: Any) -> Any:
        with self.session() as session:
            session.add(row)
        return row

    def add_all(self, rows: list[Any]) -> None:
        """Insert ``rows`` in one write transaction: all of them or none."""
        with self.session() as session:
            session.add_all(rows)

    def get(self, model: type[T], key: Any) -> T:
        with self.reading() as session:
            row = session.get(model, key)
        if row is None:
            raise NotFound(f"no {model.__tablename__[:-1]} {key!r}")  # type: ignore[attr-defined]
        return row

    def _update(self, model: type[T], key: str, fields: dict[str, Any]) -> T:
        """Update a mutable row (runs, models; chained tables are never updated)."""
        with self.session() as session:
            row = session.get(model, key)
            if row is None:
                raise NotFound(f"no {model.__tablename__[:-1]} {key!r}")  # type: ignore[attr-defined]
            for name, value in fields.items():
                setattr(row, name, value)
        return row

    def list_rows(
        self, model: type[T], *where: Any, order: Any = None, limit: int | None = None
    ) -> list[T]:
        """Rows of ``model`` matching ``where``, in ``order`` (default: primary key, so the
        order is the insertion order of chained rows on every database: PostgreSQL, unlike
        SQLite, returns an unordered select in no particular order)."""
        with self.reading() as session:
            key = model.__table__.primary_key.columns.values()[0]  # type: ignore[attr-defined]
            query = select(model).where(*where).order_by(order if order is not None else key)
            if limit is not None:
                query = query.limit(limit)
            return list(session.scalars(query))

    # -- runs, batches, models -----------------------------------------------------------------

    def transition_run(self, run_id: str, expected: str, **fields: Any) -> bool:
        """Compare-and-set: update the run only if its status is still ``expected``."""
        with self.session() as session:
            done = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == expected)
                .values(**fields, updated_at=now())
            )
            return getattr(done, "rowcount", 0) == 1

    def update_run(self, run_id: str, **fields: Any) -> Run:
        if "summary" in fields:
            fields["summary"] = dumps(fields["summary"])
        return self._update(Run, run_id, {**fields, "updated_at": now()})

    def update_model(self, name: str, **fields: Any) -> ManagedModel:
        return self._update(ManagedModel, name, fields)

    def seen_hashes(self, model: str) -> set[str]:
        rows = self.list_rows(
            BatchRecord, BatchRecord.model == model, BatchRecord.status == "accepted"
        )
        return {r.content_hash for r in rows}

    def query_runs(
        self,
        *,
        model: str | None = None,
        status: str | None = None,
        outcome: str | None = None,
        requested_by: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before: tuple[str, str] | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Runs newest first, filtered in SQL; ``before`` = (created_at, id) of the last run
        of the previous page (a cursor that stays put while runs are added)."""
        query = select(Run)
        for column, value in (
            (Run.model, model),
            (Run.status, status),
            (Run.outcome, outcome),
            (Run.requested_by, requested_by),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(Run.created_at >= since)
        if until is not None:
            query = query.where(Run.created_at < until)
        if before is not None:
            query = query.where(
                or_(
                    Run.created_at < before[0],
                    and_(Run.created_at == before[0], Run.id < before[1]),
                )
            )
        query = query.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)
        with self.reading() as session:
            return list(session.scalars(query))

    # -- the chained rows, read ----------------------------------------------------------------

    def query_audit(
        self,
        *,
        run_ids: set[str] | None = None,
        model: str | None = None,
        extra_run_id: str | None = None,
        table: str | None = None,
        agent: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after: tuple[str, int] | None = None,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], bool]:
        """Chained rows table by table in chain order, filtered in SQL; ``after`` = (table,
        id) of the last row of the previous page. Returns the page and whether more follow.

        Each table is read as a keyset page (``id > :after ORDER BY id LIMIT n``) over an
        index that ends in ``id`` (migration 0010), so a page costs its own rows: no count,
        no offset, no sort of the whole trail. ``model`` keeps the rows of the model's runs
        and of the runs its champion history names, plus ``extra_run_id`` (its bootstrap),
        as a subquery; ``run_ids`` keeps those runs (both given: rows in both).

        Raises:
            ConfigError: unknown table or cursor table.
        """
        names = [m.__tablename__ for m in CHAINED]
        for name in (table, after[0] if after else None):
            if name is not None and name not in names:
                raise ConfigError(f"unknown audit table {name!r}; tables: {', '.join(names)}")
        if run_ids is not None and not run_ids:
            return [], False
        start = names.index(after[0]) if after else 0
        rows: list[dict[str, Any]] = []
        ids = sorted(run_ids) if run_ids is not None else None
        params: dict[str, Any] = {
            "after": after[1] if after else 0,
            "run_id": ids[0] if ids and len(ids) == 1 else None,
            "run_ids": ids,
            "model": model,
            "extra": extra_run_id or "",
            "agent": agent,
            "since": since,
            "until": until,
        }
        shape = _Shape(
            "one" if ids is not None and len(ids) == 1 else "many" if ids is not None else "",
            model is not None,
            agent is not None,
            since is not None,
            until is not None,
        )
        # Core statements built once per filter shape, on one read connection: the ORM cost
        # ~10x the queries themselves.
        with self._reading_connection() as conn:
            for chained in CHAINED[start:]:
                name = chained.__tablename__
                if table is not None and name != table:
                    continue
                if agent is not None and not hasattr(chained, "agent"):
                    continue
                query = _audit_statement(name, after is not None and name == after[0], shape)
                found = conn.execute(query, {**params, "limit": limit + 1 - len(rows)})
                # Plain tuples zipped with the keys once: a RowMapping per row cost more
                # than the query (about half of a page's CPU).
                keys = ("table", *found.keys())
                rows += [dict(zip(keys, (name, *row), strict=True)) for row in found]
                if len(rows) > limit:
                    break
        return rows[:limit], len(rows) > limit

    def champion_at(self, model: str, when: datetime | str) -> int | None:
        """Which version was champion of ``model`` at time ``when`` (None: none yet)."""
        stamp = (
            when
            if isinstance(when, str)
            else when.astimezone(UTC).isoformat(timespec="microseconds")
        )
        with self.reading() as session:
            row = session.scalars(
                select(ChampionChange)
                .where(ChampionChange.model == model, ChampionChange.created_at <= stamp)
                .order_by(ChampionChange.id.desc())
                .limit(1)
            ).first()
        return row.version if row else None

    def champion_generation(self, model: str) -> int:
        """The id of the model's latest champion change (0: none): it moves with every
        promotion and rollback, so a replay can tell that the champion changed meanwhile."""
        with self.reading() as session:
            latest = session.scalar(
                select(func.max(ChampionChange.id)).where(ChampionChange.model == model)
            )
        return int(latest or 0)

    def logged_versions(self, model: str) -> set[int]:
        """Versions of ``model`` whose registration has its (successful) tool call."""
        found: set[int] = set()
        for call in self.list_rows(
            ToolCall, ToolCall.tool == "registry.register_model", ToolCall.ok.is_(True)
        ):
            result = json.loads(call.result)
            if isinstance(result, dict) and result.get("name") == model:
                found.add(int(result["version"]))
        return found


class _Shape(NamedTuple):
    """Which filters a page has (the statement's form; the values are bound parameters)."""

    runs: str  # "one" | "many" | "" (no run filter)
    model: bool
    agent: bool
    since: bool
    until: bool


@functools.lru_cache(maxsize=256)
def _audit_statement(name: str, after: bool, shape: _Shape) -> Any:
    """The keyset select of one chained table for one filter shape, with bound parameters."""
    table = next(m.__table__ for m in CHAINED if m.__tablename__ == name)
    c = table.c
    query = select(table)
    if after:
        query = query.where(c.id > bindparam("after"))
    if shape.runs == "one":
        query = query.where(c.run_id == bindparam("run_id"))
    elif shape.runs == "many":
        query = query.where(c.run_id.in_(bindparam("run_ids", expanding=True)))
    if shape.model:
        query = query.where(c.run_id.in_(_model_runs()))
    if shape.agent:
        query = query.where(c.agent == bindparam("agent"))
    if shape.since:
        query = query.where(c.created_at >= bindparam("since"))
    if shape.until:
        query = query.where(c.created_at < bindparam("until"))
    return query.order_by(c.id).limit(bindparam("limit"))


def _model_runs() -> Any:
    """The run ids filed under a model (bound ``model``, ``extra``): its runs, the runs its
    champion history names (rollbacks), and ``extra`` (its bootstrap), in SQL: a model with
    thousands of runs sends no list of ids."""
    return union(
        select(Run.id).where(Run.model == bindparam("model")),
        select(ChampionChange.run_id).where(ChampionChange.model == bindparam("model")),
        select(cast(bindparam("extra"), String(40))),
    )
