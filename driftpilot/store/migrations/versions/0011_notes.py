"""context notes: what people know about a model's data, read by the drift analyst

Revision ID: 0011
Revises: 0010

``notes`` holds a person's notes on a model (a deploy, an ETL change, a campaign, a sensor
replaced), at the time the noted thing happened. Notes are append-only: triggers refuse
UPDATE and DELETE, as on the chained tables (a note the analyst cited must stay what it said;
its audit record, a chained tool call, holds its hash). ``(model, at)`` answers "the notes of
this model in this window" with one range scan.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("at", sa.String(length=40), nullable=False),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_notes_model_at", "notes", ["model", "at"], unique=False)
    _append_only("notes")


def _append_only(table: str) -> None:
    """Refuse UPDATE and DELETE on ``table`` (0001's function on PostgreSQL)."""
    dialect = op.get_bind().dialect.name
    for verb in ("UPDATE", "DELETE"):
        name = f"{table}_no_{verb.lower()}"
        if dialect == "sqlite":
            op.execute(
                f"CREATE TRIGGER {name} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )
        elif dialect == "postgresql":
            op.execute(
                f"CREATE TRIGGER {name} BEFORE {verb} ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION driftpilot_append_only()"
            )


def downgrade() -> None:
    # Dropping the table drops its triggers and its index on both databases.
    op.drop_table("notes")
