"""``python -m driftpilot.cli``: the ``driftpilot`` command."""

from driftpilot.cli import app

app()
