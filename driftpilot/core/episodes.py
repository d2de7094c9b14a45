"""Drift episodes: consecutive batches with the same drift signature, and the retrains they
cost (issue 21).

A lasting change the champion cannot be retrained out of in one step used to retrain every
batch, forever: six challengers in a row lost on one real stream. An episode groups the batches
of one change so the policy can see how many of its challengers already lost, and stop paying
for the same failure until something new is known.

- **Signature.** A batch has a signal when its drift is material (its materially drifted
  columns), it has a performance signal (a significant drop, or staleness), or its cause is a
  label shift (``PREVALENCE`` stands in its columns). It continues the
  open episode when its columns overlap the episode's or both have a performance signal;
  otherwise it starts a new one. A batch without a signal closes the episode, and so does a
  promoted challenger (the champion the signature was measured against is gone). A batch with
  no drift slice (quarantined, escalated and refused) was not measured: it neither continues
  nor closes an episode.
- **Losing challengers.** A batch whose drift action was ``retrain`` or ``recalibrate`` and
  whose challenger was rejected (``evaluation.action == "reject"``), flagged
  ``evaluation.training_defect``, or never came (``retraining.failed``).
- **State.** ``open``: a signal, nothing tried. ``retrying``: retrains tried, fewer than
  ``max_failed_retrains`` lost, or the evidence changed since the last loss (the hold is
  lifted). ``escalated``: ``max_failed_retrains`` or more lost and the evidence did not change:
  no retrain until it does, and a diagnosis says what was tried and why it lost.
  ``closed``: over (only episodes of the past read closed; ``episode_for`` returns None).
- **The evidence changes** when a column outside the episode's columns at the last loss
  shifts, when the drop deepens beyond its interval (this batch's drop lower bound above the
  drop's upper bound at the last loss), or when a person asks for a retrain.

Pure functions over run summaries (``ctx.history``, oldest first) and the current batch's drift
numbers: no I/O, no agents. Summaries of older versions miss keys: every key is optional.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from driftpilot.core.episode_attempts import LOST, attempt, clean_tried, number
from driftpilot.core.metric_text import quote, versus

EpisodeState = Literal["open", "retrying", "escalated", "closed"]
EPISODE_STATES: tuple[EpisodeState, ...] = ("open", "retrying", "escalated", "closed")
MAX_FAILED_RETRAINS = 2  # the policy's default (retraining.max_failed_retrains)
PREVALENCE = "(class prevalence)"  # a label shift's place in a signature: no column moved


class Episode(BaseModel):
    """One drift episode as of a batch (stored in the run summary as ``drift.episode``)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(description="The run id of the episode's first batch.")
    state: EpisodeState
    columns: list[str] = Field(
        default_factory=list, description="Union of the materially drifted columns."
    )
    performance: bool = Field(
        False, description="The episode has a performance signal (significant drop or stale)."
    )
    batches: int = Field(1, description="Batches in the episode, this one included.")
    failed_retrains: int = Field(0, description="Challengers that lost in the episode.")
    tried: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Each attempt: run_id, kind, family, metric, gain, ci_low, outcome, why "
        "(and holdout, valid, chance for a training defect).",
    )
    drop_high_at_failure: float | None = Field(
        None, description="The drop's upper bound when the last challenger lost."
    )
    columns_at_failure: list[str] = Field(
        default_factory=list, description="The episode's columns when the last challenger lost."
    )
    max_failed_retrains: int = Field(
        MAX_FAILED_RETRAINS, description="The policy's limit the state was read against."
    )
    changed: list[str] = Field(
        default_factory=list,
        description="How the evidence changed since the last loss (why a retrain is allowed "
        "again), in words with numbers.",
    )
    diagnosis: str | None = Field(
        None, description="Set when escalated: what was tried and why it lost."
    )


# -- reading a batch ------------------------------------------------------------------------------


def drifted(drift: Mapping[str, Any]) -> list[str]:
    """The batch's materially drifted columns (none unless the drift is material: columns
    that shifted below the materiality bar are noise, not a signature), and ``PREVALENCE``
    when its cause is a label shift (the shift is in the labels, no feature column)."""
    found = {str(c) for c in drift.get("drifted_columns") or []} if drift.get("material") else set()
    if drift.get("cause") == "label_shift":
        found.add(PREVALENCE)
    return sorted(found)


def performance(drift: Mapping[str, Any]) -> bool:
    """The batch has a performance signal: a significant drop, or a stale champion."""
    return bool(drift.get("significant_drop") or drift.get("stale"))


