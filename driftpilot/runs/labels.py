"""Labels that arrive late: attach them to a batch that was accepted without its target.

A batch delivered without the target column is accepted and filed with an all-null target
(``agents.ingestion.with_label_column``); training windows keep labelled rows only, so the
batch counts for nothing until its labels come. ``attach`` puts them in place:

- the labels (a CSV/Parquet file, or an uploaded frame) hold the model's target column: 0/1
  or booleans for a binary model, its class labels for a multiclass one, numbers for a
  regression. With a ``key`` (a column in both, unique among the labels) they join on it;
  without one the file must have the batch's row count and is taken in row order. Rows the
  labels leave null stay unlabelled.
- a row's label is attached once: attaching the same labels again returns the first answer
  and writes nothing; a label that differs from one the batch has is refused
  (``RunStateError``: the batch's state, not the data, is what forbids it). Labels that agree
  with the labelled rows and fill some unlabelled ones add to the batch (late labels of an
  inference window come a few at a time): the file is replaced again, the champion scored
  again on all the labelled rows, and the decision audited again.
- the labelled batch replaces the filed Parquet atomically (``write_parquet_atomic``: a
  reader sees the old file or the new one, never half of one). The service holds the model's
  lease meanwhile, so no run reads the window between the check and the write.
- the champion that scored the batch is scored on the labelled rows (its *realised* score in
  the model's own metric: ROC AUC, RMSE, ...) and set against the estimate the drift analyst
  made without labels (CBPE, or DLE for a regression), if it made one.
- one tool call (the scoring) and one decision (agent ``labels``, action ``attach``) go to the
  hash-chained audit under the run that filed the batch, with the batch's content hash and the
  hashes of the file before and after.

Crash safety: an intent (a step effect) is recorded before the file is replaced, and the
answer after the decision. Attaching the same labels again after a crash between the two
finds the file labelled, the intent and no answer, and records the decision then.
"""

from __future__ import annotations

import hashlib
import math
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, Field, model_validator

from agents.base import Outcome
from agents.context import RunContext
from driftpilot.core.errors import ConfigError, DataError, NotFound, RunStateError, SchemaError
from driftpilot.core.identity import normalize_principal, safe_label
from driftpilot.core.metric_text import describe
from driftpilot.core.settings import Settings
from driftpilot.core.tasks import PRIMARY, Metric, Task, check_task
from driftpilot.core.tasks import metric as task_metric
from driftpilot.runs import leases
from driftpilot.runs.evidence_keys import upgrade
from driftpilot.runs.views import RunView
from driftpilot.store import AuditStore
from driftpilot.store.models import BatchRecord, ManagedModel
from tools.data import content_hash, load_table, write_parquet_atomic

AGENT = "labels"
STEP = "labels"  # the step effect holding the answer, under the run that filed the batch
INTENT_STEP = "labels:intent"  # written before the filed batch is replaced
_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


@dataclass(frozen=True)
class _Scoring:
    """How the model is scored on its labels: its task and its metric."""

    task: Task
    name: str

    @property
    def metric(self) -> Metric:
        """The metric (ConfigError: a metric that does not measure the task)."""
        return task_metric(self.name, self.task)


class LabelsView(BaseModel):
    """Labels attached to one accepted batch, and how good the estimate made without them was."""

    model: str
    batch_id: str
    run_id: str = Field(description="The run that filed (and scored) the batch.")
    rows: int = Field(description="Rows in the batch.")
    rows_labelled: int = Field(description="Rows of the batch that now carry a label.")
    champion_version: int | None = Field(description="The champion that scored the batch.")
    metric: str = Field("roc_auc", description="The model's metric (roc_auc, rmse, ...).")
    higher_is_better: bool = Field(True, description="The metric's direction.")
    realised_score: float | None = Field(
        description="That champion's metric on the labelled rows (None: undefined there, "
        "e.g. a ROC AUC with one class)."
    )
    estimated_score: float | None = Field(
        description="The drift analyst's estimate of it before the labels came (None: none)."
    )
    estimation_error: float | None = Field(description="estimated - realised, when both exist.")
    path: str = Field(description="The filed batch, now labelled.")

    @model_validator(mode="before")
    @classmethod
    def _recorded_keys(cls, data: Any) -> Any:
        # An answer recorded before models had a task names its keys after ROC AUC.
        return upgrade("labels", data) if isinstance(data, dict) else data


