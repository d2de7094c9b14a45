"""drop APScheduler's job table: schedules are timed by croniter from their own rows

Revision ID: 0008
Revises: 0007

The scheduler (``driftpilot.scheduling``) no longer uses APScheduler: a schedule is due when
a time of its cron passed since its newest audited firing (or its last change), all of which
are in ``schedules`` and the audit's tool calls. APScheduler's ``apscheduler_jobs`` (made by
0004) held only pickled jobs and their next fire times, which are computed again; nothing is
migrated. Downgrade makes the table again, empty (an older scheduler re-adds its jobs from
``schedules`` at start).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_apscheduler_jobs_next_run_time", table_name="apscheduler_jobs")
    op.drop_table("apscheduler_jobs")


def downgrade() -> None:
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(length=191), nullable=False),
        sa.Column("next_run_time", sa.Float(precision=25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_apscheduler_jobs_next_run_time", "apscheduler_jobs", ["next_run_time"], unique=False
    )
