"""Rollback: move ``champion`` back to the previous champion and restore its reference window
and baseline, under the model's lease, idempotent per operation key, through the one
champion-move transaction (``tools.champion``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

from agents.context import RunContext
from driftpilot.core.errors import ChampionMoved, NotFound, RegistryError
from driftpilot.core.identity import normalize_principal
from driftpilot.core.settings import Settings
from driftpilot.runs import leases
from driftpilot.runs.views import Emit
from driftpilot.store import AuditStore
from driftpilot.store.models import ChampionChange, ManagedModel


class Rollbacks:
    """Rolls champions back; ``emit`` announces each rollback, ``sign`` signs the audit heads."""

    def __init__(
        self,
        store: AuditStore,
        settings: Settings,
        ctx: RunContext,
        emit: Emit,
        sign: Callable[[], str],
    ) -> None:
        self.store, self.settings, self.ctx = store, settings, ctx
        self.emit, self.sign = emit, sign

    def rollback(
        self,
        model: str,
        actor: str,
        reason: str = "",
        key: str | None = None,
        expect: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        """Move ``champion`` back to the previous champion, restoring its reference window.
        Idempotent per ``key``; takes the model's lease like a run. ``expect`` (from, to) is
        what the person confirmed: checked under the lease.

        Raises:
            ModelBusy: a run is working on the model.
            RegistryError: there is no previous champion.
            ChampionMoved: the champions are no longer ``expect``.
        """
        actor = normalize_principal(actor)
        op_id = key or f"rb-{uuid.uuid4().hex}"
        done = self.store.effect(op_id, "rollback")
        if done is not None:
            return done
        self.store.get(ManagedModel, model)
        if self.store.open_intent(op_id, "rollback") is None:
            leases.refuse_if_unrecovered(self.store, model)
        ttl_s = self.settings.lease_ttl_s
        lease = leases.acquire(self.store, ttl_s, model, op_id, wait=False)
        try:
            with leases.LeaseKeeper(self.store, model, op_id, lease, ttl_s):
                result = self._rollback(model, actor, reason, op_id, expect)
        finally:
            self.sign()
        self.emit("rollback", model, op_id, {**result, "reason": reason})
        return result

    def _rollback(
        self, model: str, actor: str, reason: str, op_id: str, expect: tuple[int, int] | None
    ) -> dict[str, Any]:
        from tools import champion, registry

        intent = self.store.open_intent(op_id, "rollback")
        if intent is not None:  # finishing a rollback that died: its intent says what it was
            planned = json.loads(intent.args)
            champions = [planned["to"], planned["from"]]
        else:
            champions = registry.champion_history(model, self.settings)
        if len(champions) < 2:
            raise RegistryError(f"model {model!r} has no previous champion to roll back to")
        if expect is not None and (champions[-1], champions[-2]) != expect:
            raise ChampionMoved(
                f"{model} would roll back v{champions[-1]} to v{champions[-2]}, not the "
                f"confirmed v{expect[0]} to v{expect[1]}: nothing was rolled back"
            )
        # Find what restores the previous champion's reference window before moving anything.
        history = self.store.list_rows(
            ChampionChange, ChampionChange.model == model, order=ChampionChange.id
        )
        origin = next(
            (r for r in reversed(history) if r.version == champions[-2] and r.action != "rollback"),
            None,
        )
        if origin is None:
            raise NotFound(f"v{champions[-2]} of {model!r} has no promotion record in the audit")
        trained = self.store.effect(origin.run_id, "promote") or {}

        def settle(moved: registry.PromotionResult) -> champion.Record:
            return champion.Record(
                version=moved.current,
                previous=moved.previous,
                model_fields={
                    "reference_path": trained.get("window_path"),
                    "baseline": trained.get("baseline"),
                    "family": trained.get("family", self.store.get(ManagedModel, model).family),
                },
                rationale=f"{actor} rolled {model} back from v{moved.previous} to "
                f"v{moved.current}: {reason}",
                evidence=moved.model_dump(),
                effect={"model": model, "from": moved.previous, "to": moved.current, "by": actor},
            )

        return champion.rollback(
            self.ctx,
            op_id,
            model,
            (champions[-1], champions[-2]),
            actor=actor,
            settle=settle,
            fault="after_rollback",
        )
