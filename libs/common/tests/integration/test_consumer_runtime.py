"""The consumer runtime against a real broker and Postgres: effects once, retries, DLQ, replay."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from esquadrao_common.db import Database, SqlAlchemyUnitOfWork
from esquadrao_common.kafka.catalog import ConsumerGroupSpec
from esquadrao_common.kafka.consumer import ConsumerRuntime, IncomingRecord
from esquadrao_common.kafka.dead_letters import (
    HEADER_ATTEMPT,
    HEADER_FAILED_AT,
    HEADER_REPLAYED_FROM,
    HEADER_RETRY_NOT_BEFORE,
    DeadLetter,
    Origin,
    header_value,
    read_dead_letters,
    replay,
    retry_due_ms,
)
from esquadrao_common.kafka.producer import KafkaPublisher
from esquadrao_common.messaging import OutgoingRecord, Publisher
from esquadrao_common.platform_tables import outbox_table
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, func, select, text
from sqlalchemy.dialects.postgresql import UUID

from .consumer_helpers import (
    MakeGroup,
    TopicTail,
    consumer_runtime,
    contact_event,
    event_id_counts,
    eventually,
    record_of,
    records_metric,
    running,
)

pytestmark = pytest.mark.integration

test_metadata = MetaData()
effects = Table(
    "consumer_test_effects",
    test_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", UUID(as_uuid=False), nullable=False),  # not unique: duplicates show
    Column("topic", String, nullable=False),
    Column("source_topic", String, nullable=False),
    Column("attempt", Integer, nullable=False),
)
parents = Table("consumer_test_parents", test_metadata, Column("id", Integer, primary_key=True))
# Checked at commit only: a row breaking it fails the transaction's commit, not a statement.
children = Table(
    "consumer_test_children",
    test_metadata,
    Column(
        "parent_id",
        Integer,
        ForeignKey(parents.c.id, deferrable=True, initially="DEFERRED"),
        nullable=False,
    ),
)


def trace_id_of(headers: Iterable[tuple[str, bytes]]) -> str:
    traceparent = header_value(headers, "traceparent")
    assert traceparent is not None, "record has no traceparent header"
    _version, trace_id, *_ = traceparent.decode().split("-")
    return trace_id


@dataclass
class RecordingHandler:
    """Writes one effect row per handled record; fails when ``fail`` says so."""

    name: str = "handler"
    fail: Callable[[IncomingRecord], Exception | None] = lambda record: None
    delay_s: float = 0.0
    calls: list[IncomingRecord] = field(default_factory=list)
    #: Epoch ms of each call, on the clock the runtime decides due times with.
    called_at_ms: list[int] = field(default_factory=list)

    async def __call__(self, record: IncomingRecord, uow: SqlAlchemyUnitOfWork) -> None:
        self.calls.append(record)
        self.called_at_ms.append(int(time.time() * 1000))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        error = self.fail(record)
        if error is not None:
            raise error
        await uow.session.execute(
            effects.insert().values(
                event_id=record.event_id,
                topic=record.topic,
                source_topic=record.source_topic,
                attempt=record.attempt,
            )
        )

    def attempts_of(self, event_id: str) -> list[int]:
        return [call.attempt for call in self.calls if call.event_id == event_id]

    def early_retries(self) -> list[tuple[int, int | None, int]]:
        """(attempt, due, called at) of every retry handled before its due time."""
        return [
            (call.attempt, retry_due_ms(call.headers), at)
            for call, at in zip(self.calls, self.called_at_ms, strict=True)
            if call.attempt > 0 and at < (retry_due_ms(call.headers) or 0)
        ]


class PoisonRecord(Exception):
    pass


async def effect_counts(database: Database) -> Counter[str]:
    return await event_id_counts(database, effects)


async def effect_rows(database: Database, event_id: str) -> list[Any]:
    async with database.engine.connect() as connection:
        result = await connection.execute(select(effects).where(effects.c.event_id == event_id))
        return list(result)


@pytest.fixture
def tables() -> MetaData:
    return test_metadata


def runtime_for(
    kafka_bootstrap: str,
    group: ConsumerGroupSpec,
    handler: RecordingHandler,
    database: Database,
    publisher: Publisher,
    **options: Any,
) -> ConsumerRuntime[SqlAlchemyUnitOfWork]:
    """A runtime with ``handler`` (``options``, ``uow_factory`` among them, as they are)."""
    return consumer_runtime(kafka_bootstrap, group, database, publisher, handler=handler, **options)


async def committed_offsets(kafka_bootstrap: str, group: ConsumerGroupSpec) -> dict[int, int]:
    """The group's committed offsets of its main topic, per partition (absent: none)."""
    (topic,) = group.topics
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group.name, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topic) or set()
        offsets = {}
        for partition in sorted(partitions):
            offset = await consumer.committed(TopicPartition(topic, partition))
            if offset is not None:
                offsets[partition] = offset
        return offsets
    finally:
        await consumer.stop()


