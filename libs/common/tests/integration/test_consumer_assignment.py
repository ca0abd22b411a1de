"""Partition ownership in the consumer runtime, against a real broker and Postgres.

Co-partitioned topics with a range assignor, the owner's ``assigned``/``revoked`` hooks around
rebalances and stops, and the owner pausing partitions (backpressure), also alongside the
runtime's own pauses of retry topics.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from esquadrao_common.db import Database, SqlAlchemyUnitOfWork
from esquadrao_common.kafka.assignors import CoPartitionedStickyAssignor
from esquadrao_common.kafka.catalog import ConsumerGroupSpec
from esquadrao_common.kafka.consumer import ConsumerRuntime, IncomingRecord, PartitionOwnership
from esquadrao_common.kafka.dead_letters import retry_due_ms
from esquadrao_common.kafka.producer import KafkaPublisher
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select

from .consumer_helpers import MakeGroup, consumer_runtime, eventually, record_of

pytestmark = pytest.mark.integration

#: How long a held-back record is watched for not being handled.
HELD_S = 2.0

test_metadata = MetaData()
effects = Table(
    "assignment_test_effects",
    test_metadata,
    Column("event_id", String, primary_key=True),
    Column("topic", String, nullable=False),
    Column("partition", Integer, nullable=False),
)


@dataclass
class RecordingOwner:
    """A :class:`PartitionOwnership` that notes its calls; ``fail`` makes every call raise.

    ``owned`` is what it was told it owns; ``ready`` what it is done taking over (its
    ``assigned`` returned), which takes ``assigned_s`` seconds, like loading sessions.
    """

    fail: bool = False
    assigned_s: float = 0.0
    owned: set[TopicPartition] = field(default_factory=set)
    ready: set[TopicPartition] = field(default_factory=set)
    calls: list[tuple[str, frozenset[TopicPartition]]] = field(default_factory=list)
    #: Runs at the end of ``assigned`` and at the start of ``revoked`` when set.
    on_assigned: Callable[[frozenset[TopicPartition]], None] | None = None
    on_revoked: Callable[[frozenset[TopicPartition]], Awaitable[None]] | None = None

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        self.calls.append(("assigned", partitions))
        self.owned |= partitions
        await asyncio.sleep(self.assigned_s)
        if self.on_assigned is not None:
            self.on_assigned(partitions)
        self.ready |= partitions
        if self.fail:
            raise RuntimeError("owner failed to take its partitions")

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        self.ready -= partitions
        if self.on_revoked is not None:
            await self.on_revoked(partitions)
        self.calls.append(("revoked", partitions))
        self.owned -= partitions
        if self.fail:
            raise RuntimeError("owner failed to give up its partitions")


@dataclass
class RecordingHandler:
    """Writes one effect row per record; notes those of partitions its owner is not ready
    for (not done taking over)."""

    owner: RecordingOwner | None = None
    group_topics: tuple[str, ...] = ()
    fail: Callable[[IncomingRecord], bool] = lambda record: False
    delay_s: float = 0.0
    #: Runs after each record is handled, before its effects commit.
    then: Callable[[IncomingRecord], None] = lambda record: None
    calls: list[IncomingRecord] = field(default_factory=list)
    called_at_ms: list[int] = field(default_factory=list)
    not_ready: list[IncomingRecord] = field(default_factory=list)

    async def __call__(self, record: IncomingRecord, uow: SqlAlchemyUnitOfWork) -> None:
        self.calls.append(record)
        self.called_at_ms.append(int(time.time() * 1000))
        tp = TopicPartition(record.topic, record.partition)
        ready = self.owner is None or tp in self.owner.ready
        if record.topic in self.group_topics and not ready:
            self.not_ready.append(record)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail(record):
            raise RuntimeError("first attempt fails")
        await uow.session.execute(
            effects.insert().values(
                event_id=record.event_id, topic=record.topic, partition=record.partition
            )
        )
        self.then(record)

    def handled(self, event_id: str) -> list[IncomingRecord]:
        return [call for call in self.calls if call.event_id == event_id]


@pytest.fixture
def tables() -> MetaData:
    return test_metadata


@pytest.fixture
def make_group(make_group: MakeGroup) -> MakeGroup:
    """Factory of groups over fresh co-partitioned topics, with retry and dead-letter topics
    of as many partitions."""
    return partial(make_group, topics=2, partitions=4, retry_delays_ms=(200,))


def runtime_for(
    kafka_bootstrap: str,
    group: ConsumerGroupSpec,
    handler: RecordingHandler,
    database: Database,
    publisher: KafkaPublisher,
    ownership: PartitionOwnership | None = None,
    assignor: type[AbstractPartitionAssignor] = RangePartitionAssignor,
    **options: Any,
) -> ConsumerRuntime[SqlAlchemyUnitOfWork]:
    return consumer_runtime(
        kafka_bootstrap,
        group,
        database,
        publisher,
        handler=handler,
        assignor=assignor,
        ownership=ownership,
        **options,
    )


def partitions_of(partitions: Iterable[TopicPartition], topic: str) -> set[int]:
    return {tp.partition for tp in partitions if tp.topic == topic}


def every_partition(group: ConsumerGroupSpec, partitions: int) -> set[TopicPartition]:
    return {TopicPartition(topic, p) for topic in group.topics for p in range(partitions)}


def assert_calls_alternate(owner: RecordingOwner, group: ConsumerGroupSpec) -> None:
    kinds = [kind for kind, _ in owner.calls]
    assert kinds == ["assigned", "revoked"] * (len(kinds) // 2) + ["assigned"] * (len(kinds) % 2)
    for _, partitions in owner.calls:
        assert partitions, "never called with nothing"
        assert {tp.topic for tp in partitions} <= set(group.topics), "no retry topic"


async def effect_count(database: Database) -> int:
    async with database.engine.connect() as connection:
        return (await connection.execute(select(func.count()).select_from(effects))).scalar_one()


async def committed_event_ids(database: Database) -> set[str]:
    async with database.engine.connect() as connection:
        return set((await connection.execute(select(effects.c.event_id))).scalars())


def durable_when_revoked(
    database: Database, handler: RecordingHandler, not_durable: list[set[str]]
) -> Callable[[frozenset[TopicPartition]], Awaitable[None]]:
    """A ``revoked`` check: notes the records ``handler`` took whose effects are not committed."""

    async def check(partitions: frozenset[TopicPartition]) -> None:
        taken = {call.event_id for call in handler.calls}
        not_durable.append(taken - await committed_event_ids(database))

    return check


async def test_co_partitioned_topics_move_between_members_by_partition_number(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    # Three partitions for two members: round robin would split a topic's partitions
    # differently from the next topic's, range does not.
    partitions = 3
    group = await make_group(topics=2, partitions=partitions)
    interactive, bulk = group.topics
    everything = every_partition(group, partitions)
    owner_a, owner_b = RecordingOwner(assigned_s=0.5), RecordingOwner(assigned_s=0.5)
    handler_a = RecordingHandler(owner=owner_a, group_topics=group.topics, delay_s=0.02)
    handler_b = RecordingHandler(owner=owner_b, group_topics=group.topics, delay_s=0.02)
    # Per revoked call, the records its member had taken and not committed (should be none).
    not_durable: list[set[str]] = []
    owner_a.on_revoked = durable_when_revoked(database, handler_a, not_durable)
    owner_b.on_revoked = durable_when_revoked(database, handler_b, not_durable)
    runtime_a = runtime_for(kafka_bootstrap, group, handler_a, database, publisher, owner_a)
    runtime_b = runtime_for(kafka_bootstrap, group, handler_b, database, publisher, owner_b)
    published = 0

    async def publish(keys: Iterable[str]) -> None:
        """Publishes a record per key on both topics: a key's land on one partition number."""
        nonlocal published
        records = [record_of(topic, key)[0] for key in keys for topic in group.topics]
        await publisher.publish(records)
        published += len(records)

    def all_handled() -> bool:
        return len(handler_a.calls) + len(handler_b.calls) >= published

    await runtime_a.start()
    try:
        await eventually(lambda: owner_a.owned == everything, "the first member to own all")
        # Records in hand when the second member joins: the first gives its partitions up
        # mid-batch, once what it took is committed.
        await publish(f"early-{n}" for n in range(100))
        await eventually(lambda: len(handler_a.calls) >= 5, "the first member to handle records")
        await runtime_b.start()

        def split() -> bool:
            return (
                bool(owner_a.owned)
                and bool(owner_b.owned)
                and owner_a.owned | owner_b.owned == everything
                and not owner_a.owned & owner_b.owned
            )

        await eventually(split, "the two members to split the partitions")
        for owner in (owner_a, owner_b):
            assert partitions_of(owner.owned, interactive) == partitions_of(owner.owned, bulk)
        for runtime in (runtime_a, runtime_b):
            # The retry topics, with as many partitions, follow the same split.
            numbers = {
                topic: partitions_of(runtime.assignment(), topic) for topic in runtime.topics
            }
            assert len(set(map(frozenset, numbers.values()))) == 1, numbers
        await eventually(all_handled, "the early records")

        early_calls = len(handler_a.calls), len(handler_b.calls)
        await publish(f"session-{n}" for n in range(40))
        await eventually(all_handled, "every session's records")
        for handler, early in zip((handler_a, handler_b), early_calls, strict=True):
            by_key: dict[bytes | None, set[str]] = {}
            for call in handler.calls[early:]:
                by_key.setdefault(call.key, set()).add(call.topic)
            assert by_key, "each member handles sessions"
            assert all(topics == {interactive, bulk} for topics in by_key.values()), (
                "a session's records of both topics are handled by one member"
            )

        owned_by_b = frozenset(owner_b.owned)
        await runtime_b.stop()
        assert owner_b.calls[-1] == ("revoked", owned_by_b), "told before leaving the group"
        assert owner_b.owned == set()
        await eventually(lambda: owner_a.owned == everything, "the survivor to own all again")
        await publish(f"late-{n}" for n in range(10))
        await eventually(all_handled, "the survivor to handle the records of every partition")
    finally:
        await runtime_a.stop()
        await runtime_b.stop()

    assert owner_a.calls[-1][0] == "revoked" and owner_a.owned == set()
    for owner in (owner_a, owner_b):
        assert_calls_alternate(owner, group)
    assert handler_a.not_ready == [] and handler_b.not_ready == [], (
        "no record is handled before its owner is done taking its partition over"
    )
    assert len(not_durable) >= 3 and not any(not_durable), "revoked once what was taken commits"
    assert await effect_count(database) == published


