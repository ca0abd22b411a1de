"""Initial schema: the platform's tables, sessions, the send ledger, inbound dedup.

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from esquadrao_common.migrations import create_platform_tables, drop_platform_tables
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_platform_tables(op)
    op.create_table(
        "inbound_messages",
        sa.Column("session_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("provider_message_id", sa.Text(), nullable=False),
        sa.Column("company_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "session_id", "provider_message_id", name=op.f("pk_inbound_messages")
        ),
    )
    op.create_table(
        "messages",
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("company_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("pool_id", sa.Text(), server_default="", nullable=False),
        sa.Column("to_phone_e164", sa.String(length=16), nullable=False),
        sa.Column("command", sa.LargeBinary(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_message_id", sa.Text(), server_default="", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sending_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("origin_kind", sa.Text(), server_default="", nullable=False),
        sa.Column("origin_id", sa.Text(), server_default="", nullable=False),
        sa.Column("origin_item_id", sa.Text(), server_default="", nullable=False),
        sa.Column("error_code", sa.Text(), server_default="", nullable=False),
        sa.Column("error_title", sa.Text(), server_default="", nullable=False),
        sa.Column("error_detail", sa.Text(), server_default="", nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_messages")),
        sa.UniqueConstraint("seq", name=op.f("uq_messages_seq")),
    )
    op.create_index("ix_messages_company_id_seq", "messages", ["company_id", "seq"], unique=False)
    op.create_index(
        "ix_messages_in_flight",
        "messages",
        ["session_id"],
        unique=False,
        postgresql_where=sa.text("sending_since IS NOT NULL"),
    )
    op.create_index(
        "ix_messages_queue",
        "messages",
        ["session_id", "priority", "seq"],
        unique=False,
        postgresql_where=sa.text("status = 'queued' AND sending_since IS NULL"),
    )
    op.create_index(
        "ix_messages_session_id_provider_message_id",
        "messages",
        ["session_id", "provider_message_id"],
        unique=False,
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("company_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("phone_e164", sa.String(length=16), server_default="", nullable=False),
        sa.Column("provider_number_id", sa.Text(), server_default="", nullable=False),
        sa.Column("credentials", sa.LargeBinary(), nullable=True),
        sa.Column("desired_running", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="stopped", nullable=False),
        sa.Column("state_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pool_id", sa.Text(), server_default="", nullable=False),
        sa.Column("pool_priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("profile", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "limit_overrides",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("breaker_state", sa.String(length=16), server_default="closed", nullable=False),
        sa.Column("breaker_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("reconnect_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_reconnect_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("connected_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pairing", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("owner", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "metrics",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("metrics_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.BigInteger(), server_default=sa.text("1"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_index("ix_sessions_company_id_id", "sessions", ["company_id", "id"], unique=False)
    op.create_index(
        "ix_sessions_company_id_pool_id", "sessions", ["company_id", "pool_id"], unique=False
    )
    op.create_index(
        "ix_sessions_provider_number_id", "sessions", ["provider_number_id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_table("messages")
    op.drop_table("inbound_messages")
    drop_platform_tables(op)