async def test_each_event_is_applied_once_and_its_offset_committed(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=2)
    (topic,) = group.topics
    published = [record_of(topic, f"contact-{n}") for n in range(10)]
    await publisher.publish([record for record, _ in published])
    handler = RecordingHandler()

    async with running(runtime_for(kafka_bootstrap, group, handler, database, publisher)):

        async def all_applied() -> bool:
            return sum((await effect_counts(database)).values()) >= 10

        await eventually(all_applied, "10 effects")
        redelivered = [record for record, _ in published[:3]]
        await publisher.publish(redelivered)

        async def duplicates_skipped() -> bool:
            return records_metric(group, topic, "duplicate") >= 3

        await eventually(duplicates_skipped, "3 republished records to be skipped")

    counts = await effect_counts(database)
    assert counts == {event_id: 1 for _, event_id in published}
    assert records_metric(group, topic, "handled") == 10
    assert len(handler.calls) == 10, "a duplicate must not reach the handler"
    committed = await committed_offsets(kafka_bootstrap, group)
    assert sum(committed.values()) == 13, f"committed offsets {committed}, 13 records consumed"

    newcomer = RecordingHandler(name="newcomer")
    fresh, fresh_id = record_of(topic, "contact-fresh")
    async with running(runtime_for(kafka_bootstrap, group, newcomer, database, publisher)):
        await publisher.publish([fresh])

        async def fresh_applied() -> bool:
            return (await effect_counts(database))[fresh_id] == 1

        await eventually(fresh_applied, "the record published after the restart")

    assert [call.event_id for call in newcomer.calls] == [fresh_id]
    assert records_metric(group, topic, "duplicate") == 3, "nothing old was redelivered"


