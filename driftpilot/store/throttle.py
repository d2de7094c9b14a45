"""Limits on guessing credentials: failed chat sign-ins and unknown or revoked API keys.

Failures are counted per subject: a client address (``address``; IPv6 per /64, since one
host holds a whole /64), a chat user name (``user``) and an API key's id (``key``, read from
the ``dp_<id>_`` prefix of the secret tried). ``max_failures`` failures of a subject within
``window_s`` lock it for ``lockout_s``; each further lockout doubles, up to ``max_lockout_s``;
after ``forget_s`` without a failure a subject starts again from the first length. A lockout
starts a fresh count (the next one needs ``max_failures`` new failures).

A chat user name is locked only at ``name_max_failures`` (20 by default), not at
``max_failures``, and a name's lock does not hold at its known addresses. Why: a name's lock
holds from every address, so at the address threshold anyone could keep any user (an
approver) shut out with ~6 requests per lockout, from anywhere. The address lock already
stops a guesser at one address (at ``max_failures``, whatever names it tries: the per
(name, address) lock and more); the name's higher threshold only slows a guesser spread over
many addresses; and an address that signed in as that user within ``known_s`` (a ``known``
row, keyed by a hash of the pair) is judged by its own address counter alone, so even a
name locked by a distributed guesser still lets its owner in from where they usually sign in.

The counters live in the audit database (``auth_failures``): the API and the chat are separate
processes, and a restart must not hand out fresh guesses. Every lockout is audited as a tool
call (agent ``auth``, tool ``auth.lockout``) naming the subject, never a secret. Attempts made
during a lock are refused without being checked, and not counted (a lock is not prolonged by
the refused attempts: the lockout's length alone grows).

Two ways to count. The API counts a failure after the key lookup failed (``record_failures``):
a right key's request writes nothing, and parallel wrong keys landing before the lock can
exceed ``max_failures`` by a few, which a 190-bit secret does not care about. The chat counts
each attempt before its password is checked (``begin_attempt``), in the transaction that
looks at the locks, and takes a success back (``attempt_succeeded``): parallel sign-ins get
no more than ``max_failures`` checks per window, however many are in flight at once.
A lockout's audit row is written just after the counters commit: a crash between the two
loses the row of a lockout, never the lockout.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from driftpilot.core.errors import InvalidPrincipal
from driftpilot.core.identity import normalize_principal
from driftpilot.core.settings import AuthLimitSettings
from driftpilot.store.chain import Chain
from driftpilot.store.engine import stamp
from driftpilot.store.models import AuthFailure

AGENT, TOOL = "auth", "auth.lockout"
MAX_NAME = 200
_KEY_ID = re.compile(r"dp_([0-9a-f]{12})_")


class Subject(NamedTuple):
    """What failures are counted against: ``kind`` address | user | key, and its name (kind
    ``known``: an address that signed in as a user, see ``known_subject``)."""

    kind: str
    name: str


@dataclass(frozen=True)
class Counter:
    """A subject's failures, as stored."""

    failures: int
    window_start: datetime
    lockouts: int
    locked_until: datetime | None
    last_failure: datetime


@dataclass(frozen=True)
class Lockout:
    """A lockout a failure started."""

    subject: Subject
    until: datetime
    seconds: float
    level: int  # 1 for the first lockout since the subject was last forgotten


# -- the rule, without a database -----------------------------------------------------------


def lockout_seconds(level: int, limits: AuthLimitSettings) -> float:
    """The length of the ``level``-th lockout: ``lockout_s`` doubled per level, capped."""
    doubled = limits.lockout_s * 2.0 ** min(level - 1, 60)
    return min(doubled, limits.max_lockout_s)


def after_failure(counter: Counter | None, at: datetime, limits: AuthLimitSettings) -> Counter:
    """The counter after one more failure at ``at``. A subject locked at ``at`` is returned
    unchanged: attempts during a lock are refused unchecked, so they are not failures."""
    if counter is not None and counter.locked_until is not None and counter.locked_until > at:
        return counter
    if counter is None or (at - counter.last_failure).total_seconds() > limits.forget_s:
        counter = Counter(0, at, 0, None, at)  # new, or forgotten: from the first lockout
    if (at - counter.window_start).total_seconds() > limits.window_s:
        counter = replace(counter, failures=0, window_start=at)
    failures, window_start, lockouts = counter.failures + 1, counter.window_start, counter.lockouts
    if failures < limits.max_failures:
        return Counter(failures, window_start, lockouts, None, at)
    seconds = lockout_seconds(lockouts + 1, limits)
    return Counter(0, at, lockouts + 1, at + timedelta(seconds=seconds), at)


