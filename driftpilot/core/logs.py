"""Logging setup: rich console output for people, plain records for everything else."""

from __future__ import annotations

import logging
import os

_NOISY = ("alembic", "mlflow", "optuna", "urllib3", "httpx", "evidently", "fsspec")


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once; quiet chatty libraries unless debugging."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        root.addHandler(RichHandler(rich_tracebacks=True, show_path=False))
    root.setLevel(level.upper())
    # MLflow configures its own loggers when imported (later, lazily): tell it through its env var.
    os.environ.setdefault(
        "MLFLOW_LOGGING_LEVEL", "DEBUG" if level.upper() == "DEBUG" else "WARNING"
    )
    for name in _NOISY:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING
        )
