"""The transactional outbox: events are written with the state change that caused them.

A handler stages its events with :meth:`Outbox.add` in its own unit of work; they become
rows of the ``outbox`` table in the same transaction as the state they describe, so either
both exist or neither does. The relay (:mod:`esquadrao_common.relay`) publishes committed
rows to Kafka and marks them sent.

Each row stores what the relay needs to publish without knowing the topic's schema: topic,
key, the encoded wrapper message and the headers, including the W3C trace context of the
request that staged it, so the trace continues through Kafka.

Ordering. Rows are assigned to one of :data:`LANES` lanes by their key. A relay pass locks
lanes (``FOR UPDATE SKIP LOCKED`` on ``outbox_lanes``) and publishes their rows in id
order, so two relay replicas never publish rows of the same key concurrently. Rows of one
key are therefore published in id order, which is commit order for writers that lock the
aggregate they change (every handler that updates a row does).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import Message
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from esquadrao_common.events import envelope_of
from esquadrao_common.messaging import HEADER_COMPANY_ID, HEADER_EVENT_ID, HEADER_EVENT_TYPE
from esquadrao_common.platform_tables import outbox_table
from esquadrao_common.tracing import current_trace_headers

#: Number of ordering lanes. Fixed: a row's lane is derived from its key, so changing it
#: would let rows of one key sit in two lanes until the older ones are published.
LANES = 16
#: Channel on which committed outbox writes wake the relay (``LISTEN``/``NOTIFY``).
NOTIFY_CHANNEL = "esquadrao_outbox"


def lane_of(key: bytes | None, event_id: str) -> int:
    """The lane of a row: by key, so one key's rows share a lane; keyless rows spread out."""
    return zlib.crc32(key if key is not None else event_id.encode()) % LANES


def _key_bytes(key: str | bytes | None) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return key.encode()


@dataclass(frozen=True)
class StagedEvent:
    """One event to publish: its topic, partitioning key and wrapper message."""

    topic: str
    key: str | bytes | None
    event: Message


class Outbox:
    """Stages events in the caller's transaction; the relay publishes them after commit."""

    async def add(
        self, session: AsyncSession, topic: str, key: str | bytes | None, event: Message
    ) -> None:
        """Stage one wrapper message (see :mod:`esquadrao_common.events`) for ``topic``."""
        await self.add_all(session, [StagedEvent(topic, key, event)])

    async def add_all(self, session: AsyncSession, staged: Iterable[StagedEvent]) -> int:
        """Stage several events in one statement; returns how many.

        Raises ValueError when an event is not a wrapper with an envelope, before anything
        is written. The relay is notified when the transaction commits (``NOTIFY`` is
        transactional and deduplicated), never before.
        """
        trace_headers = current_trace_headers()
        rows = []
        for item in staged:
            envelope = envelope_of(item.event)
            key = _key_bytes(item.key)
            headers = {
                HEADER_EVENT_ID: envelope.event_id,
                HEADER_EVENT_TYPE: envelope.event_type,
                HEADER_COMPANY_ID: envelope.company_id,
                **trace_headers,
            }
            rows.append(
                {
                    "lane": lane_of(key, envelope.event_id),
                    "topic": item.topic,
                    "key": key,
                    "value": item.event.SerializeToString(),
                    "headers": headers,
                    "event_id": envelope.event_id,
                    "event_type": envelope.event_type,
                    "company_id": envelope.company_id,
                }
            )
        if not rows:
            return 0
        await session.execute(insert(outbox_table), rows)
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
        return len(rows)
