"""One settings object for the whole of DriftPilot.

Every value can be set from the environment with the ``DRIFTPILOT_`` prefix
(e.g. ``DRIFTPILOT_HOME=/data/dp``) or from a ``.env`` file. Store locations default to
paths under ``home`` and can each be pointed elsewhere (Postgres, a remote MLflow server).

PostgreSQL is selected by URL: ``db_url=postgresql+psycopg://user@host/db`` puts the audit
store (approvals, leases, schedules, tool calls) there, and the LangGraph checkpoints follow it
(``checkpoint_url`` unset). Optuna's storage is set on its own (``optuna_storage``), in another
database: Optuna keeps its own ``alembic_version`` table, which would collide with the audit's.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GDELT_BASE_URL = "http://data.gdeltproject.org/gdeltv2/"


class ApiSettings(BaseModel):
    """Limits and locations of the HTTP API."""

    batch_roots: list[Path] = Field(
        default_factory=list,
        description="Folders a run's batch 'path' may name files under (relative paths only). "
        "Empty: '<home>/inbox'. As JSON in the environment: '[\"/data/in\"]'.",
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Largest request body (uploads included), bytes."
    )
    max_file_bytes: int = Field(
        1024 * 1024 * 1024, gt=0, description="Largest batch file read under a batch root."
    )
    max_batch_rows: int = Field(5_000_000, gt=0, description="Most rows of one batch.")
    workers: int = Field(2, ge=1, description="Threads that execute runs in the background.")
    run_processes: int = Field(
        2,
        ge=0,
        le=32,
        description="On a SQLite home, child processes of the API that execute its runs (their "
        "Python work would stall request threads for the GIL); 0: the API process's threads.",
    )
    recover_on_start: bool = Field(
        True,
        description="At start-up, recover what a dead process left (runs left running, "
        "recorded approvals never applied) and execute pending runs, in the background.",
    )
    keep_alive_s: int = Field(
        75,
        gt=0,
        description="How long an idle client connection stays open, s. Longer than a proxy's "
        "idle timeout (60 s is common) so the client side closes first: a server closing a "
        "connection the client is sending on makes the request fail (uvicorn's default is 5 s).",
    )
    sse_ping_s: float = Field(15.0, gt=0, description="Heartbeat of run event streams, s.")
    sse_poll_s: float = Field(0.5, gt=0, description="How often a stream reads the audit, s.")
    max_upload_columns: int = Field(1_000, gt=0, description="Most columns of one batch.")
    max_line_bytes: int = Field(
        1024 * 1024, gt=0, description="Longest line of an uploaded or read CSV batch, bytes."
    )


class SchedulerSettings(BaseModel):
    """Settings of the scheduler, read from ``DRIFTPILOT_SCHEDULER_*``."""

    enabled: bool = Field(
        True, description="Fire schedules in this process (false: manage them only)."
    )
    workers: int = Field(2, ge=1, le=32, description="Threads that run firings.")
    misfire_grace_s: int = Field(
        300, ge=1, description="A firing later than this is skipped (audited 'missed')."
    )
    poll_s: float = Field(
        15.0,
        gt=0,
        description="Longest sleep of the in-process tick, s: it wakes at the next cron time, "
        "or after this to see schedules changed by another process.",
    )
    gdelt_base_url: str = Field(GDELT_BASE_URL, description="Where GDELT 2.0 files are listed.")
    gdelt_timeout_s: float = Field(30.0, gt=0, description="Timeout of one GDELT request, s.")
    max_file_bytes: int = Field(
        1024 * 1024 * 1024, gt=0, description="Largest batch file a glob source reads."
    )


class QueueSettings(BaseModel):
    """Settings of the procrastinate queue, read from ``DRIFTPILOT_QUEUE_*``."""

    tick_cron: str = Field(
        "* * * * *",
        description="When schedules are checked: a cron (5 fields, or 6 with seconds last). "
        "Schedules' own crons have minutes as their finest field: every minute is enough.",
    )
    retry_s: int = Field(2, ge=1, description="A run whose model is busy is tried again after.")
    heartbeat_s: float = Field(10.0, gt=0, description="How often a worker says it is alive.")
    stalled_s: float = Field(
        30.0, gt=0, description="A worker silent this long is dead: its jobs are reaped."
    )
    poll_s: float = Field(
        5.0, gt=0, description="How often a worker polls for jobs (LISTEN/NOTIFY is first)."
    )
    max_delay_s: float = Field(
        600.0,
        gt=0,
        description="At start, a tick this overdue is still deferred (older ones are not).",
    )
    shutdown_grace_s: float | None = Field(
        None,
        description="On SIGTERM, how long a worker waits for its runs to finish (None: as long "
        "as they take; a run cut short is finished by `driftpilot recover`).",
    )
    pool_size: int = Field(4, ge=1, description="Database connections of a deferring process.")


def normal_host(host: str) -> str:
    """``host`` with an IP literal in its one canonical text (``0::1`` and ``::1`` are the same
    address, so they must compare equal); a name unchanged."""
    import ipaddress  # not at import: settings are read everywhere

    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def parse_host_port(entry: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` as (lower-case host, port or None).

    Raises:
        ValueError: an empty host, a bad port, or characters no host name has.
    """
    host, port = entry, None
    if entry.startswith("["):
        host, closed, rest = entry[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"bad allowed host {entry!r}")
        port = rest[1:] or None
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    host = normal_host(host.strip().lower().rstrip("."))
    if not host or any(c.isspace() or c in "/@?#[]" for c in host):
        raise ValueError(f"bad allowed host {entry!r}")
    if port is None:
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port in allowed host {entry!r}")
    return host, int(port)


