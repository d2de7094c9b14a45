"""Batch sources of schedules: which batch a firing runs, and which batches a model has seen.

- ``{"glob": "flights/*.parquet"}``: the newest CSV/Parquet file (by modification time) that
  the pattern matches under an allowed batch root, if this schedule has not consumed it yet
  (a file rewritten in place is new) and the model has not seen its content (a run of the
  model had the same content hash: audited ``no-new-batch`` with that run). Older unconsumed
  files are passed over, and counted in the audit: a schedule follows the newest data, it
  does not replay a backlog.
- ``{"dataset": "flights", "start": "2013-02"}``: the next batch of a built-in dataset, in
  time order, from ``start`` on; without ``start``, from the batch after the newest one the
  model has seen (``max_rows``/``seed``: a seeded sample of each batch). A batch the model
  has seen is never run again: one a run of the model was given (the whole batch's content
  hash, taken before any sampling, or its batch id when the run came from this dataset), or
  one that begins at or before the newest row the champion was trained on (the bootstrap's
  window or the current champion's).
  An ``s3://bucket/prefix/*.parquet`` glob does the same in an object store, under
  ``DRIFTPILOT_SOURCES_OBJECT_ROOTS`` (``driftpilot.sources.objects``).
- ``{"gdelt": {}}``: the newest GDELT 2.0 15-minute event export (``lastupdate.txt`` of
  ``DRIFTPILOT_SCHEDULER_GDELT_BASE_URL``), with the built-in GDELT model's columns
  (``tools.gdelt_model.model_frame``). Offline, the firing is audited as an error.
- ``{"sql": {"database": name, "query": q, "since"?}}``: the rows the query returns for the
  firing's window ``(start, end]``, bound as ``:start``/``:end`` (``driftpilot.sources.sql``:
  read-only, timed out, bounded). ``end`` is the firing's scheduled time; ``start`` is the
  ``end`` of the schedule's previous SQL batch, else ``since``, else the newest time the
  champion was trained on. A window without rows is no new batch and is not claimed: the
  next window starts where the previous batch ended, so rows committed late within it are
  still read. A window with more rows than a batch may hold (``api.max_batch_rows``: a
  first firing with months behind it) is cut: its end moves earlier until the rows fit
  (``sources.sql.read_window``), the firing's detail says so, and the next firing goes on
  from the cut end. Ledger key ``sql:<end>``, the end read.

``unseen_dataset_batches`` is the one rule of "the next batch a model has not seen": dataset
schedules and the chat's ``/run MODEL`` (``ui.chat``) both call it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from driftpilot.core.errors import DataError
from driftpilot.core.settings import SchedulerSettings
from driftpilot.scheduling.specs import (
    DatasetSource,
    GdeltOptions,
    GlobSource,
    Payload,
    SqlQuery,
    SqlSource,
    check_glob,
    is_object_glob,
)
from driftpilot.sources.sql import EPOCH, Window, as_utc, database_url, read_window
from driftpilot.store.models import BatchRecord, ManagedModel, Run, StepEffect

if TYPE_CHECKING:
    from collections.abc import Callable

    import polars as pl

    from driftpilot.runs.plane import ControlPlane
    from tools.data import Batch

SUFFIXES = (".csv", ".parquet")
SQL_KEY = "sql:"


@dataclass
class Picked:
    """A batch a firing chose: its rows, id, ledger key, how it was found, and what its run
    records about where it came from (its metadata, beside the schedule id)."""

    frame: pl.DataFrame
    batch_id: str
    key: str
    detail: str
    origin: dict[str, Any] = dataclasses.field(default_factory=dict)
    seen_by: str | None = None  # a run of the model that had this content already


def unseen_dataset_batches(
    plane: ControlPlane, model: str, dataset: str, start: str | None = None
) -> list[str]:
    """The batches of a built-in dataset ``model`` may run next, in time order: from
    ``start`` on when given, else after the newest batch the model has seen; never one it
    has seen (``seen_batches``).

    Raises:
        NotFound: unknown dataset, or ``start`` is not one of its batches.
    """
    from driftpilot.sources.resolver import UnknownBatch, dataset_batches

    batches = dataset_batches(dataset, plane.settings)
    ids = list(batches)
    if start is not None and start not in batches:
        raise UnknownBatch(dataset, start, ids)
    return unseen_batches(ids, seen_batches(plane, model, dataset, batches), start)


def seen_batches(
    plane: ControlPlane, model: str, dataset: str, batches: dict[str, Batch]
) -> set[str]:
    """The ids of the dataset's batches ``model`` has seen: one a run of the model was
    given (by content hash, or by batch id when the run came from this dataset), or one
    that begins at or before the newest row its champion was trained on."""
    hashes, ids = seen_by_runs(plane, model, dataset)
    horizon = trained_until(plane, model)
    return {
        batch_id
        for batch_id, batch in batches.items()
        if batch_id in ids
        or batch.info.content_hash in hashes
        or (horizon is not None and _at_or_before(batch.info.start, horizon))
    }


def seen_by_runs(
    plane: ControlPlane, model: str, dataset: str | None
) -> tuple[dict[str, str], set[str]]:
    """The content hashes of the batches the model's runs were given (filed, submitted,
    and whole before sampling), each with a run that had it, and the batch ids of its
    runs on ``dataset``. A cancelled run never ran, and a failed one never decided: their
    batches are not seen."""
    from driftpilot.runs.plane import METADATA_STEP

    store = plane.store
    source = store.get(ManagedModel, model).source
    runs = [r for r in store.list_rows(Run, Run.model == model) if r.status != "failed"]
    with store.session() as session:
        stored = session.execute(
            select(StepEffect.run_id, StepEffect.result).where(
                StepEffect.step == METADATA_STEP,
                StepEffect.run_id.in_([r.id for r in runs]),
            )
        ).all()
    metadata = {run_id: json.loads(result) for run_id, result in stored}
    filed = store.list_rows(BatchRecord, BatchRecord.model == model)
    hashes = {r.content_hash: r.run_id for r in filed}
    ids: set[str] = set()
    for run in runs:
        meta = metadata.get(run.id, {})
        given = json.loads(run.summary or "{}").get("input", {}).get("batch", {})
        for digest in (meta.get("batch_hash"), given.get("content_hash")):
            if digest:
                hashes.setdefault(digest, run.id)
        if dataset is not None and dataset in (source, meta.get("dataset")):
            ids.add(run.batch_id)
    return hashes, ids


def trained_until(plane: ControlPlane, model: str) -> datetime | float | None:
    """The newest time in the rows the model's bootstrap champion and current champion
    were trained on (their windows), or None when neither window is on disk."""
    import polars as pl

    from driftpilot.runs.plane import bootstrap_id

    row = plane.store.get(ManagedModel, model)
    bootstrap = plane.store.effect(bootstrap_id(model), "promote") or {}
    paths = {p for p in (bootstrap.get("window_path"), row.reference_path) if p}
    newest: list[Any] = []
    for path in paths:
        if Path(path).is_file():
            times = pl.read_parquet(path, columns=[row.time_col])[row.time_col]
            if times.len() and times.null_count() < times.len():
                newest.append(times.max())
    comparable = [t for t in newest if isinstance(t, (datetime, int, float))]
    return max(comparable, key=_sort_key) if comparable else None


class Sources:
    """Picks the batch of a firing from its schedule's source (module docstring).

    ``roots``: where glob sources may read. ``consumed``: the ledger keys the schedule has
    taken already (``schedule_batches``). ``clock``: the time a firing reads when it is not
    given its scheduled time (default: the store's clock)."""

    def __init__(
        self,
        plane: ControlPlane,
        roots: list[Path],
        conf: SchedulerSettings,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.plane = plane
        self.roots = roots
        self.conf = conf
        self.clock = clock or plane.store.clock

    def check(self, payload: Payload) -> None:
        """What a source needs of the settings, checked when a schedule is written: a SQL
        source's database is configured; an object-store glob is under an object root.

        Raises:
            ConfigError: it is not.
        """
        source = payload.source
        if isinstance(source, SqlSource):
            database_url(source.sql.database, self.plane.settings.sources)
        elif isinstance(source, GlobSource) and is_object_glob(source.glob):
            from driftpilot.sources.objects import check_object_glob

            check_object_glob(source.glob, self.plane.settings.sources)

    def pick(
        self, payload: Payload, consumed: set[str], at: datetime | None = None
    ) -> Picked | None:
        """The batch a firing runs, None when there is no new one. ``at``: the firing's
        scheduled time (default: the clock's), the end of a SQL source's window.

        Raises:
            DriftPilotError (or an I/O error): an unusable source (the firing's outcome).
        """
        source = payload.source
        if isinstance(source, DatasetSource):  # its seen batches are passed over in order
            return self._pick_dataset(payload.model, source, consumed)
        if isinstance(source, SqlSource):
            picked = self._pick_sql(payload.model, source.sql, consumed, at or self.clock())
        elif isinstance(source, GlobSource) and is_object_glob(source.glob):
            picked = self._pick_object(source.glob, consumed)
        elif isinstance(source, GlobSource):
            picked = self._pick_file(source.glob, consumed)
        else:
            picked = self._pick_gdelt(payload.model, source.gdelt, consumed)
        if picked is not None:
            hashes, _ = seen_by_runs(self.plane, payload.model, None)
            picked.seen_by = hashes.get(picked.origin.get("batch_hash", ""))
        return picked

    def _pick_file(self, pattern: str, consumed: set[str]) -> Picked | None:
        import polars as pl

        from tools.data import content_hash, load_table

        check_glob(pattern)
        found: list[tuple[int, str, Path, int]] = []
        for root in self.roots:
            base = Path(root).expanduser().resolve()
            if not base.is_dir():
                continue
            for match in base.glob(pattern):
                real = match.resolve()
                if (
                    not real.is_relative_to(base)
                    or real.suffix.lower() not in SUFFIXES
                    or not real.is_file()
                ):
                    continue
                stat = real.stat()
                found.append(
                    (stat.st_mtime_ns, real.relative_to(base).as_posix(), real, stat.st_size)
                )
        if not found:
            return None
        mtime, relative, path, size = max(found)
        key = f"glob:{relative}:{mtime}:{size}"
        if key in consumed:
            return None
        if size > self.conf.max_file_bytes:
            raise DataError(
                f"the newest matching file has {size} bytes; the limit is "
                f"{self.conf.max_file_bytes}"
            )
        passed = sum(
            1 for m, r, _, s in found if f"glob:{r}:{m}:{s}" not in consumed and r != relative
        )
        frame = load_table(path)
        if not isinstance(frame, pl.DataFrame):
            frame = frame.collect()
        detail = f"newest of {len(found)} matching files"
        if passed:
            detail += f"; {passed} older unconsumed file(s) passed over"
        return Picked(frame, path.stem, key, detail, {"batch_hash": content_hash(frame)})

    def _pick_object(self, url_glob: str, consumed: set[str]) -> Picked | None:
        """The newest unconsumed object an ``s3://`` glob matches (``sources.objects``)."""
        from driftpilot.sources.objects import check_object_glob, pick_newest
        from tools.data import content_hash

        conf = self.plane.settings.sources
        check_object_glob(url_glob, conf)
        found = pick_newest(url_glob, consumed, conf, self.conf.max_file_bytes)
        if found is None:
            return None
        frame, batch_id, key, detail = found
        return Picked(frame, batch_id, key, detail, {"batch_hash": content_hash(frame)})

    def _pick_sql(
        self, model: str, options: SqlQuery, consumed: set[str], at: datetime
    ) -> Picked | None:
        end = as_utc(at)
        key = f"{SQL_KEY}{end.isoformat()}"
        if key in consumed:
            return None
        start = sql_start(self.plane, model, options.since, consumed)
        if end <= start:
            return None
        url = database_url(options.database, self.plane.settings.sources)
        return sql_batch(self.plane, model, url, options.query, Window(start, end), key)

    def _pick_dataset(self, model: str, source: DatasetSource, consumed: set[str]) -> Picked | None:
        from driftpilot.sources.resolver import dataset_batches
        from tools.datasets import SPECS

        batches = dataset_batches(source.dataset, self.plane.settings)
        candidates = unseen_dataset_batches(self.plane, model, source.dataset, source.start)
        for batch_id in candidates:
            key = f"dataset:{source.dataset}:{batch_id}"
            if key in consumed:
                continue
            batch = batches[batch_id]
            frame = batch.frame
            if source.max_rows is not None and frame.height > source.max_rows:
                frame = frame.sample(n=source.max_rows, seed=source.seed).sort(
                    SPECS[source.dataset].time_col
                )
            left = len(candidates) - candidates.index(batch_id) - 1
            origin = {
                "dataset": source.dataset,
                # The whole batch's hash, taken before sampling: a sample of a batch the model
                # has seen hashes differently, the whole batch does not.
                "batch_hash": batch.info.content_hash,
                "sampled_rows": frame.height if frame.height < batch.frame.height else None,
            }
            detail = f"{source.dataset} batch; {left} unseen after it"
            return Picked(frame, batch_id, key, detail, origin)
        return None

    def _pick_gdelt(self, model: str, options: GdeltOptions, consumed: set[str]) -> Picked | None:
        from tools.data import content_hash
        from tools.gdelt import download, fetch_file_list, parse_export
        from tools.gdelt_model import model_frame

        timeout = self.conf.gdelt_timeout_s
        exports = [
            e
            for e in fetch_file_list(self.conf.gdelt_base_url, timeout=timeout)
            if e.kind == "export"
        ]
        if not exports:
            return None
        newest = max(exports, key=lambda e: e.timestamp)
        stamp = newest.timestamp.strftime("%Y%m%d%H%M%S")
        key = f"gdelt:{stamp}"
        if key in consumed:
            return None
        horizon = trained_until(self.plane, model)
        if horizon is not None and _at_or_before(newest.timestamp, horizon):
            # Before GDELT publishes the next window, the newest export is one the champion
            # was trained on (its reference is the newest exports): nothing new to judge.
            return None
        assert self.plane.settings.cache_dir is not None
        export = download(newest, self.plane.settings.cache_dir, timeout=timeout)
        frame = model_frame(parse_export(export))
        origin = {"batch_hash": content_hash(frame)}  # the whole export, before max_rows
        if options.max_rows is not None:
            frame = frame.head(options.max_rows)
        detail = f"GDELT 2.0 export of {stamp} UTC"
        return Picked(frame, f"gdelt-{stamp}", key, detail, origin)


def sql_start(
    plane: ControlPlane, model: str, since: datetime | None, consumed: set[str]
) -> datetime:
    """Where a SQL schedule's next window starts: the end of its newest SQL batch (ledger
    keys ``sql:<end>``), else ``since``, else the newest time the model's champion was
    trained on (when its time column holds times), else the Unix epoch."""
    ends = [
        as_utc(datetime.fromisoformat(k[len(SQL_KEY) :])) for k in consumed if k.startswith(SQL_KEY)
    ]
    if ends:
        return max(ends)
    if since is not None:
        return as_utc(since)
    horizon = trained_until(plane, model)
    return as_utc(horizon) if isinstance(horizon, datetime) else EPOCH


def sql_batch(
    plane: ControlPlane, model: str, url: str, query: str, window: Window, key: str
) -> Picked | None:
    """The rows ``query`` returns for ``window`` on the database at ``url`` as a batch of
    ``model`` (id ``sql-<end>``), None when there are none. The URL is not in it. When the
    window holds more than ``api.max_batch_rows`` rows its end is cut earlier
    (``sources.sql.read_window``): the batch's id, ledger key (``sql:<cut end>``, not ``key``)
    and window are the cut window's, and its detail says the window was cut.

    Raises:
        ConfigError, DataError: the query was refused or failed (``sources.sql.read_window``).
    """
    from tools.data import content_hash

    settings = plane.settings
    row = plane.store.get(ManagedModel, model)
    frame, read = read_window(
        url,
        query,
        window,
        timeout_s=settings.sources.sql_timeout_s,
        max_rows=settings.api.max_batch_rows,
        time_col=row.time_col,
    )
    if frame.height == 0:
        return None
    end = as_utc(read.end)
    origin = {
        "batch_hash": content_hash(frame),
        "sql_window": {"start": read.start.isoformat(), "end": end.isoformat()},
    }
    detail = f"{frame.height} rows of the SQL query in {read}"
    if end != as_utc(window.end):
        key = f"{SQL_KEY}{end.isoformat()}"
        detail += (
            f"; window cut from {window}: more than {settings.api.max_batch_rows} rows "
            "(one batch's limit), the next firing goes on from its end"
        )
    return Picked(frame, f"sql-{end.strftime('%Y%m%dT%H%M%SZ')}", key, detail, origin)


def unseen_batches(ids: list[str], seen: set[str], start: str | None = None) -> list[str]:
    """The batches a dataset schedule may run, in time order: from ``start`` on when given,
    else after the newest batch the model has seen; never one it has seen."""
    if start is not None:
        first = ids.index(start)
    else:
        first = max((i + 1 for i, batch_id in enumerate(ids) if batch_id in seen), default=0)
    return [b for b in ids[first:] if b not in seen]


def _at_or_before(moment: object, horizon: datetime | float) -> bool:
    """Whether a batch that begins at ``moment`` begins at or before ``horizon`` (a time
    without a zone is wall-clock time in the other's zone, as ``tools.data.conform`` reads
    it); times of different kinds (a datetime and seconds) never compare."""
    if isinstance(moment, datetime) and isinstance(horizon, datetime):
        if (moment.tzinfo is None) != (horizon.tzinfo is None):
            zone_of = moment.tzinfo or horizon.tzinfo
            moment, horizon = moment.replace(tzinfo=zone_of), horizon.replace(tzinfo=zone_of)
        return moment <= horizon
    numbers = (int, float)
    if isinstance(moment, numbers) and isinstance(horizon, numbers):
        return moment <= horizon
    return False


def _sort_key(moment: datetime | float) -> float:
    if isinstance(moment, datetime):
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return float(moment)
