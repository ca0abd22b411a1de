"""The Kafka consumer runtime: idempotent handling, retry topics, dead letters, safe commits.

One :class:`ConsumerRuntime` runs one consumer group (a :class:`ConsumerGroupSpec` of the
catalog) in one process. The records a fetch brings for one partition are processed in
partition order, many to a database transaction (at most ``max_records_per_transaction``),
each record in a savepoint of it. For each record the runtime:

1. reads the envelope; a record that cannot be decoded goes straight to the group's
   dead-letter topic;
2. in the record's savepoint, claims its ``event_id`` for the group in the inbox and, the
   first time only, calls the handler: effects and the claim commit together, so a
   redelivered record is skipped and never applied twice;
3. when the handler raises, rolls the savepoint back (the record's effects and the events
   it staged, nothing else) and republishes the record to the group's next retry topic
   (``<group>.retry.<n>``, due after the catalog's delay) or, when retries are exhausted,
   to its dead-letter topic, with the error in headers
   (:mod:`esquadrao_common.kafka.dead_letters`). The partition moves on: one bad record
   never blocks the records behind it.

The transaction commits once, after its last record, so that a commit (a durable write, and
a round trip) is paid per batch instead of per record. Offsets are committed per partition
after each fetch, and only up to records whose transaction committed. A crash therefore
redelivers a suffix of work already done, which the inbox turns into skips: delivery is at
least once, effects are exactly once.

A failed record is republished before its transaction commits. When that commit then
fails, the transaction's records are all delivered again, the failed one too: it fails (or
succeeds) once more, and whichever of its copies comes second is skipped by the inbox. The
retry chain can thus carry an event twice; its effects still apply once. When the database
rejects the commit for the records' own reason (a constraint checked at commit), no single
record can be blamed: the records are processed again, one transaction each, so that the
commit that fails is one record's, which goes down the retry chain.

A runtime given a ``batch_handler`` instead of a ``handler`` (:data:`BatchHandler`) hands
the records of a transaction, from the group's own topics, to it together, in one savepoint:
the runtime claims all their event ids with one statement
(:func:`~esquadrao_common.inbox.claim_many`), calls the batch handler once with the records
whose claim is new, in partition order (not at all when there is none; the others are
duplicates), and releases the savepoint: a few round trips per transaction instead of a few
per record. When the batch fails for the records' reason (the handler raises, or writing
its effects fails on a statement), the savepoint is rolled back and the records are
processed again as in the per-record path, the batch handler called with one record at a
time, each in its own savepoint: the record at fault goes down the retry chain, the others
are applied. An undecodable record is dead-lettered on its own, between the batches before
and after it. Records from retry topics always take the per-record path (one-record
batches). Infrastructure failures, commits, offsets, pauses and rebalances are the same in
both paths. A batch handler's call is timed once in the handler duration metric and has one
``process`` span: for a lone record the record's own span (continuing its trace), for
several a new trace with the batch's size (``messaging.batch.message_count``), partition and
first offset, linked to each record's trace context; the events the handler stages carry
that span's context.

A record read from a retry topic before its ``retry-not-before`` time is not waited for in
the poll loop: its partition is paused, rewound to that record and resumed when it is due,
while every other partition keeps flowing.

When the database or the broker fails (as opposed to the handler rejecting a record), the
record is not the culprit: the records before it are committed if the transaction still
can be, nothing is committed past it, its partition is rewound to the first record not
committed so that it is delivered again, and the runtime backs off before polling again
instead of spinning or routing healthy records to the dead-letter topic.

A service that acts on the keys of the partitions it consumes (the whatsapp service drives
each session from the worker owning its partition) learns what it owns through a
:class:`PartitionOwnership`, and can hold back partitions it cannot keep up with
(:meth:`ConsumerRuntime.pause`). Several topics keyed alike and with as many partitions are
co-partitioned when the group uses a range assignor or, better for such a service,
:class:`~esquadrao_common.kafka.assignors.CoPartitionedStickyAssignor`: partition ``p`` of
each of them goes to the same member.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Generic, Literal, Protocol, Self, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError
from esquadrao.common.v1.envelope_pb2 import Envelope
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, get_current_span
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.exc import DBAPIError

from esquadrao_common.db import SqlAlchemyUnitOfWork
from esquadrao_common.events import UndecodableRecord, read_envelope
from esquadrao_common.inbox import claim, claim_many
from esquadrao_common.kafka.catalog import ConsumerGroupSpec
from esquadrao_common.kafka.dead_letters import (
    FailureRoute,
    attempt_of,
    failure_record,
    origin_of,
    retry_due_ms,
    route_failure,
)
from esquadrao_common.messaging import Headers, Publisher
from esquadrao_common.resilience.backoff import full_jitter
from esquadrao_common.tracing import (
    context_from,
    current_trace_headers,
    mark_error,
    messaging_attributes,
    messaging_span,
    tracer,
    with_trace_headers,
)

log = logging.getLogger(__name__)

RECORDS = Counter(
    "esquadrao_consumer_records",
    "Records a consumer group finished with, by the topic read and the outcome "
    "(handled, duplicate, retried, dead_lettered).",
    ["group", "topic", "outcome"],
)
HANDLER_DURATION = Histogram(
    "esquadrao_consumer_handler_duration_seconds",
    "Time spent in a consumer group's handler per call (failed calls included): one record, "
    "or a batch handler's batch.",
    ["group"],
)
LAG = Gauge(
    "esquadrao_consumer_lag_records",
    "Records behind the partition's end as of the last fetch (highwater minus next offset).",
    ["group", "topic", "partition"],
)


class Outcome(StrEnum):
    """What became of a record (the ``outcome`` label of the records metric)."""

    HANDLED = "handled"
    DUPLICATE = "duplicate"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"


#: Outcomes final once the broker acknowledged the record's retry or dead-letter copy,
#: whatever becomes of the transaction it was processed in.
ROUTED = frozenset({Outcome.RETRIED, Outcome.DEAD_LETTERED})


@dataclass(frozen=True)
class IncomingRecord:
    """A decoded record as a handler sees it.

    ``attempt`` is 0 for a delivery from the group's own topics and ``n`` for one from
    retry topic ``n``; ``source_topic`` is the topic the record was first published to,
    also when it is read from a retry topic (``topic``). ``value`` is the whole wrapper
    message, for the handler to parse with :func:`esquadrao_common.events.decode_event`.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp: int
    envelope: Envelope
    attempt: int
    source_topic: str

    @property
    def event_id(self) -> str:
        return self.envelope.event_id


