"""Appending to a model's inference log: a request's rows, validated, in one transaction.

A request is all-or-nothing: every row is validated (``driftpilot.inference.rows``) before
anything is written, then the new rows are inserted in ONE write transaction, and the caller
acknowledges only after it committed. Rows are idempotent by (model, row id): a row already
logged with the same digest is a duplicate (counted, not written again), one with other
content refuses the whole request (``RowConflict``), so a client may retry a request whose
answer it never saw. Two requests racing with the same new row id: the loser's insert breaks
the unique constraint, and its transaction is tried again (it then sees the winner's row).

The hot path is Core: one ``SELECT`` of the request's row ids already logged, one executemany
``INSERT``; no ORM object per row.

Which rows are in a window: a model's windows are consecutive id ranges of its rows
(``InferenceWindow.first_id``..``last_id``), and its rows after the newest window's last id
are open (``horizon``). Closing a window writes the window, never its rows, so a close holds
SQLite's write lock for a moment, not for an UPDATE of every row. That needs every row with
an id inside a closed range to have been committed before the close: SQLite's single writer
gives it (ids are handed out under the write lock); on PostgreSQL, where a sequence hands
ids out before commit, writers of a model's rows take its log lock shared and a close takes
it exclusive (``lock_log``), so no insert is in flight while a window closes.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from driftpilot.core.errors import DataError, DriftPilotError, NotFound
from driftpilot.inference.rows import Schema, ValidRow, named, schema_of, validate_rows
from driftpilot.store.engine import Database, stamp
from driftpilot.store.models import InferenceRow, InferenceWindow, ManagedModel

WRITE_TRIES = 3  # a request whose row ids race several others' at once (retries overlapping)
LOOKUP_CHUNK = 500  # row ids per IN (...) of the duplicate lookup (SQLite's bound variables)
_TABLE = cast(Table, InferenceRow.__table__)
_LOG_LOCKS = 0x44504C47  # "DPLG": the first key of every model's log lock (lock_log)


class RowConflict(DriftPilotError):
    """A row id the model's log holds already, with other content: the request writes
    nothing. ``row_ids``: the first few such ids."""

    def __init__(self, model: str, row_ids: list[str]) -> None:
        super().__init__(
            f"row id {named(row_ids)} of model {model!r} is logged already with other content; a "
            "row id names one prediction, logged once (a retry must send the same row)"
        )
        self.model, self.row_ids = model, row_ids


class TooManyRows(DataError):
    """A request with more rows than one request may carry."""

    def __init__(self, n: int, limit: int) -> None:
        super().__init__(
            f"the request has {n} rows; the limit is {limit} per request (split it; the client "
            "does so by itself)"
        )
        self.n, self.limit = n, limit


@dataclass(frozen=True)
class Appended:
    """What a request did: ``accepted`` new rows written, ``duplicates`` rows logged already
    (same content), ``rows`` in the request (repeats of a row within it counted once)."""

    model: str
    accepted: int
    duplicates: int
    rows: int


def model_schema(db: Database, name: str) -> Schema:
    """The schema of model ``name``'s logged rows.

    Raises:
        NotFound: no such model.
    """
    with db.reading() as session:
        model = session.get(ManagedModel, name)
    if model is None:
        raise NotFound(f"no model {name!r}")
    return schema_of(model)  # outside the transaction: it may read the reference's schema


def append(db: Database, name: str, rows: list[Any], *, max_rows: int) -> Appended:
    """Validate ``rows`` against model ``name`` and log the new ones, all or nothing; return
    only once they are committed (durable).

    Raises:
        NotFound: no such model.
        TooManyRows: more than ``max_rows`` rows.
        RowsRefused: a bad row (nothing written).
        RowConflict: a row id logged already with other content (nothing written).
    """
    return append_to(db, model_schema(db, name), rows, max_rows=max_rows)


def append_to(db: Database, schema: Schema, rows: list[Any], *, max_rows: int) -> Appended:
    """``append`` for a model whose schema the caller looked up already (the API does so
    first, so that an unknown model is a 404 before the body is read)."""
    if len(rows) > max_rows:
        raise TooManyRows(len(rows), max_rows)
    return append_valid(db, schema.model, validate_rows(schema, rows))


def append_valid(db: Database, name: str, valid: list[ValidRow]) -> Appended:
    """Log validated rows in one transaction, tried again (``WRITE_TRIES`` in all) after a
    concurrent insert of one of its row ids.

    Raises:
        RowConflict: a row id logged already with other content.
        IntegrityError: the row ids kept racing other requests' for every try.
    """
    if not valid:  # no write transaction (and no wait for the write lock) for nothing
        return Appended(name, 0, 0, 0)
    for _ in range(WRITE_TRIES - 1):
        try:
            return _write(db, name, valid)
        except IntegrityError:
            # Another request inserted one of these row ids between our lookup and our
            # insert (PostgreSQL; SQLite's writers are serial): our transaction rolled back,
            # the next try sees its rows (duplicates, or a conflict).
            continue
    return _write(db, name, valid)


def lock_log(session: Session, model: str, *, exclusive: bool = False) -> None:
    """In the caller's transaction, until it ends: the model's log lock on PostgreSQL, taken
    shared by whoever writes its rows (logging, labels) and exclusive by a window's close
    (module docstring). SQLite's write lock, taken at BEGIN, serialises these already."""
    if session.get_bind().dialect.name != "postgresql":
        return
    # The two-key form: a keyspace of its own, apart from the single-key locks of the audit
    # chain, the migrations and the queue (a model whose hash met one would wait on them).
    digest = zlib.crc32(model.encode())
    key = digest - 2**32 if digest >= 2**31 else digest  # a signed int4
    how = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    session.execute(text(f"SELECT {how}(:space, :key)"), {"space": _LOG_LOCKS, "key": key})