def find_batch(store: AuditStore, model: str, batch: str) -> BatchRecord:
    """The accepted batch of ``model`` named ``batch``: its batch id, or the filed file's stem
    (``<batch_id>-<run8>``) when one id names several accepted batches.

    Raises:
        NotFound: no accepted batch of the model has that name (a quarantined one says so).
        ConfigError: the id names several accepted batches.
    """
    rows = store.list_rows(BatchRecord, BatchRecord.model == model, order=BatchRecord.id)
    named = [r for r in rows if r.batch_id == batch] or [
        r for r in rows if Path(r.path).stem == batch
    ]
    accepted = [r for r in named if r.status == "accepted"]
    if len(accepted) == 1:
        return accepted[0]
    if len(accepted) > 1:
        stems = ", ".join(Path(r.path).stem for r in accepted)
        raise ConfigError(
            f"batch {batch!r} of {model!r} was accepted {len(accepted)} times; name one by its "
            f"file: {stems}"
        )
    if named:
        raise NotFound(
            f"batch {batch!r} of {model!r} was {named[-1].status}, not accepted: only accepted "
            "batches take labels"
        )
    raise NotFound(f"model {model!r} has no batch {batch!r}")


def read_labels(source: str | Path | pl.DataFrame) -> pl.DataFrame:
    """The labels table: a CSV/Parquet file (``tools.data.load_table``) or a frame as is.

    Raises:
        DataError: no such file. FormatError: not CSV/Parquet, or unreadable.
    """
    if isinstance(source, pl.DataFrame):
        return source
    frame = load_table(source)
    assert isinstance(frame, pl.DataFrame)
    return frame


def attach(
    ctx: RunContext,
    record: BatchRecord,
    drift: dict[str, Any],
    labels: pl.DataFrame,
    actor: str,
    *,
    target: str,
    key: str | None = None,
    source: str = "",
    task: Task = "binary",
    metric: str | None = None,
) -> tuple[LabelsView, bool]:
    """Attach ``labels`` to the filed batch ``record``; the caller holds the model's lease.

    ``drift`` is the drift slice of the run that filed the batch (``champion_version``,
    ``estimated_score``); ``task`` and ``metric`` are the model's (default: the task's
    primary metric). Returns the view and whether the audit gained rows.

    Raises:
        SchemaError: the target (or the key) column is missing.
        DataError: labels that do not fit the task (binary: other than 0/1), none at all, a
            row count that differs without a key, a key that is not unique or matches
            nothing.
        RunStateError: the batch already has different labels.
    """
    path = Path(record.path)
    if not path.exists():
        raise NotFound(f"the file of batch {record.batch_id!r} is gone: {path}")
    filed = pl.read_parquet(path)
    if target not in filed.columns:
        raise SchemaError(f"batch {record.batch_id!r} at {path} has no {target!r} column")
    scoring = _Scoring(task, metric or PRIMARY[task])
    values = _label_values(labels, target, filed.schema[target], task)
    column = _align(filed, labels, values, record.batch_id, key)
    existing = filed[target]
    changed = _differences(existing, column)
    if changed:
        raise RunStateError(
            f"batch {record.batch_id!r} of {record.model!r} already has labels and these "
            f"differ in {changed} of {filed.height} rows: a label is attached once, not "
            "replaced (labels that agree and fill unlabelled rows are added)"
        )
    labelled = filed.with_columns(existing.fill_null(column).alias(target))
    new_hash = content_hash(labelled)
    answer_step, intent_step = _steps(ctx, record.run_id, existing, new_hash)
    added = labelled[target].null_count() < existing.null_count()
    if not added:
        answered = ctx.store.effect(record.run_id, answer_step)
        if answered is not None:
            return LabelsView.model_validate(answered), False
        if ctx.store.effect(record.run_id, intent_step) is None:
            # The batch came with these labels: nothing to attach, nothing to record.
            return _view(ctx, record, drift, labelled, target, scoring, audit=False)[0], False
        # A crash after the file was replaced and before the decision: record it now.
    view, evidence = _view(ctx, record, drift, labelled, target, scoring, audit=True)
    if added:
        before: str | None = content_hash(filed)
        intent = {"path": str(path), "content_hash": new_hash, "before": before}
        ctx.store.record_effect(record.run_id, intent_step, intent)
        write_parquet_atomic(labelled, path)
    else:
        before = (ctx.store.effect(record.run_id, intent_step) or {}).get("before")
    evidence.update(
        {
            "key": key,
            "source": safe_label(source, 200) if source else "",
            "by": actor,
            "batch_content_hash": record.content_hash,
            "file_hash_before": before,
            "file_hash_after": new_hash,
            "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "unmatched_label_rows": _unmatched(filed, labels, key),
        }
    )
    ctx.record(
        record.run_id,
        AGENT,
        Outcome(None, "none", ""),
        "attach",
        _rationale(view, actor, evidence),
        evidence,
    )
    ctx.store.record_effect(record.run_id, answer_step, view.model_dump())
    return view, True