UoWT = TypeVar("UoWT", bound=SqlAlchemyUnitOfWork)

#: A handler applies one record's effects in the unit of work it is given, inside a savepoint
#: of a transaction it shares with the records before and after it: it neither commits nor
#: rolls back. Raising rolls back its effects and staged events (only those) and sends the
#: record to the retry chain.
Handler = Callable[[IncomingRecord, UoWT], Awaitable[None]]

#: A batch handler applies the effects of several records of one partition, given in
#: partition order, in the unit of work it is given, inside one savepoint: it neither
#: commits nor rolls back. It is only given records whose event the group has not handled
#: before. Raising rolls back the whole batch's effects and staged events; the runtime then
#: calls it again with one record at a time, each in a savepoint of its own, so that the
#: record at fault (failing alone) goes down the retry chain and the others are applied.
BatchHandler = Callable[[Sequence[IncomingRecord], UoWT], Awaitable[None]]

#: Span attribute: how many records a batch handler's ``process`` span covers.
BATCH_COUNT_ATTRIBUTE = "messaging.batch.message_count"


class PartitionOwnership(Protocol):
    """Told which partitions of the group's own topics this member owns, to act on their keys.

    Calls alternate, ``assigned`` first, and are never made with an empty set; they carry
    the partitions of the group's own topics only, never of its retry topics. The runtime
    handles no record while a call runs, and none of the partitions ``assigned`` gives
    before it returned. A hook that raises is logged and treated as if it had returned:
    neither the rebalance nor consumption stop. Hooks delay the whole group's rebalance
    while they run, so they should only start or stop work, not wait for it at length.

    aiokafka rebalances eagerly: every rebalance revokes the whole assignment, then assigns
    the new one, which may give back some of the same partitions. An owner may keep what it
    cached for a partition across, but must not act on it in between.
    """

    async def assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """This member now owns ``partitions``; their records are handled once this returns.

        The place to :meth:`ConsumerRuntime.pause` those of them that must wait: a
        partition's ownership starts resumed.
        """

    async def revoked(self, partitions: frozenset[TopicPartition]) -> None:
        """This member is about to give up ``partitions`` (a rebalance, or the runtime stops).

        The records of them the runtime handled are committed (their transaction, and their
        offsets as far as the broker accepted them) and no more will be. Once this returns
        another member may own them: the owner must have stopped acting on their keys.
        """


class InfrastructureError(Exception):
    """The database or the broker failed while a record was processed.

    The record is not at fault: it is delivered again after a backoff rather than
    retried through the retry topics or dead-lettered.
    """


def _connection_lost(error: BaseException) -> bool:
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


def _record_caused_commit_error(error: BaseException) -> bool:
    """Whether a failed commit is the record's fault (a constraint its effects broke)."""
    return isinstance(error, DBAPIError) and not error.connection_invalidated


class RetryPauses:
    """Retry-topic partitions paused until the record at their head is due.

    Pure bookkeeping (no Kafka client): the runtime pauses a partition in the consumer and
    records here when to resume it.
    """

    def __init__(self) -> None:
        self._due_ms: dict[TopicPartition, int] = {}

    def pause(self, partition: TopicPartition, due_ms: int) -> None:
        self._due_ms[partition] = due_ms

    def pop_due(self, now_ms: int) -> list[TopicPartition]:
        """The partitions due at ``now_ms``, no longer tracked once returned."""
        due = [tp for tp, at in self._due_ms.items() if at <= now_ms]
        for tp in due:
            del self._due_ms[tp]
        return due

    def next_due_ms(self) -> int | None:
        return min(self._due_ms.values(), default=None)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._due_ms.pop(tp, None)

    def __contains__(self, partition: object) -> bool:
        return partition in self._due_ms


def poll_timeout_ms(now_ms: int, next_due_ms: int | None, max_timeout_ms: int) -> int:
    """How long one poll may wait: ``max_timeout_ms``, less when a paused partition is due
    sooner, so it is resumed on time without sleeping in the loop."""
    if next_due_ms is None:
        return max_timeout_ms
    return max(1, min(max_timeout_ms, next_due_ms - now_ms))


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runtime: ConsumerRuntime[Any]) -> None:
        self._runtime = runtime

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runtime._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._runtime._on_assigned(assigned)