def before_attempt(
    counter: Counter | None, at: datetime, limits: AuthLimitSettings
) -> tuple[Counter, bool]:
    """(the counter once an attempt at ``at`` is counted, whether to check its secret). A
    locked subject refuses and is unchanged; one with ``max_failures`` attempts in the window
    refuses and starts its next lockout; any other counts the attempt as a failure until
    ``attempt_succeeded`` takes it back."""
    if counter is not None and counter.locked_until is not None and counter.locked_until > at:
        return counter, False
    if counter is None or (at - counter.last_failure).total_seconds() > limits.forget_s:
        counter = Counter(0, at, 0, None, at)
    if (at - counter.window_start).total_seconds() > limits.window_s:
        counter = replace(counter, failures=0, window_start=at)
    if counter.failures >= limits.max_failures:
        level = counter.lockouts + 1
        until = at + timedelta(seconds=lockout_seconds(level, limits))
        return Counter(0, at, level, until, at), False
    return replace(counter, failures=counter.failures + 1, locked_until=None, last_failure=at), True


def limits_for(subject: Subject, limits: AuthLimitSettings) -> AuthLimitSettings:
    """The limits ``subject`` is counted under: a user name's lock needs
    ``name_max_failures`` failures (module docstring), any other subject ``max_failures``."""
    if subject.kind != "user":
        return limits
    return limits.model_copy(update={"max_failures": limits.name_max_failures})


def seconds_left(locked_until: datetime | None, at: datetime) -> float | None:
    """How long a lock ending at ``locked_until`` still holds at ``at`` (None: not locked)."""
    if locked_until is None or locked_until <= at:
        return None
    return (locked_until - at).total_seconds()


def retry_after(seconds: float) -> int:
    """The whole seconds a client waits (a ``Retry-After`` value): at least 1."""
    return max(1, math.ceil(seconds))


# -- subjects ---------------------------------------------------------------------------------


def address_subject(host: str | None) -> Subject:
    """The address subject of a client: IPv4 as is, IPv6 per /64 (an IPv4-mapped one as its
    IPv4), anything else (a Unix socket, no peer) as its text, cut to 200 characters."""
    if not host:
        return Subject("address", "unknown")
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return Subject("address", host[:MAX_NAME])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return Subject("address", str(ip.ipv4_mapped))
        return Subject("address", str(ipaddress.IPv6Network((ip, 64), strict=False)))
    return Subject("address", str(ip))


def user_subject(name: str) -> Subject | None:
    """The subject of a typed user name, under the identity rule (``Ann`` and `` ann `` are
    one); None for a name no user can have (then the address alone counts)."""
    try:
        return Subject("user", normalize_principal(name))
    except InvalidPrincipal:
        return None


def key_subject(secret: str) -> Subject | None:
    """The subject of the API key a secret names (its public id, ``dp_<id>_...``); None for
    a secret of another shape (then the address alone counts)."""
    found = _KEY_ID.match(secret)
    return Subject("key", found.group(1)) if found else None


def known_subject(address: Subject, user: Subject) -> Subject:
    """The subject marking that ``address`` signed in as ``user``: a hash of the pair, so it
    fits the name column whatever their lengths, and the table does not list who signs in
    from where."""
    digest = hashlib.sha256(f"{address.name}\n{user.name}".encode()).hexdigest()
    return Subject("known", digest)


# -- the counters in the database -------------------------------------------------------------


def _counter(row: AuthFailure) -> Counter:
    return Counter(
        failures=row.failures,
        window_start=datetime.fromisoformat(row.window_start),
        lockouts=row.lockouts,
        locked_until=datetime.fromisoformat(row.locked_until) if row.locked_until else None,
        last_failure=datetime.fromisoformat(row.last_failure),
    )


