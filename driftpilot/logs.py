"""Logging setup: rich console output for people, plain records for everything else."""

from __future__ import annotations

import logging

_NOISY = ("alembic", "mlflow", "optuna", "urllib3", "httpx", "evidently", "fsspec")


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once; quiet chatty libraries unless debugging."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        root.addHandler(RichHandler(rich_tracebacks=True, show_path=False))
    root.setLevel(level.upper())
    for name in _NOISY:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
        )
