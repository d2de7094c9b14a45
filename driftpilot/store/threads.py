"""LangGraph threads: the ``threads`` table (one row per placeholder thread).

A LangGraph client makes a thread first (``threads.create``) and runs on it afterwards; a
control run only exists once it has a model and a batch. A row here is such a placeholder:
its metadata, who made it, and, once the first run on it was submitted, the control run it
is bound to (``run_id``, unique: a run shows under one placeholder at most) with the run's
assistant, metadata and multitask strategy. A control run without a row is a thread too,
under its own id (``driftpilot.runs.threads``).

Before migration 0007 these records were rows of the idempotency ledger (``step_effects``
steps ``langgraph.thread``, ``langgraph.thread.run`` and ``langgraph.run.thread``); the
migration moved them here, so search can filter, sort and page in SQL.
"""

from __future__ import annotations

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from driftpilot.store.models import Base


class Thread(Base):
    """A placeholder thread, bound to its control run once the first run on it starts."""

    __tablename__ = "threads"
    thread_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    meta: Mapped[str] = mapped_column(Text, default="{}", doc="the client's metadata (JSON)")
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[str] = mapped_column(String(40))
    run_id: Mapped[str | None] = mapped_column(String(40), nullable=True, unique=True)
    assistant_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    run_meta: Mapped[str | None] = mapped_column(
        Text, nullable=True, doc="the metadata of the run that bound it (JSON)"
    )
    multitask_strategy: Mapped[str | None] = mapped_column(String(20), nullable=True)
    bound_at: Mapped[str | None] = mapped_column(String(40), nullable=True)
