"""Bootstrap-then-loop: a model's first champion, then one control run per batch, in order.

The one stream runner of the demo (``driftpilot.demo``) and the evals (``evals.harness``):
``run_stream`` adds the model (its first champion trained on the first ``initial`` batches),
then sends every later batch through ``ControlPlane.start_run``. A run that stops to ask a
person (``waiting_approval``) is handed to an ``Answer``: it sees *why* the run waits (a
``Wait``: a promotion of a risk tier other than low, or an escalation of a quarantine streak,
as the run's approval request says) and approves, rejects, or leaves the run waiting. A run
may ask twice: whether to accept a quarantined batch as the new normal, then whether to
promote; each question is answered in turn.

``add_builtin_model`` adds a model of a built-in dataset's spec (``tools.datasets.SPECS``):
its target, time column and features, so a caller names only the dataset.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    import polars as pl

    from driftpilot.runs.plane import ControlPlane, ModelView, RunView


@dataclass(frozen=True)
class Columns:
    """What a managed model is trained on: the table's label, time and feature columns."""

    target: str
    time_col: str
    numeric: list[str]
    categorical: list[str] = field(default_factory=list)
    family: str = "lightgbm"
    source: str = ""  # the built-in dataset the model's batches come from ("" if none)
    task: str | None = None  # binary | multiclass | regression; None: inferred from the target

    @classmethod
    def builtin(cls, dataset: str, *, source: bool = False) -> Columns:
        """A built-in dataset's spec; ``source`` records the dataset as the model's source.

        Raises:
            ValueError: an unknown dataset.
        """
        from tools.datasets import SPECS

        if dataset not in SPECS:
            raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(SPECS)}")
        spec = SPECS[dataset]
        return cls(
            target=spec.target,
            time_col=spec.time_col,
            numeric=list(spec.numeric),
            categorical=list(spec.categorical),
            source=dataset if source else "",
            task=spec.task,
        )

    def add(
        self, plane: ControlPlane, name: str, initial: pl.DataFrame, principal: str | None
    ) -> ModelView:
        """Add the model ``name`` with its first champion trained on ``initial``."""
        return plane.add_model(
            name,
            initial,
            target=self.target,
            time_col=self.time_col,
            numeric=self.numeric,
            categorical=self.categorical,
            family=self.family,
            task=self.task,
            source=self.source,
            principal=principal,
        )


def add_builtin_model(
    plane: ControlPlane,
    name: str,
    initial: pl.DataFrame,
    dataset: str = "flights",
    *,
    principal: str | None = None,
    source: bool = False,
) -> ModelView:
    """A managed model of a built-in dataset's spec, its first champion trained on ``initial``
    and promoted by ``principal`` (the plane's own principal if None). ``source`` records the
    dataset as the model's data source."""
    return Columns.builtin(dataset, source=source).add(plane, name, initial, principal)


@dataclass(frozen=True)
class Wait:
    """Why a run waits for a person, read from its approval request and its summary."""

    run_id: str
    step: str  # escalation | promotion
    description: str  # the request as the run wrote it
    tier: str | None = None  # a promotion's risk tier
    reasons: tuple[str, ...] = ()  # the policy's rules that set the tier

    @property
    def headline(self) -> str:
        """What waits for a person, in a few words (the description says why)."""
        if self.step == "escalation":
            return "Quarantine streak escalated to a person: accept the batch as the new normal?"
        if self.step == "promotion" and self.tier:
            return f"{self.tier.capitalize()}-risk promotion waits for a person"
        return f"{self.step.capitalize()} waits for a person"


def wait_of(view: RunView) -> Wait | None:
    """The question a waiting run asks (None when the run does not wait)."""
    if view.status != "waiting_approval":
        return None
    request = view.approval_request or {}
    cicd = view.summary.get("cicd") or {}
    step = str(request.get("step") or "promotion")
    promotion = step == "promotion"
    return Wait(
        run_id=view.run_id,
        step=step,
        description=str(request.get("description") or ""),
        tier=cicd.get("tier") if promotion else None,
        reasons=tuple(cicd.get("reasons") or []) if promotion else (),
    )


# An answer to a waiting run: (decision, approver, comment), or None to leave it waiting.
Reply = tuple[str, str, str] | None
Answer = Callable[[Wait], Reply]


def leave_waiting(wait: Wait) -> Reply:
    """The ``Answer`` that answers nothing: every waiting run is left waiting."""
    return None


