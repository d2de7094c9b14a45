"""What a run's mutating steps did: the write-ahead ``mutations`` chain (an ``intent`` before a
registry mutation, then its end row) and the idempotency ledger (``step_effects``: one
result per run step, the first one recorded, so a replayed step does not act twice)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import aliased

from driftpilot.store.chain import Chain
from driftpilot.store.engine import dumps, now
from driftpilot.store.models import Mutation, StepEffect


class Effects(Chain):
    """Intents and their ends; the results of mutating steps."""

    # -- write-ahead mutations ------------------------------------------------------------------

    def record_mutation(
        self,
        run_id: str,
        step: str,
        action: str,
        phase: str,
        args: dict[str, Any],
        result: Any = None,
    ) -> Mutation:
        """Append an ``intent`` (before a registry mutation) or its end: ``applied``,
        ``reconciled`` (found done on resume), ``void`` (refused, nothing changed) or ``failed``
        (the step raised; the row records the error and what MLflow shows)."""
        return self._append(
            Mutation(
                run_id=run_id,
                step=step,
                action=action,
                phase=phase,
                args=dumps(args),
                result=dumps(result),
            )
        )

    def last_mutation(self, run_id: str, step: str) -> Mutation | None:
        """The newest write-ahead row of (run, step), if the step was ever attempted."""
        rows = self.list_rows(
            Mutation,
            Mutation.run_id == run_id,
            Mutation.step == step,
            order=Mutation.id.desc(),
            limit=1,
        )
        return rows[0] if rows else None

    def open_intent(self, run_id: str, step: str) -> Mutation | None:
        """The intent of (run, step) that has no end row yet: it may or may not have happened."""
        last = self.last_mutation(run_id, step)
        return last if last is not None and last.phase == "intent" else None

    def open_intents(self) -> list[Mutation]:
        """Every intent still without its end row (a crash between intent and effect)."""
        later = aliased(Mutation)
        ended = (
            select(later.id)
            .where(later.run_id == Mutation.run_id, later.step == Mutation.step)
            .where(later.id > Mutation.id)
            .exists()
        )
        return self.list_rows(Mutation, Mutation.phase == "intent", ~ended, order=Mutation.id)

    # -- idempotency ledger -------------------------------------------------------------------

    def effect(self, run_id: str, step: str) -> dict[str, Any] | None:
        """The recorded result of a mutating step, if it already ran."""
        with self.reading() as session:
            row = session.scalars(
                select(StepEffect).where(StepEffect.run_id == run_id, StepEffect.step == step)
            ).first()
        return json.loads(row.result) if row else None

    def record_effect(self, run_id: str, step: str, result: dict[str, Any]) -> None:
        """Remember what a step did; a replay that records it again keeps the first record."""
        with self.session() as session:
            exists = session.scalar(
                select(StepEffect.id).where(StepEffect.run_id == run_id, StepEffect.step == step)
            )
            if exists is not None:
                return
            session.add(
                StepEffect(run_id=run_id, step=step, result=dumps(result), created_at=now())
            )