class ConsumerRuntime(Generic[UoWT]):
    """Runs one consumer group: ``await runtime.run()`` until ``await runtime.stop()``.

    Or ``await runtime.start()`` (returns once consuming in a background task) and
    ``await runtime.stop()``, or ``async with runtime: ...``. A runtime runs once.

    ``publisher`` publishes the retry and dead-letter records and must only return once the
    broker acknowledged them (:class:`~esquadrao_common.kafka.producer.KafkaPublisher`).
    Every topic of ``group`` (its topics, retry topics and dead-letter topic) must exist.

    ``max_batch`` is the most records one poll returns, over all partitions. A partition's
    records of one poll are processed in transactions of at most
    ``max_records_per_transaction`` records. The default, 50, stays within two limits:
    Postgres slows down every session's snapshots while a transaction holds more than 64
    subtransactions that wrote (each record's savepoint is one); and SQLAlchemy names each
    savepoint anew, so a transaction of n records runs 2n distinct savepoint statements,
    which the asyncpg driver prepares and caches per connection (100 statements, pruned past
    150): beyond about 60 records they no longer fit beside the handler's own statements and
    each costs an extra round trip. A transaction holds its row locks until it commits, so
    a handler that updates contended rows delays the other writers of those rows by up to a
    transaction's duration.

    ``session_timeout_ms`` and ``heartbeat_interval_ms`` are the group membership timings:
    a member that stops heartbeating loses its partitions after the session timeout. The
    embedded broker also holds every join for about half the session timeout, so tests use
    a short one. ``failure_backoff_s`` is the (base, cap) in seconds of the full-jitter
    backoff after the database or the broker failed. ``clock`` gives epoch seconds and
    decides when retries are due.

    ``assignor`` is the partition assignment strategy (an aiokafka assignor class); every
    member of a group must use the same one. The default, round robin, spreads partitions
    evenly. Co-partitioned topics need
    :class:`~aiokafka.coordinator.assignors.range.RangePartitionAssignor` or
    :class:`~esquadrao_common.kafka.assignors.CoPartitionedStickyAssignor` (``for_member()``:
    it also keeps each member's partitions across rebalances), which give partition ``p``
    of every topic with as many partitions to the same member: the retry topics too, when
    they have as many partitions as the group's topics. ``ownership`` is
    told which partitions this member owns (:class:`PartitionOwnership`).
    ``topic_priority`` lists topics whose records go first: records of these topics already
    fetched are taken before any other, and a poll's partitions are processed in that order
    (unlisted topics last), so the records of an urgent topic never wait behind a backlog
    of a bulk one.

    Exactly one of ``handler`` (called per record, :data:`Handler`) and ``batch_handler``
    (called per transaction with its new records, :data:`BatchHandler`) is given. With a
    batch handler, the owner's :meth:`pause` called from it holds back the records after the
    batch.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        group: ConsumerGroupSpec,
        handler: Handler[UoWT] | None = None,
        batch_handler: BatchHandler[UoWT] | None = None,
        uow_factory: Callable[[], UoWT],
        publisher: Publisher,
        max_batch: int = 100,
        max_records_per_transaction: int = 50,
        poll_timeout_ms: int = 500,
        client_id: str | None = None,
        clock: Callable[[], float] = time.time,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        failure_backoff_s: tuple[float, float] = (0.5, 30.0),
        assignor: type[AbstractPartitionAssignor] = RoundRobinPartitionAssignor,
        ownership: PartitionOwnership | None = None,
        topic_priority: Sequence[str] = (),
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        if max_records_per_transaction < 1:
            raise ValueError(
                f"max_records_per_transaction must be positive, got {max_records_per_transaction}"
            )
        self.group = group
        self._bootstrap = bootstrap
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler and batch_handler")
        self._batch_handler = batch_handler
        self._handler: Handler[UoWT] = handler or self._one_record_batch
        self._uow_factory = uow_factory
        self._publisher = publisher
        self._max_batch = max_batch
        self._max_records_per_transaction = max_records_per_transaction
        self._poll_timeout_ms = poll_timeout_ms
        self._client_id = client_id or f"esquadrao-{group.name}"
        self._clock = clock
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._max_poll_interval_ms = max_poll_interval_ms
        self._backoff_base_s, self._backoff_cap_s = failure_backoff_s
        self._assignor = assignor
        self._ownership = ownership
        self._topic_rank = {topic: rank for rank, topic in enumerate(topic_priority)}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._batch_lock = asyncio.Lock()
        self._pauses = RetryPauses()
        # The partitions whose records may be handled: set, under the batch lock, as the
        # owner is told they are assigned, and emptied as it is told they are revoked.
        self._owned: frozenset[TopicPartition] = frozenset()
        # Owned partitions paused by pause(), a subset of _owned.
        self._owner_pauses: set[TopicPartition] = set()
        # Next offset to commit per partition: records before it are done.
        self._uncommitted: dict[TopicPartition, int] = {}
        self._failures_in_a_row = 0
        self._stalled = False

    async def _one_record_batch(self, record: IncomingRecord, uow: UoWT) -> None:
        """The batch handler as a per-record handler: a batch of ``record`` alone."""
        assert self._batch_handler is not None
        await self._batch_handler([record], uow)

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic the group reads: its own topics, then its retry topics."""
        return self.group.topics + self.group.retry_topics

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this member owns now (empty before it joined the group)."""
        if self._consumer is None:
            return frozenset()
        return frozenset(self._consumer.assignment())

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Hold back the records of ``partitions`` until :meth:`resume`: the owner's backpressure.

        Once this returns, no record of them is handled but the one a handler may be
        handling now: called from a handler, it holds back the records after the current
        one. Partitions this member does not own are ignored, and a pause ends with the
        ownership: a partition assigned again starts resumed, and its owner pauses it again
        in :meth:`PartitionOwnership.assigned` if it must. A pause is independent of the
        runtime's own pauses of retry topics until a retry is due: a partition is consumed
        only when neither holds it. Pausing a partition of a group topic does not pause the
        retry topics: retries of its records keep being handled. Call it from the runtime's
        event loop.
        """
        owned = [tp for tp in partitions if tp in self._owned]
        if not owned:
            return
        assert self._consumer is not None  # it owns partitions: it started
        self._owner_pauses.update(owned)
        self._consumer.pause(*owned)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        """Let the records of ``partitions`` paused by :meth:`pause` be handled again.

        A partition that also waits for a retry to be due stays paused until then. Other
        partitions are ignored.
        """
        held = [tp for tp in partitions if tp in self._owner_pauses]
        if not held:
            return
        self._owner_pauses.difference_update(held)
        resumable = [tp for tp in held if tp not in self._pauses]
        if resumable:
            assert self._consumer is not None  # it paused partitions: it started
            self._consumer.resume(*resumable)

    def paused(self) -> frozenset[TopicPartition]:
        """The partitions held back now: by :meth:`pause`, or waiting for a retry to be due."""
        if self._consumer is None:
            return frozenset()
        return frozenset(self._consumer.paused())

    async def start(self) -> None:
        """Connect and subscribe, then consume in a background task until :meth:`stop`."""
        if self._consumer is not None:
            raise RuntimeError(f"consumer runtime of {self.group.name} was already started")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.group.name,
            client_id=self._client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=self._heartbeat_interval_ms,
            max_poll_interval_ms=self._max_poll_interval_ms,
            partition_assignment_strategy=(self._assignor,),
        )
        consumer.subscribe(topics=list(self.topics), listener=_RebalanceListener(self))
        self._consumer = consumer
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        log.info("consumer group %s started on %s", self.group.name, ", ".join(self.topics))
        self._task = asyncio.create_task(
            self._consume(consumer), name=f"consumer {self.group.name}"
        )

    async def run(self) -> None:
        """Consume until :meth:`stop` (or cancellation); raises what ended it otherwise."""
        if self._task is None:
            await self.start()
        assert self._task is not None
        await self._task

    async def stop(self) -> None:
        """Finish the record in hand, commit what is done, leave the group and close.

        What is done is the records processed before the one in hand and that record: their
        transaction commits, then their offsets. Then the owner is told its partitions are
        revoked, and only then does the member leave the group.

        Records not reached are redelivered to whichever member owns their partition next.
        """
        self._stopping.set()
        if self._task is None:
            return
        await asyncio.wait([self._task])
        if not self._task.cancelled():
            # Already logged by the loop (and raised by run()); retrieved so that asyncio
            # does not report it again as never retrieved.
            self._task.exception()

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

    async def _poll(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """The next records: those of the priority topics already fetched, if any, else
        those of every partition.

        The client hands out fetched records partition after partition in the order their
        fetches completed, so records of an urgent topic fetched after a backlog of a bulk
        one would come out only once that backlog has; asking for the urgent partitions
        first (without waiting) puts them ahead.
        """
        if self._topic_rank:
            urgent = [tp for tp in consumer.assignment() if tp.topic in self._topic_rank]
            if urgent:
                records: dict[TopicPartition, list[Any]] = await consumer.getmany(
                    *urgent, timeout_ms=0, max_records=self._max_batch
                )
                if records:
                    return records
        polled: dict[TopicPartition, list[Any]] = await consumer.getmany(
            timeout_ms=poll_timeout_ms(
                self._now_ms(), self._pauses.next_due_ms(), self._poll_timeout_ms
            ),
            max_records=self._max_batch,
        )
        return polled

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while not self._stopping.is_set():
                self._resume_due(consumer)
                try:
                    batch = await self._poll(consumer)
                except KafkaError as error:
                    log.warning("consumer group %s: poll failed: %r", self.group.name, error)
                    self._stalled = True
                    batch = {}
                if batch:
                    async with self._batch_lock:
                        await self._process_batch(consumer, batch)
                if self._stalled:
                    await self._back_off()
            async with self._batch_lock:
                await self._commit(consumer)
        except Exception:
            log.exception("consumer group %s failed", self.group.name)
            raise
        finally:
            try:
                self._clear_lag(consumer.assignment())
                # Stopped or failed, the member gives its partitions up when it leaves the
                # group; aiokafka calls no listener then.
                async with self._batch_lock:
                    await self._disown()
            finally:
                await consumer.stop()
                log.info("consumer group %s stopped", self.group.name)

    async def _process_batch(
        self, consumer: AIOKafkaConsumer, batch: Mapping[TopicPartition, Sequence[Any]]
    ) -> None:
        unlisted = len(self._topic_rank)
        for tp, records in sorted(
            batch.items(), key=lambda item: self._topic_rank.get(item[0].topic, unlisted)
        ):
            if self._stopping.is_set():
                break
            if tp not in self._owned:
                # A rebalance moved the partition while this batch waited for the lock, or
                # assigned it and its owner is not told yet: then it is read again later.
                if tp in consumer.assignment():
                    consumer.seek(tp, records[0].offset)
                continue
            await self._process_partition(consumer, tp, records)
            self._update_lag(consumer, tp)
        await self._commit(consumer)

    async def _process_partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: Sequence[Any]
    ) -> None:
        """Process ``records`` of ``tp`` in transactions of ``max_records_per_transaction``.

        Stops at the first transaction that does not get all its records done (stopping, a
        retry not yet due, a failure): the partition was rewound where it has to resume.
        """
        attempt = attempt_of(self.group, tp.topic)
        size = self._max_records_per_transaction
        for first in range(0, len(records), size):
            chunk = records[first : first + size]
            if await self._process_together(consumer, tp, chunk, attempt) < len(chunk):
                return

    async def _process_together(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: Sequence[Any], attempt: int
    ) -> int:
        """Process ``records`` of ``tp``, in order, in one transaction.

        Each record in a savepoint of its own, or, with a batch handler and records from the
        group's own topics, the records in one savepoint (:meth:`_process_in_batches`).
        Returns how many of them are done. Stops early when stopping, when the owner paused
        the partition (rewound to the next record), at a retry record not yet due (the
        partition is paused and rewound to it) and at an infrastructure failure
        (rewound to the failed record, stalled); the records processed before are done once
        the transaction commits. When it cannot commit for the infrastructure's reason,
        none is done and the partition is rewound to the first record and stalled. When the
        database rejects the commit for the records' own reason, they are processed again
        one transaction each (:meth:`_process_one_by_one`).
        """
        finished: list[tuple[Any, Outcome]] = []
        committed = rejected = False
        try:
            async with self._uow_factory() as uow:
                if self._batch_handler is not None and attempt == 0:
                    await self._process_in_batches(consumer, tp, uow, records, finished)
                else:
                    await self._process_each(consumer, tp, uow, records, attempt, finished)
                try:
                    await uow.commit()
                except Exception as error:
                    if not _record_caused_commit_error(error):
                        raise
                    log.warning(
                        "consumer group %s: the commit of %d records of %s from offset %d was "
                        "rejected, processing them one transaction each: %r",
                        self.group.name,
                        len(finished),
                        _name(tp),
                        records[0].offset,
                        error,
                    )
                    rejected = True
                else:
                    committed = True
        except Exception as error:
            if not committed:
                self._redeliver(consumer, tp, records[0], "the transaction did not commit", error)
                return 0
            log.warning(
                "consumer group %s: %s committed, but its unit of work did not close: %r",
                self.group.name,
                _name(tp),
                error,
            )
        if rejected:
            return await self._process_one_by_one(consumer, tp, finished, attempt)
        for record, outcome in finished:
            self._done(tp, record, outcome)
        return len(finished)

    def _may_process(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, record: Any, attempt: int
    ) -> bool:
        """Whether ``record`` may be processed now; if not, ``tp`` is rewound or paused."""
        return not (
            self._stopping.is_set()
            or self._held_by_owner(consumer, tp, record)
            or self._hold_until_due(consumer, tp, record, attempt)
        )

    async def _process_each(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        uow: UoWT,
        records: Sequence[Any],
        attempt: int,
        finished: list[tuple[Any, Outcome]],
    ) -> bool:
        """Process ``records`` in ``uow``'s transaction, each in a savepoint of its own.

        Appends each record done (once the transaction commits) to ``finished``. Returns
        whether all were: False when it stopped early (see :meth:`_process_together`).
        """
        for record in records:
            if not self._may_process(consumer, tp, record, attempt):
                return False
            try:
                outcome = await self._process_record(uow, record, attempt)
            except InfrastructureError as error:
                self._redeliver(consumer, tp, record, str(error), error.__cause__)
                return False
            finished.append((record, outcome))
        return True

    async def _process_in_batches(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        uow: UoWT,
        records: Sequence[Any],
        finished: list[tuple[Any, Outcome]],
    ) -> bool:
        """Process ``records`` (of the group's own topics) with the batch handler.

        The records are handed to it together, in one savepoint; an undecodable record,
        dead-lettered on its own, splits them in two batches around it. Same contract as
        :meth:`_process_each`.
        """
        batch: list[tuple[Any, IncomingRecord]] = []
        for record in records:
            incoming = self._decode(record, 0)
            if isinstance(incoming, IncomingRecord):
                batch.append((record, incoming))
                continue
            if not await self._process_batch_of(consumer, tp, uow, batch, finished):
                return False
            batch = []
            if not await self._process_each(consumer, tp, uow, [record], 0, finished):
                return False
        return await self._process_batch_of(consumer, tp, uow, batch, finished)

    async def _process_batch_of(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        uow: UoWT,
        batch: Sequence[tuple[Any, IncomingRecord]],
        finished: list[tuple[Any, Outcome]],
    ) -> bool:
        """Process ``batch`` in one savepoint; when it fails, each record in a savepoint.

        The fallback calls the batch handler with one record at a time, so that the record
        at fault fails alone and goes down the retry chain while the others are applied.
        Same contract as :meth:`_process_each`.
        """
        if not batch:
            return True
        first = batch[0][0]
        if not self._may_process(consumer, tp, first, 0):
            return False
        try:
            outcomes = await self._apply_batch(uow, [incoming for _, incoming in batch])
        except InfrastructureError as error:
            self._redeliver(consumer, tp, first, str(error), error.__cause__)
            return False
        records = [record for record, _ in batch]
        if outcomes is not None:
            finished.extend(zip(records, outcomes, strict=True))
            return True
        return await self._process_each(consumer, tp, uow, records, 0, finished)

    async def _process_one_by_one(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        finished: Sequence[tuple[Any, Outcome]],
        attempt: int,
    ) -> int:
        """Process again, one transaction each, the records of a rejected commit.

        Each commit that fails now is one record's, which goes down the retry chain like a
        handler error. A record already sent to a retry topic or the dead-letter topic is
        not processed again: that copy was acknowledged and stands. Returns how many of
        ``finished`` are done.
        """
        done = 0
        for record, outcome in finished:
            if self._stopping.is_set():
                break
            if outcome in ROUTED:
                self._done(tp, record, outcome)
            elif not await self._process_alone(consumer, tp, record, attempt):
                break
            done += 1
        return done

    async def _process_alone(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, record: Any, attempt: int
    ) -> bool:
        """Process ``record`` in a transaction of its own, committed within its span.

        A commit the database rejects is then this record's failure, routed like a handler
        error. Returns whether the partition may go on (False: rewound and stalled).
        """
        try:
            async with self._uow_factory() as uow:
                outcome = await self._process_record(uow, record, attempt, commit=True)
        except InfrastructureError as error:
            self._redeliver(consumer, tp, record, str(error), error.__cause__)
            return False
        except Exception as error:
            self._redeliver(consumer, tp, record, "could not open or close the unit of work", error)
            return False
        self._done(tp, record, outcome)
        return True

    def _held_by_owner(self, consumer: AIOKafkaConsumer, tp: TopicPartition, record: Any) -> bool:
        """Rewind ``tp`` to ``record`` when the owner paused it; whether it did."""
        if tp not in self._owner_pauses:
            return False
        consumer.seek(tp, record.offset)
        return True

    def _hold_until_due(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, record: Any, attempt: int
    ) -> bool:
        """Pause ``tp`` at ``record`` when it is a retry not yet due; whether it was."""
        if attempt == 0:
            return False
        due_ms = retry_due_ms(record.headers)
        if due_ms is None or due_ms <= self._now_ms():
            return False
        consumer.pause(tp)
        consumer.seek(tp, record.offset)
        self._pauses.pause(tp, due_ms)
        return True

    def _redeliver(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        record: Any,
        reason: str,
        cause: BaseException | None,
    ) -> None:
        """Rewind ``tp`` to ``record`` and back off: the infrastructure, not it, failed."""
        log.warning(
            "consumer group %s: %s/%d@%d will be redelivered: %s: %r",
            self.group.name,
            record.topic,
            record.partition,
            record.offset,
            reason,
            cause,
        )
        consumer.seek(tp, record.offset)
        self._stalled = True

    def _done(self, tp: TopicPartition, record: Any, outcome: Outcome) -> None:
        self._uncommitted[tp] = record.offset + 1
        self._failures_in_a_row = 0
        RECORDS.labels(self.group.name, tp.topic, outcome.value).inc()

    def _decode(self, record: Any, attempt: int) -> IncomingRecord | UndecodableRecord:
        """``record`` as the handler sees it, or why it cannot be read."""
        headers: Headers = list(record.headers)
        try:
            envelope = read_envelope(record.value)
        except UndecodableRecord as error:
            return error
        return IncomingRecord(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=headers,
            timestamp=record.timestamp,
            envelope=envelope,
            attempt=attempt,
            source_topic=origin_of(record.topic, record.partition, record.offset, headers).topic,
        )

    async def _process_record(
        self, uow: UoWT, record: Any, attempt: int, *, commit: bool = False
    ) -> Outcome:
        """Process ``record`` in ``uow``'s transaction, inside its ``process`` span.

        With ``commit``, ``uow`` is the record's alone and is committed in the span too.
        Raises InfrastructureError when the database or the broker failed.
        """
        incoming = self._decode(record, attempt)
        if isinstance(incoming, IncomingRecord):
            return await self._process_incoming(uow, record, incoming, commit=commit)
        headers: Headers = list(record.headers)
        with messaging_span(
            "process",
            record.topic,
            parent=context_from(headers),
            key=record.key,
            partition=record.partition,
            offset=record.offset,
            consumer_group=self.group.name,
        ) as span:
            mark_error(span, incoming)
            now_ms = self._now_ms()
            route = route_failure(self.group, attempt, now_ms=now_ms, retriable=False)
            await self._route(record, headers, route, incoming, now_ms)
        return Outcome.DEAD_LETTERED

    async def _process_incoming(
        self, uow: UoWT, record: Any, incoming: IncomingRecord, *, commit: bool = False
    ) -> Outcome:
        """Process decoded ``record`` alone, inside its ``process`` span (see above)."""
        with messaging_span(
            "process",
            incoming.source_topic,
            parent=context_from(incoming.headers),
            key=record.key,
            message_id=incoming.event_id,
            partition=record.partition,
            offset=record.offset,
            consumer_group=self.group.name,
        ) as span:
            span.set_attribute("esquadrao.consumer.attempt", incoming.attempt)
            result = await self._apply(uow, incoming, commit=commit)
            if isinstance(result, Outcome):
                return result
            return await self._fail(span, record, incoming.headers, incoming.attempt, result)

    @contextlib.contextmanager
    def _batch_span(self, records: Sequence[IncomingRecord]) -> Iterator[Span]:
        """The ``process`` span of a batch handler's call.

        One record: its span as in the per-record path, continuing the record's trace. More:
        a span of its own (a new trace) linked to each record's trace context, with the
        batch's size, partition and first offset.
        """
        first = records[0]
        if len(records) == 1:
            with messaging_span(
                "process",
                first.source_topic,
                parent=context_from(first.headers),
                key=first.key,
                message_id=first.event_id,
                partition=first.partition,
                offset=first.offset,
                consumer_group=self.group.name,
            ) as span:
                span.set_attribute("esquadrao.consumer.attempt", first.attempt)
                span.set_attribute(BATCH_COUNT_ATTRIBUTE, 1)
                yield span
            return
        links = []
        for record in records:
            context = get_current_span(context_from(record.headers)).get_span_context()
            if context.is_valid:
                links.append(Link(context))
        attributes = messaging_attributes(
            "process",
            first.source_topic,
            partition=first.partition,
            offset=first.offset,
            consumer_group=self.group.name,
        )
        attributes[BATCH_COUNT_ATTRIBUTE] = len(records)
        attributes["esquadrao.consumer.attempt"] = first.attempt
        with tracer().start_as_current_span(
            f"process {first.source_topic}",
            context=Context(),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            yield span

    async def _apply_batch(
        self, uow: UoWT, records: Sequence[IncomingRecord]
    ) -> list[Outcome] | None:
        """Claim ``records`` and hand the new ones to the batch handler, in one savepoint.

        Returns each record's outcome (HANDLED or DUPLICATE) once the savepoint is
        released, or None when the batch failed for the records' reason (the handler
        raised, or writing its effects failed on a statement), the savepoint rolled back.
        Raises InfrastructureError when the database, not the records, failed.
        """
        assert self._batch_handler is not None
        outcomes: list[Outcome] = []
        with self._batch_span(records) as span:
            handled = False
            try:
                async with uow.savepoint():
                    try:
                        claimed = await claim_many(
                            uow.session, self.group.name, [r.event_id for r in records]
                        )
                    except Exception as error:
                        raise InfrastructureError(
                            "could not claim the events in the inbox"
                        ) from error
                    new: list[IncomingRecord] = []
                    for record in records:
                        if record.event_id in claimed:
                            # A second copy of the event in the batch is a duplicate.
                            claimed.discard(record.event_id)
                            new.append(record)
                            outcomes.append(Outcome.HANDLED)
                        else:
                            outcomes.append(Outcome.DUPLICATE)
                    if new:
                        started = time.perf_counter()
                        try:
                            await self._batch_handler(new, uow)
                        finally:
                            HANDLER_DURATION.labels(self.group.name).observe(
                                time.perf_counter() - started
                            )
                    handled = True
            except InfrastructureError:
                raise
            except Exception as error:
                if _connection_lost(error):
                    raise InfrastructureError("database connection lost") from error
                if handled and not _record_caused_commit_error(error):
                    raise InfrastructureError("could not write the records' effects") from error
                mark_error(span, error)
                log.warning(
                    "consumer group %s: the batch of %d records of %s/%d from offset %d "
                    "failed, processing them one at a time: %r",
                    self.group.name,
                    len(records),
                    records[0].topic,
                    records[0].partition,
                    records[0].offset,
                    error,
                )
                return None
        return outcomes

    async def _apply(
        self, uow: UoWT, record: IncomingRecord, *, commit: bool
    ) -> Outcome | Exception:
        """Claim and handle ``record`` in a savepoint of ``uow``'s transaction.

        Returns HANDLED once the savepoint is released (and, with ``commit``, the
        transaction committed), DUPLICATE when the group handled the event before, or the
        error that makes the record fail, its savepoint rolled back. Raises
        InfrastructureError when the database, not the record, failed.
        """
        handled = False
        try:
            async with uow.savepoint():
                try:
                    claimed = await claim(uow.session, self.group.name, record.event_id)
                except Exception as error:
                    raise InfrastructureError("could not claim the event in the inbox") from error
                if not claimed:
                    return Outcome.DUPLICATE
                started = time.perf_counter()
                try:
                    await self._handler(record, uow)
                finally:
                    HANDLER_DURATION.labels(self.group.name).observe(time.perf_counter() - started)
                handled = True
            if commit:
                await uow.commit()
        except InfrastructureError:
            raise
        except Exception as error:
            if _connection_lost(error):
                raise InfrastructureError("database connection lost") from error
            if handled and not _record_caused_commit_error(error):
                raise InfrastructureError("could not write the record's effects") from error
            return error
        return Outcome.HANDLED

    async def _fail(
        self, span: Span, record: Any, headers: Headers, attempt: int, error: Exception
    ) -> Outcome:
        mark_error(span, error)
        now_ms = self._now_ms()
        route = route_failure(self.group, attempt, now_ms=now_ms)
        await self._route(record, headers, route, error, now_ms)
        return Outcome.DEAD_LETTERED if route.dead_letter else Outcome.RETRIED

    async def _route(
        self,
        record: Any,
        headers: Headers,
        route: FailureRoute,
        error: BaseException,
        failed_at_ms: int,
    ) -> None:
        """Publish the failed record to ``route``; InfrastructureError if not acknowledged.

        ``failed_at_ms`` is the time ``route`` was decided at, so that a retry's due time
        is exactly its ``failed-at`` plus the delay.
        """
        # Inside the process span the retry continues the trace as its child; with no
        # span to point at, the record's own trace context is kept as it was.
        trace_headers = with_trace_headers(headers) if current_trace_headers() else headers
        outgoing = failure_record(
            route,
            consumer_group=self.group.name,
            key=record.key,
            value=record.value or b"",
            headers=trace_headers,
            origin=origin_of(record.topic, record.partition, record.offset, headers),
            error=error,
            now_ms=failed_at_ms,
        )
        try:
            await self._publisher.publish([outgoing])
        except Exception as publish_error:
            raise InfrastructureError(f"could not publish to {route.topic}") from publish_error
        log.warning(
            "consumer group %s: %s/%d@%d %s %s (attempt %d): %r",
            self.group.name,
            record.topic,
            record.partition,
            record.offset,
            "dead-lettered to" if route.dead_letter else "sent to retry topic",
            route.topic,
            route.attempt,
            error,
        )

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit the done offsets of assigned partitions; forget those of others.

        A commit rejected because the group rebalanced drops the offsets: the partition's
        new owner re-reads those records and skips them as duplicates. A commit that failed
        otherwise keeps them for the next attempt.
        """
        assigned = consumer.assignment()
        offsets = {tp: offset for tp, offset in self._uncommitted.items() if tp in assigned}
        self._uncommitted = dict(offsets)
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except CommitFailedError as error:
            log.warning(
                "consumer group %s: offsets not committed, the group rebalanced: %r",
                self.group.name,
                error,
            )
        except KafkaError as error:
            log.warning(
                "consumer group %s: offsets not committed, will retry: %r", self.group.name, error
            )
            return
        for tp, offset in offsets.items():
            if self._uncommitted.get(tp) == offset:
                del self._uncommitted[tp]

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Let the batch in hand finish and commit, then tell the owner, before the
        partitions move."""
        async with self._batch_lock:
            if self._consumer is not None:
                await self._commit(self._consumer)
            self._pauses.forget(revoked)
            for tp in revoked:
                self._uncommitted.pop(tp, None)
            self._clear_lag(revoked)
            await self._disown()
        if revoked:
            log.info("consumer group %s: revoked %s", self.group.name, _names(revoked))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Tell the owner, then let the records of ``assigned`` be handled."""
        log.info("consumer group %s: assigned %s", self.group.name, _names(assigned))
        async with self._batch_lock:
            self._owned = frozenset(assigned)
            await self._tell_owner("assigned", self._owned)

    async def _disown(self) -> None:
        """End the ownership of every partition owned: its pauses, then tell the owner.

        Idempotent: a rebalance and the runtime stopping may both end it.
        """
        owned, self._owned = self._owned, frozenset()
        self._owner_pauses.clear()
        await self._tell_owner("revoked", owned)

    async def _tell_owner(
        self, event: Literal["assigned", "revoked"], partitions: frozenset[TopicPartition]
    ) -> None:
        """Call the owner's hook with the partitions of the group's topics, logging errors."""
        mine = frozenset(tp for tp in partitions if tp.topic in self.group.topics)
        if self._ownership is None or not mine:
            return
        hook = self._ownership.assigned if event == "assigned" else self._ownership.revoked
        try:
            await hook(mine)
        except Exception:
            log.exception(
                "consumer group %s: the partition owner failed when %s %s",
                self.group.name,
                event,
                _names(mine),
            )

    def _resume_due(self, consumer: AIOKafkaConsumer) -> None:
        due = self._pauses.pop_due(self._now_ms())
        assigned = consumer.assignment()
        resumable = [tp for tp in due if tp in assigned and tp not in self._owner_pauses]
        if resumable:
            consumer.resume(*resumable)

    async def _back_off(self) -> None:
        delay = full_jitter(self._failures_in_a_row, self._backoff_base_s, self._backoff_cap_s)
        self._failures_in_a_row += 1
        self._stalled = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    def _update_lag(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
        position = self._uncommitted.get(tp)
        if position is None or tp not in consumer.assignment():
            return
        highwater = consumer.highwater(tp)
        if highwater is None:
            return
        LAG.labels(self.group.name, tp.topic, str(tp.partition)).set(max(0, highwater - position))

    def _clear_lag(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            with contextlib.suppress(KeyError):
                LAG.remove(self.group.name, tp.topic, str(tp.partition))

    def _now_ms(self) -> int:
        return math.floor(self._clock() * 1000)


def _name(tp: TopicPartition) -> str:
    return f"{tp.topic}/{tp.partition}"


def _names(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(sorted(_name(tp) for tp in partitions))
