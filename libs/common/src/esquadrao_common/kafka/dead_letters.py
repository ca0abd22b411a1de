"""Retry and dead-letter records: their headers, the routing rule, reading them back, replay.

A record whose handler fails is republished, unchanged in key and value, to its consumer
group's next retry topic (``<group>.retry.<n>``) and, once every retry has failed, to the
group's dead-letter topic (``<group>.dlq``). A record that cannot be decoded goes to the
dead-letter topic at once: no retry can fix it. What happened travels in headers, as
decimal or UTF-8 text so that any Kafka tool shows them readably:

======================  =================================================================
``original-topic``      the topic the record was first published to
``original-partition``  its partition there
``original-offset``     its offset there
``attempt``             on a retry record: the retry it is (``n`` for ``<group>.retry.<n>``);
                        on a dead letter: the attempt that failed last (0 = the delivery
                        from the original topic)
``retry-not-before``    on a retry record: epoch milliseconds before which it is not retried
``error-type``          the exception's class (``module.Name``; builtins without module)
``error-message``       the exception's text, at most :data:`MAX_ERROR_MESSAGE_BYTES`
``failed-at``           epoch milliseconds of the failure
``consumer-group``      the consumer group whose handler failed
``replayed-from``       on a replayed record: ``<dlq topic>/<partition>/<offset>`` it came from
======================  =================================================================

Every other header (the envelope's ``event_id``, ``event_type``, ``company_id`` and the W3C
trace context) is kept, so a retry continues the record's trace and a replayed record is
the same event, which idempotent consumers recognise by its ``event_id``.

Everything here but :func:`replay` and :func:`read_dead_letters` is pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaConsumer

from esquadrao_common.kafka.catalog import ConsumerGroupSpec
from esquadrao_common.messaging import Headers, OutgoingRecord, Publisher

HEADER_ORIGINAL_TOPIC = "original-topic"
HEADER_ORIGINAL_PARTITION = "original-partition"
HEADER_ORIGINAL_OFFSET = "original-offset"
HEADER_ATTEMPT = "attempt"
HEADER_RETRY_NOT_BEFORE = "retry-not-before"
HEADER_ERROR_TYPE = "error-type"
HEADER_ERROR_MESSAGE = "error-message"
HEADER_FAILED_AT = "failed-at"
HEADER_CONSUMER_GROUP = "consumer-group"
HEADER_REPLAYED_FROM = "replayed-from"

#: Headers this module writes. Each hop (retry, dead letter, replay) replaces them, so a
#: record never carries two ``attempt`` values.
FAILURE_HEADERS = frozenset(
    {
        HEADER_ORIGINAL_TOPIC,
        HEADER_ORIGINAL_PARTITION,
        HEADER_ORIGINAL_OFFSET,
        HEADER_ATTEMPT,
        HEADER_RETRY_NOT_BEFORE,
        HEADER_ERROR_TYPE,
        HEADER_ERROR_MESSAGE,
        HEADER_FAILED_AT,
        HEADER_CONSUMER_GROUP,
        HEADER_REPLAYED_FROM,
    }
)

#: Longest ``error-message`` header, in UTF-8 bytes: enough for a diagnosis, small enough
#: that an exception quoting a whole payload cannot bloat every retry record.
MAX_ERROR_MESSAGE_BYTES = 1000


class ConsumedRecord(Protocol):
    """The fields of a consumed Kafka record this module reads (aiokafka's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True)
class Origin:
    """Where a record was first published, before any retry."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class FailureRoute:
    """Where a failed record goes next.

    ``attempt`` is the value of the ``attempt`` header on the routed record.
    ``not_before_ms`` is the retry's due time, None for the dead-letter topic.
    """

    topic: str
    attempt: int
    not_before_ms: int | None

    @property
    def dead_letter(self) -> bool:
        return self.not_before_ms is None


def header_value(headers: Iterable[tuple[str, bytes]], name: str) -> bytes | None:
    """The last value of header ``name`` (Kafka allows repeats; the newest wins), or None."""
    found: bytes | None = None
    for key, value in headers:
        if key == name:
            found = value
    return found


def _int_header(headers: Iterable[tuple[str, bytes]], name: str) -> int | None:
    raw = header_value(headers, name)
    if raw is None:
        return None
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


def _text_header(headers: Iterable[tuple[str, bytes]], name: str) -> str:
    raw = header_value(headers, name)
    return "" if raw is None else raw.decode("utf-8", "replace")


def attempt_of(group: ConsumerGroupSpec, topic: str) -> int:
    """The attempt a record read from ``topic`` is: n on ``<group>.retry.<n>``, else 0.

    Decided by the topic, not by a header, so a record's place in the chain cannot be
    forged or lost by a producer.
    """
    try:
        return group.retry_topics.index(topic) + 1
    except ValueError:
        return 0


def origin_of(
    topic: str, partition: int, offset: int, headers: Iterable[tuple[str, bytes]]
) -> Origin:
    """Where a record came from first: its ``original-*`` headers, else where it was read."""
    headers = list(headers)
    original_topic = header_value(headers, HEADER_ORIGINAL_TOPIC)
    original_partition = _int_header(headers, HEADER_ORIGINAL_PARTITION)
    original_offset = _int_header(headers, HEADER_ORIGINAL_OFFSET)
    if original_topic is None or original_partition is None or original_offset is None:
        return Origin(topic, partition, offset)
    return Origin(original_topic.decode("utf-8", "replace"), original_partition, original_offset)


def route_failure(
    group: ConsumerGroupSpec, attempt: int, *, now_ms: int, retriable: bool = True
) -> FailureRoute:
    """Where a record that failed at ``attempt`` goes.

    A retriable failure goes to retry topic ``attempt + 1`` with the delay the catalog
    gives it, due at ``now_ms + delay``; when the group has no retry left (or none at all),
    and for any failure that is not retriable (an undecodable record), it goes to the
    dead-letter topic with ``attempt`` unchanged.
    """
    if retriable and attempt < len(group.retry_topics):
        return FailureRoute(
            topic=group.retry_topics[attempt],
            attempt=attempt + 1,
            not_before_ms=now_ms + group.retry_delays_ms[attempt],
        )
    return FailureRoute(topic=group.dlq_topic, attempt=attempt, not_before_ms=None)


def retry_due_ms(headers: Iterable[tuple[str, bytes]]) -> int | None:
    """The ``retry-not-before`` time of a record (epoch ms), None when absent or malformed.

    A retry record without a readable due time is retried at once rather than held back
    forever.
    """
    return _int_header(headers, HEADER_RETRY_NOT_BEFORE)


def error_type_name(error: BaseException) -> str:
    """``module.QualifiedName`` of the error's class; builtins by name only."""
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def error_message(error: BaseException) -> bytes:
    """The error's text as UTF-8, cut to :data:`MAX_ERROR_MESSAGE_BYTES` on a character."""
    encoded = str(error).encode("utf-8", "replace")
    if len(encoded) <= MAX_ERROR_MESSAGE_BYTES:
        return encoded
    return encoded[:MAX_ERROR_MESSAGE_BYTES].decode("utf-8", "ignore").encode("utf-8")


def failure_record(
    route: FailureRoute,
    *,
    consumer_group: str,
    key: bytes | None,
    value: bytes,
    headers: Iterable[tuple[str, bytes]],
    origin: Origin,
    error: BaseException,
    now_ms: int,
) -> OutgoingRecord:
    """The record that carries a failed record to ``route.topic``.

    Key and value are the failed record's; its headers are kept except the failure headers,
    which are written anew (trace headers are the caller's business: pass them already
    pointing at the span that failed).
    """
    kept: Headers = [(k, v) for k, v in headers if k not in FAILURE_HEADERS]
    failure: Headers = [
        (HEADER_ORIGINAL_TOPIC, origin.topic.encode()),
        (HEADER_ORIGINAL_PARTITION, str(origin.partition).encode()),
        (HEADER_ORIGINAL_OFFSET, str(origin.offset).encode()),
        (HEADER_ATTEMPT, str(route.attempt).encode()),
        (HEADER_ERROR_TYPE, error_type_name(error).encode()),
        (HEADER_ERROR_MESSAGE, error_message(error)),
        (HEADER_FAILED_AT, str(now_ms).encode()),
        (HEADER_CONSUMER_GROUP, consumer_group.encode()),
    ]
    if route.not_before_ms is not None:
        failure.append((HEADER_RETRY_NOT_BEFORE, str(route.not_before_ms).encode()))
    return OutgoingRecord(topic=route.topic, key=key, value=value, headers=kept + failure)


@dataclass(frozen=True)
class DeadLetter:
    """A record read from a dead-letter topic, with its failure headers decoded.

    ``topic``/``partition``/``offset`` locate it in the dead-letter topic; ``origin`` is where
    it was first published. Numbers missing from the headers read as -1, texts as "".
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    origin: Origin
    attempt: int
    error_type: str
    error_message: str
    consumer_group: str
    failed_at_ms: int

    @classmethod
    def from_record(cls, record: ConsumedRecord) -> DeadLetter:
        headers: Headers = list(record.headers)
        partition = _int_header(headers, HEADER_ORIGINAL_PARTITION)
        offset = _int_header(headers, HEADER_ORIGINAL_OFFSET)
        origin = Origin(
            topic=_text_header(headers, HEADER_ORIGINAL_TOPIC),
            partition=-1 if partition is None else partition,
            offset=-1 if offset is None else offset,
        )
        attempt = _int_header(headers, HEADER_ATTEMPT)
        failed_at = _int_header(headers, HEADER_FAILED_AT)
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value or b"",
            headers=headers,
            origin=origin,
            attempt=-1 if attempt is None else attempt,
            error_type=_text_header(headers, HEADER_ERROR_TYPE),
            error_message=_text_header(headers, HEADER_ERROR_MESSAGE),
            consumer_group=_text_header(headers, HEADER_CONSUMER_GROUP),
            failed_at_ms=-1 if failed_at is None else failed_at,
        )


def replay_record(letter: DeadLetter) -> OutgoingRecord:
    """The record that republishes ``letter`` to its original topic as a first delivery.

    Failure headers are dropped (the record starts its retry chain afresh) and
    ``replayed-from`` names the dead letter. Raises ValueError when the dead letter does not
    say where it came from.
    """
    if not letter.origin.topic:
        raise ValueError(
            f"dead letter {letter.topic}/{letter.partition}/{letter.offset} has no "
            f"{HEADER_ORIGINAL_TOPIC} header: nowhere to replay it to"
        )
    kept: Headers = [(k, v) for k, v in letter.headers if k not in FAILURE_HEADERS]
    source = f"{letter.topic}/{letter.partition}/{letter.offset}".encode()
    return OutgoingRecord(
        topic=letter.origin.topic,
        key=letter.key,
        value=letter.value,
        headers=[*kept, (HEADER_REPLAYED_FROM, source)],
    )


async def replay(publisher: Publisher, letters: Iterable[DeadLetter]) -> int:
    """Republish ``letters`` to their original topics; returns how many.

    Returns once the broker has acknowledged all of them. The consumer group then handles
    each as a new delivery: its ``event_id`` was never recorded as processed (the failed
    attempts rolled back), so the handler runs. Replaying a letter twice is harmless: the
    second copy is skipped as a duplicate once the first was handled.
    """
    records = [replay_record(letter) for letter in letters]
    await publisher.publish(records)
    return len(records)


async def read_dead_letters(
    bootstrap: str, topic: str, *, idle_ms: int = 1000, limit: int | None = None
) -> list[DeadLetter]:
    """Every dead letter ``topic`` holds now, oldest first per partition (for tools and tests).

    Reads without a consumer group (nothing is committed) from the beginning of every
    partition and stops at the first poll that brings nothing within ``idle_ms``, or after
    ``limit`` records. The end is found by idleness rather than by asking the broker for the
    partitions' end offsets, which the embedded broker answers wrongly.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    letters: list[DeadLetter] = []
    try:
        while limit is None or len(letters) < limit:
            batch = await consumer.getmany(timeout_ms=idle_ms)
            if not batch:
                break
            for records in batch.values():
                letters.extend(DeadLetter.from_record(record) for record in records)
    finally:
        await consumer.stop()
    return letters if limit is None else letters[:limit]
