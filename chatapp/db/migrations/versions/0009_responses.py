"""responses: /v1/responses answers kept server-side, each a turn of a conversation

A stored response maps to the user and reply messages of one turn of one of the user's
conversations; `previous_response_id` continues that conversation. The row is removed
with its reply message (an edit, a regenerate or deleting the conversation).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "user_id", sa.Uuid(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "conversation_id",
            sa.Uuid(),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("input_message_id", sa.Uuid(), nullable=False),
        sa.Column(
            "reply_message_id",
            sa.Uuid(),
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("previous_response_id", sa.Uuid(), nullable=True),
        sa.Column("instructions", sa.Text(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_responses_user", "responses", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_responses_user", table_name="responses")
    op.drop_table("responses")