async def test_the_sticky_assignor_keeps_what_each_member_owned_as_members_join(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    partitions = 6
    group = await make_group(topics=2, partitions=partitions)
    interactive, bulk = group.topics
    everything = every_partition(group, partitions)
    owners = [RecordingOwner() for _ in range(3)]
    runtimes = [
        runtime_for(
            kafka_bootstrap,
            group,
            RecordingHandler(owner=owner, group_topics=group.topics),
            database,
            publisher,
            owner,
            assignor=CoPartitionedStickyAssignor.for_member(),
        )
        for owner in owners
    ]

    def settled(members: int) -> Callable[[], bool]:
        def check() -> bool:
            owned = [owner.owned for owner in owners[:members]]
            return (
                all(owned)
                and set().union(*owned) == everything
                and sum(len(mine) for mine in owned) == len(everything)
            )

        return check

    try:
        history: list[list[set[TopicPartition]]] = []
        for members in (1, 2, 3):
            await runtimes[members - 1].start()
            await eventually(settled(members), f"{members} member(s) to share the partitions")
            history.append([set(owner.owned) for owner in owners[:members]])
    finally:
        for runtime in runtimes:
            await runtime.stop()

    for shares in history:
        for owned in shares:
            assert partitions_of(owned, interactive) == partitions_of(owned, bulk)
        sizes = {len(partitions_of(owned, interactive)) for owned in shares}
        assert max(sizes) - min(sizes) <= 1, shares
    for before, after in itertools.pairwise(history):
        for member, owned in enumerate(before):
            assert after[member] <= owned, "a member keeps part of what it had, takes nothing"


async def test_pause_holds_records_back_until_resume(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(topics=2, partitions=2)
    interactive, bulk = group.topics
    runtime: ConsumerRuntime[SqlAlchemyUnitOfWork] | None = None

    def pause_bulk(partitions: frozenset[TopicPartition]) -> None:
        assert runtime is not None
        runtime.pause(tp for tp in partitions if tp.topic == bulk)

    owner = RecordingOwner(on_assigned=pause_bulk)
    handler = RecordingHandler(owner=owner, group_topics=group.topics)
    runtime = runtime_for(kafka_bootstrap, group, handler, database, publisher, owner)
    interactive_records = [record_of(interactive, f"i-{n}") for n in range(6)]
    bulk_records = [record_of(bulk, f"b-{n}") for n in range(6)]
    await publisher.publish([record for record, _ in interactive_records + bulk_records])

    async with runtime:
        await eventually(
            lambda: len(handler.calls) >= len(interactive_records), "the interactive records"
        )
        await asyncio.sleep(HELD_S)
        assert {call.topic for call in handler.calls} == {interactive}, "bulk is held back"
        assert runtime.paused() == {TopicPartition(bulk, p) for p in range(2)}

        runtime.resume(TopicPartition(bulk, p) for p in range(2))
        await eventually(
            lambda: len(handler.calls) >= len(interactive_records) + len(bulk_records),
            "the bulk records once resumed",
        )

    assert sorted(call.event_id for call in handler.calls) == sorted(
        event_id for _, event_id in interactive_records + bulk_records
    ), "each record handled once"


async def test_a_pause_from_a_handler_holds_back_the_records_after_the_current_one(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    group = await make_group(topics=1, partitions=1)
    (topic,) = group.topics
    tp = TopicPartition(topic, 0)
    runtime: ConsumerRuntime[SqlAlchemyUnitOfWork] | None = None

    def pause_after_the_first(record: IncomingRecord) -> None:
        assert runtime is not None
        if len(handler.calls) == 1:
            runtime.pause([tp])

    handler = RecordingHandler(then=pause_after_the_first)
    runtime = runtime_for(kafka_bootstrap, group, handler, database, publisher)
    published = [record_of(topic, f"contact-{n}") for n in range(5)]
    await publisher.publish([record for record, _ in published])

    async with runtime:
        await eventually(lambda: len(handler.calls) >= 1, "the first record")
        await asyncio.sleep(HELD_S)
        assert len(handler.calls) == 1, "the records after the pausing one wait"
        assert await effect_count(database) == 1, "the one handled is committed"

        runtime.resume([tp])
        await eventually(lambda: len(handler.calls) >= len(published), "the rest once resumed")

    assert [call.event_id for call in handler.calls] == [event_id for _, event_id in published]
    assert await effect_count(database) == len(published)


async def test_owner_pauses_and_retry_pauses_of_a_partition_hold_it_until_both_end(
    kafka_bootstrap: str, make_group: MakeGroup, database: Database, publisher: KafkaPublisher
) -> None:
    retry_delay_ms = 1_500
    group = await make_group(topics=1, partitions=1, retry_delays_ms=(retry_delay_ms,))
    (topic,) = group.topics
    (retry_topic,) = group.retry_topics
    retry_partition = TopicPartition(retry_topic, 0)
    handler = RecordingHandler(fail=lambda record: record.attempt == 0)
    runtime = runtime_for(kafka_bootstrap, group, handler, database, publisher)

    async def retried_and_read(event_id: str) -> None:
        """Wait until ``event_id`` failed; by then its retry is being read and held."""
        await eventually(lambda: len(handler.handled(event_id)) == 1, "the first attempt")
        await asyncio.sleep(0.5)

    def retry_of(event_id: str) -> list[tuple[IncomingRecord, int]]:
        return [
            (call, at)
            for call, at in zip(handler.calls, handler.called_at_ms, strict=True)
            if call.event_id == event_id and call.attempt == 1
        ]

    async with runtime:
        # The owner's pause outlasts the retry's: the retry waits for the owner.
        record, outlasting = record_of(topic, "outlasting")
        await publisher.publish([record])
        await retried_and_read(outlasting)
        runtime.pause([retry_partition])
        await asyncio.sleep(retry_delay_ms / 1000 + HELD_S)
        assert retry_of(outlasting) == [], "still paused by the owner after the retry was due"
        assert retry_partition in runtime.paused()
        runtime.resume([retry_partition])
        await eventually(lambda: bool(retry_of(outlasting)), "the retry once the owner resumed")

        # The retry's pause outlasts the owner's: the retry still waits until it is due.
        record, short = record_of(topic, "short")
        await publisher.publish([record])
        await retried_and_read(short)
        runtime.pause([retry_partition])
        runtime.resume([retry_partition])
        assert retry_partition in runtime.paused(), "the retry's pause goes on"
        await eventually(lambda: bool(retry_of(short)), "the retry once due")

    ((retried, called_at_ms),) = retry_of(short)
    due_ms = retry_due_ms(retried.headers)
    assert due_ms is not None and called_at_ms >= due_ms, "not handled before it was due"


async def test_owner_hooks_that_raise_are_logged_and_consumption_goes_on(
    kafka_bootstrap: str,
    make_group: MakeGroup,
    database: Database,
    publisher: KafkaPublisher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    group = await make_group(topics=2, partitions=2)
    owner = RecordingOwner(fail=True)
    handler = RecordingHandler(owner=owner, group_topics=group.topics)
    runtime = runtime_for(kafka_bootstrap, group, handler, database, publisher, owner)
    published = [record_of(topic, f"contact-{n}") for n in range(4) for topic in group.topics]
    await publisher.publish([record for record, _ in published])

    with caplog.at_level(logging.ERROR, logger="esquadrao_common.kafka.consumer"):
        async with runtime:
            await eventually(lambda: len(handler.calls) >= len(published), "every record")
        await runtime.run()  # re-raises what ended the consuming loop, had it failed

    assert [kind for kind, _ in owner.calls] == ["assigned", "revoked"]
    logged = [r.getMessage() for r in caplog.records]
    assert any("the partition owner failed when assigned" in m for m in logged)
    assert any("the partition owner failed when revoked" in m for m in logged)
    assert await effect_count(database) == len(published)
