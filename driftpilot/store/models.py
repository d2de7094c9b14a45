"""Audit database tables (SQLAlchemy 2.0).

Chained tables (decisions, tool_calls, approvals, champion_history) are append-only: each row
stores the hash of the previous row of its table and its own hash over its content, so an
edited, deleted or re-ordered row breaks the chain and ``verify`` names it. Triggers in the
migration refuse UPDATE and DELETE on them as a first line of defence.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ManagedModel(Base):
    """A model DriftPilot keeps healthy: its data contract and its reference window."""

    __tablename__ = "models"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    source: Mapped[str] = mapped_column(String(500))
    target: Mapped[str] = mapped_column(String(200))
    time_col: Mapped[str] = mapped_column(String(200))
    numeric: Mapped[str] = mapped_column(Text, doc="JSON list of numeric features")
    categorical: Mapped[str] = mapped_column(Text, doc="JSON list of categorical features")
    family: Mapped[str] = mapped_column(String(50))
    metric: Mapped[str] = mapped_column(String(50), doc="the primary metric (of its task)")
    task: Mapped[str] = mapped_column(
        String(20), default="binary", server_default="binary", doc="binary|multiclass|regression"
    )
    trainer: Mapped[str | None] = mapped_column(
        String(300), nullable=True, doc="the owner's training function, package.module:fit"
    )
    lineage: Mapped[str | None] = mapped_column(
        Text, nullable=True, doc="JSON: an adopted model's source URI, version, who adopted it"
    )
    reference_path: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    baseline: Mapped[float | None] = mapped_column(
        Float, nullable=True, doc="the champion's metric on labelled rows later than its window"
    )
    baseline_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    baseline_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    holdout_path: Mapped[str | None] = mapped_column(
        String(1000), nullable=True, doc="those rows: they calibrate estimates without labels"
    )
    windowing: Mapped[str | None] = mapped_column(
        Text, nullable=True, doc='JSON: how its inference log closes windows, {"rows", "minutes"}'
    )
    created_at: Mapped[str] = mapped_column(String(40))


class Run(Base):
    """One control run: one model, one batch."""

    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    batch_id: Mapped[str] = mapped_column(String(200))
    trigger: Mapped[str] = mapped_column(String(50))
    requested_by: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(40), index=True)
    outcome: Mapped[str | None] = mapped_column(String(80), nullable=True)
    summary: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[str] = mapped_column(String(40))


class BatchRecord(Base):
    """Every batch seen: accepted or quarantined (with its reason), never dropped."""

    __tablename__ = "batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    batch_id: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    n_rows: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    run_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[str] = mapped_column(String(40))


class StepEffect(Base):
    """Idempotency ledger: the result of a mutating step, once per (run, step)."""

    __tablename__ = "step_effects"
    __table_args__ = (UniqueConstraint("run_id", "step"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(40))
    step: Mapped[str] = mapped_column(String(100))
    result: Mapped[str] = mapped_column(Text)
    created_at: Mapped[str] = mapped_column(String(40))


class Lease(Base):
    """One run per model at a time: the holder renews ``expires_at`` while it works."""

    __tablename__ = "leases"
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(80))
    holder: Mapped[str] = mapped_column(String(200), doc="host:pid of the process")
    acquired_at: Mapped[str] = mapped_column(String(40))
    expires_at: Mapped[str] = mapped_column(String(40))


class ApiKey(Base):
    """An API key: only the SHA-256 of its secret is stored; the principal comes from here."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    principal: Mapped[str] = mapped_column(String(200), index=True)
    role: Mapped[str] = mapped_column(String(20), doc="viewer | operator | approver | admin")
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[str] = mapped_column(String(40))
    revoked_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class Chained:
    """Columns of every hash-chained table."""

    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[str] = mapped_column(String(40))


