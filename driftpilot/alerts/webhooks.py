"""Alerts: webhooks per model, posted when the control plane has something to tell.

A webhook has a URL, a format and the event kinds it wants (default: all of them):
``approval_waiting``, ``promotion``, ``rollback``, ``quarantine_streak``, ``run_failed``,
``episode_escalated`` (a drift episode's challengers kept losing: retrains are held until the
evidence changes; the detail carries the episode and its diagnosis).

The parts, each its own module:

- ``hooks``: the webhooks of a model (``Webhooks``, ``WebhookSpec``, the views), their
  secrets (shown once) and ``redact_url`` (URLs can carry secrets: the audit, the logs and
  the API show only scheme, host and port).
- ``destinations``: the SSRF guard; a host resolving to an internal address is refused at
  creation and before every delivery, and deliveries connect to the checked address only.
- ``signing``: ``X-DriftPilot-Signature`` and ``verify_signature`` for receivers.
- ``bodies``: the ``json`` and ``slack`` bodies.
- ``dispatch``: the ``AlertDispatcher`` (background threads, retries, the audit of every
  attempt).

This module gathers their public names.
"""

from __future__ import annotations

from driftpilot.alerts.bodies import body_of, json_body, slack_body, summary
from driftpilot.alerts.destinations import (
    Destination,
    Resolver,
    address_class,
    resolve,
    system_resolver,
)
from driftpilot.alerts.dispatch import TOOL, AlertDispatcher, Attempt, backoff
from driftpilot.alerts.hooks import (
    AGENT,
    EVENT_KINDS,
    EventKind,
    WebhookCreated,
    WebhookFormat,
    Webhooks,
    WebhookSpec,
    WebhookView,
    check_url,
    redact_url,
)
from driftpilot.alerts.signing import signature_header, verify_signature
from driftpilot.core.settings import AlertSettings

__all__ = [
    "AGENT",
    "EVENT_KINDS",
    "TOOL",
    "AlertDispatcher",
    "AlertSettings",
    "Attempt",
    "Destination",
    "EventKind",
    "Resolver",
    "WebhookCreated",
    "WebhookFormat",
    "WebhookSpec",
    "WebhookView",
    "Webhooks",
    "address_class",
    "backoff",
    "body_of",
    "check_url",
    "json_body",
    "redact_url",
    "resolve",
    "signature_header",
    "slack_body",
    "summary",
    "system_resolver",
    "verify_signature",
]
