"""Builders of the whatsapp service's records: events on ``whatsapp.events.v1`` and the
``SendMessage`` commands it re-keys when it routes a pool send to a session.

Each builder returns a complete wrapper (envelope and payload) ready to be staged on the
unit of work. ``causation_id`` links an event to the command or callback behind it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from esquadrao.common.v1.envelope_pb2 import Envelope
from esquadrao.whatsapp.v1 import commands_pb2, whatsapp_pb2
from esquadrao_common.events import event_type_of, new_envelope

from whatsapp.domain.ledger import LedgerEntry, message_event_key, status_changed
from whatsapp.domain.messages import InboundMessage, MessageStatus
from whatsapp.domain.sessions import StateChange

#: The producer name in the envelope of every whatsapp record.
PRODUCER: Final = "whatsapp"
EVENTS_TOPIC: Final = "whatsapp.events.v1"
INTERACTIVE_TOPIC: Final = "whatsapp.send.interactive.v1"
BULK_TOPIC: Final = "whatsapp.send.bulk.v1"


def _sealed(
    event: whatsapp_pb2.WhatsappEvent,
    company_id: str,
    at: datetime,
    correlation_id: str | None,
    causation_id: str | None,
) -> whatsapp_pb2.WhatsappEvent:
    event.envelope.CopyFrom(
        new_envelope(
            event_type_of(event),
            company_id,
            PRODUCER,
            correlation_id=correlation_id,
            causation_id=causation_id,
            occurred_at=at,
        )
    )
    return event


def message_status_changed(
    entry: LedgerEntry,
    previous: MessageStatus,
    at: datetime,
    *,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> tuple[str, whatsapp_pb2.WhatsappEvent]:
    """The key and record of ``entry`` having moved from ``previous`` to its status."""
    event = whatsapp_pb2.WhatsappEvent(message_status_changed=status_changed(entry, previous, at))
    key = message_event_key(entry.session_id, entry.to_phone_e164)
    return key, _sealed(event, entry.company_id, at, correlation_id, causation_id)


def message_received(
    message: InboundMessage, session_id: str, company_id: str, at: datetime
) -> tuple[str, whatsapp_pb2.WhatsappEvent]:
    event = whatsapp_pb2.WhatsappEvent(message_received=message.to_proto(session_id))
    key = message_event_key(session_id, message.from_phone_e164)
    return key, _sealed(event, company_id, at, None, None)


def session_state_changed(change: StateChange) -> tuple[str, whatsapp_pb2.WhatsappEvent]:
    event = whatsapp_pb2.WhatsappEvent(session_state_changed=change.to_proto())
    return change.session_id, _sealed(event, change.company_id, change.at, None, None)


def routed_command(
    command: commands_pb2.SendMessage, session_id: str, cause: Envelope
) -> commands_pb2.WhatsappCommand:
    """``command`` re-addressed to ``session_id`` (chosen from its pool), continuing the
    cause's correlation."""
    routed = commands_pb2.SendMessage()
    routed.CopyFrom(command)
    routed.session_id = session_id
    record = commands_pb2.WhatsappCommand(send_message=routed)
    record.envelope.CopyFrom(
        new_envelope(
            event_type_of(record),
            cause.company_id,
            PRODUCER,
            correlation_id=cause.correlation_id,
            causation_id=cause.event_id,
        )
    )
    return record