class Decision(Chained, Base):
    __tablename__ = "decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(40), index=True)
    agent: Mapped[str] = mapped_column(String(50))
    action: Mapped[str] = mapped_column(String(50))
    rationale: Mapped[str] = mapped_column(Text)
    evidence: Mapped[str] = mapped_column(Text, doc="JSON")
    backend: Mapped[str] = mapped_column(String(50))
    llm_model: Mapped[str] = mapped_column(String(200))
    fallback: Mapped[bool] = mapped_column(Boolean)
    flags: Mapped[str] = mapped_column(Text, doc="JSON list, e.g. citation mismatches")
    tokens_in: Mapped[int] = mapped_column(Integer)
    tokens_out: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)


class ToolCall(Chained, Base):
    __tablename__ = "tool_calls"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(40), index=True)
    agent: Mapped[str] = mapped_column(String(50))
    tool: Mapped[str] = mapped_column(String(100))
    args: Mapped[str] = mapped_column(Text, doc="JSON")
    result: Mapped[str] = mapped_column(Text, doc="JSON summary")
    ok: Mapped[bool] = mapped_column(Boolean)
    latency_ms: Mapped[float] = mapped_column(Float)


class Approval(Chained, Base):
    """Approval events: a 'request' row, later one 'decision' row (approve / reject)."""

    __tablename__ = "approvals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    principal: Mapped[str] = mapped_column(String(200), doc="requester or approver")
    decision: Mapped[str] = mapped_column(String(20), doc="pending | approve | reject")
    comment: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text, doc="JSON")


class ChampionChange(Chained, Base):
    """Every move of the champion alias: answers 'which version was champion at time T'."""

    __tablename__ = "champion_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    previous_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(20), doc="bootstrap | promote | rollback")
    run_id: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200))


class Mutation(Chained, Base):
    """Write-ahead record of every registry mutation: an ``intent`` row before it happens, an
    ``applied`` row after (``reconciled`` when a resume found it had already happened)."""

    __tablename__ = "mutations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(80), index=True)
    step: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(50), doc="register | promote | rollback | ...")
    phase: Mapped[str] = mapped_column(
        String(20), doc="intent | applied | reconciled | void | failed"
    )
    args: Mapped[str] = mapped_column(Text, doc="JSON")
    result: Mapped[str] = mapped_column(Text, doc="JSON")


CHAINED: tuple[type[Any], ...] = (Decision, ToolCall, Approval, ChampionChange, Mutation)


# -- schedules and alerts (driftpilot.scheduling, driftpilot.alerts) -----------------------
# Mutable configuration, not chained: who created, changed, fired or delivered what is audited
# as tool calls (agents "scheduler" and "alerts"). A schedule's newest audited firing is
# also when it fired last (APScheduler's ``apscheduler_jobs`` of 0004 is dropped by 0008).


class Schedule(Base):
    """A cron that starts control runs of one model on the newest batch of a source."""

    __tablename__ = "schedules"
    cron_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    schedule: Mapped[str] = mapped_column(String(200), doc="5-field cron expression")
    timezone: Mapped[str] = mapped_column(String(100), doc="IANA time zone of the cron")
    enabled: Mapped[bool] = mapped_column(Boolean)
    payload: Mapped[str] = mapped_column(Text, doc="JSON: model and batch source")
    multitask_strategy: Mapped[str] = mapped_column(String(20), doc="reject | enqueue")
    meta: Mapped[str] = mapped_column(Text, default="{}", doc="JSON metadata")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[str] = mapped_column(String(40))


class ScheduleBatch(Base):
    """The batches a schedule consumed (claimed before its run is submitted): a batch is
    never run twice by one schedule, even by two schedulers racing on one database."""

    __tablename__ = "schedule_batches"
    __table_args__ = (UniqueConstraint("cron_id", "batch_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cron_id: Mapped[str] = mapped_column(String(40), index=True)
    batch_key: Mapped[str] = mapped_column(String(500), doc="source-specific identity")
    batch_id: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))


