"""DriftPilot's error hierarchy.

Every error DriftPilot raises on purpose is a ``DriftPilotError``; callers (CLI, API, agents)
catch the branch they can handle and let the rest surface with its message.

    DriftPilotError
    ├── ConfigError                 a setting or argument is invalid
    │   ├── InvalidPrincipal        a principal name is empty, blank or has invisible characters
    │   └── UnsafeURL               a webhook's host resolves to an internal address (SSRF)
    ├── DataError                   input data cannot be used
    │   ├── DatasetUnavailable      a built-in or remote dataset cannot be fetched
    │   ├── IntegrityError          a checksum (sha256 / md5) does not match
    │   ├── FormatError             a file is not in the expected format (e.g. GDELT 1.0)
    │   └── SchemaError             columns or dtypes differ from what is expected
    ├── ModelError                  training, scoring or evaluation failed
    │   ├── TuningError             an Optuna study could not produce a result
    │   └── TrainerFailed           the owner's trainer raised, hung, ran out of memory or
    │                               returned no usable model (reason and log tail attached)
    ├── RegistryError               MLflow tracking / registry failed
    │   ├── AliasNotFound           no model version carries the asked alias
    │   └── ChampionMoved           compare-and-swap: the champion is not the one expected
    ├── SynthError                  synthetic scenario generation failed
    ├── NotFound                    no such run / model / approval
    ├── ModelBusy                   another run holds the model's lease (one run per model)
    ├── ApprovalError               an approval cannot be given (self-approval, decided)
    ├── RunStateError               the run's status does not allow it (cancel a running run)
    ├── PolicyViolation             an action the risk policy forbids (e.g. unapproved promote)
    ├── LLMError                    the chat model failed (timeout, invalid output)
    ├── AuditWriteError             the audit database refused or timed out an append
    └── BackupError                 a backup cannot be taken or restored (target not empty,
                                    stores of another kind, pg_dump/pg_restore failed)
"""

from __future__ import annotations


class DriftPilotError(Exception):
    """Base class of every error DriftPilot raises on purpose."""


class ConfigError(DriftPilotError):
    """A setting or argument is invalid."""


class InvalidPrincipal(ConfigError):
    """A principal name is empty, blank, too long or holds invisible characters."""


class UnsafeURL(ConfigError):
    """A webhook's host resolves to a loopback, private, link-local, multicast, reserved or
    otherwise non-public address, and is not in ``DRIFTPILOT_ALERTS_ALLOW_HOSTS``."""


class DataError(DriftPilotError):
    """Input data cannot be used."""


class DatasetUnavailable(DataError):
    """A built-in or remote dataset cannot be fetched or found."""


class IntegrityError(DataError):
    """A downloaded or cached file does not match its expected checksum."""


class FormatError(DataError):
    """A file is not in the expected format."""


class SchemaError(DataError):
    """Columns or dtypes differ from what is expected."""


class ModelError(DriftPilotError):
    """Training, scoring or evaluation of a model failed."""


class TuningError(ModelError):
    """A hyper-parameter study could not produce a result."""


class TrainerFailed(ModelError):
    """The owner's training code (``package.module:fit``) gave no usable challenger.

    ``reason`` names what went wrong, one of ``TRAINER_FAILURES``; ``log_tail`` is the end of
    the trainer's output (its full log is kept at ``log_path``)."""

    def __init__(
        self, reason: str, message: str, log_tail: str = "", log_path: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.log_tail = log_tail
        self.log_path = log_path


# Why a trainer fails (TrainerFailed.reason).
TRAINER_FAILURES = (
    "invalid",  # the reference is not 'package.module:fit' or the module has no such function
    "raised",  # importing the module or calling fit raised
    "timeout",  # it ran past its time limit and was killed
    "out_of_memory",  # it went past its memory limit
    "unusable",  # fit returned something that cannot score the task
    "crashed",  # the process died without saying why (a signal, an exit code)
)


class RegistryError(DriftPilotError):
    """MLflow tracking or model-registry operation failed."""


class AliasNotFound(RegistryError):
    """No registered version of the model carries the requested alias."""


class ChampionMoved(RegistryError):
    """The champion is no longer the version a promotion was compared against."""


class SynthError(DriftPilotError):
    """Synthetic scenario generation failed."""


class NotFound(DriftPilotError):
    """No such run, model or approval."""


class ModelBusy(DriftPilotError):
    """Another run holds the model's lease: one run per model at a time."""


class ApprovalError(DriftPilotError):
    """An approval cannot be given: self-approval, unknown decision, already decided."""


class RunStateError(DriftPilotError):
    """The run's status does not allow the operation (e.g. cancelling a run that started)."""


class PolicyViolation(DriftPilotError):
    """An action the risk policy forbids, e.g. promoting a high-risk model unapproved."""


class LLMError(DriftPilotError):
    """The chat model failed: timeout, invalid JSON, unknown tool, decision out of bounds."""


class AuditWriteError(DriftPilotError):
    """The audit database refused an append or stayed locked past its timeout."""


class BackupError(DriftPilotError):
    """A backup cannot be taken or restored: the target is not empty, a store is of another
    kind than the backup's, or pg_dump / pg_restore failed. (A tampered backup is an
    ``IntegrityError``; a run in flight, ``ModelBusy``.)"""
