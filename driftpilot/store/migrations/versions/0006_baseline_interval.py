"""the champion's out-of-time baseline: its interval and the labelled rows it was measured on

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("baseline_low", sa.Float(), nullable=True))
        batch.add_column(sa.Column("baseline_high", sa.Float(), nullable=True))
        batch.add_column(sa.Column("holdout_path", sa.String(length=1000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("holdout_path")
        batch.drop_column("baseline_high")
        batch.drop_column("baseline_low")
