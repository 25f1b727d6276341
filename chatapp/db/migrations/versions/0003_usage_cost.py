"""usage accounting on messages: provider, cost, cached

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("provider", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column(
                "cost_usd",
                sa.Numeric(14, 8, asdecimal=False),
                nullable=False,
                server_default=sa.text("0"),
            )
        )
        batch.add_column(
            sa.Column("cached", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("cached")
        batch.drop_column("cost_usd")
        batch.drop_column("provider")
