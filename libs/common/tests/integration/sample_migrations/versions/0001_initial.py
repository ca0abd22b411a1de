"""Initial schema: the platform's tables and a notes table.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from esquadrao_common.migrations import create_platform_tables, drop_platform_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_platform_tables(op)
    op.create_table(
        "notes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("body", sa.String()),
    )


def downgrade() -> None:
    op.drop_table("notes")
    drop_platform_tables(op)