async def test_a_poison_record_goes_through_the_retries_to_the_dlq_without_blocking(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=1, retry_delays_ms=(200, 400))
    (topic,) = group.topics
    trace_id = uuid.uuid4().hex
    poison, poison_id = record_of(topic, "same-key", trace_id=trace_id)
    later = [record_of(topic, "same-key") for _ in range(5)]
    later_ids = {event_id for _, event_id in later}
    good_effects_at_attempt: dict[int, int] = {}

    def poisoned(record: IncomingRecord) -> Exception | None:
        return (
            PoisonRecord(f"cannot apply {record.event_id}")
            if record.event_id == poison_id
            else None
        )

    class Handler(RecordingHandler):
        async def __call__(self, record: IncomingRecord, uow: SqlAlchemyUnitOfWork) -> None:
            if record.event_id == poison_id:
                count = select(func.count()).select_from(effects)
                good_effects_at_attempt[record.attempt] = (
                    await uow.session.execute(count)
                ).scalar_one()
            await super().__call__(record, uow)

    handler = Handler(fail=poisoned)
    await publisher.publish([poison, *[record for record, _ in later]])

    async with (
        TopicTail(kafka_bootstrap, *group.retry_topics, group.dlq_topic) as tail,
        running(runtime_for(kafka_bootstrap, group, handler, database, publisher)),
    ):

        async def dead_lettered() -> bool:
            return len(tail.on(group.dlq_topic)) >= 1

        await eventually(dead_lettered, "the poison record in the DLQ")

    assert handler.attempts_of(poison_id) == [0, 1, 2]
    assert handler.early_retries() == [], "a retry ran before its retry-not-before time"
    assert good_effects_at_attempt[2] == 5, (
        "the records behind the poison one must be handled before it is dead-lettered; "
        f"effects seen at each poison attempt: {good_effects_at_attempt}"
    )
    assert await effect_counts(database) == {event_id: 1 for event_id in later_ids}

    (first_retry,) = tail.on(group.retry_topics[0])
    (second_retry,) = tail.on(group.retry_topics[1])
    for retry, attempt, delay in ((first_retry, 1, 200), (second_retry, 2, 400)):
        headers = list(retry.headers)
        assert header_value(headers, HEADER_ATTEMPT) == str(attempt).encode()
        failed_at = int(header_value(headers, HEADER_FAILED_AT) or b"-1")
        assert int(header_value(headers, HEADER_RETRY_NOT_BEFORE) or b"-1") == failed_at + delay

    (dead,) = tail.on(group.dlq_topic)
    letter = DeadLetter.from_record(dead)
    assert letter.origin == Origin(topic, 0, 0)
    assert letter.attempt == 2
    assert letter.error_type.endswith(".PoisonRecord")
    assert letter.error_message == f"cannot apply {poison_id}"
    assert letter.consumer_group == group.name
    assert letter.value == poison.value
    assert header_value(letter.headers, "event_id") == poison_id.encode()
    assert header_value(letter.headers, HEADER_RETRY_NOT_BEFORE) is None
    assert trace_id_of(letter.headers) == trace_id, "the retries must continue the trace"

    assert records_metric(group, topic, "retried") == 1
    assert records_metric(group, group.retry_topics[0], "retried") == 1
    assert records_metric(group, group.retry_topics[1], "dead_lettered") == 1
    assert records_metric(group, topic, "handled") == 5


async def test_an_undecodable_record_goes_straight_to_the_dlq(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=1)
    (topic,) = group.topics
    garbage = OutgoingRecord(topic, b"k", b"\xff\xfe this is not protobuf")
    good, good_id = record_of(topic, "k")
    await publisher.publish([garbage, good])
    handler = RecordingHandler()

    async with (
        TopicTail(kafka_bootstrap, group.dlq_topic) as tail,
        running(runtime_for(kafka_bootstrap, group, handler, database, publisher)),
    ):

        async def both_done() -> bool:
            return len(tail.records) >= 1 and (await effect_counts(database))[good_id] == 1

        await eventually(both_done, "the garbage record in the DLQ and the good one handled")

    (dead,) = tail.records
    letter = DeadLetter.from_record(dead)
    assert letter.value == garbage.value
    assert letter.attempt == 0
    assert letter.origin == Origin(topic, 0, 0)
    assert letter.error_type == "esquadrao_common.events.UndecodableRecord"
    assert [call.event_id for call in handler.calls] == [good_id]
    assert records_metric(group, topic, "dead_lettered") == 1
    assert records_metric(group, topic, "retried") == 0


async def test_a_transient_failure_succeeds_on_the_first_retry_exactly_once(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=1)
    (topic,) = group.topics
    record, event_id = record_of(topic, "flaky")

    def first_attempt_fails(incoming: IncomingRecord) -> Exception | None:
        return TimeoutError("provider timed out") if incoming.attempt == 0 else None

    handler = RecordingHandler(fail=first_attempt_fails)
    await publisher.publish([record])

    async with running(runtime_for(kafka_bootstrap, group, handler, database, publisher)):

        async def applied() -> bool:
            return (await effect_counts(database))[event_id] == 1

        await eventually(applied, "the record to succeed on retry")

    assert handler.attempts_of(event_id) == [0, 1]
    assert handler.early_retries() == [], "a retry ran before its retry-not-before time"
    (row,) = await effect_rows(database, event_id)
    assert (row.topic, row.source_topic, row.attempt) == (group.retry_topics[0], topic, 1)
    assert records_metric(group, topic, "retried") == 1
    assert records_metric(group, group.retry_topics[0], "handled") == 1
    assert await read_dead_letters(kafka_bootstrap, group.dlq_topic, idle_ms=500) == []