class AlertSettings(BaseModel):
    """Delivery settings, read from ``DRIFTPILOT_ALERTS_*``."""

    timeout_s: float = Field(
        5.0, gt=0, le=120, description="Timeout of each connect, send or read of a POST, s."
    )
    deadline_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Longest time of one delivery attempt (connect, send and answer together), "
        "s: a receiver answering a byte at a time cannot hold an alert worker longer.",
    )
    max_addresses: int = Field(
        4,
        ge=1,
        le=16,
        description="Addresses of a webhook's host one attempt connects to at most, in the "
        "resolver's order (every address is still checked).",
    )
    retries: int = Field(3, ge=0, le=10, description="Retries after a failed attempt.")
    backoff_s: float = Field(0.5, ge=0, description="Wait before the first retry, doubled after.")
    max_backoff_s: float = Field(30.0, ge=0, description="Longest wait between attempts, s.")
    workers: int = Field(2, ge=1, le=16, description="Threads that deliver alerts.")
    max_queue: int = Field(1000, ge=1, description="Deliveries waiting at most (then dropped).")
    allow_hosts: str = Field(
        "",
        max_length=4000,
        description="Comma list of webhook hosts (host or host:port) allowed to resolve to "
        "loopback, private or link-local addresses: the only way to post to an internal "
        "receiver (DRIFTPILOT_ALERTS_ALLOW_HOSTS=hooks.internal,127.0.0.1:9000). IP literals "
        "compare as addresses ([0::1] is [::1]). Cloud metadata addresses are refused even for "
        "a listed host.",
    )

    @field_validator("allow_hosts")
    @classmethod
    def _allow_hosts(cls, value: str) -> str:
        for entry in value.split(","):
            if entry.strip():
                parse_host_port(entry.strip())
        return value

    def allowed(self) -> frozenset[tuple[str, int | None]]:
        """``allow_hosts`` as (host, port) pairs: host lower-case, an IP literal canonical
        (``normal_host``), IPv6 without brackets, port None when the entry allows every
        port."""
        return frozenset(
            parse_host_port(e.strip()) for e in self.allow_hosts.split(",") if e.strip()
        )


