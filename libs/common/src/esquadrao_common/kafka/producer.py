"""The Kafka producer behind :class:`~esquadrao_common.messaging.Publisher`.

``publish`` returns only when the broker has acknowledged every record (``acks=all``), so
callers (the outbox relay, the consumer runtime's retry and dead-letter routing) mark
work done only after it is durable. aiokafka sends one batch per partition at a time, so
records with the same key keep the order in which they were given.

Idempotence (``enable_idempotence``) stops a retried produce request from writing a record
twice. Apache Kafka supports it and it should be on there; the embedded broker rejects the
InitProducerId request it needs, so the local stack turns it off. Either way consumers are
idempotent, so a duplicate costs work, never correctness.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from aiokafka import AIOKafkaProducer

from esquadrao_common.messaging import OutgoingRecord


class KafkaPublisher:
    """A started aiokafka producer: ``async with KafkaPublisher(...) as publisher``."""

    def __init__(
        self,
        bootstrap: str,
        *,
        enable_idempotence: bool = False,
        client_id: str = "esquadrao",
        linger_ms: int = 5,
        max_batch_size: int = 256 * 1024,
        request_timeout_ms: int = 30_000,
    ) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=enable_idempotence,
            linger_ms=linger_ms,
            max_batch_size=max_batch_size,
            request_timeout_ms=request_timeout_ms,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        """Send ``records`` and wait until all are acknowledged.

        Raises the first send error (after the others have settled); records before it
        with the same key may have been written, so callers retry the whole batch and rely
        on consumers' idempotence.
        """
        if not records:
            return
        futures = [
            await self._producer.send(
                record.topic, record.value, key=record.key, headers=list(record.headers)
            )
            for record in records
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