def horizon(session: Session, model: str) -> tuple[int, int]:
    """(number, last row id) of the model's newest window, (0, 0) without one: its rows
    with larger ids are open."""
    newest = session.execute(
        select(InferenceWindow.number, InferenceWindow.last_id)
        .where(InferenceWindow.model == model)
        .order_by(InferenceWindow.number.desc())
        .limit(1)
    ).first()
    return (int(newest[0]), int(newest[1])) if newest is not None else (0, 0)


def windows_of(session: Session, model: str, ids: list[int]) -> list[int | None]:
    """The number of the window holding each row id (None: open), in the order given."""
    if not ids:
        return []
    ranges = session.execute(
        select(InferenceWindow.first_id, InferenceWindow.last_id, InferenceWindow.number)
        .where(
            InferenceWindow.model == model,
            InferenceWindow.last_id >= min(ids),
            InferenceWindow.first_id <= max(ids),
        )
        .order_by(InferenceWindow.first_id)
    ).all()
    firsts = [int(first) for first, _, _ in ranges]
    found: list[int | None] = []
    for i in ids:
        at = bisect_right(firsts, i) - 1  # the last range starting at or before i
        found.append(int(ranges[at][2]) if at >= 0 and i <= ranges[at][1] else None)
    return found


def _write(db: Database, name: str, valid: list[ValidRow]) -> Appended:
    with db.session() as session:
        lock_log(session, name)
        logged = _logged_digests(session, name, [r.row_id for r in valid])
        clashes = [r.row_id for r in valid if logged.get(r.row_id, r.digest) != r.digest]
        if clashes:
            raise RowConflict(name, clashes)
        new = [r for r in valid if r.row_id not in logged]
        if new:
            received = stamp(db.clock())
            session.connection().execute(insert(_TABLE), [_values(name, r, received) for r in new])
    return Appended(name, len(new), len(valid) - len(new), len(valid))


def _values(name: str, row: ValidRow, received: str) -> dict[str, Any]:
    return {
        "model": name,
        "row_id": row.row_id,
        "event_time": row.event_time,
        "payload": row.payload,
        "digest": row.digest,
        "received_at": received,
        "label": row.label,
        "labelled_at": received if row.label is not None else None,
    }


def _logged_digests(session: Session, name: str, row_ids: list[str]) -> dict[str, str]:
    """{row id: digest} of those of ``row_ids`` the model's log holds already."""
    found: dict[str, str] = {}
    for chunk in _chunks(row_ids, LOOKUP_CHUNK):
        query = select(InferenceRow.row_id, InferenceRow.digest).where(
            InferenceRow.model == name, InferenceRow.row_id.in_(chunk)
        )
        found.update({row_id: digest for row_id, digest in session.execute(query)})
    return found


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
