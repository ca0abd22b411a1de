"""The whatsapp service's tables (SQLAlchemy Core), on the one ``metadata`` of the service.

* ``sessions`` — a company's numbers: configuration, the encrypted credentials, the state
  the owning worker last reached, its breaker, and the per-session figures it flushes.
* ``messages`` — the send ledger, keyed by the command's message id (see
  :mod:`whatsapp.domain.ledger`). The partial index on queued entries is the driver's
  work queue: interactive before bulk, then arrival order.
* ``inbound_messages`` — provider message ids already turned into ``MessageReceived``
  events, so a webhook retry or a replayed push is published once.
"""

from __future__ import annotations

from esquadrao_common.platform_tables import service_metadata
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = service_metadata()

COMPANY_ID_LENGTH = 64
PHONE_LENGTH = 16
MESSAGE_ID_LENGTH = 128

sessions = Table(
    "sessions",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("company_id", String(COMPANY_ID_LENGTH), nullable=False),
    Column("name", Text, nullable=False),
    Column("provider", String(16), nullable=False),
    Column("phone_e164", String(PHONE_LENGTH), nullable=False, server_default=""),
    Column("provider_number_id", Text, nullable=False, server_default=""),
    Column("credentials", LargeBinary, nullable=True),
    Column("desired_running", Boolean, nullable=False, server_default=text("false")),
    Column("state", String(16), nullable=False, server_default="stopped"),
    Column("state_reason", Text, nullable=False, server_default=""),
    Column("state_changed_at", DateTime(timezone=True), nullable=True),
    Column("pool_id", Text, nullable=False, server_default=""),
    Column("pool_priority", Integer, nullable=False, server_default=text("0")),
    Column("profile", Text, nullable=False, server_default=""),
    Column("limit_overrides", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("breaker_state", String(16), nullable=False, server_default="closed"),
    Column("breaker_reason", Text, nullable=False, server_default=""),
    Column("reconnect_attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_reconnect_at", DateTime(timezone=True), nullable=True),
    Column("connected_since", DateTime(timezone=True), nullable=True),
    Column("pairing", JSONB, nullable=True),
    Column("owner", Text, nullable=False, server_default=""),
    Column("metrics", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("metrics_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    Column("version", BigInteger, nullable=False, server_default=text("1")),
    Index("ix_sessions_company_id_id", "company_id", "id"),
    Index("ix_sessions_company_id_pool_id", "company_id", "pool_id"),
    Index("ix_sessions_provider_number_id", "provider_number_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("message_id", String(MESSAGE_ID_LENGTH), primary_key=True),
    Column("seq", BigInteger, Identity(always=True), nullable=False, unique=True),
    Column("company_id", String(COMPANY_ID_LENGTH), nullable=False),
    Column("session_id", UUID(as_uuid=False), nullable=False),
    Column("pool_id", Text, nullable=False, server_default=""),
    Column("to_phone_e164", String(PHONE_LENGTH), nullable=False),
    Column("command", LargeBinary, nullable=False),
    Column("priority", SmallInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("provider_message_id", Text, nullable=False, server_default=""),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("not_after", DateTime(timezone=True), nullable=True),
    Column("sending_since", DateTime(timezone=True), nullable=True),
    Column("origin_kind", Text, nullable=False, server_default=""),
    Column("origin_id", Text, nullable=False, server_default=""),
    Column("origin_item_id", Text, nullable=False, server_default=""),
    Column("error_code", Text, nullable=False, server_default=""),
    Column("error_title", Text, nullable=False, server_default=""),
    Column("error_detail", Text, nullable=False, server_default=""),
    Column("queued_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The driver's queue: what a session may send next, in the order it must go.
    Index(
        "ix_messages_queue",
        "session_id",
        "priority",
        "seq",
        postgresql_where=text("status = 'queued' AND sending_since IS NULL"),
    ),
    # Entries left in flight by a crash, found when a session is adopted.
    Index(
        "ix_messages_in_flight",
        "session_id",
        postgresql_where=text("sending_since IS NOT NULL"),
    ),
    Index("ix_messages_session_id_provider_message_id", "session_id", "provider_message_id"),
    Index("ix_messages_company_id_seq", "company_id", "seq"),
)

inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("session_id", UUID(as_uuid=False), nullable=False),
    Column("provider_message_id", Text, nullable=False),
    Column("company_id", String(COMPANY_ID_LENGTH), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("session_id", "provider_message_id"),
)