def _steps(
    ctx: RunContext, run_id: str, existing: pl.Series, labelled_hash: str
) -> tuple[str, str]:
    """The step effects (answer, intent) of the attachment that makes the file
    ``labelled_hash``: ``labels``/``labels:intent`` for the first one (onto a batch without a
    label), then ``labels:<hash>``/``labels:intent:<hash>`` for each that added more."""
    first = ctx.store.effect(run_id, INTENT_STEP)
    if existing.null_count() == len(existing) or (
        first is not None and first.get("content_hash") == labelled_hash
    ):
        return STEP, INTENT_STEP
    return f"{STEP}:{labelled_hash[:16]}", f"{INTENT_STEP}:{labelled_hash[:16]}"


class Labelling:
    """Attaches late labels for the ControlPlane: under the model's lease, signing the audit
    heads (``sign``) when the audit gained rows; ``get_run`` reads the run that filed the
    batch."""

    def __init__(
        self,
        store: AuditStore,
        settings: Settings,
        ctx: RunContext,
        get_run: Callable[[str], RunView],
        sign: Callable[[], str],
    ) -> None:
        self.store, self.settings, self.ctx = store, settings, ctx
        self.get_run, self.sign = get_run, sign

    def attach_labels(
        self,
        model: str,
        batch_id: str,
        path: str | os.PathLike[str] | pl.DataFrame,
        actor: str,
        *,
        key: str | None = None,
    ) -> LabelsView:
        """Attach labels (a CSV/Parquet file, or a frame already read) to an accepted batch
        that came without them, and score the champion that scored it on them. Takes the
        model's lease while the filed batch is replaced, so no run reads a window between the
        check and the write. Attaching the same labels again returns the first answer;
        different ones are refused.

        Raises:
            NotFound: unknown model, or no accepted batch of it by that name.
            SchemaError / DataError: the labels cannot be used (nothing is changed).
            RunStateError: the batch already has different labels.
            ModelBusy: a run holds the model (retry when it is done).
        """
        actor = normalize_principal(actor)
        row = self.store.get(ManagedModel, model)
        task = check_task(row.task)
        record = find_batch(self.store, model, batch_id)
        frame = read_labels(path if isinstance(path, pl.DataFrame) else os.fspath(path))
        leases.refuse_if_unrecovered(self.store, model)
        op_id = f"labels-{uuid.uuid4().hex[:24]}"
        ttl_s = self.settings.lease_ttl_s
        lease = leases.acquire(self.store, ttl_s, model, op_id, wait=False)
        recorded = False
        try:
            with leases.LeaseKeeper(self.store, model, op_id, lease, ttl_s):
                drift = self.get_run(record.run_id).summary.get("drift") or {}
                source = "" if isinstance(path, pl.DataFrame) else os.path.basename(path)
                view, recorded = attach(
                    self.ctx,
                    record,
                    drift,
                    frame,
                    actor,
                    target=row.target,
                    key=key,
                    source=source,
                    task=task,
                    metric=row.metric,
                )
        finally:
            if recorded:
                self.sign()
        return view


