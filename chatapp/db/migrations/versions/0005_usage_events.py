"""usage events: one append-only row per model call, the budget's source of truth

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

Usage used to be read from the stored replies, so `/v1` completions (never stored) and
deleted, regenerated or edited replies escaped the monthly budget. Rows here are never
deleted with conversations. Existing replies' usage is copied in, so no one's month resets.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column(
            "user_id", sa.Uuid(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(64), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Numeric(14, 8, asdecimal=False), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_usage_events_user_time", "usage_events", ["user_id", "created_at"])
    op.execute(
        "INSERT INTO usage_events (user_id, created_at, kind, conversation_id, model, provider,"
        " prompt_tokens, completion_tokens, cost_usd, cached, complete)"
        " SELECT c.user_id, m.created_at, 'chat', m.conversation_id, m.model, m.provider,"
        " m.prompt_tokens, m.completion_tokens, m.cost_usd, m.cached, m.status = 'complete'"
        " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " WHERE m.role = 'assistant'"
    )


def downgrade() -> None:
    op.drop_index("ix_usage_events_user_time", table_name="usage_events")
    op.drop_table("usage_events")
