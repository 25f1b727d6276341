"""A user message may carry the client's Idempotency-Key

A retried message post with the same key (a response lost to a dead connection or a
killed replica) gets the stored turn back instead of a second one; the key is unique per
conversation.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        batch.create_unique_constraint(
            "uq_messages_conv_idempotency_key", ["conversation_id", "idempotency_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("uq_messages_conv_idempotency_key", type_="unique")
        batch.drop_column("idempotency_key")
