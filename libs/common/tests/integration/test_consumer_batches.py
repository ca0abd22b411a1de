"""The consumer runtime's batch handler, and the inbox's claim_many, against a real broker
and Postgres: batches in partition order, duplicates never passed again, a poison record
failing alone, a failing batch redone one record at a time; records/s printed (``-s``) of a
batch handler against a per-record one."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from esquadrao_common.db import Database, SqlAlchemyUnitOfWork
from esquadrao_common.inbox import claim_many, was_processed
from esquadrao_common.kafka.catalog import ConsumerGroupSpec
from esquadrao_common.kafka.consumer import ConsumerRuntime, IncomingRecord
from esquadrao_common.kafka.dead_letters import (
    HEADER_ATTEMPT,
    HEADER_FAILED_AT,
    HEADER_RETRY_NOT_BEFORE,
    DeadLetter,
    Origin,
    header_value,
)
from esquadrao_common.kafka.producer import KafkaPublisher
from esquadrao_common.messaging import OutgoingRecord
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.dialects.postgresql import UUID

from .consumer_helpers import (
    MakeGroup,
    MakeTopics,
    TopicTail,
    consumer_runtime,
    event_id_counts,
    eventually,
    record_of,
    records_metric,
    running,
)

pytestmark = pytest.mark.integration

test_metadata = MetaData()
effects = Table(
    "consumer_batch_test_effects",
    test_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", UUID(as_uuid=False), nullable=False),  # not unique: duplicates show
    Column("topic", String, nullable=False),
    Column("attempt", Integer, nullable=False),
)


class PoisonRecord(Exception):
    pass


async def effect_counts(database: Database) -> Counter[str]:
    return await event_id_counts(database, effects)


@dataclass
class BatchRecorder:
    """A batch handler writing one effect row per record in one multi-row insert.

    ``fail(batch)`` may return an exception to raise for that call.
    """

    fail: Callable[[Sequence[IncomingRecord]], Exception | None] = lambda batch: None
    calls: list[list[IncomingRecord]] = field(default_factory=list)

    async def __call__(self, batch: Sequence[IncomingRecord], uow: SqlAlchemyUnitOfWork) -> None:
        self.calls.append(list(batch))
        error = self.fail(batch)
        if error is not None:
            raise error
        rows = [
            {"event_id": record.event_id, "topic": record.topic, "attempt": record.attempt}
            for record in batch
        ]
        await uow.session.execute(effects.insert(), rows)

    def attempts_of(self, event_id: str) -> list[int]:
        return [r.attempt for call in self.calls for r in call if r.event_id == event_id]


@pytest.fixture
def tables() -> MetaData:
    return test_metadata


def test_exactly_one_of_handler_and_batch_handler() -> None:
    group = ConsumerGroupSpec(name="g", topics=("t",), retry_delays_ms=(100,))

    async def handler(record: IncomingRecord, uow: SqlAlchemyUnitOfWork) -> None: ...

    options: dict[str, Any] = {
        "bootstrap": "unused:9092",
        "group": group,
        "uow_factory": lambda: None,
        "publisher": None,
    }
    with pytest.raises(ValueError, match="exactly one"):
        ConsumerRuntime(**options)
    with pytest.raises(ValueError, match="exactly one"):
        ConsumerRuntime(**options, handler=handler, batch_handler=BatchRecorder())


async def test_claim_many_claims_each_event_once_in_one_statement(database: Database) -> None:
    group, other = f"g-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    async with database.sessionmaker() as session, session.begin():
        assert await claim_many(session, group, []) == set()
        assert await claim_many(session, group, [a, b]) == {a, b}
    async with database.sessionmaker() as session, session.begin():
        # Given twice, in another spelling, already claimed: each event is claimed once.
        claimed = await claim_many(session, group, [b, c, c.upper(), a])
        assert len(claimed) == 1 and claimed <= {c, c.upper()}
        assert await claim_many(session, other, [a]) == {a}, "claims are per group"
    async with database.sessionmaker() as session, session.begin():
        assert await claim_many(session, group, [a, b, c]) == set()
        for event_id in (a, b, c):
            assert await was_processed(session, group, event_id)
        assert not await was_processed(session, other, b)
    d = str(uuid.uuid4())
    async with database.sessionmaker() as session:
        transaction = await session.begin()
        assert await claim_many(session, group, [d]) == {d}
        await transaction.rollback()
    async with database.sessionmaker() as session, session.begin():
        assert await claim_many(session, group, [d]) == {d}, "a rolled back claim is undone"


async def test_a_batch_handler_gets_new_records_in_partition_order_in_bounded_batches(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=2)
    (topic,) = group.topics
    published = [record_of(topic, f"contact-{n}") for n in range(30)]
    await publisher.publish([record for record, _ in published])
    handler = BatchRecorder()
    runtime = consumer_runtime(
        kafka_bootstrap,
        group,
        database,
        publisher,
        batch_handler=handler,
        max_records_per_transaction=4,
    )

    async with running(runtime):

        async def all_applied() -> bool:
            return sum((await effect_counts(database)).values()) >= 30

        await eventually(all_applied, "30 effects")
        # Old events (redelivered) and new ones in the same poll: only the new reach it.
        calls_before = len(handler.calls)
        fresh = [record_of(topic, f"fresh-{n}") for n in range(3)]
        await publisher.publish([record for record, _ in published[:5]])
        await publisher.publish([record for record, _ in fresh])

        async def fresh_applied() -> bool:
            counts = await effect_counts(database)
            return all(counts[event_id] for _, event_id in fresh)

        await eventually(fresh_applied, "the fresh records")

        async def duplicates_skipped() -> bool:
            return records_metric(group, topic, "duplicate") >= 5

        await eventually(duplicates_skipped, "5 republished records to be skipped")

    counts = await effect_counts(database)
    assert counts == {event_id: 1 for _, event_id in [*published, *fresh]}
    later_ids = [r.event_id for call in handler.calls[calls_before:] for r in call]
    assert sorted(later_ids) == sorted(event_id for _, event_id in fresh)
    assert records_metric(group, topic, "handled") == 33
    assert records_metric(group, topic, "duplicate") == 5

    sizes = [len(call) for call in handler.calls]
    assert max(sizes) <= 4, f"batch sizes {sizes}"
    assert max(sizes) > 1, f"the records were never batched: {sizes}"
    last_offset: dict[int, int] = {}
    for call in handler.calls:
        (partition,) = {record.partition for record in call}
        offsets = [record.offset for record in call]
        assert offsets == sorted(offsets), f"batch out of order: {offsets}"
        assert offsets[0] > last_offset.get(partition, -1), "batches out of partition order"
        last_offset[partition] = offsets[-1]


async def test_a_poison_record_in_a_batch_fails_alone_and_the_others_apply_once(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=1, retry_delays_ms=(200, 400))
    (topic,) = group.topics
    published = [record_of(topic, "same-key") for _ in range(8)]
    poison_id = published[3][1]
    others = {event_id for _, event_id in published if event_id != poison_id}

    def poisoned(batch: Sequence[IncomingRecord]) -> Exception | None:
        if any(record.event_id == poison_id for record in batch):
            return PoisonRecord(f"cannot apply {poison_id}")
        return None

    handler = BatchRecorder(fail=poisoned)
    await publisher.publish([record for record, _ in published])
    runtime = consumer_runtime(kafka_bootstrap, group, database, publisher, batch_handler=handler)

    async with (
        TopicTail(kafka_bootstrap, *group.retry_topics, group.dlq_topic) as tail,
        running(runtime),
    ):

        async def dead_lettered() -> bool:
            return len(tail.on(group.dlq_topic)) >= 1

        await eventually(dead_lettered, "the poison record in the DLQ")
        later, later_id = record_of(topic, "same-key")
        await publisher.publish([later])

        async def later_applied() -> bool:
            return (await effect_counts(database))[later_id] == 1

        await eventually(later_applied, "a record published after the poison one")

    assert await effect_counts(database) == {event_id: 1 for event_id in [*others, later_id]}
    alone = [call[0].attempt for call in handler.calls if [r.event_id for r in call] == [poison_id]]
    assert alone == [0, 1, 2], "the poison record must be retried alone on each attempt"

    (first_retry,) = tail.on(group.retry_topics[0])
    (second_retry,) = tail.on(group.retry_topics[1])
    for retry, attempt, delay in ((first_retry, 1, 200), (second_retry, 2, 400)):
        headers = list(retry.headers)
        assert header_value(headers, HEADER_ATTEMPT) == str(attempt).encode()
        failed_at = int(header_value(headers, HEADER_FAILED_AT) or b"-1")
        assert int(header_value(headers, HEADER_RETRY_NOT_BEFORE) or b"-1") == failed_at + delay

    (dead,) = tail.on(group.dlq_topic)
    letter = DeadLetter.from_record(dead)
    assert letter.origin == Origin(topic, 0, 3)
    assert letter.attempt == 2
    assert letter.error_type.endswith(".PoisonRecord")
    assert letter.error_message == f"cannot apply {poison_id}"
    assert letter.consumer_group == group.name

    assert records_metric(group, topic, "handled") == 8
    assert records_metric(group, topic, "retried") == 1
    assert records_metric(group, group.retry_topics[0], "retried") == 1
    assert records_metric(group, group.retry_topics[1], "dead_lettered") == 1


async def test_a_batch_failing_as_a_whole_is_applied_one_record_at_a_time(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=1)
    (topic,) = group.topics
    published = [record_of(topic, f"contact-{n}") for n in range(6)]
    garbage = OutgoingRecord(topic, b"k", b"\xff\xfe this is not protobuf")
    failed_once: list[int] = []

    def first_batch_fails(batch: Sequence[IncomingRecord]) -> Exception | None:
        if len(batch) > 1 and not failed_once:
            failed_once.append(len(batch))
            return RuntimeError("the batch as a whole cannot be applied")
        return None

    handler = BatchRecorder(fail=first_batch_fails)
    records = [record for record, _ in published]
    await publisher.publish([*records[:3], garbage, *records[3:]])
    runtime = consumer_runtime(kafka_bootstrap, group, database, publisher, batch_handler=handler)

    async with TopicTail(kafka_bootstrap, group.dlq_topic) as tail, running(runtime):

        async def all_done() -> bool:
            applied = sum((await effect_counts(database)).values()) >= 6
            return applied and len(tail.records) >= 1

        await eventually(all_done, "6 effects and the garbage record dead-lettered")

    assert failed_once, f"no batch of several records was made: {handler.calls}"
    assert await effect_counts(database) == {event_id: 1 for _, event_id in published}
    assert records_metric(group, topic, "handled") == 6
    assert records_metric(group, topic, "retried") == 0
    assert records_metric(group, topic, "dead_lettered") == 1
    (dead,) = tail.records
    assert DeadLetter.from_record(dead).error_type == "esquadrao_common.events.UndecodableRecord"


async def test_records_per_second_of_a_batch_handler_and_a_per_record_handler(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    """Not asserted: prints records/s (run with ``-s``) on the shared broker and database.

    Each handler inserts one row per record: one statement per record, or one multi-row
    statement per batch. Timed from the first handler call to the end of the last one.
    """
    n = 2000
    rates: dict[str, float] = {}
    for mode in ("handler", "batch_handler"):
        group = await make_group(partitions=1)
        rates[mode] = await records_per_second(
            kafka_bootstrap, group, database, publisher, n, batched=mode == "batch_handler"
        )
        print(f"\n{mode}: {rates[mode]:.0f} records/s ({n} records)")
    print(f"batch handler / per-record handler: {rates['batch_handler'] / rates['handler']:.1f}x")


async def records_per_second(
    kafka_bootstrap: str,
    group: ConsumerGroupSpec,
    database: Database,
    publisher: KafkaPublisher,
    n: int,
    *,
    batched: bool,
) -> float:
    (topic,) = group.topics
    await publisher.publish([record_of(topic, f"c-{i}")[0] for i in range(n)])
    first = last = 0.0

    async def per_batch(batch: Sequence[IncomingRecord], uow: SqlAlchemyUnitOfWork) -> None:
        nonlocal first, last
        first = first or time.perf_counter()
        rows = [{"event_id": r.event_id, "topic": r.topic, "attempt": 0} for r in batch]
        await uow.session.execute(effects.insert(), rows)
        last = time.perf_counter()

    async def per_record(record: IncomingRecord, uow: SqlAlchemyUnitOfWork) -> None:
        await per_batch([record], uow)

    option: dict[str, Any] = {"batch_handler": per_batch} if batched else {"handler": per_record}
    async with running(consumer_runtime(kafka_bootstrap, group, database, publisher, **option)):

        async def all_handled() -> bool:
            return records_metric(group, topic, "handled") >= n

        await eventually(all_handled, f"{n} records handled")
    return n / (last - first)


async def test_topic_priority_handles_the_urgent_topic_first_in_each_poll(
    kafka_bootstrap: str,
    kafka_topics: MakeTopics,
    make_group: MakeGroup,
    database: Database,
    publisher: KafkaPublisher,
) -> None:
    base = await make_group(partitions=1)
    urgent, bulk = await kafka_topics(2, partitions=1)
    group = ConsumerGroupSpec(
        name=base.name, topics=(bulk, urgent), retry_delays_ms=base.retry_delays_ms
    )
    bulk_records = [record_of(bulk, f"bulk-{n}") for n in range(40)]
    urgent_records = [record_of(urgent, f"urgent-{n}") for n in range(3)]
    # Everything is on the topics before the member joins: its first poll holds both.
    await publisher.publish([record for record, _ in bulk_records])
    await publisher.publish([record for record, _ in urgent_records])
    handler = BatchRecorder()
    runtime = consumer_runtime(
        kafka_bootstrap,
        group,
        database,
        publisher,
        batch_handler=handler,
        max_batch=500,
        topic_priority=(urgent,),
    )
    async with running(runtime):

        async def all_applied() -> bool:
            return sum((await effect_counts(database)).values()) >= 43

        await eventually(all_applied, "43 effects")
    topics = [call[0].topic for call in handler.calls]
    assert topics[0] == urgent, f"handled in the order {topics}"
    assert sorted(r.event_id for r in handler.calls[0]) == sorted(e for _, e in urgent_records)