class AuthLimitSettings(BaseModel):
    """Limits on guessing credentials, read from ``DRIFTPILOT_AUTH_*``: failed chat sign-ins
    and unknown or revoked API keys, counted per client address and per name (the user name,
    at ``name_max_failures``; an API key's id) in the audit database, so the API, the chat and
    a restart share them."""

    max_failures: int = Field(
        5, ge=1, description="Failures of one address or name within window_s that lock it."
    )
    window_s: float = Field(900.0, gt=0, description="How long failures count toward a lock, s.")
    lockout_s: float = Field(60.0, gt=0, description="The first lockout, s; each next doubles.")
    max_lockout_s: float = Field(3600.0, gt=0, description="The longest lockout, s.")
    forget_s: float = Field(
        86400.0,
        gt=0,
        description="Quiet time after which an address or name starts again from the first "
        "lockout's length, s.",
    )
    # A chat user name is locked at a much higher count than an address: per-address locks
    # stop a guesser at one address fast, and a low name threshold would let anyone shut a
    # user out everywhere with a few requests per lockout (driftpilot.store.throttle).
    name_max_failures: int = Field(
        20,
        ge=1,
        description="Failed sign-ins at one chat user name, from any addresses, within "
        "window_s that lock the name (except at its known addresses).",
    )
    known_s: float = Field(
        30 * 86400.0,
        gt=0,
        description="How long an address that signed in as a user stays exempt from that "
        "name's lock, s.",
    )


class InferenceSettings(BaseModel):
    """The inference log (``driftpilot.inference``), read from ``DRIFTPILOT_INFERENCE_*``."""

    tick_s: float = Field(
        1.0, gt=0, description="How often open windows are checked for their time limit, s."
    )
    max_request_rows: int = Field(
        10_000, ge=1, description="Most rows of one POST /models/{m}/inferences request."
    )


class SourceSettings(BaseModel):
    """Where batches may come from besides files under the batch roots, read from
    ``DRIFTPILOT_SOURCES_*``: SQL databases and S3-compatible object stores."""

    databases: dict[str, str] = Field(
        default_factory=dict,
        description="SQL databases a schedule may query, by name: {name: SQLAlchemy URL} "
        "(JSON). A schedule names one; its URL (and password) never enters a payload.",
    )
    sql_timeout_s: float = Field(60.0, gt=0, description="Longest SQL query of one batch, s.")
    object_roots: list[str] = Field(
        default_factory=list,
        description="Object-store prefixes globs may read (JSON list), e.g. "
        '["s3://bucket/batches/"]; none: object-store globs are refused.',
    )
    s3_endpoint_url: str | None = Field(
        None, description="An S3-compatible endpoint (MinIO, Ceph, ...); default: AWS."
    )
    s3_region: str | None = Field(None, description="The S3 region; default: the environment's.")
    object_timeout_s: float = Field(60.0, gt=0, description="Timeout of one object request, s.")


