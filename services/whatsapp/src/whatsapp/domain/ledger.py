"""The send ledger: one entry per message id, the memory that makes sends idempotent.

A ``SendMessage`` command becomes an entry (QUEUED) the first time its message id is
seen; a second command with the same id finds the entry and changes nothing. The session
driver then takes queued entries, interactive before bulk, and hands them over:

1. it *claims* them (QUEUED → in flight: ``sending_since`` set) in a committed
   transaction **before** calling the provider;
2. it calls the provider;
3. it records the outcome (SENT with the provider's id, FAILED, or back to QUEUED with a
   later ``next_attempt_at`` for a retryable refusal) in another transaction.

A crash between 1 and 3 leaves entries in flight. Whoever drives the session next turns
them UNKNOWN — the provider may have accepted them — and never sends them again on its
own: a duplicate WhatsApp message to a customer is worse than a visible, counted
"unknown". The exposure is bounded by the claim size.

Nothing here does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from esquadrao.whatsapp.v1 import commands_pb2, whatsapp_pb2

from whatsapp.domain.messages import MessageStatus, ProviderError, to_timestamp


class Priority(enum.IntEnum):
    """Which command topic a message came from; lower goes first."""

    INTERACTIVE = 0
    BULK = 1


@dataclass(frozen=True)
class Origin:
    """Where a message came from (copied into its status events)."""

    kind: str = ""
    id: str = ""
    item_id: str = ""

    @classmethod
    def from_proto(cls, origin: whatsapp_pb2.Origin) -> Origin:
        return cls(kind=origin.kind, id=origin.id, item_id=origin.item_id)

    def to_proto(self) -> whatsapp_pb2.Origin:
        return whatsapp_pb2.Origin(kind=self.kind, id=self.id, item_id=self.item_id)


@dataclass
class LedgerEntry:
    """One outbound message and everything known about its delivery.

    ``command`` is the ``SendMessage`` as received (serialized), from which the provider
    request is built when its turn comes. ``in_flight`` is true between a claim and its
    outcome.
    """

    message_id: str
    company_id: str
    session_id: str
    to_phone_e164: str
    command: bytes
    priority: Priority
    status: MessageStatus
    queued_at: datetime
    updated_at: datetime
    origin: Origin = Origin()
    pool_id: str = ""
    provider_message_id: str = ""
    attempts: int = 0
    next_attempt_at: datetime | None = None
    not_after: datetime | None = None
    sending_since: datetime | None = None
    error: ProviderError | None = None
    seq: int = 0

    @property
    def in_flight(self) -> bool:
        return self.sending_since is not None

    def send_command(self) -> commands_pb2.SendMessage:
        return commands_pb2.SendMessage.FromString(self.command)

    def expired(self, now: datetime) -> bool:
        return self.not_after is not None and now > self.not_after


def status_changed(
    entry: LedgerEntry, previous: MessageStatus, at: datetime
) -> whatsapp_pb2.MessageStatusChanged:
    """The ``MessageStatusChanged`` payload for ``entry`` having moved from ``previous``."""
    return whatsapp_pb2.MessageStatusChanged(
        message_id=entry.message_id,
        session_id=entry.session_id,
        provider_message_id=entry.provider_message_id,
        to_phone_e164=entry.to_phone_e164,
        status=entry.status.to_proto(),
        previous_status=previous.to_proto(),
        error=entry.error.to_proto() if entry.error is not None else None,
        changed_at=to_timestamp(at),
        origin=entry.origin.to_proto(),
    )


def message_event_key(session_id: str, peer_phone_e164: str) -> str:
    """Key of message events on ``whatsapp.events.v1``: one customer, one number, in order."""
    return f"{session_id}:{peer_phone_e164}"