def has_signal(drift: Mapping[str, Any]) -> bool:
    """Material drift, a performance signal, or a label shift."""
    return bool(drift.get("material")) or performance(drift) or bool(drifted(drift))


def drop_high(drift: Mapping[str, Any]) -> float | None:
    """The drop's upper bound: ``metric_drop_high``, else the drop plus its lower half-width
    (the interval taken as symmetric); None without a drop."""
    high = number(drift.get("metric_drop_high"))
    if high is not None:
        return high
    drop, low = number(drift.get("metric_drop")), number(drift.get("metric_drop_low"))
    if drop is None:
        return None
    return drop + (drop - low) if low is not None else drop


def _continues(ep: Episode, drift: Mapping[str, Any]) -> bool:
    return bool(set(drifted(drift)) & set(ep.columns)) or (ep.performance and performance(drift))


# -- the episode ---------------------------------------------------------------------------------


def _start(run_id: str, drift: Mapping[str, Any], limit: int) -> Episode:
    return Episode(
        id=run_id,
        state="open",
        columns=drifted(drift),
        performance=performance(drift),
        max_failed_retrains=limit,
    )


def _extend(ep: Episode, drift: Mapping[str, Any]) -> Episode:
    return ep.model_copy(
        update={
            "columns": sorted(set(ep.columns) | set(drifted(drift))),
            "performance": ep.performance or performance(drift),
            "batches": ep.batches + 1,
        }
    )


def fold(ep: Episode, summary: Mapping[str, Any]) -> tuple[Episode, bool]:
    """``ep`` after its batch's run (``summary``) ended: its attempt recorded, a loss counted
    (with the drop's upper bound and the columns as they were), the state read again.
    Returns the episode and whether the run's promotion closed it."""
    tried = attempt(summary)
    if tried is None:
        return ep, False
    update: dict[str, Any] = {"tried": [*ep.tried, tried]}
    if tried["outcome"] in LOST:
        update.update(
            failed_retrains=ep.failed_retrains + 1,
            drop_high_at_failure=drop_high(summary.get("drift") or {}),
            columns_at_failure=list(ep.columns),
            changed=[],
        )
    after = ep.model_copy(update=update)
    after = _with_state(after, evidence_changes(after, {}, None))
    return after, tried["outcome"] == "promoted"


def _first_id(summary: Mapping[str, Any]) -> str:
    """The run id a summary names: its ``run_id``, else the id of the episode it recorded
    (summaries written by the control graph hold only the slices)."""
    stored = (summary.get("drift") or {}).get("episode")
    known = stored.get("id") if isinstance(stored, Mapping) else None
    return str(summary.get("run_id") or known or "")


def episodes(
    summaries: Sequence[Mapping[str, Any]], *, max_failed_retrains: int = MAX_FAILED_RETRAINS
) -> list[Episode]:
    """Every episode of a model's completed runs (summaries oldest first), each as of its last
    batch's end; all but one still going are ``closed``.

    The latest summary that stored its episode (``drift.episode``, written at its decision)
    is continued from, not recounted: the history a run reads is cut to its latest runs
    (``agents.drift_notes.PAST_MAX``), and a count of losses from a cut history would lift an
    escalated episode's hold once its losing runs fell out of it."""
    found: list[Episode] = []
    current: Episode | None = None
    anchor = _latest_stored(summaries)
    for index, summary in enumerate(summaries):
        drift = summary.get("drift")
        if not isinstance(drift, Mapping) or not drift:
            continue  # not measured: says nothing about the episode
        if index == anchor:
            current = _continue_stored(found, current, summary, max_failed_retrains)
            continue
        if current is not None and not _continues(current, drift):
            found.append(current.model_copy(update={"state": "closed"}))
            current = None
        if not has_signal(drift):
            continue
        if current is None:
            current = _start(_first_id(summary), drift, max_failed_retrains)
        else:
            current = _extend(current, drift)
            if not current.id:
                current = current.model_copy(update={"id": _first_id(summary)})
        current, promoted = fold(current, summary)
        if promoted:
            found.append(current.model_copy(update={"state": "closed"}))
            current = None
    if current is not None:
        found.append(current)
    return found


def _latest_stored(summaries: Sequence[Mapping[str, Any]]) -> int | None:
    """The index of the latest summary whose drift slice stored a valid episode (None)."""
    for index in range(len(summaries) - 1, -1, -1):
        stored = (summaries[index].get("drift") or {}).get("episode")
        if isinstance(stored, Mapping) and stored:
            try:
                Episode.model_validate(stored)
            except ValueError:
                continue  # a slice written by another version: recount instead
            return index
    return None


