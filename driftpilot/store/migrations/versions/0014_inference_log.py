"""inference log: the rows a model's service logs, and the windows they close into

Revision ID: 0014
Revises: 0013

``inference_rows`` holds each logged prediction once per (model, row id); ``id`` is the
arrival order, ``label`` the label that came later. ``inference_windows`` holds each closed
window (an id range of its model's rows) and its run. ``(model, id)`` answers both "the open
rows of a model, oldest first" (after its newest window's last id) and "a window's rows" with
one range scan: closing a window writes one row, never its rows. ``models.windowing`` says
when a model's log closes a window (``{"rows": N, "minutes": M}``, JSON).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("windowing", sa.Text(), nullable=True))
    op.create_table(
        "inference_rows",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("row_id", sa.String(length=200), nullable=False),
        sa.Column("event_time", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.String(length=40), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("labelled_at", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "row_id", name="uq_inference_rows_model_row"),
    )
    op.create_index("ix_inference_rows_model_id", "inference_rows", ["model", "id"], unique=False)
    op.create_table(
        "inference_windows",
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("n_rows", sa.Integer(), nullable=False),
        sa.Column("first_id", sa.Integer(), nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("opened_at", sa.String(length=40), nullable=False),
        sa.Column("closed_at", sa.String(length=40), nullable=False),
        sa.Column("batch_id", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("model", "number"),
    )


def downgrade() -> None:
    op.drop_table("inference_windows")
    op.drop_index("ix_inference_rows_model_id", table_name="inference_rows")
    op.drop_table("inference_rows")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("windowing")