def _label_values(
    labels: pl.DataFrame, target: str, dtype: pl.DataType, task: Task = "binary"
) -> pl.Series:
    """The labels column as the batch's target dtype: a binary model's 0/1, booleans (or their
    words); a multiclass model's class labels; a regression's finite numbers."""
    if target not in labels.columns:
        raise SchemaError(
            f"the labels have no {target!r} column (the model's target); columns: "
            f"{labels.columns[:20]}"
        )
    column = labels[target]
    if column.dtype == pl.Null or column.null_count() == len(column):
        raise DataError(f"column {target!r} of the labels holds no label (every value is null)")
    if task != "binary":
        return _task_values(column, target, dtype, task)
    bad = f"column {target!r} of the labels must hold 0/1 or true/false"
    if column.dtype == pl.Boolean:
        flags = column
    elif column.dtype.is_numeric():
        found = column.drop_nulls().drop_nans() if column.dtype.is_float() else column.drop_nulls()
        odd = found.filter((found != 0) & (found != 1)).unique().sort().head(5).to_list()
        if odd or (column.dtype.is_float() and column.is_nan().any()):
            raise DataError(f"{bad}; found {odd or ['NaN']}")
        flags = column.cast(pl.Boolean)
    elif column.dtype == pl.String:
        words = column.str.strip_chars().str.to_lowercase()
        known = words.is_in(sorted(_TRUE | _FALSE)) | words.is_null()
        if not known.all():
            odd = column.filter(~known).unique().head(5).to_list()
            raise DataError(f"{bad}; found {[str(v)[:20] for v in odd]}")
        flags = pl.select(
            pl.when(words.is_null()).then(None).otherwise(words.is_in(sorted(_TRUE)))
        ).to_series()
    else:
        raise DataError(f"{bad}; its type is {column.dtype}")
    return flags.cast(dtype).alias(target)


def _task_values(column: pl.Series, target: str, dtype: pl.DataType, task: Task) -> pl.Series:
    """A multiclass model's labels or a regression's values, as the batch's target dtype. A
    class the model never saw is kept: scoring counts it against the model, it is no error."""
    if task == "regression" and not column.dtype.is_numeric():
        raise DataError(
            f"column {target!r} of the labels must hold numbers (a regression's target); its "
            f"type is {column.dtype}"
        )
    try:
        values = column.cast(dtype, strict=True)
    except pl.exceptions.PolarsError as exc:
        raise DataError(
            f"column {target!r} of the labels is {column.dtype} and the batch's target is "
            f"{dtype}: the one does not convert to the other"
        ) from exc
    if values.dtype.is_float() and not values.drop_nulls().is_finite().all():
        raise DataError(f"column {target!r} of the labels holds NaN or infinite values")
    return values.alias(target)


def _align(
    filed: pl.DataFrame, labels: pl.DataFrame, values: pl.Series, batch_id: str, key: str | None
) -> pl.Series:
    """One label (or null) per row of the filed batch, in its order."""
    if key is None:
        if labels.height != filed.height:
            raise DataError(
                f"the labels have {labels.height} rows and batch {batch_id!r} has "
                f"{filed.height}: without a key, labels are taken in row order and the counts "
                "must match; give a key (--key COLUMN) to join on a column both have"
            )
        return values
    for frame, what in ((filed, f"batch {batch_id!r}"), (labels, "the labels")):
        if key not in frame.columns:
            raise SchemaError(f"{what} has no key column {key!r}")
    if key == values.name:
        raise DataError(f"the key {key!r} is the target column itself")
    try:
        keys = labels[key].cast(filed.schema[key], strict=True)
    except pl.exceptions.PolarsError as exc:
        raise DataError(
            f"key {key!r} is {labels.schema[key]} in the labels and {filed.schema[key]} in the "
            "batch, and the one does not convert to the other"
        ) from exc
    table = pl.DataFrame({key: keys, "__label": values}).filter(pl.col(key).is_not_null())
    repeats = table.height - table[key].n_unique()
    if repeats:
        raise DataError(f"key {key!r} is not unique in the labels: {repeats} rows repeat a key")
    joined = filed.select(key).join(table, on=key, how="left", maintain_order="left")
    if joined["__label"].null_count() == joined.height:
        raise DataError(f"no value of key {key!r} in the labels matches a row of {batch_id!r}")
    return joined["__label"]