def answer_waits(plane: ControlPlane, view: RunView, answer: Answer) -> tuple[RunView, list[Wait]]:
    """Put every question the run asks to ``answer`` until it stops asking or is left
    waiting; the run's view after the last answer, and the questions it asked."""
    asked: list[Wait] = []
    while (wait := wait_of(view)) is not None:
        asked.append(wait)
        reply = answer(wait)
        if reply is None:
            break
        decision, approver, comment = reply
        view = plane.decide(view.run_id, decision, approver, comment, step=wait.step)
    return view, asked


@dataclass(frozen=True)
class BatchRun:
    """One batch through the loop: its run (as it ended, or waits) and the questions asked."""

    index: int  # the batch's place in the stream (the first ``initial`` trained the champion)
    batch_id: str
    n_rows: int
    view: RunView
    seconds: float  # the run and the answers to its questions
    waits: list[Wait]


def run_batch(
    plane: ControlPlane,
    model: str,
    frame: pl.DataFrame,
    batch_id: str,
    *,
    trigger: str,
    requester: str,
    answer: Answer = leave_waiting,
    index: int = 0,
) -> BatchRun:
    """One control run of ``frame`` on ``model``, its questions put to ``answer``."""
    started = time.perf_counter()
    view = plane.start_run(model, frame, batch_id, trigger=trigger, requested_by=requester)
    view, waits = answer_waits(plane, view, answer)
    return BatchRun(index, batch_id, frame.height, view, time.perf_counter() - started, waits)


@dataclass(frozen=True)
class StreamRun:
    """A whole stream: the model as added, how long adding it took, and every batch's run."""

    model: ModelView
    bootstrap_s: float
    runs: list[BatchRun]


def first_champion(
    plane: ControlPlane,
    name: str,
    columns: Columns,
    batches: list[tuple[str, pl.DataFrame]],
    *,
    requester: str,
    initial: int = 1,
) -> ModelView:
    """Add the model ``name``, its first champion trained on the first ``initial`` batches
    and promoted by ``requester``.

    Raises:
        ValueError: no batch would be left to run after the ``initial`` ones.
    """
    import polars as pl

    if len(batches) <= initial:
        raise ValueError(f"{len(batches)} batches: need more than the {initial} initial ones")
    first = pl.concat([frame for _, frame in batches[:initial]], how="vertical_relaxed")
    return columns.add(plane, name, first, requester)


def run_batches(
    plane: ControlPlane,
    name: str,
    batches: list[tuple[str, pl.DataFrame]],
    *,
    trigger: str,
    requester: str,
    answer: Answer = leave_waiting,
    start: int = 0,
    progress: Progress | None = None,
) -> list[BatchRun]:
    """One control run per batch, in order (the first is the stream's batch ``start``); a
    waiting run's questions go to ``answer``. ``progress`` (if given) shows a bar of the runs."""
    task = progress.add_task("control runs", total=len(batches)) if progress else None
    runs = []
    for index, (batch_id, frame) in enumerate(batches, start=start):
        if progress is not None and task is not None:
            progress.update(task, description=f"control run on {batch_id}")
        runs.append(
            run_batch(
                plane,
                name,
                frame,
                batch_id,
                trigger=trigger,
                requester=requester,
                answer=answer,
                index=index,
            )
        )
        if progress is not None and task is not None:
            progress.advance(task)
    return runs


def run_stream(
    plane: ControlPlane,
    name: str,
    columns: Columns,
    batches: list[tuple[str, pl.DataFrame]],
    *,
    trigger: str,
    requester: str,
    answer: Answer = leave_waiting,
    initial: int = 1,
    progress: Progress | None = None,
) -> StreamRun:
    """Bootstrap then loop: ``first_champion`` on the first ``initial`` batches, then
    ``run_batches`` on the rest.

    Raises:
        ValueError: no batch is left to run after the ``initial`` ones.
    """
    started = time.perf_counter()
    model = first_champion(plane, name, columns, batches, requester=requester, initial=initial)
    bootstrap_s = time.perf_counter() - started
    runs = run_batches(
        plane,
        name,
        batches[initial:],
        trigger=trigger,
        requester=requester,
        answer=answer,
        start=initial,
        progress=progress,
    )
    return StreamRun(model, bootstrap_s, runs)


def progress_bar(console: Console | None, **kwargs: Any) -> Progress:
    """The runs' progress bar (description, bar, done/total, elapsed); off without a console."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
        **kwargs,
    )
