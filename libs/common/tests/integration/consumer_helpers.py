"""Helpers of the consumer runtime's integration tests (``test_consumer_*.py``).

Their fixtures (``database``, ``publisher``, ``make_group``) are in ``conftest.py`` next to
this module; what is here is plain code the test modules import (``from .consumer_helpers
import ...``, which pytest's ``importlib`` import mode resolves from the repository root).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer
from esquadrao.contacts.v1.contacts_pb2 import Contact, ContactCreated, ContactEvent
from esquadrao_common.db import Database, SqlAlchemyUnitOfWork
from esquadrao_common.events import event_type_of, new_envelope, record_headers
from esquadrao_common.kafka.catalog import ConsumerGroupSpec
from esquadrao_common.kafka.consumer import ConsumerRuntime
from esquadrao_common.messaging import OutgoingRecord, Publisher
from esquadrao_devstack.pytest_plugin import MakeTopics
from prometheus_client import REGISTRY
from sqlalchemy import Table, select

__all__ = [
    "HEARTBEAT_INTERVAL_MS",
    "SESSION_TIMEOUT_MS",
    "WAIT_S",
    "MakeGroup",
    "MakeTopics",
    "TopicTail",
    "consumer_runtime",
    "contact_event",
    "event_id_counts",
    "eventually",
    "record_of",
    "records_metric",
    "running",
]

#: Join timings the embedded broker turns into a ~3 s join (it holds a join for about half
#: the session timeout); 6 s is also the smallest session timeout Apache Kafka accepts.
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 1_000
#: How long ``eventually`` waits by default.
WAIT_S = 40.0

#: ``await make_group(topics=..., partitions=..., retry_delays_ms=...)``: a consumer group
#: over fresh topics, with its retry and dead-letter topics (the ``make_group`` fixture).
MakeGroup = Callable[..., Awaitable[ConsumerGroupSpec]]


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], what: str, *, timeout_s: float = WAIT_S
) -> None:
    """Wait until ``check()`` holds, polling; fail with ``what`` after ``timeout_s`` seconds.

    ``check`` may be a plain function or a coroutine function.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


def contact_event(key: str, *, event_id: str | None = None) -> ContactEvent:
    """A ContactEvent wrapper of a ContactCreated for contact ``key``, with its envelope."""
    event = ContactEvent(
        contact_created=ContactCreated(
            contact=Contact(id=key, company_id="company-1", phone_e164="+5511999990000")
        )
    )
    event.envelope.CopyFrom(
        new_envelope(event_type_of(event), "company-1", "tests", event_id=event_id)
    )
    return event


def record_of(
    topic: str, key: str, *, event_id: str | None = None, trace_id: str | None = None
) -> tuple[OutgoingRecord, str]:
    """A ContactCreated record keyed by ``key``, and its event id; with a ``traceparent``
    header continuing ``trace_id`` when given."""
    event = contact_event(key, event_id=event_id)
    headers = record_headers(event.envelope)
    if trace_id is not None:
        headers.append(("traceparent", f"00-{trace_id}-{'1' * 16}-01".encode()))
    record = OutgoingRecord(topic, key.encode(), event.SerializeToString(), headers)
    return record, event.envelope.event_id


def records_metric(group: ConsumerGroupSpec, topic: str, outcome: str) -> float:
    """The runtime's count of ``group``'s records of ``topic`` with ``outcome`` so far."""
    value = REGISTRY.get_sample_value(
        "esquadrao_consumer_records_total",
        {"group": group.name, "topic": topic, "outcome": outcome},
    )
    return value or 0.0


async def event_id_counts(database: Database, table: Table) -> Counter[str]:
    """How many rows of ``table`` (an effects table) there are per ``event_id``."""
    async with database.engine.connect() as connection:
        rows = await connection.execute(select(table.c.event_id))
        return Counter(row.event_id for row in rows)


class TopicTail:
    """Every record of some topics, collected in the background (no consumer group)."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self.records: list[Any] = []
        self._consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._task: asyncio.Task[None] | None = None

    async def _collect(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                self.records.extend(records)

    def on(self, topic: str) -> list[Any]:
        return [record for record in self.records if record.topic == topic]

    async def __aenter__(self) -> TopicTail:
        await self._consumer.start()
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


def consumer_runtime(
    kafka_bootstrap: str,
    group: ConsumerGroupSpec,
    database: Database,
    publisher: Publisher,
    *,
    uow_factory: Callable[[], SqlAlchemyUnitOfWork] | None = None,
    **options: Any,
) -> ConsumerRuntime[SqlAlchemyUnitOfWork]:
    """A runtime of ``group`` with the tests' short timings; ``options`` (the handler or
    batch handler among them) go to :class:`ConsumerRuntime` as they are."""
    return ConsumerRuntime(
        bootstrap=kafka_bootstrap,
        group=group,
        uow_factory=uow_factory or (lambda: SqlAlchemyUnitOfWork(database)),
        publisher=publisher,
        poll_timeout_ms=100,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        failure_backoff_s=(0.05, 0.5),
        **options,
    )


@asynccontextmanager
async def running(runtime: ConsumerRuntime[Any]) -> AsyncIterator[ConsumerRuntime[Any]]:
    async with runtime:
        yield runtime