def _continue_stored(
    found: list[Episode], current: Episode | None, summary: Mapping[str, Any], limit: int
) -> Episode | None:
    """The episode a summary stored, its run's attempt folded in (``episode_of``), in place
    of the one recounted so far (closed into ``found`` when it is another episode). None: the
    run's promotion closed it."""
    ep = episode_of(summary)
    if ep is None:  # not reached: _latest_stored found a valid one
        return current
    # The stored episode counted its batch already; its signature is taken with the batch's
    # own (a slice that stored less than it measured still continues what it measured).
    drift = summary.get("drift") or {}
    ep = ep.model_copy(
        update={
            "tried": [clean_tried(t) for t in ep.tried],
            "max_failed_retrains": limit,
            "columns": sorted(set(ep.columns) | set(drifted(drift))),
            "performance": ep.performance or performance(drift),
        }
    )
    if current is not None and current.id != ep.id:
        found.append(current.model_copy(update={"state": "closed"}))
    if ep.state == "closed":
        found.append(ep)
        return None
    return ep


def episode_for(
    past: Sequence[Mapping[str, Any]],
    current: Mapping[str, Any],
    *,
    max_failed_retrains: int = MAX_FAILED_RETRAINS,
    requested_by: str | None = None,
    run_id: str | None = None,
) -> Episode | None:
    """The episode the current batch belongs to, this batch counted, its state read against
    ``max_failed_retrains`` and the evidence (``requested_by``: a person asked for a retrain).

    ``past``: the model's completed run summaries, oldest first; ``current``: this batch's drift
    numbers (``drifted_columns``, ``material``, ``significant_drop``, ``stale``,
    ``metric_drop``, ``metric_drop_low``, optional ``metric_drop_high``); ``run_id`` (or
    ``current["run_id"]``): this run, the episode's id when it starts here. None when the
    current batch has no signal (the previous episode, if any, is closed by it)."""
    if not has_signal(current):
        return None
    found = episodes(past, max_failed_retrains=max_failed_retrains)
    last = found[-1] if found and found[-1].state != "closed" else None
    if last is None or not _continues(last, current):
        this = str(run_id or current.get("run_id") or "")
        return _start(this, current, max_failed_retrains)
    ep = _extend(last, current).model_copy(update={"max_failed_retrains": max_failed_retrains})
    return _with_state(ep, evidence_changes(ep, current, requested_by))


def evidence_changes(
    ep: Episode, current: Mapping[str, Any], requested_by: str | None
) -> list[str]:
    """How the evidence changed since the episode's last losing challenger, in words with
    numbers (empty: it did not): columns outside the episode's columns at that loss shifted,
    the drop's lower bound is above the drop's upper bound then, or a person asked."""
    if ep.failed_retrains == 0:
        return []
    changes: list[str] = []
    new = sorted(set(drifted(current)) - set(ep.columns_at_failure))
    if new:
        known = ", ".join(ep.columns_at_failure) or "none"
        changes.append(f"other columns shift: {', '.join(new)} (the episode had: {known})")
    low, high = number(current.get("metric_drop_low")), ep.drop_high_at_failure
    if low is not None and high is not None and low > high:
        changes.append(
            f"the drop deepened beyond its interval: lower bound "
            f"{versus(low, high, strict=True)}, its upper bound when the last challenger lost"
        )
    if requested_by:
        changes.append(f"{requested_by} asked for a retrain")
    return changes


def _with_state(ep: Episode, changes: list[str]) -> Episode:
    if ep.failed_retrains >= ep.max_failed_retrains and not changes:
        return ep.model_copy(
            update={"state": "escalated", "changed": [], "diagnosis": diagnosis(ep)}
        )
    state: EpisodeState = "retrying" if ep.tried else "open"
    return ep.model_copy(update={"state": state, "changed": changes, "diagnosis": None})


def retrain_hold(
    ep: Episode | None,
    current: Mapping[str, Any],
    max_failed_retrains: int = MAX_FAILED_RETRAINS,
    requested_by: str | None = None,
) -> list[str]:
    """Why a retrain (or recalibration) of the current batch is held, in words with numbers;
    empty: allowed. Held when ``max_failed_retrains`` or more challengers of the episode lost
    and the evidence did not change (no column outside the episode's columns at the last loss
    shifted, the drop's lower bound is not above its upper bound then) and nobody asked."""
    if ep is None or ep.failed_retrains < max_failed_retrains:
        return []
    if evidence_changes(ep, current, requested_by):
        return []
    low, high = number(current.get("metric_drop_low")), ep.drop_high_at_failure
    unchanged = [f"no column outside {', '.join(ep.columns_at_failure) or 'the episode'} shifted"]
    if high is not None:
        shown = "no drop" if low is None else versus(low, high, strict=True)
        unchanged.append(f"drop lower bound {shown} (upper bound at the last loss)")
    unchanged.append("nobody asked")
    return [
        f"retrain held: {ep.failed_retrains} challengers lost in episode {ep.id[:12]} "
        f"(max_failed_retrains {max_failed_retrains}) and the evidence did not change: "
        + "; ".join(unchanged),
        diagnosis(ep.model_copy(update={"max_failed_retrains": max_failed_retrains})),
    ]


