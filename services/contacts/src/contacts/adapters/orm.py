"""The contacts service's tables (SQLAlchemy Core), on the one ``metadata`` of the service.

The domain objects are plain dataclasses; :mod:`contacts.adapters.repositories` turns
rows into them and back. Every table carries ``company_id`` and every query filters on
it first, so each index starts with it.

Two columns exist only for searching, derived from the state by the repositories on every
write and never read back into the domain: ``contacts.name_key`` and ``contacts.tag_keys``
hold the name and the tags folded (case and accents ignored, as
:func:`contacts.domain.model.fold` does), so "joão" finds "João" and a filter on tag
``vip`` finds contacts tagged ``VIP``. ``contact_lists.name_key`` makes list names unique
per company in the same folded sense.

The import/export tables live in :mod:`contacts.adapters.import_tables`, on this same
``metadata``.
"""

from __future__ import annotations

from esquadrao_common.platform_tables import service_metadata
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

metadata = service_metadata()

#: Longest company id a token may carry into these tables.
COMPANY_ID_LENGTH = 64
#: Longest E.164 number: ``+`` and at most 15 digits.
PHONE_LENGTH = 16

contacts = Table(
    "contacts",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("company_id", String(COMPANY_ID_LENGTH), nullable=False),
    Column("phone_e164", String(PHONE_LENGTH), nullable=False),
    Column("name", Text, nullable=False, server_default=""),
    Column("email", Text, nullable=False, server_default=""),
    Column("tags", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("condominio", Text, nullable=False, server_default=""),
    Column("endereco", Text, nullable=False, server_default=""),
    Column("cargo", Text, nullable=False, server_default=""),
    Column("custom_fields", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("opted_out", Boolean, nullable=False, server_default=text("false")),
    Column("opted_out_at", DateTime(timezone=True), nullable=True),
    Column("opt_out_reason", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    Column("version", BigInteger, nullable=False),
    Column("name_key", Text, nullable=False, server_default=""),
    Column("tag_keys", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    # Deleted contacts keep their phone: a re-created phone is the same person.
    UniqueConstraint("company_id", "phone_e164"),
    CheckConstraint("version >= 1", name="version_positive"),
    CheckConstraint(
        "(opted_out AND opted_out_at IS NOT NULL) OR (NOT opted_out AND opted_out_at IS NULL)",
        name="opt_out_time",
    ),
)
# Keyset listing: WHERE company_id = ? AND (created_at, id) > (?, ?) ORDER BY created_at, id.
Index(None, contacts.c.company_id, contacts.c.created_at, contacts.c.id)
# Prefix searches (LIKE 'abc%'): text_pattern_ops works whatever the database collation.
Index(
    None,
    contacts.c.company_id,
    contacts.c.name_key,
    postgresql_ops={"name_key": "text_pattern_ops"},
)
Index(
    None,
    contacts.c.company_id,
    contacts.c.phone_e164,
    postgresql_ops={"phone_e164": "text_pattern_ops"},
)
# Filters: tag_keys @> ARRAY[?], custom_fields @> '{"bloco": "A"}'.
Index(None, contacts.c.tag_keys, postgresql_using="gin")
Index(
    None,
    contacts.c.custom_fields,
    postgresql_using="gin",
    postgresql_ops={"custom_fields": "jsonb_path_ops"},
)

custom_field_definitions = Table(
    "custom_field_definitions",
    metadata,
    Column("company_id", String(COMPANY_ID_LENGTH), nullable=False),
    Column("key", String(40), nullable=False),
    Column("label", Text, nullable=False),
    Column("type", String(16), nullable=False),
    Column("options", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("company_id", "key"),
)

contact_lists = Table(
    "contact_lists",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("company_id", String(COMPANY_ID_LENGTH), nullable=False),
    Column("name", Text, nullable=False),
    Column("name_key", Text, nullable=False),
    # Memberships, deleted contacts' included; kept in step by every add and remove.
    Column("member_count", Integer, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("company_id", "name_key"),
    CheckConstraint("member_count >= 0", name="member_count_not_negative"),
)
Index(None, contact_lists.c.company_id, contact_lists.c.created_at, contact_lists.c.id)

contact_list_members = Table(
    "contact_list_members",
    metadata,
    Column(
        "list_id",
        UUID(as_uuid=False),
        ForeignKey("contact_lists.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column(
        "contact_id",
        UUID(as_uuid=False),
        ForeignKey("contacts.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("company_id", String(COMPANY_ID_LENGTH), nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("list_id", "contact_id"),
)
# Members of a list in the order they were added (keyset), and the lists of a contact.
Index(
    None,
    contact_list_members.c.list_id,
    contact_list_members.c.added_at,
    contact_list_members.c.contact_id,
)
Index(None, contact_list_members.c.contact_id)

consent_keywords = Table(
    "consent_keywords",
    metadata,
    Column("company_id", String(COMPANY_ID_LENGTH), primary_key=True),
    Column("opt_out", ARRAY(Text), nullable=False),
    Column("opt_in", ARRAY(Text), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
