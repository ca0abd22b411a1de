"""Message shapes shared by the outbox relay, the producer and the consumer runtime.

Kept free of any Kafka client type so handlers and fakes never import aiokafka.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

Headers = list[tuple[str, bytes]]

#: Header names set on every record we produce (besides W3C ``traceparent``/``tracestate``).
HEADER_EVENT_ID = "event_id"
HEADER_EVENT_TYPE = "event_type"
HEADER_COMPANY_ID = "company_id"


@dataclass(frozen=True)
class OutgoingRecord:
    """A record to publish: topic, partitioning key, encoded value and headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)


class Publisher(Protocol):
    """Publishes records and returns only once the broker has acknowledged all of them.

    Records with the same key are published in the order given.
    """

    async def publish(self, records: Sequence[OutgoingRecord]) -> None: ...
