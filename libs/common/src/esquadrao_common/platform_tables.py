"""The tables the platform owns in every service's database.

``outbox`` and ``outbox_lanes`` back the transactional outbox
(:mod:`esquadrao_common.outbox`, :mod:`esquadrao_common.relay`); ``processed_events`` is
the inbox of idempotent consumers (:mod:`esquadrao_common.inbox`). Services create them in
their first Alembic migration with :func:`esquadrao_common.migrations.create_platform_tables`.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

platform_metadata = MetaData()


def service_metadata() -> MetaData:
    """The ``MetaData`` of a service's own tables, naming constraints and indexes by one
    convention, so that Alembic migrations and the database agree on the names."""
    return MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


outbox_table = Table(
    "outbox",
    platform_metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("lane", SmallInteger, nullable=False),
    Column("topic", String(255), nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("value", LargeBinary, nullable=False),
    Column("headers", JSONB, nullable=False),
    Column("event_id", UUID(as_uuid=False), nullable=False),
    Column("event_type", String(255), nullable=False),
    Column("company_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True), nullable=True),
)
Index(
    "ix_outbox_unsent",
    outbox_table.c.lane,
    outbox_table.c.id,
    postgresql_where=outbox_table.c.sent_at.is_(None),
)
Index(
    "ix_outbox_sent_at",
    outbox_table.c.sent_at,
    postgresql_where=outbox_table.c.sent_at.is_not(None),
)

outbox_lanes_table = Table(
    "outbox_lanes",
    platform_metadata,
    Column("lane", SmallInteger, primary_key=True, autoincrement=False),
)

processed_events = Table(
    "processed_events",
    platform_metadata,
    Column("consumer_group", String(200), primary_key=True),
    Column("event_id", UUID(as_uuid=False), primary_key=True),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index("ix_processed_events_processed_at", processed_events.c.processed_at)