def _store(row: AuthFailure, counter: Counter) -> None:
    row.failures, row.lockouts = counter.failures, counter.lockouts
    row.window_start, row.last_failure = stamp(counter.window_start), stamp(counter.last_failure)
    row.locked_until = stamp(counter.locked_until) if counter.locked_until else None


def _started(subject: Subject, before: Counter, after: Counter, at: datetime) -> list[Lockout]:
    """The lockout going from ``before`` to ``after`` started (a lockout always raises the
    level), as a list of one, or none."""
    if after.lockouts == before.lockouts or after.locked_until is None:
        return []
    seconds = (after.locked_until - at).total_seconds()
    return [Lockout(subject, after.locked_until, seconds, after.lockouts)]


def _where(subjects: Iterable[Subject]) -> object:
    return or_(*(and_(AuthFailure.kind == s.kind, AuthFailure.name == s.name) for s in subjects))


class Throttle(Chain):
    """The failure counters of ``auth_failures`` and the audit of their lockouts."""

    def locked_until(self, subjects: list[Subject]) -> datetime | None:
        """When the latest lock among ``subjects`` ends (None: none of them is locked now)."""
        if not subjects:
            return None
        with self.reading() as session:
            ends = session.scalars(
                select(AuthFailure.locked_until).where(_where(subjects))  # type: ignore[arg-type]
            ).all()
        at = self.clock()
        live = [datetime.fromisoformat(e) for e in ends if e is not None]
        return max((e for e in live if e > at), default=None)

    def record_failures(
        self, subjects: list[Subject], limits: AuthLimitSettings, *, via: str
    ) -> list[Lockout]:
        """Count one failure against each subject (one transaction) and audit each lockout it
        starts (``via``: api | chat, where the failure happened). Returns those lockouts.

        Concurrent failures are each counted once on both databases: a missing row is
        inserted with ON CONFLICT DO NOTHING, then the rows are locked (PostgreSQL: FOR
        UPDATE, in a fixed order so two transactions cannot deadlock; SQLite: the write lock
        taken at BEGIN) before they are read."""
        unique = sorted(set(subjects))
        at = self.clock()
        started: list[Lockout] = []
        with self.session() as session:
            self._insert_missing(session, unique, at)
            for subject in unique:
                lockout = self._count(session, subject, at, limits)
                if lockout is not None:
                    started.append(lockout)
            if started:
                self._forget_quiet(session, at, limits)
        for lockout in started:
            self._audit_lockout(lockout, via)
        return started

    def clear_failures(self, subject: Subject) -> None:
        """A success: the subject's failures start again from 0 (its lockout level stays,
        and decays after ``forget_s`` like any other)."""
        with self.session() as session:
            session.execute(
                update(AuthFailure)
                .where(AuthFailure.kind == subject.kind, AuthFailure.name == subject.name)
                .values(failures=0)
            )

    def begin_attempt(
        self, subjects: list[Subject], limits: AuthLimitSettings, *, via: str
    ) -> datetime | None:
        """Count an attempt against every subject before its secret is checked (one
        transaction, under the rows' locks: ``record_failures``). Returns None when the secret
        may be checked (the attempt counts as a failure until ``attempt_succeeded``), else when
        the latest lock ends: a subject is locked, or has reached its limit and this starts its
        lockout (audited; ``via``: where). A refused attempt changes no other subject."""
        unique = sorted(set(subjects))
        at = self.clock()
        started: list[Lockout] = []
        with self.session() as session:
            self._insert_missing(session, unique, at)
            rows = {s: self._row(session, s) for s in unique}
            verdicts = {
                s: before_attempt(_counter(row), at, limits_for(s, limits))
                for s, row in rows.items()
            }
            refused = [s for s, (_, go) in verdicts.items() if not go]
            for subject in refused or unique:
                before, (after, _) = _counter(rows[subject]), verdicts[subject]
                if after != before:
                    _store(rows[subject], after)
                started += _started(subject, before, after, at)
            if started:
                self._forget_quiet(session, at, limits)
        for lockout in started:
            self._audit_lockout(lockout, via)
        ends = [c.locked_until for c, _ in verdicts.values() if c.locked_until is not None]
        return max((e for e in ends if e > at), default=None) if refused else None

    def attempt_succeeded(self, address: Subject, name: Subject | None) -> None:
        """Take back the failure ``begin_attempt`` counted: the address's count drops by one,
        the name's starts again from 0 (a success proves the name's owner, not the address),
        and the address is known for the name from now (``is_known``), in one transaction."""
        at = self.clock()
        with self.session() as session:
            _take_back(session, [address])
            if name is not None:
                session.execute(
                    update(AuthFailure)
                    .where(AuthFailure.kind == name.kind, AuthFailure.name == name.name)
                    .values(failures=0)
                )
                known = known_subject(address, name)
                self._insert_missing(session, [known], at)
                session.execute(
                    update(AuthFailure)
                    .where(AuthFailure.kind == known.kind, AuthFailure.name == known.name)
                    .values(last_failure=stamp(at))  # for a known row: when last signed in
                )

    def take_back(self, subjects: list[Subject]) -> None:
        """Take back an attempt ``begin_attempt`` counted against ``subjects`` whose secret
        could not be checked (the store failed): each count drops by one, a lock stays."""
        with self.session() as session:
            _take_back(session, sorted(set(subjects)))

    def is_known(self, address: Subject, name: Subject, limits: AuthLimitSettings) -> bool:
        """Whether ``address`` signed in as ``name`` within ``known_s``: then the name's
        lock and count do not apply to its sign-ins (module docstring)."""
        known = known_subject(address, name)
        with self.reading() as session:
            seen = session.scalar(
                select(AuthFailure.last_failure).where(
                    AuthFailure.kind == known.kind, AuthFailure.name == known.name
                )
            )
        if seen is None:
            return False
        return (self.clock() - datetime.fromisoformat(seen)).total_seconds() <= limits.known_s

    def _row(self, session: Session, subject: Subject) -> AuthFailure:
        return session.scalars(
            select(AuthFailure)
            .where(AuthFailure.kind == subject.kind, AuthFailure.name == subject.name)
            .with_for_update()
        ).one()

    def _insert_missing(self, session: Session, subjects: list[Subject], at: datetime) -> None:
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        moment = stamp(at)
        rows = [
            {
                "kind": s.kind,
                "name": s.name,
                "failures": 0,
                "window_start": moment,
                "lockouts": 0,
                "locked_until": None,
                "last_failure": moment,
            }
            for s in subjects
        ]
        session.execute(insert(AuthFailure).values(rows).on_conflict_do_nothing())

    def _count(
        self, session: Session, subject: Subject, at: datetime, limits: AuthLimitSettings
    ) -> Lockout | None:
        row = self._row(session, subject)
        before = _counter(row)
        after = after_failure(before, at, limits_for(subject, limits))
        if after == before:
            return None
        _store(row, after)
        found = _started(subject, before, after, at)
        return found[0] if found else None

    def _forget_quiet(self, session: Session, at: datetime, limits: AuthLimitSettings) -> None:
        # Run at each lockout (rare), not at each failure: the table holds a row per address
        # and name ever tried, and an attacker spraying made-up names would grow it forever.
        quiet = stamp(at - timedelta(seconds=max(limits.forget_s, limits.max_lockout_s)))
        session.execute(
            delete(AuthFailure).where(AuthFailure.kind != "known", AuthFailure.last_failure < quiet)
        )
        stale = stamp(at - timedelta(seconds=limits.known_s))
        session.execute(
            delete(AuthFailure).where(AuthFailure.kind == "known", AuthFailure.last_failure < stale)
        )

    def _audit_lockout(self, lockout: Lockout, via: str) -> None:
        self.record_tool_call(
            "",
            AGENT,
            TOOL,
            {"kind": lockout.subject.kind, "name": lockout.subject.name, "via": via},
            {
                "until": stamp(lockout.until),
                "seconds": round(lockout.seconds, 3),
                "lockout": lockout.level,
            },
            ok=True,
            latency_ms=0.0,
        )


def _take_back(session: Session, subjects: list[Subject]) -> None:
    """Each subject's count drops by one (never below 0)."""
    for subject in subjects:
        session.execute(
            update(AuthFailure)
            .where(AuthFailure.kind == subject.kind, AuthFailure.name == subject.name)
            .where(AuthFailure.failures > 0)
            .values(failures=AuthFailure.failures - 1)
        )
