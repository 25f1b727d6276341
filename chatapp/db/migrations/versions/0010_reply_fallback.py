"""A reply keeps the model that failed before the one that answered it

The page showed "Answered by fallback model" on a live answer only; stored with the reply,
the badge is still there after a reload, in the history API and in exports.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("fallback_from", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("fallback_from")
