"""Append-only, hash-chained audit trail of runs, decisions, tool calls and approvals."""

from driftpilot.store.audit import AuditStore, VerifyResult

__all__ = ["AuditStore", "VerifyResult"]
