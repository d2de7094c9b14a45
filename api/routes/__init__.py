"""One router per resource: runs, approvals, audit, models, health."""