class Webhook(Base):
    """Where a model's alerts are posted. The URL may carry a secret: it is never shown or
    audited in full (see ``driftpilot.alerts.webhooks.redact_url``). ``secret`` is the key that
    signs every delivery (kept as is: signing needs it), shown once at creation or rotation."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    format: Mapped[str] = mapped_column(String(20), doc="json | slack")
    events: Mapped[str] = mapped_column(Text, doc="JSON list of event kinds")
    description: Mapped[str] = mapped_column(String(500), default="")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[str] = mapped_column(String(40))
    secret: Mapped[str] = mapped_column(String(100), doc="HMAC-SHA256 key of the signature")


class User(Base):
    """A password user of the chat (``driftpilot users add``): the principal is the name under
    the one identity rule; only a salted scrypt hash of the password is stored."""

    __tablename__ = "users"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), doc="viewer | operator | approver | admin")
    password_hash: Mapped[str] = mapped_column(String(300), doc="scrypt$n$r$p$salt$hash (hex)")
    created_at: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[str] = mapped_column(String(40))
    disabled_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class Note(Base):
    """A person's context note on a model (a deploy, an ETL change, a campaign): data the
    drift analyst reads, never instructions. Append-only (the migration's triggers refuse
    UPDATE and DELETE); each note's audit record is a tool call (agent ``notes``) holding the
    SHA-256 of ``text``, written in the same transaction."""

    __tablename__ = "notes"
    __table_args__ = (Index("ix_notes_model_at", "model", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text, doc="sanitised, at most NOTE_MAX_CHARS characters")
    at: Mapped[str] = mapped_column(String(40), doc="when the noted thing happened (UTC)")
    author: Mapped[str] = mapped_column(String(200), doc="the normalised principal")
    sha256: Mapped[str] = mapped_column(String(64), doc="of text, as audited")
    created_at: Mapped[str] = mapped_column(String(40))


class AuthFailure(Base):
    """Failed sign-ins and unknown API keys of one address or name (``driftpilot.store.
    throttle``): mutable counters, not chained; each lockout they start is audited as a tool
    call (agent ``auth``)."""

    __tablename__ = "auth_failures"
    kind: Mapped[str] = mapped_column(
        String(20), primary_key=True, doc="address | user | key | known"
    )
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, doc="failures in the current window")
    window_start: Mapped[str] = mapped_column(String(40), doc="the window's first failure")
    lockouts: Mapped[int] = mapped_column(Integer, doc="lockouts so far: each doubles the next")
    locked_until: Mapped[str | None] = mapped_column(String(40), nullable=True)
    last_failure: Mapped[str] = mapped_column(String(40))


class InferenceRow(Base):
    """One prediction a model served, logged by its service (``driftpilot.inference``): its
    row id, event time, features, prediction and probabilities (``payload``, JSON), and the
    label when it comes. ``id`` is the arrival order. Idempotent by (model, row id): a retried
    row with the same ``digest`` writes nothing, one with another digest is refused. A row is
    in the window whose id range holds its ``id`` (``InferenceWindow``), open until then."""

    __tablename__ = "inference_rows"
    __table_args__ = (
        UniqueConstraint("model", "row_id", name="uq_inference_rows_model_row"),
        Index("ix_inference_rows_model_id", "model", "id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200))
    row_id: Mapped[str] = mapped_column(String(200))
    event_time: Mapped[str] = mapped_column(String(40), doc="UTC ISO 8601, or a number as text")
    payload: Mapped[str] = mapped_column(Text, doc="JSON object: the row as logged")
    digest: Mapped[str] = mapped_column(String(64), doc="SHA-256 of the canonical payload")
    received_at: Mapped[str] = mapped_column(String(40))
    label: Mapped[str | None] = mapped_column(Text, nullable=True, doc="JSON value, set once")
    labelled_at: Mapped[str | None] = mapped_column(String(40), nullable=True)


class InferenceWindow(Base):
    """A closed window of a model's inference log: its rows are the model's rows with ids from
    ``first_id`` to ``last_id`` (a model's windows follow each other in id order, and rows
    after its newest window's ``last_id`` are open), the batch they became and the run
    (trigger ``window``) that batch was given."""

    __tablename__ = "inference_windows"
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    n_rows: Mapped[int] = mapped_column(Integer)
    first_id: Mapped[int] = mapped_column(Integer)
    last_id: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(20), doc="rows | minutes | flush")
    opened_at: Mapped[str] = mapped_column(String(40), doc="when its first row was received")
    closed_at: Mapped[str] = mapped_column(String(40))
    batch_id: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
