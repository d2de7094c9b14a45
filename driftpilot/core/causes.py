"""Why a batch drifted: the causes a drift decision names (issue 21).

The numbers read some causes on their own (the drift analyst, every backend): a prevalence
change with little class-conditional drift (``label_shift``), the same drift signature at the
same point of the last period (``expected_change``), material drift, moved predictions or a
performance signal otherwise (``world_change``), nothing that reads (``unknown``).
``pipeline_defect`` comes from ingestion's defect signatures, or from a note the LLM cites. The
policy maps each cause to the actions it allows (``Policy.drift_bounds``); a cause read from a
note can only narrow them.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Cause = Literal["pipeline_defect", "expected_change", "world_change", "label_shift", "unknown"]
CAUSES: tuple[Cause, ...] = get_args(Cause)

# What each cause means, in the words the LLM and the reader see.
CAUSE_TEXT: dict[Cause, str] = {
    "pipeline_defect": "the data is broken upstream (a unit change, a join bug, a default fill): "
    "never train on it",
    "expected_change": "a known, recurring change (a season, a planned campaign): watch, the "
    "model has seen it before",
    "world_change": "the world moved (new behaviour, a lasting concept change): retrain when "
    "the policy says it is worth it",
    "label_shift": "the class prevalence moved while each class looks the same: recalibrate "
    "the champion, do not retrain",
    "unknown": "nothing reads a cause",
}


class CauseReading(BaseModel):
    """What the numbers say caused the drift (built by the drift analyst for every backend)."""

    model_config = ConfigDict(extra="forbid")

    cause: Cause = Field(description="The cause the numbers read.")
    reasons: list[str] = Field(
        default_factory=list, description="Why, in words with the numbers that decided it."
    )
    prevalence: dict[str, float] | None = Field(
        None,
        description="label_shift: each class's share on the batch and on the reference, "
        "flattened as '<class>:batch' and '<class>:ref'.",
    )
