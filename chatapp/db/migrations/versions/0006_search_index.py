"""full-text index for conversation search (PostgreSQL)

Searching messages with ILIKE '%q%' reads every message of the user and compares the
query at every offset of each: a long query against long messages cost hundreds of times
a normal search, and no index helps (the planner does not know ILIKE's cost grows with
the row, so even a trigram index lost to a sequential scan). On PostgreSQL messages are
searched by words instead, through a GIN index over their `simple` text-search vector:
a query costs its matching rows, whatever their length. SQLite, the embedded
single-machine default, keeps its LIKE scan: nothing to do there.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # The expression must stay equal to chatapp.chat.repository's, or the index is unused.
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_messages_content_fts "
        "ON messages USING gin (to_tsvector('simple', content))"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_messages_content_fts")
