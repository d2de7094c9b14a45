"""LangGraph threads in their own table, moved out of the step-effects ledger

Revision ID: 0007
Revises: 0006

Placeholder threads were rows of ``step_effects`` (steps ``langgraph.thread``: metadata,
created_at, created_by; ``langgraph.thread.run``: the bound run; ``langgraph.run.thread``:
the way back from the run). They become rows of ``threads``; downgrade writes them back.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

THREAD = "langgraph.thread"
BIND = "langgraph.thread.run"
RUN_THREAD = "langgraph.run.thread"

_effects = sa.table(
    "step_effects",
    sa.column("id", sa.Integer),
    sa.column("run_id", sa.String),
    sa.column("step", sa.String),
    sa.column("result", sa.Text),
    sa.column("created_at", sa.String),
)


def _threads_table() -> sa.TableClause:
    return sa.table(
        "threads",
        sa.column("thread_id", sa.String),
        sa.column("meta", sa.Text),
        sa.column("created_by", sa.String),
        sa.column("created_at", sa.String),
        sa.column("run_id", sa.String),
        sa.column("assistant_id", sa.String),
        sa.column("run_meta", sa.Text),
        sa.column("multitask_strategy", sa.String),
        sa.column("bound_at", sa.String),
    )


def _dumps(value: Any) -> str:
    """As ``AuditStore.record_effect`` writes a result."""
    return json.dumps(value, sort_keys=True, default=str)


def upgrade() -> None:
    op.create_table(
        "threads",
        sa.Column("thread_id", sa.String(length=40), nullable=False),
        sa.Column("meta", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("assistant_id", sa.String(length=200), nullable=True),
        sa.Column("run_meta", sa.Text(), nullable=True),
        sa.Column("multitask_strategy", sa.String(length=20), nullable=True),
        sa.Column("bound_at", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("thread_id"),
        sa.UniqueConstraint("run_id"),
    )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_effects.c.run_id, _effects.c.step, _effects.c.result, _effects.c.created_at)
        .where(_effects.c.step.in_([THREAD, BIND]))
        .order_by(_effects.c.id)
    ).all()
    binds = {r.run_id: json.loads(r.result) for r in rows if r.step == BIND}
    threads = []
    for row in rows:
        if row.step != THREAD:
            continue
        record = json.loads(row.result)
        bound = binds.get(row.run_id, {})
        threads.append(
            {
                "thread_id": row.run_id,
                "meta": _dumps(record.get("metadata") or {}),
                "created_by": record.get("created_by"),
                "created_at": str(record.get("created_at") or row.created_at),
                "run_id": bound.get("run_id"),
                "assistant_id": bound.get("assistant_id"),
                "run_meta": _dumps(bound["metadata"]) if "metadata" in bound else None,
                "multitask_strategy": bound.get("multitask_strategy"),
                "bound_at": bound.get("created_at"),
            }
        )
    if threads:
        op.bulk_insert(_threads_table(), threads)
    conn.execute(sa.delete(_effects).where(_effects.c.step.in_([THREAD, BIND, RUN_THREAD])))


def downgrade() -> None:
    conn = op.get_bind()
    threads = _threads_table()
    effects = []
    for row in conn.execute(sa.select(threads)).all():
        record = {
            "metadata": json.loads(row.meta or "{}"),
            "created_at": row.created_at,
            "created_by": row.created_by,
        }
        effects.append(
            {
                "run_id": row.thread_id,
                "step": THREAD,
                "result": _dumps(record),
                "created_at": row.created_at,
            }
        )
        if row.run_id is not None:
            bound = {
                "run_id": row.run_id,
                "assistant_id": row.assistant_id,
                "metadata": json.loads(row.run_meta or "{}"),
                "multitask_strategy": row.multitask_strategy,
                "created_at": row.bound_at,
            }
            at = row.bound_at or row.created_at
            effects.append(
                {"run_id": row.thread_id, "step": BIND, "result": _dumps(bound), "created_at": at}
            )
            effects.append(
                {
                    "run_id": row.run_id,
                    "step": RUN_THREAD,
                    "result": _dumps({"thread_id": row.thread_id}),
                    "created_at": at,
                }
            )
    if effects:
        op.bulk_insert(_effects, effects)
    op.drop_table("threads")