async def test_a_replayed_dead_letter_is_handled_from_its_original_topic(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=1, retry_delays_ms=())
    (topic,) = group.topics
    record, event_id = record_of(topic, "needs-a-fix")
    broken = True

    def until_fixed(incoming: IncomingRecord) -> Exception | None:
        return RuntimeError("missing reference data") if broken else None

    handler = RecordingHandler(fail=until_fixed)
    await publisher.publish([record])

    async with (
        TopicTail(kafka_bootstrap, group.dlq_topic) as tail,
        running(runtime_for(kafka_bootstrap, group, handler, database, publisher)),
    ):

        async def dead_lettered() -> bool:
            return len(tail.records) == 1

        await eventually(dead_lettered, "the record in the DLQ")
        broken = False
        letters = await read_dead_letters(kafka_bootstrap, group.dlq_topic)
        assert [letter.origin for letter in letters] == [Origin(topic, 0, 0)]
        assert await replay(publisher, letters) == 1

        async def applied() -> bool:
            return (await effect_counts(database))[event_id] == 1

        await eventually(applied, "the replayed record to be handled")

    assert handler.attempts_of(event_id) == [0, 0]
    (row,) = await effect_rows(database, event_id)
    assert (row.topic, row.attempt) == (topic, 0)
    replayed = handler.calls[-1]
    assert replayed.offset == 1
    assert header_value(replayed.headers, HEADER_REPLAYED_FROM) == (
        f"{group.dlq_topic}/0/0".encode()
    )


async def test_a_lost_database_connection_redelivers_the_record_instead_of_retrying_it(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=1)
    (topic,) = group.topics
    victim, victim_id = record_of(topic, "k")
    after, after_id = record_of(topic, "k")
    kills = 0

    class Handler(RecordingHandler):
        async def __call__(self, record: IncomingRecord, uow: SqlAlchemyUnitOfWork) -> None:
            nonlocal kills
            if record.event_id == victim_id and kills == 0:
                kills += 1
                self.calls.append(record)
                self.called_at_ms.append(int(time.time() * 1000))
                await uow.session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
            await super().__call__(record, uow)

    handler = Handler()
    await publisher.publish([victim, after])

    async with running(runtime_for(kafka_bootstrap, group, handler, database, publisher)):

        async def both_applied() -> bool:
            counts = await effect_counts(database)
            return counts[victim_id] == 1 and counts[after_id] == 1

        await eventually(both_applied, "both records handled after the connection loss")

    assert kills == 1
    assert handler.attempts_of(victim_id) == [0, 0], "redelivered from its own topic"
    assert await effect_counts(database) == {victim_id: 1, after_id: 1}
    assert records_metric(group, topic, "retried") == 0
    assert await committed_offsets(kafka_bootstrap, group) == {0: 2}