def _unmatched(filed: pl.DataFrame, labels: pl.DataFrame, key: str | None) -> int:
    """Rows of the labels whose key names no row of the batch (0 without a key)."""
    if key is None:
        return 0
    keys = labels[key].cast(filed.schema[key]).drop_nulls()
    return int((~keys.is_in(filed[key].implode())).sum())


def _differences(existing: pl.Series, new: pl.Series) -> int:
    """Rows labelled in both whose labels differ (a label where there was none adds to the
    batch's labels, and a row the new labels leave out keeps its own)."""
    return int((existing != new).fill_null(False).sum())


def _view(
    ctx: RunContext,
    record: BatchRecord,
    drift: dict[str, Any],
    labelled: pl.DataFrame,
    target: str,
    scoring: _Scoring,
    *,
    audit: bool,
) -> tuple[LabelsView, dict[str, Any]]:
    """Score the champion that scored the batch on its labelled rows, every metric of its
    task (a tool call when ``audit``), and set the model's metric against the earlier
    estimate."""
    from tools import registry
    from tools.drift import model_performance

    measure = scoring.metric
    drift = upgrade("drift", drift)
    version = drift.get("champion_version")
    # An estimate of another metric (the policy changed since) is not this one's estimate.
    same = drift.get("metric", measure.name) == measure.name
    estimated = _number(drift.get("estimated_score")) if same else None
    rows_labelled = labelled.height - labelled[target].null_count()
    perf = None
    if isinstance(version, int):
        scorer = registry.load_version(record.model, version, ctx.settings)

        def score() -> Any:
            return model_performance(scorer, labelled, target, task=scoring.task)

        args = {
            "champion_version": version,
            "rows_labelled": rows_labelled,
            "task": scoring.task,
        }
        if audit:
            perf = ctx.call(record.run_id, AGENT, "drift.model_performance", score, args)
        else:
            perf = score()
    realised = perf.get(measure.name) if perf is not None else None
    error = estimated - realised if estimated is not None and realised is not None else None
    view = LabelsView(
        model=record.model,
        batch_id=record.batch_id,
        run_id=record.run_id,
        rows=labelled.height,
        rows_labelled=rows_labelled,
        champion_version=version if isinstance(version, int) else None,
        metric=measure.name,
        higher_is_better=measure.higher_is_better,
        realised_score=realised,
        estimated_score=estimated,
        estimation_error=error,
        path=record.path,
    )
    evidence = {
        "model": record.model,
        "batch_id": record.batch_id,
        "rows": view.rows,
        "rows_labelled": rows_labelled,
        "positive_rate": perf.positive_rate if perf is not None else None,
        "champion_version": view.champion_version,
        "metric": measure.name,
        "higher_is_better": measure.higher_is_better,
        "realised_score": realised,
        "estimated_score": estimated,
        "estimation_error": error,
    }
    return view, evidence


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _rationale(view: LabelsView, actor: str, evidence: dict[str, Any]) -> str:
    parts = [
        f"{actor} attached labels to {view.rows_labelled} of {view.rows} rows of batch "
        f"{view.batch_id} of {view.model}"
    ]
    if evidence["unmatched_label_rows"]:
        parts.append(f"{evidence['unmatched_label_rows']} label rows matched no batch row")
    if view.champion_version is None:
        parts.append("no champion scored the batch, so no realised performance")
    elif view.realised_score is None:
        parts.append(
            f"champion v{view.champion_version}: realised {view.metric} undefined on these "
            "labels (e.g. one class only)"
        )
    else:
        realised = describe(view.metric, view.realised_score)
        parts.append(f"champion v{view.champion_version} realised {realised}")
    if view.estimated_score is None:
        parts.append("no estimate was made before the labels came")
    elif view.estimation_error is None:
        parts.append(f"estimated {describe(view.metric, view.estimated_score)} before the labels")
    else:
        parts.append(
            f"estimated {describe(view.metric, view.estimated_score)} before the labels: the "
            f"estimate was off by {view.estimation_error:+.3f}"
        )
    return "; ".join(parts) + "."
