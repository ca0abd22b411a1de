"""Platform benchmarks: the raw limits every service benchmark is measured against.

``make bench`` (``python -m bench.platform``) prints, on the servers of the local stack
(embedded unless ``KAFKA_BOOTSTRAP``, ``DATABASE_URL``, ``REDIS_URL`` are set):

- raw produce: one aiokafka producer, ``acks=all``, messages/s;
- consume → produce → commit: the loop of a stateless Kafka worker, messages/s;
- outbox relay: rows/s from committed outbox rows to acknowledged records and back to
  ``sent_at``, the ceiling of every service's event publishing;
- outbox write: events/s staged through units of work (100 events per transaction);
- consumer runtime: records/s through ``ConsumerRuntime`` (envelope decode, a savepoint
  with the inbox claim and the handler per record, one database commit per transaction of
  up to 50 records, offset commit per batch): the ceiling of one consumer process.

Figures depend on the machine; docs/benchmarks.md records them with the machine they
came from. Nothing here passes or fails: it only measures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from esquadrao.contacts.v1.contacts_pb2 import Contact, ContactCreated, ContactEvent
from esquadrao_common.db import Database, SqlAlchemyUnitOfWork
from esquadrao_common.events import new_envelope
from esquadrao_common.kafka.catalog import ConsumerGroupSpec
from esquadrao_common.kafka.consumer import ConsumerRuntime, IncomingRecord
from esquadrao_common.kafka.producer import KafkaPublisher
from esquadrao_common.messaging import OutgoingRecord
from esquadrao_common.platform_tables import platform_metadata
from esquadrao_common.relay import OutboxRelay
from esquadrao_devstack.stack import LocalStack, StackConfig
from rich.console import Console
from rich.table import Table

from bench.support import drop_database, fresh_database


@dataclass(frozen=True)
class Figure:
    name: str
    count: int
    seconds: float
    unit: str

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


async def _topics(bootstrap: str, partitions: int, n: int) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [f"bench-{uuid.uuid4().hex[:10]}" for _ in range(n)]
        await admin.create_topics([NewTopic(t, partitions, 1) for t in names])
        return names
    finally:
        await admin.close()


async def bench_produce(bootstrap: str, messages: int, size: int) -> Figure:
    (topic,) = await _topics(bootstrap, 6, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    payload = os.urandom(size)
    try:
        started = time.perf_counter()
        futures = [
            await producer.send(topic, payload, key=str(n % 1000).encode()) for n in range(messages)
        ]
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return Figure(f"raw produce ({size} B, acks=all)", messages, elapsed, "msgs/s")


async def bench_consume_produce_commit(bootstrap: str, messages: int, size: int) -> Figure:
    source, sink = await _topics(bootstrap, 6, 2)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    payload = os.urandom(size)
    try:
        futures = [
            await producer.send(source, payload, key=str(n % 1000).encode())
            for n in range(messages)
        ]
        await asyncio.gather(*futures)
        consumer = AIOKafkaConsumer(
            source,
            bootstrap_servers=bootstrap,
            group_id=f"bench-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=1000,
        )
        await consumer.start()
        try:
            done = 0
            started = time.perf_counter()
            while done < messages:
                batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
                sends = []
                offsets: dict[TopicPartition, int] = {}
                for tp, records in batch.items():
                    for record in records:
                        sends.append(await producer.send(sink, record.value, key=record.key))
                    offsets[tp] = records[-1].offset + 1
                await asyncio.gather(*sends)
                if offsets:
                    await consumer.commit(offsets)
                done += sum(len(records) for records in batch.values())
            elapsed = time.perf_counter() - started
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
    return Figure("consume → produce → commit", messages, elapsed, "msgs/s")


def _event(n: int) -> ContactEvent:
    event = ContactEvent(
        contact_created=ContactCreated(contact=Contact(id=str(uuid.uuid4()), name=f"c{n}"))
    )
    event.envelope.CopyFrom(
        new_envelope("esquadrao.contacts.v1.ContactCreated", "bench", "contacts")
    )
    return event


async def bench_outbox(bootstrap: str, server_url: str, rows: int) -> list[Figure]:
    url = await fresh_database(server_url, "bench")
    database = Database(url, pool_size=4)
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(platform_metadata.create_all)
        (topic,) = await _topics(bootstrap, 6, 1)
        per_transaction = 100
        started = time.perf_counter()
        for first in range(0, rows, per_transaction):
            async with SqlAlchemyUnitOfWork(database) as uow:
                for n in range(first, min(rows, first + per_transaction)):
                    uow.stage(topic, f"contact-{n % 5000}", _event(n))
                await uow.commit()
        write = Figure(
            f"outbox write ({per_transaction} events/transaction)",
            rows,
            time.perf_counter() - started,
            "events/s",
        )
        async with KafkaPublisher(bootstrap) as publisher:
            relay = OutboxRelay(database, publisher, service="bench", batch_size=1000)
            await relay.ensure_lanes()
            started = time.perf_counter()
            published = await relay.publish_pending()
            relay_figure = Figure(
                "outbox relay (rows → broker ack → sent)",
                published,
                time.perf_counter() - started,
                "rows/s",
            )
        return [write, relay_figure]
    finally:
        await database.dispose()
        await drop_database(server_url, url)


async def bench_consumer_runtime(bootstrap: str, server_url: str, records: int) -> Figure:
    url = await fresh_database(server_url, "bench")
    database = Database(url, pool_size=4)
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(platform_metadata.create_all)
        (source,) = await _topics(bootstrap, 6, 1)
        group = ConsumerGroupSpec(f"bench-{uuid.uuid4().hex[:8]}", (source,), (1000,))
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            chain = (*group.retry_topics, group.dlq_topic)
            await admin.create_topics([NewTopic(topic, 6, 1) for topic in chain])
        finally:
            await admin.close()
        handled = 0
        done = asyncio.Event()
        first_at = 0.0

        async def handle(_record: IncomingRecord, _uow: SqlAlchemyUnitOfWork) -> None:
            nonlocal handled, first_at
            if handled == 0:
                first_at = time.perf_counter()  # group join time is not throughput
            handled += 1
            if handled == records:
                done.set()

        async with KafkaPublisher(bootstrap) as publisher:
            for first in range(0, records, 1000):
                events = [_event(n) for n in range(first, min(records, first + 1000))]
                await publisher.publish(
                    [
                        OutgoingRecord(source, e.envelope.event_id.encode(), e.SerializeToString())
                        for e in events
                    ]
                )
            runtime: ConsumerRuntime[SqlAlchemyUnitOfWork] = ConsumerRuntime(
                bootstrap=bootstrap,
                group=group,
                handler=handle,
                uow_factory=lambda: SqlAlchemyUnitOfWork(database),
                publisher=publisher,
                max_batch=500,
                session_timeout_ms=6000,
                heartbeat_interval_ms=1000,
            )
            async with runtime:
                await done.wait()
                elapsed = time.perf_counter() - first_at
        return Figure("consumer runtime (claim + handle + commit)", records, elapsed, "records/s")
    finally:
        await database.dispose()
        await drop_database(server_url, url)


async def _run(args: argparse.Namespace, run_dir: Path) -> list[Figure]:
    stack = LocalStack(run_dir, StackConfig.from_env(), create_databases=False, durable=False)
    steps: list[Callable[[], Coroutine[Any, Any, Figure | list[Figure]]]] = [
        lambda: bench_produce(stack.kafka_bootstrap, args.messages, args.size),
        lambda: bench_consume_produce_commit(stack.kafka_bootstrap, args.messages, args.size),
        lambda: bench_outbox(stack.kafka_bootstrap, stack.postgres_url, args.outbox_rows),
        lambda: bench_consumer_runtime(
            stack.kafka_bootstrap, stack.postgres_url, args.consumer_records
        ),
    ]
    figures: list[Figure] = []
    async with stack:
        for step in steps:
            result = await step()
            figures.extend(result if isinstance(result, list) else [result])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000, help="records per Kafka test")
    parser.add_argument("--size", type=int, default=256, help="record value size in bytes")
    parser.add_argument("--outbox-rows", type=int, default=20_000, help="outbox rows to relay")
    parser.add_argument(
        "--consumer-records", type=int, default=10_000, help="records through the runtime"
    )
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="esquadrao-bench-"))
    run_dir.chmod(0o755)  # the embedded Postgres may run as an unprivileged account
    try:
        figures = asyncio.run(_run(args, run_dir))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    table = Table(title=f"Platform benchmarks ({os.cpu_count()} cores)", title_justify="left")
    for column in ("benchmark", "count", "seconds", "rate"):
        table.add_column(column, justify="left" if column == "benchmark" else "right")
    for figure in figures:
        table.add_row(
            figure.name,
            f"{figure.count:,}",
            f"{figure.seconds:.2f}",
            f"{figure.rate:,.0f} {figure.unit}",
        )
    console = Console()
    console.print(table)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"peak RSS of the benchmark process: {peak_mb:.0f} MiB")


if __name__ == "__main__":
    main()