async def test_partitions_move_between_members_without_losing_or_repeating_effects(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=4)
    (topic,) = group.topics
    first = RecordingHandler(name="first", delay_s=0.02)
    second = RecordingHandler(name="second", delay_s=0.02)
    all_ids: list[str] = []

    async def publish(n: int) -> None:
        batch = [record_of(topic, f"contact-{uuid.uuid4().hex}") for _ in range(n)]
        await publisher.publish([record for record, _ in batch])
        all_ids.extend(event_id for _, event_id in batch)

    async def all_applied() -> bool:
        return sum((await effect_counts(database)).values()) >= len(all_ids)

    runtime_a = runtime_for(kafka_bootstrap, group, first, database, publisher)
    runtime_b = runtime_for(kafka_bootstrap, group, second, database, publisher)
    await publish(100)
    await runtime_a.start()
    try:

        async def first_started() -> bool:
            return len(first.calls) >= 10

        await eventually(first_started, "the first member to handle records")
        # The second member joins while the first is mid-way: the first's partitions are
        # revoked after its batch in hand, and split between the two.
        await runtime_b.start()

        async def split() -> bool:
            return bool(runtime_a.assignment()) and bool(runtime_b.assignment())

        await eventually(split, "both members to own partitions")
        await publish(100)
        await eventually(all_applied, "every record handled by the two members")
    finally:
        await runtime_a.stop()

    async def second_owns_everything() -> bool:
        return len(runtime_b.assignment()) == 4 * len(runtime_b.topics)

    try:
        await eventually(second_owns_everything, "the second member to take over")
        await publish(50)
        await eventually(all_applied, "every record handled by the remaining member")
    finally:
        await runtime_b.stop()

    counts = await effect_counts(database)
    duplicates = records_metric(group, topic, "duplicate")
    print(
        f"rebalance: first handled {len(first.calls)}, second {len(second.calls)}, "
        f"duplicate deliveries skipped {duplicates:.0f}"
    )
    assert counts == {event_id: 1 for event_id in all_ids}
    assert len(first.calls) + len(second.calls) == len(all_ids)
    assert second.calls, "the second member never handled a record"


