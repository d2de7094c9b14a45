"""a managed model's task, the owner's trainer and the lineage of an adopted model

Revision ID: 0009
Revises: 0008

``task`` (binary, multiclass or regression) decides the objective, the metrics and their
direction; every model made before it existed is a binary classifier, hence the default.
``trainer`` names the owner's training function (``package.module:fit``) that builds this
model's challengers instead of the built-in families. ``lineage`` (JSON) says where an
adopted model came from: its source URI and version and who adopted it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(
            sa.Column("task", sa.String(length=20), nullable=False, server_default="binary")
        )
        batch.add_column(sa.Column("trainer", sa.String(length=300), nullable=True))
        batch.add_column(sa.Column("lineage", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("lineage")
        batch.drop_column("trainer")
        batch.drop_column("task")
