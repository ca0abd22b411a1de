"""Retry and dead-letter routing: decisions, headers, due times, reading back, replay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from aiokafka import TopicPartition
from esquadrao_common.kafka.catalog import ConsumerGroupSpec
from esquadrao_common.kafka.consumer import RetryPauses, poll_timeout_ms
from esquadrao_common.kafka.dead_letters import (
    FAILURE_HEADERS,
    HEADER_ATTEMPT,
    HEADER_CONSUMER_GROUP,
    HEADER_ERROR_MESSAGE,
    HEADER_ERROR_TYPE,
    HEADER_FAILED_AT,
    HEADER_ORIGINAL_OFFSET,
    HEADER_ORIGINAL_PARTITION,
    HEADER_ORIGINAL_TOPIC,
    HEADER_REPLAYED_FROM,
    HEADER_RETRY_NOT_BEFORE,
    MAX_ERROR_MESSAGE_BYTES,
    DeadLetter,
    FailureRoute,
    Origin,
    attempt_of,
    error_message,
    error_type_name,
    failure_record,
    header_value,
    origin_of,
    replay,
    replay_record,
    retry_due_ms,
    route_failure,
)
from esquadrao_common.messaging import Headers, OutgoingRecord
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

GROUP = ConsumerGroupSpec(
    name="contacts", topics=("whatsapp.events.v1",), retry_delays_ms=(5_000, 60_000)
)
NOW_MS = 1_700_000_000_000
EVENT_HEADERS: Headers = [
    ("event_id", b"0b4f5c1e-9a52-4c86-9d0c-3a8e0a3f5b11"),
    ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
]


class HandlerBroke(Exception):
    pass


@dataclass(frozen=True)
class ConsumedStub:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)


def as_consumed(record: OutgoingRecord, partition: int = 0, offset: int = 0) -> ConsumedStub:
    return ConsumedStub(record.topic, partition, offset, record.key, record.value, record.headers)


def test_attempt_is_decided_by_the_topic_read() -> None:
    assert attempt_of(GROUP, "whatsapp.events.v1") == 0
    assert attempt_of(GROUP, "contacts.retry.1") == 1
    assert attempt_of(GROUP, "contacts.retry.2") == 2
    assert attempt_of(GROUP, "campaigns.retry.1") == 0


def test_a_failure_goes_to_the_next_retry_topic_due_after_its_delay() -> None:
    assert route_failure(GROUP, 0, now_ms=NOW_MS) == FailureRoute(
        "contacts.retry.1", attempt=1, not_before_ms=NOW_MS + 5_000
    )
    assert route_failure(GROUP, 1, now_ms=NOW_MS) == FailureRoute(
        "contacts.retry.2", attempt=2, not_before_ms=NOW_MS + 60_000
    )


def test_a_failure_of_the_last_retry_goes_to_the_dead_letter_topic() -> None:
    route = route_failure(GROUP, 2, now_ms=NOW_MS)

    assert route == FailureRoute("contacts.dlq", attempt=2, not_before_ms=None)
    assert route.dead_letter


def test_a_failure_that_is_not_retriable_skips_the_retry_topics() -> None:
    assert route_failure(GROUP, 0, now_ms=NOW_MS, retriable=False) == FailureRoute(
        "contacts.dlq", attempt=0, not_before_ms=None
    )


def test_a_group_without_retries_dead_letters_at_once() -> None:
    group = ConsumerGroupSpec(name="g", topics=("t",), retry_delays_ms=())

    assert route_failure(group, 0, now_ms=NOW_MS) == FailureRoute("g.dlq", 0, None)


@given(delays=st.lists(st.integers(min_value=0, max_value=10**7), max_size=6))
def test_following_the_routes_visits_every_retry_topic_once_then_the_dlq(
    delays: list[int],
) -> None:
    group = ConsumerGroupSpec(name="g", topics=("t",), retry_delays_ms=tuple(delays))
    visited = []
    attempt = 0
    while True:
        route = route_failure(group, attempt, now_ms=NOW_MS)
        visited.append(route.topic)
        if route.dead_letter:
            break
        assert route.not_before_ms == NOW_MS + delays[attempt]
        attempt = attempt_of(group, route.topic)
        assert attempt == route.attempt

    assert visited == [*group.retry_topics, group.dlq_topic]


def test_a_retry_record_keeps_key_value_and_headers_and_says_what_failed() -> None:
    route = route_failure(GROUP, 0, now_ms=NOW_MS)

    record = failure_record(
        route,
        consumer_group="contacts",
        key=b"session-1+5511999990000",
        value=b"\x0a\x02payload",
        headers=EVENT_HEADERS,
        origin=Origin("whatsapp.events.v1", 3, 41),
        error=HandlerBroke("no such contact"),
        now_ms=NOW_MS,
    )

    assert record.topic == "contacts.retry.1"
    assert (record.key, record.value) == (b"session-1+5511999990000", b"\x0a\x02payload")
    headers = dict(record.headers)
    assert len(headers) == len(record.headers), "no header may appear twice"
    assert headers["event_id"] == dict(EVENT_HEADERS)["event_id"]
    assert headers["traceparent"] == dict(EVENT_HEADERS)["traceparent"]
    assert headers[HEADER_ORIGINAL_TOPIC] == b"whatsapp.events.v1"
    assert headers[HEADER_ORIGINAL_PARTITION] == b"3"
    assert headers[HEADER_ORIGINAL_OFFSET] == b"41"
    assert headers[HEADER_ATTEMPT] == b"1"
    assert headers[HEADER_ERROR_TYPE] == f"{__name__}.HandlerBroke".encode()
    assert headers[HEADER_ERROR_MESSAGE] == b"no such contact"
    assert headers[HEADER_FAILED_AT] == str(NOW_MS).encode()
    assert headers[HEADER_CONSUMER_GROUP] == b"contacts"
    assert retry_due_ms(record.headers) == NOW_MS + 5_000


def test_each_hop_replaces_the_failure_headers_of_the_previous_one() -> None:
    first = failure_record(
        route_failure(GROUP, 0, now_ms=NOW_MS),
        consumer_group="contacts",
        key=None,
        value=b"v",
        headers=EVENT_HEADERS,
        origin=Origin("whatsapp.events.v1", 0, 7),
        error=ValueError("first"),
        now_ms=NOW_MS,
    )
    consumed = as_consumed(first, partition=2, offset=99)
    second = failure_record(
        route_failure(GROUP, 2, now_ms=NOW_MS + 1),
        consumer_group="contacts",
        key=None,
        value=b"v",
        headers=consumed.headers,
        origin=origin_of(consumed.topic, consumed.partition, consumed.offset, consumed.headers),
        error=KeyError("last"),
        now_ms=NOW_MS + 1,
    )

    names = [name for name, _ in second.headers]
    assert sorted(set(names)) == sorted(names), f"duplicated headers in {names}"
    assert second.topic == "contacts.dlq"
    assert header_value(second.headers, HEADER_ATTEMPT) == b"2"
    assert header_value(second.headers, HEADER_ERROR_TYPE) == b"KeyError"
    assert header_value(second.headers, HEADER_ORIGINAL_OFFSET) == b"7"
    assert retry_due_ms(second.headers) is None, "a dead letter has no due time"


def test_the_origin_is_where_the_record_was_read_unless_its_headers_say_otherwise() -> None:
    assert origin_of("t", 1, 5, EVENT_HEADERS) == Origin("t", 1, 5)
    retried = [
        (HEADER_ORIGINAL_TOPIC, b"src"),
        (HEADER_ORIGINAL_PARTITION, b"4"),
        (HEADER_ORIGINAL_OFFSET, b"12"),
    ]
    assert origin_of("g.retry.1", 0, 0, retried) == Origin("src", 4, 12)
    broken = [(HEADER_ORIGINAL_TOPIC, b"src"), (HEADER_ORIGINAL_PARTITION, b"x")]
    assert origin_of("g.retry.1", 0, 3, broken) == Origin("g.retry.1", 0, 3)


@pytest.mark.parametrize(
    ("headers", "due"),
    [
        ([(HEADER_RETRY_NOT_BEFORE, b"1700000005000")], 1_700_000_005_000),
        ([(HEADER_RETRY_NOT_BEFORE, b"1"), (HEADER_RETRY_NOT_BEFORE, b"2")], 2),
        ([], None),
        ([(HEADER_RETRY_NOT_BEFORE, b"soon")], None),
        ([(HEADER_RETRY_NOT_BEFORE, b"\xff")], None),
    ],
)
def test_due_time_is_read_from_the_last_retry_not_before_header(
    headers: Headers, due: int | None
) -> None:
    assert retry_due_ms(headers) == due


def test_long_error_messages_are_cut_on_a_character_boundary() -> None:
    message = error_message(RuntimeError("ç" * MAX_ERROR_MESSAGE_BYTES))

    assert len(message) <= MAX_ERROR_MESSAGE_BYTES
    assert len(message) >= MAX_ERROR_MESSAGE_BYTES - 1
    assert set(message.decode("utf-8")) == {"ç"}
    assert error_message(RuntimeError("short")) == b"short"


def test_error_types_are_qualified_by_module_except_builtins() -> None:
    assert error_type_name(ValueError()) == "ValueError"
    assert error_type_name(HandlerBroke()) == f"{__name__}.HandlerBroke"


def dead_letter_record() -> OutgoingRecord:
    return failure_record(
        route_failure(GROUP, 2, now_ms=NOW_MS),
        consumer_group="contacts",
        key=b"k",
        value=b"value",
        headers=EVENT_HEADERS,
        origin=Origin("whatsapp.events.v1", 5, 8),
        error=HandlerBroke("still broken"),
        now_ms=NOW_MS,
    )


def test_a_dead_letter_reads_back_what_failed_and_where_it_came_from() -> None:
    letter = DeadLetter.from_record(as_consumed(dead_letter_record(), partition=1, offset=30))

    assert (letter.topic, letter.partition, letter.offset) == ("contacts.dlq", 1, 30)
    assert letter.origin == Origin("whatsapp.events.v1", 5, 8)
    assert letter.attempt == 2
    assert letter.error_type == f"{__name__}.HandlerBroke"
    assert letter.error_message == "still broken"
    assert letter.consumer_group == "contacts"
    assert letter.failed_at_ms == NOW_MS
    assert (letter.key, letter.value) == (b"k", b"value")


def test_a_replayed_record_is_a_first_delivery_to_the_original_topic() -> None:
    letter = DeadLetter.from_record(as_consumed(dead_letter_record(), partition=1, offset=30))

    record = replay_record(letter)

    assert record.topic == "whatsapp.events.v1"
    assert (record.key, record.value) == (b"k", b"value")
    names = {name for name, _ in record.headers}
    assert names.isdisjoint(FAILURE_HEADERS - {HEADER_REPLAYED_FROM})
    assert header_value(record.headers, HEADER_REPLAYED_FROM) == b"contacts.dlq/1/30"
    assert header_value(record.headers, "event_id") == dict(EVENT_HEADERS)["event_id"]
    assert header_value(record.headers, "traceparent") == dict(EVENT_HEADERS)["traceparent"]


def test_a_dead_letter_without_origin_cannot_be_replayed() -> None:
    letter = DeadLetter.from_record(ConsumedStub("contacts.dlq", 0, 3, None, b"x"))

    assert letter.origin == Origin("", -1, -1)
    with pytest.raises(ValueError, match="nowhere to replay"):
        replay_record(letter)


class CollectingPublisher:
    def __init__(self) -> None:
        self.published: list[OutgoingRecord] = []

    async def publish(self, records: Sequence[OutgoingRecord]) -> None:
        self.published.extend(records)


async def test_replay_publishes_every_letter_in_one_acknowledged_call() -> None:
    letters = [
        DeadLetter.from_record(as_consumed(dead_letter_record(), offset=n)) for n in range(3)
    ]
    publisher = CollectingPublisher()

    assert await replay(publisher, letters) == 3
    assert [header_value(r.headers, HEADER_REPLAYED_FROM) for r in publisher.published] == [
        b"contacts.dlq/0/0",
        b"contacts.dlq/0/1",
        b"contacts.dlq/0/2",
    ]


def test_paused_partitions_come_back_once_due() -> None:
    first, second = TopicPartition("g.retry.1", 0), TopicPartition("g.retry.2", 0)
    pauses = RetryPauses()
    pauses.pause(first, 1_000)
    pauses.pause(second, 2_000)

    assert pauses.next_due_ms() == 1_000
    assert pauses.pop_due(999) == []
    assert pauses.pop_due(1_000) == [first]
    assert first not in pauses
    assert pauses.next_due_ms() == 2_000
    pauses.forget([second])
    assert pauses.next_due_ms() is None
    assert pauses.pop_due(10_000) == []


@pytest.mark.parametrize(
    ("now", "due", "expected"),
    [(0, None, 500), (0, 200, 200), (0, 10_000, 500), (300, 200, 1), (0, 0, 1)],
)
def test_a_poll_never_outlasts_the_next_due_retry(now: int, due: int | None, expected: int) -> None:
    assert poll_timeout_ms(now, due, 500) == expected