class BatchRecordingHandler(RecordingHandler):
    """Also stages one event per record and notes the transaction each call ran in."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        #: event id of a record -> event id of the event its handler staged (last call).
        self.staged: dict[str, str] = {}
        #: event id of a record -> transaction id of each call, in call order.
        self.transactions: dict[str, list[int]] = {}

    async def __call__(self, record: IncomingRecord, uow: SqlAlchemyUnitOfWork) -> None:
        transaction = (await uow.session.execute(text("SELECT txid_current()"))).scalar_one()
        self.transactions.setdefault(record.event_id, []).append(transaction)
        staged = contact_event(f"staged-by-{record.event_id}")
        uow.stage("contacts.events.v1", record.key, staged)
        self.staged[record.event_id] = staged.envelope.event_id
        await super().__call__(record, uow)


async def outbox_event_ids(database: Database) -> set[str]:
    async with database.engine.connect() as connection:
        result = await connection.execute(select(outbox_table.c.event_id))
        return {str(value) for value in result.scalars()}


async def test_a_record_failing_mid_batch_leaves_nothing_while_its_neighbours_apply_once(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=1, retry_delays_ms=())
    (topic,) = group.topics
    published = [record_of(topic, f"contact-{n}") for n in range(5)]
    ids = [event_id for _, event_id in published]
    failing = ids[2]

    def fails_after_its_effects(record: IncomingRecord) -> Exception | None:
        return PoisonRecord("rejected after writing") if record.event_id == failing else None

    class Handler(BatchRecordingHandler):
        async def __call__(self, record: IncomingRecord, uow: SqlAlchemyUnitOfWork) -> None:
            await super().__call__(record, uow)
            error = fails_after_its_effects(record)
            if error is not None:
                raise error

    handler = Handler()
    await publisher.publish([record for record, _ in published])

    async with (
        TopicTail(kafka_bootstrap, group.dlq_topic) as tail,
        running(runtime_for(kafka_bootstrap, group, handler, database, publisher)),
    ):

        async def all_done() -> bool:
            return len(tail.records) == 1 and sum((await effect_counts(database)).values()) == 4

        await eventually(all_done, "four records applied and one dead-lettered")

    others = [event_id for event_id in ids if event_id != failing]
    assert await effect_counts(database) == {event_id: 1 for event_id in others}
    assert await outbox_event_ids(database) == {handler.staged[event_id] for event_id in others}, (
        "the failed record's staged event must be rolled back with its savepoint"
    )
    assert [call.event_id for call in handler.calls] == ids, "each record handled once"
    assert len({handler.transactions[event_id][0] for event_id in ids}) == 1, (
        f"the batch was not one transaction: {handler.transactions}"
    )
    (letter,) = [DeadLetter.from_record(record) for record in tail.records]
    assert (letter.origin, letter.error_type) == (Origin(topic, 0, 2), f"{__name__}.PoisonRecord")
    assert records_metric(group, topic, "handled") == 4
    assert records_metric(group, topic, "dead_lettered") == 1
    assert await committed_offsets(kafka_bootstrap, group) == {0: 5}


async def test_a_batch_is_split_into_transactions_of_bounded_size(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=1)
    (topic,) = group.topics
    published = [record_of(topic, f"contact-{n}") for n in range(7)]
    handler = BatchRecordingHandler()
    await publisher.publish([record for record, _ in published])
    runtime = runtime_for(
        kafka_bootstrap, group, handler, database, publisher, max_records_per_transaction=3
    )

    async with running(runtime):

        async def all_applied() -> bool:
            return sum((await effect_counts(database)).values()) == 7

        await eventually(all_applied, "7 effects")

    in_offset_order = sorted(handler.calls, key=lambda call: call.offset)
    transactions = [handler.transactions[call.event_id][0] for call in in_offset_order]
    sizes = [len(list(run)) for _, run in itertools.groupby(transactions)]
    assert len(sizes) == len(set(transactions)), (
        f"a transaction's records are not contiguous: {sizes}"
    )
    assert max(sizes) == 3, f"records per transaction: {sizes}"
    assert sum(sizes) == 7


class CommitKillingUnitOfWork(SqlAlchemyUnitOfWork):
    """Loses its database connection right before committing, ``kills`` times in all."""

    kills = 0

    async def commit(self) -> None:
        if CommitKillingUnitOfWork.kills > 0:
            CommitKillingUnitOfWork.kills -= 1
            pid = (await self.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with self.database.engine.connect() as other:
                # The second argument waits until the backend is gone.
                await other.execute(text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid})
        await super().commit()


async def test_a_batch_whose_commit_fails_is_redelivered_whole_and_applied_once(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=1, retry_delays_ms=(300,))
    (topic,) = group.topics
    (retry_topic,) = group.retry_topics
    published = [record_of(topic, f"contact-{n}") for n in range(4)]
    ids = [event_id for _, event_id in published]
    flaky = ids[1]

    def fails_from_its_topic(record: IncomingRecord) -> Exception | None:
        if record.event_id == flaky and record.attempt == 0:
            return PoisonRecord("fails until retried")
        return None

    handler = RecordingHandler(fail=fails_from_its_topic)
    CommitKillingUnitOfWork.kills = 1
    await publisher.publish([record for record, _ in published])
    runtime = runtime_for(
        kafka_bootstrap,
        group,
        handler,
        database,
        publisher,
        uow_factory=lambda: CommitKillingUnitOfWork(database),
    )

    async with TopicTail(kafka_bootstrap, retry_topic) as tail, running(runtime):

        async def settled() -> bool:
            # The redelivered batch committed (its outcomes are counted together), the retry
            # handled the flaky record, and every retry copy seen so far was processed.
            copies = len(tail.records)
            retried = records_metric(group, retry_topic, "handled")
            skipped = records_metric(group, retry_topic, "duplicate")
            return (
                records_metric(group, topic, "handled") == 3
                and retried == 1
                and copies == handler.attempts_of(flaky).count(0)
                and retried + skipped == copies
            )

        await eventually(settled, "the batch redelivered and the flaky record retried")

    assert CommitKillingUnitOfWork.kills == 0
    assert await effect_counts(database) == {event_id: 1 for event_id in ids}
    for event_id in (ids[0], ids[2], ids[3]):
        assert handler.attempts_of(event_id) == [0, 0], "the whole batch is delivered again"
    (row,) = await effect_rows(database, flaky)
    assert row.attempt == 1
    # The flaky record was sent to the retry topic before the commit that failed, then
    # delivered again from its topic with the rest of the batch. Whether that redelivery
    # failed again (a second retry copy, skipped by the inbox once the first was handled)
    # or came after the retry had handled it (skipped itself), the event applied once.
    failed_deliveries = handler.attempts_of(flaky).count(0)
    assert failed_deliveries + records_metric(group, topic, "duplicate") == 2
    assert await committed_offsets(kafka_bootstrap, group) == {0: 4}


async def test_a_commit_rejected_by_a_deferred_constraint_is_blamed_on_its_record(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=1, retry_delays_ms=())
    (topic,) = group.topics
    published = [record_of(topic, f"contact-{n}") for n in range(5)]
    ids = [event_id for _, event_id in published]
    poison, orphan = ids[1], ids[3]

    class Handler(RecordingHandler):
        async def __call__(self, record: IncomingRecord, uow: SqlAlchemyUnitOfWork) -> None:
            await super().__call__(record, uow)
            if record.event_id == orphan:
                await uow.session.execute(children.insert().values(parent_id=404))

    def poisoned(record: IncomingRecord) -> Exception | None:
        return PoisonRecord("cannot apply") if record.event_id == poison else None

    handler = Handler(fail=poisoned)
    await publisher.publish([record for record, _ in published])

    async with (
        TopicTail(kafka_bootstrap, group.dlq_topic) as tail,
        running(runtime_for(kafka_bootstrap, group, handler, database, publisher)),
    ):

        async def all_done() -> bool:
            return len(tail.records) == 2 and sum((await effect_counts(database)).values()) == 3

        await eventually(all_done, "three records applied and two dead-lettered")

    assert await effect_counts(database) == {ids[0]: 1, ids[2]: 1, ids[4]: 1}
    for event_id in (ids[0], ids[2], ids[4], orphan):
        assert handler.attempts_of(event_id) == [0, 0], "once in the batch, once alone"
    assert handler.attempts_of(poison) == [0], "its dead letter stands; it is not processed again"
    letters = sorted(
        (DeadLetter.from_record(record) for record in tail.records),
        key=lambda letter: letter.origin.offset,
    )
    assert [letter.origin.offset for letter in letters] == [1, 3]
    assert letters[0].error_type.endswith(".PoisonRecord")
    assert letters[1].error_type == "sqlalchemy.exc.IntegrityError"
    async with database.engine.connect() as connection:
        orphans = (await connection.execute(select(func.count()).select_from(children))).scalar()
    assert orphans == 0
    assert records_metric(group, topic, "handled") == 3
    assert records_metric(group, topic, "dead_lettered") == 2
    assert await committed_offsets(kafka_bootstrap, group) == {0: 5}


class FailingPublisher:
    """Delegates to a publisher, failing its first ``failures`` calls like a broker outage."""

    def __init__(self, publisher: Publisher, failures: int) -> None:
        self._publisher = publisher
        self.failures = failures

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("broker unavailable")
        await self._publisher.publish(records)


async def test_a_failed_retry_publish_commits_the_records_before_it_and_none_after(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(partitions=1, retry_delays_ms=())
    (topic,) = group.topics
    published = [record_of(topic, f"contact-{n}") for n in range(3)]
    before, poison, after = (event_id for _, event_id in published)

    def poisoned(record: IncomingRecord) -> Exception | None:
        return PoisonRecord("cannot apply") if record.event_id == poison else None

    handler = RecordingHandler(fail=poisoned)
    flaky_publisher = FailingPublisher(publisher, failures=1)
    await publisher.publish([record for record, _ in published])
    runtime = runtime_for(kafka_bootstrap, group, handler, database, flaky_publisher)

    async with (
        TopicTail(kafka_bootstrap, group.dlq_topic) as tail,
        running(runtime),
    ):

        async def all_done() -> bool:
            return len(tail.records) == 1 and (await effect_counts(database))[after] == 1

        await eventually(all_done, "the poison record dead-lettered and the last one applied")

    assert flaky_publisher.failures == 0
    assert await effect_counts(database) == {before: 1, after: 1}
    assert handler.attempts_of(before) == [0], "done before the failure: committed, not redone"
    assert handler.attempts_of(poison) == [0, 0], "redelivered after the broker failed"
    assert handler.attempts_of(after) == [0], "never processed past the failing record"
    assert records_metric(group, topic, "dead_lettered") == 1
    assert await committed_offsets(kafka_bootstrap, group) == {0: 3}