class Settings(BaseSettings):
    """Runtime configuration. Unset locations are derived from ``home``."""

    # validate_by_name: a field with a validation alias (llm_api_key) is still set by its name.
    # The groups below read DRIFTPILOT_<GROUP>_<FIELD> (DRIFTPILOT_API_WORKERS=4), from the
    # environment or .env alike: one split after the group's name, so field names keep their "_".
    model_config = SettingsConfigDict(
        env_prefix="DRIFTPILOT_",
        env_file=".env",
        extra="ignore",
        validate_by_name=True,
        env_nested_delimiter="_",
        env_nested_max_split=1,
    )

    home: Path = Field(Path(".driftpilot"), description="Root of every local store.")
    db_url: str = Field("", description="SQLAlchemy URL of the audit/approvals/checkpoint DB.")
    mlflow_tracking_uri: str = Field("", description="MLflow tracking URI (SQLite by default).")
    mlflow_registry_uri: str = Field("", description="MLflow registry URI; tracking URI if unset.")
    mlflow_artifact_root: str = Field("", description="Where MLflow stores artifacts.")
    optuna_storage: str = Field(
        "",
        description="Optuna RDB storage URL (SQLite under home by default; a postgresql URL "
        "lets tuning workers on several machines share a study). Not db_url's database.",
    )
    reports_dir: Path | None = Field(None, description="Evidently HTML reports.")
    report_retention: int = Field(
        20,
        ge=0,
        description="Evidently reports kept per model after a run ends: the newest N, plus "
        "every report of a run that moved the champion or waits for an approval (0: all).",
    )
    report_render: Literal["after_run", "on_request"] = Field(
        "after_run",
        description="When a run's Evidently report is rendered: after_run (the executor's or "
        "the worker's background thread, once the run's result is written) or on_request (the "
        "first GET /runs/{id}/report, `driftpilot report`, the chat). Decisions never wait.",
    )
    report_max_rows: int = Field(
        200_000,
        ge=0,
        description="Rows of each side Evidently's HTML report is rendered from (a seeded "
        "uniform sample above it; 0: every row). The report is pandas in memory; the decision's "
        "numbers always use every row.",
    )
    batches_dir: Path | None = Field(None, description="Persisted Parquet batches.")
    cache_dir: Path | None = Field(None, description="Downloaded datasets and fitted synthesizers.")
    llm: str = Field("builtin", description="Chat model spec: builtin | openai:<m> | ollama:<m>.")
    llm_base_url: str | None = Field(None, description="Base URL of an OpenAI-compatible server.")
    llm_api_key: SecretStr | None = Field(
        None,
        # Not prefixed by env_prefix: a validation alias names the variables themselves.
        validation_alias=AliasChoices("DRIFTPILOT_LLM_API_KEY", "OPENAI_API_KEY"),
        description="API key for openai:<model>; OPENAI_API_KEY when DRIFTPILOT_LLM_API_KEY "
        "is unset. A SecretStr: never shown in repr, logs or dumps.",
    )
    llm_schema_dialect: Literal["auto", "full", "openai-strict"] = Field(
        "auto",
        description="JSON schema of constrained openai:<m> decisions: 'full' (llama-server, "
        "vLLM: string lengths bound the grammar), 'openai-strict' (OpenAI's strict subset: "
        "every property required, optional ones nullable, no string lengths); 'auto': strict "
        "when llm_base_url is unset or api.openai.com.",
    )
    ollama_base_url: str = Field("http://127.0.0.1:11434", description="Ollama server.")
    llm_timeout_s: float = Field(60.0, gt=0, description="Timeout of one LLM call.")
    llm_retries: int = Field(1, ge=0, description="Retries after an invalid LLM answer.")
    llm_max_tokens: int = Field(400, ge=16, description="Longest answer of one LLM call.")
    llm_max_steps: int = Field(4, ge=1, description="Tool-calling steps per agent decision.")
    llm_transport_retries: int = Field(
        3, ge=0, description="Retries of an LLM call failing in transport (refused, 5xx, 429)."
    )
    llm_backoff_s: float = Field(
        0.5, ge=0, description="First pause before a transport retry; doubles each time."
    )
    llm_cache: Path = Field(
        Path("~/.cache/driftpilot/llm"),
        description="Where `make llm-local` builds llama-server and puts the local model.",
    )
    policy_path: Path | None = Field(
        None, description="Risk policy YAML (shipped defaults if unset)."
    )
    principal: str = Field("operator", description="Who is acting (requester of runs/approvals).")
    threads: int = Field(
        1, ge=1, description="Threads per training/tuning job (1 is fastest on 2 cores)."
    )
    seed: int = Field(42, description="Seed for training, tuning, sampling and bootstrap.")
    log_level: str = Field("INFO", description="Logging level.")
    checkpoint_path: Path | None = Field(None, description="LangGraph SQLite checkpointer file.")
    checkpoint_url: str = Field(
        "",
        description="LangGraph checkpoint database: postgresql[+psycopg]://... or "
        "sqlite:///<file>. Unset: db_url when that is PostgreSQL (the checkpoint tables sit "
        "beside the audit's), else the SQLite file checkpoint_path.",
    )
    lease_ttl_s: float = Field(
        60.0, gt=0, description="Lease of a running run on its model; renewed every third."
    )
    audit_key_path: Path | None = Field(
        None, description="Ed25519 key that signs audit checkpoints (0600, outside the DB)."
    )
    audit_checkpoint_log: str = Field(
        "", description="Where signed audit checkpoints are appended: a path or file:// URL."
    )
    audit_origin: str = Field("", description="Origin line of audit checkpoints.")

    api: ApiSettings = Field(default_factory=ApiSettings, description="The HTTP API.")
    scheduler: SchedulerSettings = Field(
        default_factory=SchedulerSettings, description="The scheduler."
    )
    queue: QueueSettings = Field(default_factory=QueueSettings, description="The task queue.")
    alerts: AlertSettings = Field(default_factory=AlertSettings, description="Webhook alerts.")
    auth: AuthLimitSettings = Field(
        default_factory=AuthLimitSettings, description="Limits on guessing credentials."
    )
    inference: InferenceSettings = Field(
        default_factory=InferenceSettings, description="The inference log and its windows."
    )
    sources: SourceSettings = Field(
        default_factory=SourceSettings, description="SQL and object-store batch sources."
    )

    @model_validator(mode="after")
    def _derive_locations(self) -> Settings:
        home = self.home.expanduser().resolve()
        self.home = home
        self.reports_dir = self.reports_dir or home / "reports"
        self.batches_dir = self.batches_dir or home / "batches"
        self.cache_dir = self.cache_dir or home / "cache"
        self.db_url = sqlalchemy_url(self.db_url or f"sqlite:///{home / 'driftpilot.db'}")
        self.mlflow_tracking_uri = self.mlflow_tracking_uri or f"sqlite:///{home / 'mlflow.db'}"
        self.mlflow_registry_uri = self.mlflow_registry_uri or self.mlflow_tracking_uri
        self.mlflow_artifact_root = self.mlflow_artifact_root or (home / "mlartifacts").as_uri()
        self.optuna_storage = sqlalchemy_url(
            self.optuna_storage or f"sqlite:///{home / 'optuna.db'}"
        )
        self.checkpoint_path = self.checkpoint_path or home / "checkpoints.db"
        self.checkpoint_url = sqlalchemy_url(self.checkpoint_url) or (
            self.db_url if is_postgres(self.db_url) else f"sqlite:///{self.checkpoint_path}"
        )
        self.audit_key_path = self.audit_key_path or home / "audit-key.pem"
        self.audit_checkpoint_log = self.audit_checkpoint_log or str(home / "audit-checkpoints.log")
        self.audit_origin = self.audit_origin or f"driftpilot/{home.name}"
        if is_postgres(self.db_url) and _same_database(self.optuna_storage, self.db_url):
            raise ValueError(
                "optuna_storage must not be db_url's database: Optuna's alembic_version table "
                "would collide with the audit store's (give Optuna its own database)"
            )
        return self

    def ensure_dirs(self) -> Settings:
        """Create the local directories; returns self so it chains."""
        for path in (self.home, self.reports_dir, self.batches_dir, self.cache_dir):
            assert path is not None
            path.mkdir(parents=True, exist_ok=True)
        return self


def is_postgres(url: str) -> bool:
    """True for a PostgreSQL URL, with or without a driver (postgresql+psycopg://)."""
    return url.startswith(("postgresql://", "postgresql+", "postgres://"))


def sqlalchemy_url(url: str) -> str:
    """A PostgreSQL URL with its driver named: SQLAlchemy reads a bare ``postgresql://`` as
    psycopg2, which is not installed; the project's driver is psycopg 3. Others unchanged."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg://" + url.removeprefix(bare)
    return url


def libpq_url(url: str) -> str:
    """The libpq/psycopg form of a SQLAlchemy PostgreSQL URL (``postgresql+psycopg://`` ->
    ``postgresql://``), password kept: psycopg, its pool and procrastinate take this form."""
    from sqlalchemy.engine import make_url  # not at import: settings are read everywhere

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _same_database(a: str, b: str) -> bool:
    from sqlalchemy.engine import make_url

    if not (is_postgres(a) and is_postgres(b)):
        return False
    ua, ub = make_url(a), make_url(b)
    return (ua.host, ua.port, ua.database) == (ub.host, ub.port, ub.database)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings().ensure_dirs()
