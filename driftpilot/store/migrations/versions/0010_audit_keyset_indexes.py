"""indexes for every audit query shape, each ending in the page's sort key (id)

Revision ID: 0010
Revises: 0009

``GET /audit`` pages every chained table by id (keyset: ``id > :after ORDER BY id LIMIT n``),
filtered by run (or a model's runs), agent and creation time. Each filter gets a composite
index ``(column, id)``: the page is a range scan of the index in page order, so a page costs
its own rows whatever the size of the trail, on SQLite and PostgreSQL alike (SQLite's
``(run_id)`` index already ends in the rowid; PostgreSQL's does not, so it sorted every row of
a run). ``runs (model, id)`` answers which runs a model has, for the model filter.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# (index name, table, columns): the filter column first, the page's sort key last.
INDEXES = (
    ("ix_decisions_run_id_id", "decisions", ["run_id", "id"]),
    ("ix_decisions_agent_id", "decisions", ["agent", "id"]),
    ("ix_decisions_created_at_id", "decisions", ["created_at", "id"]),
    ("ix_tool_calls_run_id_id", "tool_calls", ["run_id", "id"]),
    ("ix_tool_calls_agent_id", "tool_calls", ["agent", "id"]),
    ("ix_tool_calls_created_at_id", "tool_calls", ["created_at", "id"]),
    ("ix_approvals_run_id_id", "approvals", ["run_id", "id"]),
    ("ix_approvals_created_at_id", "approvals", ["created_at", "id"]),
    ("ix_champion_history_run_id_id", "champion_history", ["run_id", "id"]),
    ("ix_champion_history_model_id", "champion_history", ["model", "id"]),
    ("ix_champion_history_created_at_id", "champion_history", ["created_at", "id"]),
    ("ix_mutations_run_id_id", "mutations", ["run_id", "id"]),
    ("ix_mutations_created_at_id", "mutations", ["created_at", "id"]),
    # A step's latest row (``open_intent``) and whether an intent has a later row
    # (``open_intents``, checked before every run is created): one index probe each.
    ("ix_mutations_run_id_step_id", "mutations", ["run_id", "step", "id"]),
    ("ix_runs_model_id", "runs", ["model", "id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
