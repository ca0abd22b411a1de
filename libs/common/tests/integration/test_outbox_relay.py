"""The transactional outbox and its relay against a real Postgres (and broker)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from esquadrao.contacts.v1.contacts_pb2 import Contact, ContactCreated, ContactEvent
from esquadrao_common.db import Database, SqlAlchemyUnitOfWork
from esquadrao_common.events import new_envelope
from esquadrao_common.kafka.producer import KafkaPublisher
from esquadrao_common.messaging import OutgoingRecord
from esquadrao_common.migrations import downgrade, upgrade
from esquadrao_common.platform_tables import outbox_table
from esquadrao_common.relay import OutboxRelay
from esquadrao_common.testing import FakePublisher
from sqlalchemy import func, select, text

pytestmark = pytest.mark.integration

SAMPLE_MIGRATIONS = Path(__file__).parent / "sample_migrations"


def contact_created(company: str = "acme", contact_id: str | None = None) -> ContactEvent:
    contact_id = contact_id or str(uuid.uuid4())
    event = ContactEvent(contact_created=ContactCreated(contact=Contact(id=contact_id)))
    event.envelope.CopyFrom(
        new_envelope("esquadrao.contacts.v1.ContactCreated", company, "contacts")
    )
    return event


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    await asyncio.to_thread(upgrade, SAMPLE_MIGRATIONS, database_url)
    db = Database(database_url, pool_size=4)
    yield db
    await db.dispose()


async def unsent(database: Database) -> int:
    async with database.sessionmaker() as session:
        query = select(func.count()).where(outbox_table.c.sent_at.is_(None))
        return int((await session.execute(query)).scalar_one())


async def test_migrations_create_and_drop_the_platform_tables(database_url: str) -> None:
    await asyncio.to_thread(upgrade, SAMPLE_MIGRATIONS, database_url)
    db = Database(database_url)
    query = text(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
        "ORDER BY table_name"
    )
    try:
        async with db.sessionmaker() as session:
            tables = set((await session.execute(query)).scalars())
        assert {"outbox", "outbox_lanes", "processed_events", "notes"} <= tables
        await asyncio.to_thread(downgrade, SAMPLE_MIGRATIONS, database_url, "base")
        async with db.sessionmaker() as session:
            tables = set((await session.execute(query)).scalars())
        assert tables == {"alembic_version"}
    finally:
        await db.dispose()


async def test_staged_events_are_written_only_when_the_unit_commits(database: Database) -> None:
    async with SqlAlchemyUnitOfWork(database) as uow:
        await uow.session.execute(text("INSERT INTO notes VALUES ('n1', 'kept')"))
        uow.stage("contacts.events.v1", "c1", contact_created())
        await uow.commit()
    async with SqlAlchemyUnitOfWork(database) as uow:
        await uow.session.execute(text("INSERT INTO notes VALUES ('n2', 'lost')"))
        uow.stage("contacts.events.v1", "c2", contact_created())
        # leaves without commit: state and event are rolled back together
    async with database.sessionmaker() as session:
        notes = (await session.execute(text("SELECT id FROM notes"))).scalars().all()
        keys = (await session.execute(select(outbox_table.c.key))).scalars().all()
    assert notes == ["n1"]
    assert keys == [b"c1"]


async def test_relay_publishes_in_order_marks_sent_and_keeps_headers(database: Database) -> None:
    events = [contact_created() for _ in range(7)]
    async with SqlAlchemyUnitOfWork(database) as uow:
        for event in events:
            uow.stage("contacts.events.v1", "same-key", event)
        await uow.commit()
    publisher = FakePublisher()
    relay = OutboxRelay(database, publisher, service="test", batch_size=3)
    await relay.ensure_lanes()

    assert await relay.publish_pending() == 7
    assert [r.value for r in publisher.published] == [e.SerializeToString() for e in events]
    headers = dict(publisher.published[0].headers)
    assert headers["event_id"] == events[0].envelope.event_id.encode()
    assert headers["event_type"] == b"esquadrao.contacts.v1.ContactCreated"
    assert headers["company_id"] == b"acme"
    assert await unsent(database) == 0
    assert await relay.publish_pending() == 0  # nothing is published twice


async def test_a_failed_publish_leaves_rows_unsent_until_it_succeeds(database: Database) -> None:
    async with SqlAlchemyUnitOfWork(database) as uow:
        uow.stage("contacts.events.v1", "k", contact_created())
        await uow.commit()
    publisher = FakePublisher()
    publisher.fail_next = 1
    relay = OutboxRelay(database, publisher, service="test")
    await relay.ensure_lanes()

    with pytest.raises(ConnectionError):
        await relay.publish_pending()
    assert await unsent(database) == 1
    assert await relay.publish_pending() == 1
    assert await unsent(database) == 0
    assert len(publisher.published) == 1


class SharedLog:
    """Publishers of two relays appending to one log, to check order across replicas."""

    def __init__(self) -> None:
        self.log: list[OutgoingRecord] = []

    def publisher(self) -> FakePublisher:
        log = self.log

        class Appending(FakePublisher):
            async def publish(self, records: Sequence[OutgoingRecord]) -> None:
                await asyncio.sleep(0)  # let the other relay run between batches
                log.extend(records)
                await super().publish(records)

        return Appending()


async def test_two_relays_share_lanes_and_keep_order_per_key(database: Database) -> None:
    keys = [f"key-{n}" for n in range(20)]
    expected: dict[str, list[bytes]] = {key: [] for key in keys}
    for round_ in range(10):
        async with SqlAlchemyUnitOfWork(database) as uow:
            for n, key in enumerate(keys):
                event = contact_created(contact_id=str(uuid.uuid4()))
                uow.stage("contacts.events.v1", key, event)
                expected[key].append(event.SerializeToString())
                if (n + round_) % 7 == 0:
                    await uow.session.flush()
            await uow.commit()
    shared = SharedLog()
    first, second = shared.publisher(), shared.publisher()
    relays = [
        OutboxRelay(database, first, service="test", batch_size=16, lanes_per_pass=3),
        OutboxRelay(database, second, service="test", batch_size=16, lanes_per_pass=3),
    ]
    await relays[0].ensure_lanes()

    counts = await asyncio.gather(*(relay.publish_pending() for relay in relays))

    assert sum(counts) == 200
    assert min(counts) > 0, f"one relay did all the work: {counts}"
    published: dict[str, list[bytes]] = {key: [] for key in keys}
    for record in shared.log:
        assert record.key is not None
        published[record.key.decode()].append(record.value)
    assert published == expected
    assert await unsent(database) == 0


async def test_relay_wakes_on_notify_without_waiting_for_the_poll(database: Database) -> None:
    publisher = FakePublisher()
    relay = OutboxRelay(database, publisher, service="test", poll_interval=120)
    running = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.5)  # let the relay start listening
        async with SqlAlchemyUnitOfWork(database) as uow:
            uow.stage("contacts.events.v1", "k", contact_created())
            await uow.commit()
        async with asyncio.timeout(15):  # far below the 120 s poll: only NOTIFY wakes it
            while not publisher.published:
                await asyncio.sleep(0.05)
    finally:
        await relay.stop()
        await running
    assert len(publisher.published) == 1


async def test_backlog_is_measured_and_old_sent_rows_are_cleaned(database: Database) -> None:
    async with SqlAlchemyUnitOfWork(database) as uow:
        for _ in range(3):
            uow.stage("contacts.events.v1", "k", contact_created())
        await uow.commit()
    relay = OutboxRelay(database, FakePublisher(), service="test", retention=timedelta(hours=1))
    await relay.ensure_lanes()
    backlog, _age = await relay.measure_backlog()
    assert backlog == 3

    await relay.publish_pending()
    assert (await relay.measure_backlog())[0] == 0
    async with database.engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE outbox SET sent_at = now() - interval '2 hours' WHERE id IN "
                "(SELECT id FROM outbox ORDER BY id LIMIT 2)"
            )
        )
    assert await relay.cleanup() == 2
    async with database.sessionmaker() as session:
        assert (await session.execute(select(func.count()).select_from(outbox_table))).scalar() == 1


async def test_relay_publishes_to_the_broker(
    database: Database, kafka_bootstrap: str, kafka_topics: object
) -> None:
    (topic,) = await kafka_topics(1, partitions=3)  # type: ignore[operator]
    events = [contact_created() for _ in range(5)]
    async with SqlAlchemyUnitOfWork(database) as uow:
        for n, event in enumerate(events):
            uow.stage(topic, f"k{n % 2}", event)
        await uow.commit()
    async with KafkaPublisher(kafka_bootstrap) as publisher:
        relay = OutboxRelay(database, publisher, service="test")
        await relay.ensure_lanes()
        assert await relay.publish_pending() == 5

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    received = []
    try:
        async with asyncio.timeout(20):
            while len(received) < 5:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    received.extend(records)
    finally:
        await consumer.stop()
    assert sorted(r.value for r in received) == sorted(e.SerializeToString() for e in events)
    by_key: dict[bytes, list[bytes]] = {}
    for record in sorted(received, key=lambda r: (r.partition, r.offset)):
        by_key.setdefault(record.key, []).append(record.value)
    assert by_key[b"k0"] == [e.SerializeToString() for e in events[0::2]]
    assert by_key[b"k1"] == [e.SerializeToString() for e in events[1::2]]
