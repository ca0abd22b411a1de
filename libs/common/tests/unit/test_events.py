"""Envelopes: building, reading back from wrappers and raw records, headers, event types."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from esquadrao.common.v1.envelope_pb2 import Envelope, EventHeader
from esquadrao.contacts.v1.contacts_pb2 import (
    Contact,
    ContactCreated,
    ContactEvent,
    ContactOptedOut,
)
from esquadrao_common.events import (
    UndecodableRecord,
    decode_event,
    envelope_of,
    event_type_of,
    new_envelope,
    payload_name,
    read_envelope,
    record_headers,
)
from esquadrao_common.messaging import HEADER_COMPANY_ID, HEADER_EVENT_ID, HEADER_EVENT_TYPE
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

CREATED = "esquadrao.contacts.v1.ContactCreated"
PAYLOAD_FIELDS = [field.name for field in ContactEvent.DESCRIPTOR.oneofs_by_name["payload"].fields]

non_empty_text = st.text(min_size=1, max_size=40)
aware_datetimes = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3)), timezone(timedelta(hours=9))]),
)


def contact_created_event(company_id: str = "company-1") -> ContactEvent:
    event = ContactEvent(
        contact_created=ContactCreated(
            contact=Contact(
                id=str(uuid.uuid4()), company_id=company_id, phone_e164="+5511999990000"
            )
        )
    )
    event.envelope.CopyFrom(new_envelope(event_type_of(event), company_id, "contacts"))
    return event


def test_new_envelope_defaults_start_a_new_causal_chain() -> None:
    before = datetime.now(UTC)
    envelope = new_envelope(CREATED, "company-1", "contacts")
    after = datetime.now(UTC)

    assert uuid.UUID(envelope.event_id).version == 4
    assert envelope.correlation_id == envelope.event_id
    assert envelope.causation_id == ""
    assert (envelope.event_type, envelope.company_id, envelope.producer) == (
        CREATED,
        "company-1",
        "contacts",
    )
    assert before <= envelope.occurred_at.ToDatetime(tzinfo=UTC) <= after


def test_new_envelope_gives_each_event_its_own_id() -> None:
    ids = {new_envelope(CREATED, "c", "contacts").event_id for _ in range(100)}
    assert len(ids) == 100


@given(
    company_id=non_empty_text,
    producer=non_empty_text,
    correlation_id=non_empty_text,
    causation_id=non_empty_text,
    event_id=st.uuids(),
    occurred_at=aware_datetimes,
)
def test_new_envelope_keeps_explicit_values_through_serialization(
    company_id: str,
    producer: str,
    correlation_id: str,
    causation_id: str,
    event_id: uuid.UUID,
    occurred_at: datetime,
) -> None:
    envelope = new_envelope(
        CREATED,
        company_id,
        producer,
        correlation_id=correlation_id,
        causation_id=causation_id,
        event_id=str(event_id).upper(),
        occurred_at=occurred_at,
    )
    decoded = Envelope.FromString(envelope.SerializeToString())

    assert decoded.event_id == str(event_id)
    assert decoded.company_id == company_id
    assert decoded.producer == producer
    assert decoded.correlation_id == correlation_id
    assert decoded.causation_id == causation_id
    assert decoded.occurred_at.ToDatetime(tzinfo=UTC) == occurred_at


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: new_envelope("ContactCreated", "c", "contacts"), "full message name"),
        (lambda: new_envelope("", "c", "contacts"), "full message name"),
        (lambda: new_envelope(CREATED, "", "contacts"), "company_id"),
        (lambda: new_envelope(CREATED, "c", ""), "producer"),
        (lambda: new_envelope(CREATED, "c", "contacts", event_id="not-a-uuid"), "UUID"),
        (
            lambda: new_envelope(CREATED, "c", "contacts", occurred_at=datetime(2025, 1, 1)),
            "timezone-aware",
        ),
    ],
    ids=["unqualified-type", "empty-type", "no-company", "no-producer", "bad-id", "naive-time"],
)
def test_new_envelope_rejects_invalid_input(build: Callable[[], Envelope], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_envelope_of_returns_the_wrappers_envelope() -> None:
    event = contact_created_event()
    assert envelope_of(event) == event.envelope
    assert envelope_of(event).event_type == CREATED


def test_envelope_of_rejects_a_wrapper_without_envelope() -> None:
    with pytest.raises(ValueError, match="no envelope"):
        envelope_of(ContactEvent(contact_created=ContactCreated()))


def test_envelope_of_rejects_an_envelope_without_event_id() -> None:
    with pytest.raises(ValueError, match="without event_id"):
        envelope_of(ContactEvent(envelope=Envelope(company_id="c")))


@pytest.mark.parametrize("message", [Contact(id="x"), Envelope(event_id="x")])
def test_envelope_of_rejects_messages_that_are_not_wrappers(message: Contact | Envelope) -> None:
    with pytest.raises(ValueError, match="not a topic wrapper"):
        envelope_of(message)


def test_read_envelope_reads_any_wrapper_without_its_schema() -> None:
    event = contact_created_event()
    assert read_envelope(event.SerializeToString()) == event.envelope


@given(
    envelope=st.builds(
        new_envelope,
        st.just(CREATED),
        non_empty_text,
        non_empty_text,
        correlation_id=st.none() | st.text(max_size=40),
        causation_id=st.none() | st.text(max_size=40),
        occurred_at=aware_datetimes,
    ),
    field_name=st.sampled_from(PAYLOAD_FIELDS),
)
def test_read_envelope_reads_every_payload_kind(envelope: Envelope, field_name: str) -> None:
    event = ContactEvent(envelope=envelope)
    getattr(event, field_name).SetInParent()
    assert read_envelope(event.SerializeToString()) == envelope


VALID_RECORD = ContactEvent(
    envelope=new_envelope(CREATED, "c", "contacts"),
    contact_created=ContactCreated(contact=Contact(id="x", name="Ana")),
).SerializeToString()
corrupted_records = (
    st.binary(max_size=200)
    | st.integers(0, len(VALID_RECORD) - 1).map(lambda n: VALID_RECORD[:n])
    | st.binary(max_size=50).map(lambda tail: VALID_RECORD + tail)
    | st.binary(max_size=50).map(lambda head: head + VALID_RECORD)
)


@given(corrupted_records)
def test_read_envelope_fails_only_with_undecodable_record(value: bytes) -> None:
    try:
        envelope = read_envelope(value)
    except UndecodableRecord:
        return
    uuid.UUID(envelope.event_id)  # raises unless the accepted record has a UUID event_id


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"\xff\xff\xff",
        EventHeader(envelope=Envelope(event_type=CREATED)).SerializeToString(),
        EventHeader(envelope=Envelope(event_id="42")).SerializeToString(),
        ContactEvent(contact_created=ContactCreated()).SerializeToString(),
    ],
    ids=["tombstone", "empty", "garbage", "no-event-id", "non-uuid-id", "no-envelope"],
)
def test_read_envelope_rejects_undecodable_records(value: bytes | None) -> None:
    with pytest.raises(UndecodableRecord):
        read_envelope(value)


def test_undecodable_record_is_a_value_error() -> None:
    assert issubclass(UndecodableRecord, ValueError)


def test_decode_event_parses_the_topic_wrapper() -> None:
    event = contact_created_event()
    decoded = decode_event(ContactEvent, event.SerializeToString())
    assert decoded == event
    assert payload_name(decoded) == "contact_created"


def test_decode_event_accepts_a_payload_unknown_to_this_schema_version() -> None:
    envelope = new_envelope("esquadrao.contacts.v1.ContactMerged", "c", "contacts")
    newer_payload_field = b"\xfa\x07\x02\x08\x01"  # field 127, length 2: {1: 1}
    value = EventHeader(envelope=envelope).SerializeToString() + newer_payload_field

    decoded = decode_event(ContactEvent, value)

    assert decoded.envelope == envelope
    assert decoded.WhichOneof("payload") is None


def test_decode_event_rejects_a_malformed_payload() -> None:
    envelope = new_envelope(CREATED, "c", "contacts")
    truncated_contact_created = b"\x52\x05\x0a\x03"  # field 10, length 5, only 2 bytes follow
    value = EventHeader(envelope=envelope).SerializeToString() + truncated_contact_created
    with pytest.raises(UndecodableRecord):
        decode_event(ContactEvent, value)


def test_decode_event_rejects_a_type_that_is_not_a_wrapper() -> None:
    with pytest.raises(ValueError, match="not a topic wrapper"):
        decode_event(Contact, contact_created_event().SerializeToString())


def test_record_headers_carry_id_type_and_company() -> None:
    envelope = new_envelope(CREATED, "empresa-ção", "contacts")
    headers = dict(record_headers(envelope))
    assert headers == {
        HEADER_EVENT_ID: envelope.event_id.encode(),
        HEADER_EVENT_TYPE: CREATED.encode(),
        HEADER_COMPANY_ID: "empresa-ção".encode(),
    }


@pytest.mark.parametrize("field_name", PAYLOAD_FIELDS)
def test_event_type_is_the_full_name_of_the_payload_set(field_name: str) -> None:
    event = ContactEvent()
    getattr(event, field_name).SetInParent()
    payload_type = ContactEvent.DESCRIPTOR.fields_by_name[field_name].message_type

    assert payload_type is not None
    assert payload_name(event) == field_name
    assert event_type_of(event) == payload_type.full_name


def test_event_type_follows_the_payload_when_it_changes() -> None:
    event = ContactEvent(contact_created=ContactCreated())
    event.contact_opted_out.CopyFrom(ContactOptedOut(contact_id="x"))
    assert event_type_of(event) == "esquadrao.contacts.v1.ContactOptedOut"


def test_payload_name_rejects_a_wrapper_without_payload() -> None:
    with pytest.raises(ValueError, match="no payload set"):
        payload_name(ContactEvent(envelope=new_envelope(CREATED, "c", "contacts")))


def test_payload_name_rejects_a_message_without_payload_oneof() -> None:
    with pytest.raises(ValueError, match="no `oneof payload`"):
        event_type_of(Contact())