def diagnosis(ep: Episode) -> str:
    """What the episode tried and why it lost, with numbers, and what lifts the hold."""
    signature = []
    if ep.columns:
        signature.append(f"columns {', '.join(ep.columns)}")
    if ep.performance:
        signature.append("a performance drop")
    lost = [t for t in ep.tried if t.get("outcome") in LOST]
    lines = [
        f"{t.get('kind') or 'retrain'}"
        + (f" ({t['family']})" if t.get("family") else "")
        + (f" in run {str(t['run_id'])[:12]}" if t.get("run_id") else "")
        + f": {t.get('why') or t.get('outcome')}"
        for t in lost
    ]
    lift = ["other columns shift"]
    if ep.drop_high_at_failure is not None:
        lift.append(f"the drop's lower bound exceeds {quote(ep.drop_high_at_failure)}")
    lift.append("a person asks (driftpilot run MODEL --retrain REASON)")
    return (
        f"{len(lost)} of {len(ep.tried)} challengers lost in {ep.batches} batches of "
        f"{' and '.join(signature) or 'drift'}: "
        + "; ".join(lines)
        + ". No retrain until "
        + ", ".join(lift[:-1])
        + f" or {lift[-1]}."
    )


# -- reading it back, for people -----------------------------------------------------------------


def episode_of(summary: Mapping[str, Any], run_id: str | None = None) -> Episode | None:
    """The episode of a run as it ended: ``drift.episode`` (written at the drift decision)
    with the run's own attempt folded in (``run_id``: the run's, for its attempt). None: the
    run recorded no episode (older runs, no signal)."""
    stored = (summary.get("drift") or {}).get("episode")
    if not stored:
        return None
    if run_id and not summary.get("run_id"):
        summary = {**summary, "run_id": run_id}
    ep = Episode.model_validate(stored)
    if ep.state == "closed":
        return ep
    after, promoted = fold(ep, summary)
    return after.model_copy(update={"state": "closed"}) if promoted else after


def lifted_by(summary: Mapping[str, Any]) -> list[str]:
    """How the evidence had changed when the run decided (what let it retrain after its
    episode's losses), in words; empty when nothing had."""
    stored = (summary.get("drift") or {}).get("episode")
    if not isinstance(stored, Mapping):
        return []
    return [str(change) for change in stored.get("changed") or []]


def label(ep: Episode | None) -> str:
    """ "escalated 2/2": the state and the losing challengers against the limit ("" without)."""
    if ep is None:
        return ""
    return f"{ep.state} {ep.failed_retrains}/{ep.max_failed_retrains}"


def escalated_now(summary: Mapping[str, Any]) -> bool:
    """The run escalated its episode: it ended escalated and did not start so (the alert
    fires once per escalation, not on every held batch after it)."""
    ep = episode_of(summary)
    stored = (summary.get("drift") or {}).get("episode") or {}
    return ep is not None and ep.state == "escalated" and stored.get("state") != "escalated"


class EpisodeView(BaseModel):
    """A run's drift episode as people see it (the API, the chat)."""

    id: str = Field(description="The run id of the episode's first batch.")
    state: EpisodeState = Field(description="open | retrying | escalated | closed")
    failed_retrains: int = Field(description="Challengers that lost in the episode.")
    max_failed_retrains: int = Field(description="The policy's limit before it escalates.")
    batches: int = Field(description="Batches in the episode up to this run.")
    columns: list[str] = Field(description="The episode's materially drifted columns.")
    performance: bool = Field(description="The episode has a performance signal.")
    changed: list[str] = Field(
        default_factory=list, description="How the evidence changed since the last loss."
    )
    diagnosis: str | None = Field(
        None, description="Escalated: what was tried and why it lost, with numbers."
    )

    @classmethod
    def of_summary(
        cls, summary: Mapping[str, Any], run_id: str | None = None
    ) -> EpisodeView | None:
        """The view of ``episode_of(summary, run_id)`` (None: the run recorded no episode)."""
        ep = episode_of(summary, run_id)
        if ep is None:
            return None
        return cls.model_validate(ep.model_dump(include=set(cls.model_fields)))
