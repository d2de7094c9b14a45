"""webhook secrets: every delivery is signed with its webhook's own key

Revision ID: 0012
Revises: 0011

``webhooks.secret`` is the HMAC-SHA256 key of ``X-DriftPilot-Signature``. It is stored as
is, not hashed: signing needs the key itself (a hash could only verify). It is shown once, when
the webhook is created or its secret rotated, and never in listings or the audit.

Webhooks made before this revision get a fresh random secret here, so that every delivery is
signed and the column is NOT NULL. Nobody has seen those secrets: their receivers do not verify
yet, and an operator who wants them to runs ``driftpilot webhooks rotate-secret MODEL ID``,
which shows the new one once.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("secret", sa.String(length=100), nullable=True))
    webhooks = sa.table("webhooks", sa.column("id", sa.String), sa.column("secret", sa.String))
    bind = op.get_bind()
    for (webhook_id,) in bind.execute(sa.select(webhooks.c.id)).all():
        bind.execute(
            webhooks.update()
            .where(webhooks.c.id == webhook_id)
            .values(secret=secrets.token_urlsafe(32))
        )
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.alter_column("secret", existing_type=sa.String(length=100), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.drop_column("secret")
