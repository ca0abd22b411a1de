"""Envelopes of events and commands, and the wrapper-per-topic rule.

Every record on every topic is one Protobuf wrapper message per topic (e.g.
``esquadrao.contacts.v1.ContactEvent``) whose field 1 is ``esquadrao.common.v1.Envelope
envelope`` and whose ``oneof payload`` holds exactly one event or command. Because field 1
is the same everywhere, any record parses as ``EventHeader``, which is how generic plumbing
(relay, idempotent consumers, retries, dead letters) reads the envelope of any topic.

These helpers build envelopes, read them back from wrappers and raw record values, turn
them into Kafka headers, and derive ``event_type`` from the payload actually set, so the
envelope never names a different message than the one it carries.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import TypeVar

from esquadrao.common.v1.envelope_pb2 import Envelope, EventHeader
from google.protobuf.message import DecodeError, Message

from esquadrao_common.messaging import (
    HEADER_COMPANY_ID,
    HEADER_EVENT_ID,
    HEADER_EVENT_TYPE,
    Headers,
)

#: Name of the wrapper field (number 1) that holds the envelope.
ENVELOPE_FIELD = "envelope"
#: Name of the wrapper oneof that holds the event or command.
PAYLOAD_ONEOF = "payload"

#: A full Protobuf message name: lowercase package segments, then the message name.
_FULL_MESSAGE_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.[A-Z][A-Za-z0-9]*$")

MessageT = TypeVar("MessageT", bound=Message)


class UndecodableRecord(ValueError):
    """A record value that is not a wrapper message with a valid envelope.

    Retrying cannot fix such a record, so consumers send it straight to the dead-letter
    topic instead of the retry chain.
    """


def _canonical_uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError(f"{what} must be a UUID, got {value!r}") from None


def new_envelope(
    event_type: str,
    company_id: str,
    producer: str,
    *,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
) -> Envelope:
    """Build the envelope of a new event or command.

    ``event_type`` is the full name of the payload message (use ``event_type_of`` on the
    wrapper). ``event_id`` defaults to a fresh UUID4 and is stored in canonical lowercase
    form. ``correlation_id`` defaults to the event's own id, which starts a new causal
    chain; pass the cause's ``correlation_id`` to continue one. ``causation_id`` is the id
    of the event or command that directly caused this one (empty when none did).
    ``occurred_at`` defaults to now and must be timezone-aware.

    Raises ValueError on an empty company or producer, a malformed event type or event id,
    or a naive ``occurred_at``.
    """
    if not _FULL_MESSAGE_NAME.match(event_type):
        raise ValueError(
            f"event_type must be a full message name like "
            f"'esquadrao.contacts.v1.ContactCreated', got {event_type!r}"
        )
    if not company_id:
        raise ValueError("company_id is required: every event belongs to one company")
    if not producer:
        raise ValueError("producer is required: the name of the producing service")
    if occurred_at is None:
        occurred_at = datetime.now(UTC)
    elif occurred_at.utcoffset() is None:
        raise ValueError("occurred_at must be timezone-aware")
    event_id = str(uuid.uuid4()) if event_id is None else _canonical_uuid(event_id, "event_id")
    envelope = Envelope(
        event_id=event_id,
        event_type=event_type,
        company_id=company_id,
        producer=producer,
        correlation_id=correlation_id or event_id,
        causation_id=causation_id or "",
    )
    envelope.occurred_at.FromDatetime(occurred_at.astimezone(UTC))
    return envelope


def _require_wrapper(message: Message | type[Message]) -> None:
    descriptor = message.DESCRIPTOR
    field = descriptor.fields_by_name.get(ENVELOPE_FIELD)
    if (
        field is None
        or field.number != 1
        or field.message_type is None
        or field.message_type.full_name != Envelope.DESCRIPTOR.full_name
    ):
        raise ValueError(
            f"{descriptor.full_name} is not a topic wrapper: "
            f"its field 1 must be `{Envelope.DESCRIPTOR.full_name} {ENVELOPE_FIELD}`"
        )


def envelope_of(message: Message) -> Envelope:
    """The envelope of a wrapper message (the wrapper's own sub-message, not a copy).

    Raises ValueError when ``message`` is not a wrapper (its field 1 is not ``Envelope
    envelope``), or its envelope is unset or has no ``event_id``.
    """
    descriptor = message.DESCRIPTOR
    _require_wrapper(message)
    if not message.HasField(ENVELOPE_FIELD):
        raise ValueError(f"{descriptor.full_name} has no envelope set")
    envelope = getattr(message, ENVELOPE_FIELD)
    if not isinstance(envelope, Envelope):
        raise ValueError(f"{descriptor.full_name}.{ENVELOPE_FIELD} is not an Envelope")
    if not envelope.event_id:
        raise ValueError(f"{descriptor.full_name} has an envelope without event_id")
    return envelope


def _decodable_envelope(message: Message) -> Envelope:
    """The envelope of a parsed record, which must carry a UUID event_id."""
    if not message.HasField(ENVELOPE_FIELD):
        raise UndecodableRecord("record has no envelope")
    envelope = getattr(message, ENVELOPE_FIELD)
    if not isinstance(envelope, Envelope) or not envelope.event_id:
        raise UndecodableRecord("record has an envelope without event_id")
    try:
        uuid.UUID(envelope.event_id)
    except ValueError:
        raise UndecodableRecord(f"record's event_id is not a UUID: {envelope.event_id!r}") from None
    return envelope


def _parse(message_type: type[MessageT], value: bytes | None) -> MessageT:
    if value is None:
        raise UndecodableRecord("record has no value")
    try:
        return message_type.FromString(value)
    except DecodeError as exc:
        raise UndecodableRecord(
            f"record value is not a {message_type.DESCRIPTOR.full_name}: {exc}"
        ) from exc


def read_envelope(value: bytes | None) -> Envelope:
    """The envelope of a raw record value of any topic, read as ``EventHeader``.

    The payload is skipped (unknown fields), so this works without the topic's schema.
    Raises UndecodableRecord when the value is absent (a tombstone), is not Protobuf, or
    carries no envelope with a UUID ``event_id``.
    """
    return _decodable_envelope(_parse(EventHeader, value))


def decode_event(wrapper_type: type[MessageT], value: bytes | None) -> MessageT:
    """Parse a raw record value as the topic's wrapper message, checking its envelope.

    The payload may be unset: that is an event type added to the topic after this
    consumer's schema version, which a consumer skips rather than dead-letters.
    Raises UndecodableRecord like ``read_envelope`` (also when the payload is malformed),
    and ValueError when ``wrapper_type`` is not a topic wrapper.
    """
    _require_wrapper(wrapper_type)
    wrapper = _parse(wrapper_type, value)
    _decodable_envelope(wrapper)
    return wrapper


def record_headers(envelope: Envelope) -> Headers:
    """Kafka headers that let brokers' tools and consumers route without decoding values."""
    return [
        (HEADER_EVENT_ID, envelope.event_id.encode()),
        (HEADER_EVENT_TYPE, envelope.event_type.encode()),
        (HEADER_COMPANY_ID, envelope.company_id.encode()),
    ]


def payload_name(wrapper: Message) -> str:
    """Name of the wrapper's ``payload`` field that is set, e.g. ``contact_created``.

    Raises ValueError when the message has no ``oneof payload`` or none of it is set.
    """
    descriptor = wrapper.DESCRIPTOR
    if PAYLOAD_ONEOF not in descriptor.oneofs_by_name:
        raise ValueError(f"{descriptor.full_name} has no `oneof {PAYLOAD_ONEOF}`")
    name: str | None = wrapper.WhichOneof(PAYLOAD_ONEOF)
    if name is None:
        raise ValueError(f"{descriptor.full_name} has no payload set")
    return name


def event_type_of(wrapper: Message) -> str:
    """Full name of the payload message set in ``wrapper``: the envelope's ``event_type``.

    Raises ValueError like ``payload_name``, or when the payload is not a message.
    """
    field = wrapper.DESCRIPTOR.fields_by_name[payload_name(wrapper)]
    if field.message_type is None:
        raise ValueError(f"{wrapper.DESCRIPTOR.full_name}.{field.name} is not a message")
    return field.message_type.full_name
