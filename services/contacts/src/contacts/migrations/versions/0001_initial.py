"""Initial schema: the platform's tables, contacts, custom fields, lists, consent keywords.

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

EMPTY_ARRAY = sa.text("'{}'")


def upgrade() -> None:
    create_platform_tables(op)
    op.create_table(
        "contacts",
        sa.Column("id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("company_id", sa.String(64), nullable=False),
        sa.Column("phone_e164", sa.String(16), nullable=False),
        sa.Column("name", sa.Text(), server_default="", nullable=False),
        sa.Column("email", sa.Text(), server_default="", nullable=False),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default=EMPTY_ARRAY, nullable=False),
        sa.Column("condominio", sa.Text(), server_default="", nullable=False),
        sa.Column("endereco", sa.Text(), server_default="", nullable=False),
        sa.Column("cargo", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "custom_fields",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("opted_out", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("opted_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("opt_out_reason", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("name_key", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "tag_keys", postgresql.ARRAY(sa.Text()), server_default=EMPTY_ARRAY, nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_contacts"),
        sa.UniqueConstraint("company_id", "phone_e164", name="uq_contacts_company_id_phone_e164"),
        sa.CheckConstraint("version >= 1", name="ck_contacts_version_positive"),
        sa.CheckConstraint(
            "(opted_out AND opted_out_at IS NOT NULL) OR (NOT opted_out AND opted_out_at IS NULL)",
            name="ck_contacts_opt_out_time",
        ),
    )
    op.create_index(
        "ix_contacts_company_id_created_at_id", "contacts", ["company_id", "created_at", "id"]
    )
    op.create_index(
        "ix_contacts_company_id_name_key",
        "contacts",
        ["company_id", "name_key"],
        postgresql_ops={"name_key": "text_pattern_ops"},
    )
    op.create_index(
        "ix_contacts_company_id_phone_e164",
        "contacts",
        ["company_id", "phone_e164"],
        postgresql_ops={"phone_e164": "text_pattern_ops"},
    )
    op.create_index("ix_contacts_tag_keys", "contacts", ["tag_keys"], postgresql_using="gin")
    op.create_index(
        "ix_contacts_custom_fields",
        "contacts",
        ["custom_fields"],
        postgresql_using="gin",
        postgresql_ops={"custom_fields": "jsonb_path_ops"},
    )

    op.create_table(
        "custom_field_definitions",
        sa.Column("company_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(40), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column(
            "options", postgresql.ARRAY(sa.Text()), server_default=EMPTY_ARRAY, nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("company_id", "key", name="pk_custom_field_definitions"),
    )

    op.create_table(
        "contact_lists",
        sa.Column("id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("company_id", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("name_key", sa.Text(), nullable=False),
        sa.Column("member_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_contact_lists"),
        sa.UniqueConstraint("company_id", "name_key", name="uq_contact_lists_company_id_name_key"),
        sa.CheckConstraint("member_count >= 0", name="ck_contact_lists_member_count_not_negative"),
    )
    op.create_index(
        "ix_contact_lists_company_id_created_at_id",
        "contact_lists",
        ["company_id", "created_at", "id"],
    )

    op.create_table(
        "contact_list_members",
        sa.Column("list_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("contact_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("company_id", sa.String(64), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("list_id", "contact_id", name="pk_contact_list_members"),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["contact_lists.id"],
            name="fk_contact_list_members_list_id_contact_lists",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_contact_list_members_contact_id_contacts",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_contact_list_members_list_id_added_at_contact_id",
        "contact_list_members",
        ["list_id", "added_at", "contact_id"],
    )
    op.create_index("ix_contact_list_members_contact_id", "contact_list_members", ["contact_id"])

    op.create_table(
        "consent_keywords",
        sa.Column("company_id", sa.String(64), nullable=False),
        sa.Column("opt_out", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("opt_in", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("company_id", name="pk_consent_keywords"),
    )


def downgrade() -> None:
    op.drop_table("consent_keywords")
    op.drop_table("contact_list_members")
    op.drop_table("contact_lists")
    op.drop_table("custom_field_definitions")
    op.drop_table("contacts")
    drop_platform_tables(op)
