"""Trust in the audit: ``verify`` (every hash chain, the newest signed checkpoint, the
invariants across tables and against MLflow) and the signed checkpoints of the chain heads,
appended to a log outside the database after every run, rollback, bootstrap and label
attachment."""

from __future__ import annotations

import json
from typing import Any

from driftpilot.core.settings import Settings
from driftpilot.runs import leases
from driftpilot.store import AuditStore, VerifyResult
from driftpilot.store.models import ChampionChange, ManagedModel, Run

KEY_NAME = "driftpilot-audit"


class Trust:
    """Verification and signing of one audit store."""

    def __init__(self, store: AuditStore, settings: Settings) -> None:
        self.store, self.settings = store, settings

    def verify(self) -> VerifyResult:
        """Walk every hash chain, compare the database with the newest signed checkpoint
        (deleted or rewritten newest rows), and check the invariants across tables and
        against MLflow."""
        from driftpilot.store import checkpoint

        result = self.store.verify()
        problems: list[str] = []
        latest = checkpoint.latest_checkpoint(self.settings.audit_checkpoint_log)
        if latest is not None:
            problems += checkpoint.verify_against_checkpoint(
                self.store, latest, self.audit_key().public_key()
            )
        elif any(head.size for head in checkpoint.chain_heads(self.store).values()):
            problems.append(
                f"no signed checkpoint in {self.settings.audit_checkpoint_log}: the log is "
                "missing or empty, so deleted newest rows could not be detected (a home made "
                "before checkpoints existed: `driftpilot audit checkpoint` signs the heads now)"
            )
        problems += self.store.cross_checks()
        problems += self.registry_checks()
        result.problems = problems
        result.checkpoint = latest.text if latest is not None else None
        result.ok = result.ok and not problems
        return result

    def registry_checks(self) -> list[str]:
        """MLflow agrees with the audit: the champion is the one the history names, every
        registered version has its tool call, and no intent is left open by a dead run."""
        problems = []
        for managed in self.store.list_rows(ManagedModel, order=ManagedModel.name):
            found = self._registry_problems(managed.name)
            # A registry mutation under way (its intent open, its run holding the lease) sits
            # between MLflow's change and the audit's record of it: look again once it is
            # not, so verify on a live system reports breaks, not promotions in flight.
            if found and (
                self._in_flight(managed.name) or not self._registry_problems(managed.name)
            ):
                continue
            problems += found
        for intent in leases.dead_intents(self.store):
            problems.append(
                f"{intent.run_id[:24]}: intent to {intent.action} ({intent.step}) never "
                f"completed; {self._intent_fix(intent.run_id)}"
            )
        return problems

    def _intent_fix(self, run_id: str) -> str:
        """What closes a dead intent of ``run_id``: a bootstrap is finished by adding the model
        again; ``recover`` resumes a run still running, and closes (as failed, with what MLflow
        shows) the intent of a run that ended."""
        if run_id.startswith("bootstrap-"):
            return "add the model again to finish its bootstrap"
        runs = self.store.list_rows(Run, Run.id == run_id)
        if runs and runs[0].status != "running":
            return (
                f"its run ended {runs[0].status}; run `driftpilot recover` to close the intent "
                "with what MLflow shows of it"
            )
        return "run `driftpilot recover`"

    def _registry_problems(self, name: str) -> list[str]:
        """Where MLflow and the audit disagree on ``name``: its champion, unrecorded versions."""
        from tools import registry

        problems = []
        history = self.store.list_rows(
            ChampionChange, ChampionChange.model == name, order=ChampionChange.id
        )
        audited = history[-1].version if history else None
        actual = registry.current_champion(name, self.settings)
        if actual != audited:
            problems.append(
                f"{name}: MLflow's champion is v{actual}, the audit's champion history says "
                f"v{audited}"
            )
        logged = self.store.logged_versions(name)
        for version in registry.list_versions(name, self.settings):
            if version.version not in logged:
                problems.append(f"{name} v{version.version} has no register tool call")
        return problems

    def _in_flight(self, name: str) -> bool:
        """A registry mutation of ``name`` is under way: an open intent whose run still
        holds the model's lease (a dead one's is reported, and ``recover`` finishes it)."""
        dead = {m.id for m in leases.dead_intents(self.store, name)}
        return any(
            json.loads(m.args).get("name") == name and m.id not in dead
            for m in self.store.open_intents()
        )

    def audit_key(self) -> Any:
        from driftpilot.store import checkpoint

        assert self.settings.audit_key_path is not None
        return checkpoint.load_or_create_key(self.settings.audit_key_path)

    def checkpoint(self) -> str:
        """Sign the chain heads and append them to the checkpoint log outside the database."""
        from driftpilot.store import checkpoint

        text = checkpoint.sign_heads(
            self.store, self.audit_key(), self.settings.audit_origin, KEY_NAME
        )
        checkpoint.append_checkpoint(self.settings.audit_checkpoint_log, text)
        return text

    def latest_checkpoint(self) -> str:
        """The newest signed checkpoint (signing one now if none exists), for publishing."""
        from driftpilot.store import checkpoint

        latest = checkpoint.latest_checkpoint(self.settings.audit_checkpoint_log)
        return latest.text if latest is not None else self.checkpoint()

    def audit_verifier_key(self) -> str:
        """The public key that verifies audit checkpoints, as a signed-note verifier key."""
        from driftpilot.store import checkpoint

        return checkpoint.public_key_line(self.audit_key(), KEY_NAME)
