"""auth_failures: failed sign-ins and unknown API keys per client address and per name

Revision ID: 0013
Revises: 0012

One row per (kind, name): ``address`` (a client address, IPv6 per /64), ``user`` (a chat
user name) or ``key`` (an API key's id). The API and the chat are separate processes: the
counters live here so that both, and a restart, see the same lockouts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_failures",
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.String(length=40), nullable=False),
        sa.Column("lockouts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.String(length=40), nullable=True),
        sa.Column("last_failure", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name"),
    )


def downgrade() -> None:
    op.drop_table("auth_failures")
