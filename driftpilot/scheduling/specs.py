"""What a schedule is: its cron, time zone, batch source and multitask strategy, validated
(pydantic), and what the API shows of it and of its firings.

A schedule has LangGraph Platform's cron shape (``cron_id``, ``schedule``, ``timezone``,
``enabled``, ``next_run_date``, ``payload``) plus ``multitask_strategy`` and ``created_by``.
Its payload names the model and the batch source (``driftpilot.scheduling.sources``):
``{"glob": pattern}`` (a pattern under a batch root, or an ``s3://`` URL glob under an
object-store root), ``{"dataset": name, "start"?}``, ``{"gdelt": {}}`` or
``{"sql": {"database": name, "query": q}}`` (a named database: its URL is in the settings,
never in a payload).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from driftpilot.core.errors import ConfigError
from driftpilot.scheduling.cron import cron_trigger, zone
from driftpilot.sources.sql import as_utc, check_query
from driftpilot.store.models import ToolCall

AGENT = "scheduler"
FIRE_TOOL = "schedule.fire"
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
DATABASE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
OBJECT_SCHEMES = ("s3://",)

FiringOutcome = Literal[
    "fired", "skipped-busy", "no-new-batch", "error", "missed", "skipped-overlap", "disabled"
]
OK_OUTCOMES: set[str] = {"fired", "no-new-batch"}


# -- schedule payloads -------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_glob(pattern: str) -> str:
    """A glob pattern relative to a batch root: no absolute path, '..', '~', '\\' or NUL, and
    '**' only as a whole path segment.

    Raises:
        ConfigError: the pattern could leave its root, or is not a valid glob.
    """
    pure = PurePosixPath(pattern)
    if (
        not pattern.strip()
        or "\x00" in pattern
        or "\\" in pattern
        or pure.is_absolute()
        or ".." in pure.parts
        or Path(pattern).drive
        or pattern.startswith("~")
        or any("**" in part and part != "**" for part in pure.parts)
    ):
        raise ConfigError(
            "glob must be relative to an allowed batch root, without '..', '~' or '\\' "
            "(e.g. 'flights/*.parquet')"
        )
    return pattern


def is_object_glob(pattern: str) -> bool:
    """Whether a glob names objects in an object store (``s3://bucket/prefix/*.parquet``)."""
    return pattern.lower().startswith(OBJECT_SCHEMES)


def check_object_url(pattern: str) -> str:
    """An object-store glob's shape (which roots it may read is checked when it is read,
    against ``settings.sources.object_roots``): ``s3://bucket/...``, without '..', '\\', NUL
    or a '**' inside a segment.

    Raises:
        ConfigError: the URL is not such a glob.
    """
    scheme, _, rest = pattern.partition("://")
    bucket, _, key = rest.partition("/")
    parts = key.split("/")
    if (
        not bucket
        or not key
        or "\x00" in pattern
        or "\\" in pattern
        or any(p in ("..", ".") for p in parts)
        or any("**" in p and p != "**" for p in parts)
    ):
        raise ConfigError(
            f"an object-store glob is {scheme}://bucket/prefix/pattern, without '..' or '\\' "
            "(e.g. 's3://batches/flights/*.parquet')"
        )
    return pattern


class GlobSource(_Strict):
    glob: str = Field(
        min_length=1,
        max_length=500,
        description="CSV/Parquet files under an allowed batch root, or objects under an "
        "allowed object-store root (s3://...); the newest one is run.",
        examples=["flights/*.parquet", "s3://batches/flights/*.parquet"],
    )

    @field_validator("glob")
    @classmethod
    def _safe(cls, value: str) -> str:
        try:
            return check_object_url(value) if is_object_glob(value) else check_glob(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc


class DatasetSource(_Strict):
    dataset: str = Field(
        pattern=r"^[a-z0-9_]+$", max_length=50, description="A built-in dataset: flights, ..."
    )
    start: str | None = Field(
        None,
        max_length=100,
        description="The first batch to run (earlier ones are skipped), e.g. '2013-02'.",
    )
    max_rows: int | None = Field(
        None, ge=100, le=1_000_000, description="A seeded sample of this many rows per batch."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)


class GdeltOptions(_Strict):
    max_rows: int | None = Field(None, ge=1, le=1_000_000, description="Keep the first N rows.")


class GdeltSource(_Strict):
    gdelt: GdeltOptions = Field(
        default_factory=GdeltOptions, description="The newest GDELT 2.0 event export."
    )


class SqlQuery(_Strict):
    database: str = Field(
        pattern=DATABASE_NAME,
        description="A database named in DRIFTPILOT_SOURCES_DATABASES (its URL and password "
        "stay in the settings).",
    )
    query: str = Field(
        min_length=1,
        max_length=20_000,
        description="One SELECT whose rows are the batch. :start and :end, the firing's window "
        "(the previous batch's end, the firing's time], are bound parameters, never formatted "
        "into the text; no other bind. It runs read-only, under a timeout, for at most "
        "max_batch_rows rows.",
        examples=["SELECT * FROM predictions WHERE logged_at > :start AND logged_at <= :end"],
    )
    since: datetime | None = Field(
        None,
        description="The first window's start (UTC when no offset is given); default: the "
        "newest time the model's champion was trained on.",
    )

    @field_validator("query")
    @classmethod
    def _one_select(cls, value: str) -> str:
        try:
            check_query(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("since")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)


class SqlSource(_Strict):
    sql: SqlQuery = Field(description="The rows a SQL query returns for the firing's window.")


Source = GlobSource | DatasetSource | GdeltSource | SqlSource
SOURCE_KINDS = ("glob", "dataset", "gdelt", "sql")


class Payload(_Strict):
    """What a firing runs: the managed model and where its batches come from."""

    model: str = Field(pattern=MODEL_NAME, description="The managed model.")
    source: Source = Field(
        description="{'glob': pattern} | {'dataset': name, 'start'?} | {'gdelt': {}} | "
        "{'sql': {'database': name, 'query': q}}"
    )


MultitaskStrategy = Literal["reject", "enqueue"]


def _check_cron(schedule: str | None, timezone: str | None) -> None:
    try:
        if timezone is not None:
            zone(timezone)
        if schedule is not None:
            cron_trigger(schedule, timezone or "UTC")
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc


class ScheduleSpec(_Strict):
    """A new schedule (LangGraph Platform's cron fields, plus the batch source)."""

    schedule: str = Field(
        max_length=200,
        description="Five-field cron: minute hour day-of-month month day-of-week "
        "(0 or 7 = Sunday).",
        examples=["* * * * *", "0 6 * * mon-fri"],
    )
    timezone: str = Field("UTC", max_length=100, description="IANA time zone of the schedule.")
    enabled: bool = True
    payload: Payload
    multitask_strategy: MultitaskStrategy = Field(
        "reject",
        description="The model is busy at a firing: 'reject' skips it (audited); 'enqueue' "
        "submits the run to wait for the model (one waiting run per schedule).",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_cron(self) -> ScheduleSpec:
        _check_cron(self.schedule, self.timezone)
        return self


class ScheduleUpdate(_Strict):
    """A change to a schedule: only the fields given change."""

    schedule: str | None = Field(None, max_length=200)
    timezone: str | None = Field(None, max_length=100)
    enabled: bool | None = None
    payload: Payload | None = None
    multitask_strategy: MultitaskStrategy | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _valid_cron(self) -> ScheduleUpdate:
        _check_cron(self.schedule, self.timezone)
        return self


class Firing(BaseModel):
    """One firing of a schedule, as audited."""

    cron_id: str
    outcome: FiringOutcome
    at: str
    scheduled_at: str | None = None
    run_id: str | None = None
    batch_id: str | None = None
    detail: str = ""


class ScheduleView(BaseModel):
    """A schedule as LangGraph Platform shows a cron (``assistant_id`` is the model)."""

    cron_id: str
    assistant_id: str
    model: str
    schedule: str
    timezone: str
    enabled: bool
    next_run_date: str | None = Field(description="Next firing (UTC); null while paused.")
    payload: dict[str, Any]
    multitask_strategy: MultitaskStrategy
    metadata: dict[str, Any]
    created_by: str
    created_at: str
    updated_at: str
    last_firing: Firing | None = None


def source_kind(payload: dict[str, Any]) -> str:
    """The kind of a payload's source: glob (``s3`` for an object-store glob), dataset,
    gdelt or sql; ``unknown`` otherwise."""
    source = payload.get("source") or {}
    kind = next((k for k in SOURCE_KINDS if k in source), "unknown")
    if kind == "glob" and isinstance(source["glob"], str) and is_object_glob(source["glob"]):
        return "s3"
    return kind


def firing_of(row: ToolCall) -> Firing:
    """The firing an audited ``schedule.fire`` tool call records."""
    args = json.loads(row.args)
    result = json.loads(row.result)
    return Firing(
        cron_id=row.run_id,
        outcome=result.get("outcome", "error"),
        at=row.created_at,
        scheduled_at=args.get("scheduled_at"),
        run_id=result.get("run_id"),
        batch_id=result.get("batch_id"),
        detail=result.get("detail", ""),
    )
